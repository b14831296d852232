"""open_clip models from local files only: checking a configured checkpoint and loading it.

Why: open_clip resolves pretrained tags ("openai", "laion2b_...") and "hf-hub:" names by
downloading. Every zsi_d2 user of open_clip (the "clip" text-embedding source, the CLIP image
branch) names a local file in its config instead: a state dict / .safetensors matched to an
architecture name, or an open_clip folder (open_clip_config.json + weights). The config keys are
arguments, so each caller's one-line errors name its own keys.
"""
import difflib
import os
from dataclasses import dataclass, field
from typing import Optional

from ..errors import InputFileNotFoundError, InputValueError

__all__ = ["LocalOpenClip", "resolve_local_open_clip", "create_local_open_clip"]

LOCAL_DIR = "local-dir:"


@dataclass(frozen=True)
class LocalOpenClip:
    """A checked local checkpoint: open_clip's model name ("local-dir:<folder>" for a folder),
    the absolute path, the architecture's config dict (None for a folder) and the config keys.
    Hashable (a memo key); the config dict is left out of the hash."""

    model_name: str
    path: str
    arch_config: Optional[dict] = field(compare=False)  # a dict: unhashable, and implied by model_name
    path_key: str
    arch_key: str


def _missing(what: str, path_key: str, arch_key: str, detail: str) -> InputFileNotFoundError:
    return InputFileNotFoundError(
        f"{what} {detail}. Set {path_key} to a local open_clip checkpoint (a state-dict .pt/.bin/.safetensors "
        f"file for {arch_key}, or an open_clip folder with open_clip_config.json); weights are never downloaded"
    )


def resolve_local_open_clip(path: str, arch: str, *, path_key: str, arch_key: str, what: str) -> LocalOpenClip:
    """Check `path` (file or open_clip folder) and `arch` (ignored for folders) without loading.

    `what` starts the missing-file message (e.g. "SOURCE=clip"). "ViT-B/16" (OpenAI's spelling,
    ZegFormer's configs) is read as open_clip's "ViT-B-16", as open_clip.create_model does.
    """
    arch = (arch or "").strip().replace("/", "-")
    if arch.startswith("hf-hub:"):
        raise InputValueError(
            f"{arch_key}={arch!r} would download from the Hugging Face hub; use a local open_clip folder as "
            f"{path_key} instead"
        )
    if arch.startswith(LOCAL_DIR):
        raise InputValueError(
            f"{arch_key}={arch!r}: give the folder as {path_key} and an arch name (ignored for folders)"
        )
    if not path:
        raise _missing(what, path_key, arch_key, f"needs a checkpoint but {path_key} is empty")
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        raise _missing(what, path_key, arch_key, f"checkpoint not found: {path}")
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "open_clip_config.json")):
            raise _missing(what, path_key, arch_key, f"folder {path} has no open_clip_config.json")
        return LocalOpenClip(LOCAL_DIR + path, path, None, path_key, arch_key)
    import open_clip

    arch_config = open_clip.get_model_config(arch)
    if arch_config is None:
        close = difflib.get_close_matches(arch, open_clip.list_models(), n=5)
        raise InputValueError(
            f"Unknown open_clip architecture {arch_key}={arch!r}. Close matches: {close}; "
            "all names: open_clip.list_models(); custom ones: open_clip.add_model_config(json)"
        )
    return LocalOpenClip(arch, path, arch_config, path_key, arch_key)


def create_local_open_clip(ckpt: LocalOpenClip):
    """The whole open_clip model (fp32, CPU, eval mode) with the checkpoint's weights, loaded with
    the Hugging Face hub forced offline. A file that is not a checkpoint of that architecture
    (unreadable, truncated, other architecture, OpenAI JIT archive) is an InputValueError in one line."""
    import open_clip

    from ..embeddings.base import hub_offline

    # require_pretrained: a folder without weights must fail, not give a random model.
    kwargs = dict(device="cpu", precision="fp32", pretrained_image=False, pretrained_text=False,
                  require_pretrained=True)
    with hub_offline():
        try:
            if ckpt.model_name.startswith(LOCAL_DIR):
                model = open_clip.create_model(ckpt.model_name, **kwargs)
            else:
                model = open_clip.create_model(ckpt.model_name, pretrained=ckpt.path, **kwargs)
        except Exception as e:
            # One line: the cause's own text (a list of keys, torch.load's advice) stays in the chained error.
            fits = isinstance(e, RuntimeError) and "state_dict" in str(e)
            reason = "its tensors do not fit that architecture" if fits else f"{type(e).__name__} while loading"
            raise InputValueError(
                f"{ckpt.path_key}={ckpt.path} is not a readable open_clip checkpoint of {ckpt.arch_key}="
                f"'{ckpt.model_name}' ({reason}): check that {ckpt.arch_key} matches the checkpoint (an OpenAI "
                "JIT archive must be converted to a state dict first)"
            ) from e
    return model.eval()
