"""open_clip text encoder ("clip") loaded from a local checkpoint only.

Why so strict: open_clip resolves pretrained tags ("openai", "laion2b_...") and "hf-hub:" names by
downloading. Here PATH must be a local file (state dict / .safetensors, matched to CLIP_ARCH) or a
local open_clip folder (open_clip_config.json + weights); the tokenizer is the BPE SimpleTokenizer
that ships with open_clip, and anything that would reach for the hub (HF tokenizers / text
towers) runs with the hub forced offline, so it works only from local files.
"""
import difflib
import functools
import json
import logging
import os
from typing import List

import torch
import torch.nn.functional as F

from ..errors import InputFileNotFoundError, InputValueError
from .base import CFG_KEY, PromptEncoderSource, hub_offline, register_source
from .cache import path_identity

__all__ = ["CLIPTextSource"]

logger = logging.getLogger(__name__)

_BATCH = 256
_LOCAL_DIR = "local-dir:"


def _missing_checkpoint(detail: str) -> InputFileNotFoundError:
    return InputFileNotFoundError(
        f"SOURCE=clip {detail}. Set {CFG_KEY}.PATH to a local open_clip checkpoint (a state-dict "
        f".pt/.bin/.safetensors file for {CFG_KEY}.CLIP_ARCH, or an open_clip folder with "
        "open_clip_config.json); weights are never downloaded"
    )


@functools.lru_cache(maxsize=2)
def _load_text_model(model_name: str, checkpoint: str, stamp: str):
    """(model, tokenizer), visual tower dropped; memoised per checkpoint identity (`stamp`)."""
    import open_clip

    with hub_offline():
        # require_pretrained: a folder without weights must fail, not give a random model.
        kwargs = dict(
            device="cpu", precision="fp32", pretrained_image=False, pretrained_text=False, require_pretrained=True
        )
        try:
            if model_name.startswith(_LOCAL_DIR):
                model = open_clip.create_model(model_name, **kwargs)
            else:
                model = open_clip.create_model(model_name, pretrained=checkpoint, **kwargs)
        except Exception as e:
            raise RuntimeError(
                f"Could not load open_clip checkpoint {checkpoint} as '{model_name}': {type(e).__name__}: {e}. "
                f"Check that {CFG_KEY}.CLIP_ARCH matches the checkpoint (an OpenAI JIT archive must be "
                "converted to a state dict first)."
            ) from e
        try:
            tokenizer = open_clip.get_tokenizer(model_name)
        except Exception as e:
            raise RuntimeError(
                f"Could not build the tokenizer of '{model_name}' offline: {type(e).__name__}: {e}. "
                "Architectures with a Hugging Face tokenizer need its files in the local HF cache."
            ) from e
    # Only the text tower is used: free the image tower's memory.
    if getattr(model, "visual", None) is not None:
        model.visual = None
    model.eval()
    logger.info("Loaded open_clip text encoder '%s' from %s", model_name, checkpoint)
    return model, tokenizer


@register_source("clip")
class CLIPTextSource(PromptEncoderSource):
    """Prompts encoded by an open_clip text tower, each prompt normalised, then ensembled."""

    def __init__(self, options):
        super().__init__(options)
        arch = (options.clip_arch or "").strip()
        if arch.startswith("hf-hub:"):
            raise InputValueError(
                f"{CFG_KEY}.CLIP_ARCH={arch!r} would download from the Hugging Face hub; use a local "
                f"open_clip folder as {CFG_KEY}.PATH instead"
            )
        if arch.startswith(_LOCAL_DIR):
            raise InputValueError(
                f"{CFG_KEY}.CLIP_ARCH={arch!r}: give the folder as {CFG_KEY}.PATH and an arch name (ignored for folders)"
            )
        if not options.path:
            raise _missing_checkpoint(f"needs a checkpoint but {CFG_KEY}.PATH is empty")
        path = os.path.abspath(os.path.expanduser(options.path))
        if not os.path.exists(path):
            raise _missing_checkpoint(f"checkpoint not found: {path}")
        if os.path.isdir(path):
            if not os.path.isfile(os.path.join(path, "open_clip_config.json")):
                raise _missing_checkpoint(f"folder {path} has no open_clip_config.json")
            self.model_name = _LOCAL_DIR + path
            self.arch_config = None
        else:
            import open_clip

            self.arch_config = open_clip.get_model_config(arch)
            if self.arch_config is None:
                close = difflib.get_close_matches(arch, open_clip.list_models(), n=5)
                raise InputValueError(
                    f"Unknown open_clip architecture {CFG_KEY}.CLIP_ARCH={arch!r}. Close matches: {close}; "
                    "all names: open_clip.list_models(); custom ones: open_clip.add_model_config(json)"
                )
            self.model_name = arch
        self.checkpoint = path
        self._identity = path_identity(path)

    def identity(self):
        return {
            "checkpoint": self._identity,
            "model": self.model_name,
            "arch_config": self.arch_config,
            "templates": list(self.templates),
        }

    def encode_prompts(self, prompts: List[str]) -> torch.Tensor:
        stamp = json.dumps([self._identity, self.arch_config], sort_keys=True, default=str)
        model, tokenizer = _load_text_model(self.model_name, self.checkpoint, stamp)
        out = []
        with torch.no_grad():
            for i in range(0, len(prompts), _BATCH):
                tokens = tokenizer(prompts[i : i + _BATCH])
                out.append(F.normalize(model.encode_text(tokens).float(), dim=-1))
        return torch.cat(out, 0)
