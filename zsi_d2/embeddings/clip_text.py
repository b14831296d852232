"""open_clip text encoder ("clip") loaded from a local checkpoint only.

Why so strict: open_clip resolves pretrained tags ("openai", "laion2b_...") and "hf-hub:" names by
downloading. Here PATH must be a local file (state dict / .safetensors, matched to CLIP_ARCH) or a
local open_clip folder (open_clip_config.json + weights); the tokenizer is the BPE SimpleTokenizer
that ships with open_clip, and anything that would reach for the hub (HF tokenizers / text
towers) runs with the hub forced offline, so it works only from local files.
"""
import functools
import json
import logging
from typing import List

import torch
import torch.nn.functional as F

from ..utils.open_clip_local import LocalOpenClip, create_local_open_clip, resolve_local_open_clip
from .base import CFG_KEY, PromptEncoderSource, hub_offline, register_source
from .cache import path_identity

__all__ = ["CLIPTextSource"]

logger = logging.getLogger(__name__)

_BATCH = 256


@functools.lru_cache(maxsize=2)
def _load_text_model(ckpt: LocalOpenClip, stamp: str):
    """(model, tokenizer), visual tower dropped; memoised per checkpoint identity (`stamp`)."""
    import open_clip

    model = create_local_open_clip(ckpt)
    with hub_offline():
        try:
            tokenizer = open_clip.get_tokenizer(ckpt.model_name)
        except Exception as e:
            raise RuntimeError(
                f"Could not build the tokenizer of '{ckpt.model_name}' offline: {type(e).__name__}: {e}. "
                "Architectures with a Hugging Face tokenizer need its files in the local HF cache."
            ) from e
    # Only the text tower is used: free the image tower's memory.
    if getattr(model, "visual", None) is not None:
        model.visual = None
    logger.info("Loaded open_clip text encoder '%s' from %s", ckpt.model_name, ckpt.path)
    return model, tokenizer


@register_source("clip")
class CLIPTextSource(PromptEncoderSource):
    """Prompts encoded by an open_clip text tower, each prompt normalised, then ensembled."""

    def __init__(self, options):
        super().__init__(options)
        self.ckpt = resolve_local_open_clip(
            options.path, options.clip_arch, path_key=f"{CFG_KEY}.PATH", arch_key=f"{CFG_KEY}.CLIP_ARCH",
            what="SOURCE=clip",
        )
        self.model_name = self.ckpt.model_name
        self.arch_config = self.ckpt.arch_config
        self.checkpoint = self.ckpt.path
        self._identity = path_identity(self.checkpoint)

    def identity(self):
        return {
            "checkpoint": self._identity,
            "model": self.model_name,
            "arch_config": self.arch_config,
            "templates": list(self.templates),
        }

    def encode_prompts(self, prompts: List[str]) -> torch.Tensor:
        stamp = json.dumps([self._identity, self.arch_config], sort_keys=True, default=str)
        model, tokenizer = _load_text_model(self.ckpt, stamp)
        out = []
        with torch.no_grad():
            for i in range(0, len(prompts), _BATCH):
                tokens = tokenizer(prompts[i : i + _BATCH])
                out.append(F.normalize(model.encode_text(tokens).float(), dim=-1))
        return torch.cat(out, 0)
