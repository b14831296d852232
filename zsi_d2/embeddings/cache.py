"""On-disk cache of class-embedding matrices.

Why: encoding every class x template with a text encoder, or scanning a multi-GB GloVe file, costs
seconds to minutes and happens at every model build. Keys hash everything the result depends on
(source, file/checkpoint identity, arch, templates, names), so a changed input never hits a stale
entry. Writes are atomic (temp file + rename) so concurrent workers cannot leave half a file.
"""
import hashlib
import json
import logging
import os
import tempfile
from typing import Dict, Optional

import torch

__all__ = [
    "CACHE_ENV_VAR",
    "CACHE_FORMAT_VERSION",
    "DEFAULT_CACHE_DIR",
    "EmbeddingCache",
    "cache_key",
    "path_identity",
    "resolve_cache_dir",
]

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "ZSI_D2_CACHE"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "zsi_d2", "embeddings")
# Bump when the meaning of a cached matrix changes (e.g. a different averaging rule).
CACHE_FORMAT_VERSION = 1
_DISABLED = {"none", "off", "false", "0", "disabled"}


def resolve_cache_dir(cache_dir: str = "") -> Optional[str]:
    """Explicit value (config CACHE_DIR) > env ZSI_D2_CACHE > ~/.cache/zsi_d2/embeddings.

    "none" / "off" (either place) disables caching and returns None.
    """
    value = (cache_dir or "").strip() or os.environ.get(CACHE_ENV_VAR, "").strip() or DEFAULT_CACHE_DIR
    if value.lower() in _DISABLED:
        return None
    return os.path.abspath(os.path.expanduser(value))


def path_identity(path: str) -> Dict:
    """Path + size + mtime of a file, or of every file under a directory (a model folder).

    Cheap (no hashing of GB-sized contents) yet changes whenever a file is replaced or edited.
    """
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        files = []
        for root, dirs, names in os.walk(path):
            dirs.sort()
            for n in sorted(names):
                full = os.path.join(root, n)
                st = os.stat(full)
                files.append([os.path.relpath(full, path), st.st_size, st.st_mtime_ns])
        return {"path": path, "files": files}
    st = os.stat(path)
    return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cache_key(payload: Dict) -> str:
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """A folder of `<source>_<hash>.pt` files, each holding the payload it was keyed by."""

    def __init__(self, directory: str):
        self.directory = directory

    def file_for(self, source: str, key: str) -> str:
        return os.path.join(self.directory, f"{source}_{key[:32]}.pt")

    def load(self, source: str, payload: Dict) -> Optional[torch.Tensor]:
        """The cached matrix, or None when absent; unreadable or mismatching files are warned
        about and treated as absent (they are overwritten by the next save)."""
        key = cache_key(payload)
        file = self.file_for(source, key)
        if not os.path.isfile(file):
            return None
        try:
            entry = torch.load(file, map_location="cpu", weights_only=True)
            emb = entry["embeddings"]
            if entry.get("format") != CACHE_FORMAT_VERSION or entry.get("key") != key:
                raise ValueError("cache entry was written for a different key or format")
            if not isinstance(emb, torch.Tensor) or emb.dim() != 2:
                raise ValueError("cached embeddings are not a 2-D tensor")
            if emb.shape[0] != len(payload.get("class_names", ())):
                raise ValueError(f"cached matrix has {emb.shape[0]} rows for {len(payload['class_names'])} names")
        except Exception as e:  # noqa: BLE001 - any unreadable entry is recomputed
            logger.warning("Ignoring corrupt embedding cache file %s (%s: %s); recomputing.", file, type(e).__name__, e)
            return None
        logger.info("Loaded class embeddings from cache %s", file)
        return emb.float().contiguous()

    def save(self, source: str, payload: Dict, embeddings: torch.Tensor) -> Optional[str]:
        """Write atomically; a read-only or full disk only costs a warning, never the run."""
        key = cache_key(payload)
        file = self.file_for(source, key)
        tmp = None
        try:
            os.makedirs(self.directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".pt", dir=self.directory)
            os.close(fd)
            entry = {
                "format": CACHE_FORMAT_VERSION,
                "key": key,
                "payload": json.dumps(payload, sort_keys=True, default=str),
                "embeddings": embeddings.detach().cpu().float().contiguous(),
            }
            torch.save(entry, tmp)
            os.replace(tmp, file)
            tmp = None
        except OSError as e:
            logger.warning("Could not write embedding cache file %s: %s", file, e)
            return None
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.remove(tmp)
        logger.info("Saved class embeddings to cache %s", file)
        return file
