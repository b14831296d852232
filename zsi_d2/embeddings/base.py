"""The embedding-source interface, its registry and the class-name handling every source shares.

Why a registry: the config names a source (`MODEL.ZERO_SHOT.EMBEDDING.SOURCE`); a project can add
its own source with `@register_source("name")` without touching zsi_d2.
"""
import abc
import contextlib
import logging
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from fvcore.common.registry import Registry

from ..errors import InputKeyError, InputValueError

__all__ = [
    "EMBEDDING_SOURCE_REGISTRY",
    "EmbeddingOptions",
    "EmbeddingSource",
    "MissingEmbeddingError",
    "PromptEncoderSource",
    "fill_template",
    "get_source_class",
    "hub_offline",
    "list_sources",
    "register_source",
    "split_synonyms",
    "validate_class_names",
    "validate_templates",
]

logger = logging.getLogger(__name__)

EMBEDDING_SOURCE_REGISTRY = Registry("ZSI_EMBEDDING_SOURCE")
EMBEDDING_SOURCE_REGISTRY.__doc__ = """
Class-name embedding sources, keyed by the value of MODEL.ZERO_SHOT.EMBEDDING.SOURCE.
Each entry is an `EmbeddingSource` subclass constructed with an `EmbeddingOptions`.
"""

CFG_KEY = "MODEL.ZERO_SHOT.EMBEDDING"

# "tv, monitor" and "sofa; couch" name one class twice; every source averages the parts.
_SYNONYM_SEPARATORS = re.compile(r"\s*[,;]\s*")


class MissingEmbeddingError(InputKeyError):
    """A class name the source cannot embed: an input error (train_net.py reports it in one line),
    and a KeyError whose message prints unquoted."""


def register_source(name: str):
    """Class decorator: register an EmbeddingSource under the config value `name`."""

    def deco(cls):
        cls.name = name
        EMBEDDING_SOURCE_REGISTRY._do_register(name, cls)
        return cls

    return deco


def list_sources() -> List[str]:
    return sorted(name for name, _ in EMBEDDING_SOURCE_REGISTRY)


def get_source_class(name: str):
    """The registered source class for a config value; unknown names list the valid ones."""
    key = str(name).strip().lower()
    if key not in EMBEDDING_SOURCE_REGISTRY:
        raise InputValueError(
            f"Unknown embedding source '{name}' ({CFG_KEY}.SOURCE): set it to one of {list_sources()}"
        )
    return EMBEDDING_SOURCE_REGISTRY.get(key)


def validate_class_names(class_names) -> Tuple[str, ...]:
    """Class names as a tuple of non-empty strings; catches the classic `"red circle"` for a list."""
    if isinstance(class_names, str):
        raise TypeError(
            f"class_names must be a sequence of names, got the single string {class_names!r}; "
            f"wrap it in a list: [{class_names!r}]"
        )
    names = tuple(class_names)
    if not names:
        raise InputValueError("Empty class list: there is nothing to embed (class_names is empty); "
                              "give at least one class name")
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise InputValueError(f"Class names must be non-empty strings, got {bad!r}: name every class")
    return names


def validate_templates(templates) -> Tuple[str, ...]:
    """Prompt templates as a tuple; each needs the "{}" placeholder or all classes would collide."""
    if isinstance(templates, str):
        templates = (templates,)
    templates = tuple(templates)
    if not templates:
        raise InputValueError(f"{CFG_KEY}.PROMPT_TEMPLATES is empty: use ['{{}}'] for the bare class name")
    for t in templates:
        if not isinstance(t, str) or "{}" not in t:
            raise InputValueError(
                f"Prompt template {t!r} has no '{{}}' placeholder for the class name "
                f"({CFG_KEY}.PROMPT_TEMPLATES)"
            )
    return templates


def fill_template(template: str, name: str) -> str:
    # str.replace, not str.format: templates may contain other braces.
    return template.replace("{}", name)


def split_synonyms(name: str) -> List[str]:
    """'tv, monitor' -> ['tv', 'monitor']; a plain name -> [name]."""
    parts = [p.strip() for p in _SYNONYM_SEPARATORS.split(name.strip())]
    parts = [p for p in parts if p]
    if not parts:
        raise InputValueError(f"Class name {name!r} has no words to embed: give the class a name with words")
    return parts


@contextlib.contextmanager
def hub_offline():
    """Force huggingface_hub/transformers offline for the duration (loading must never download).

    huggingface_hub reads HF_HUB_OFFLINE when imported, so the module constant is patched too.
    """
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    saved_env = {k: os.environ.get(k) for k in keys}
    patched = []
    try:
        for k in keys:
            os.environ[k] = "1"
        try:
            import huggingface_hub.constants as hf_constants

            if hasattr(hf_constants, "HF_HUB_OFFLINE"):
                patched.append((hf_constants, "HF_HUB_OFFLINE", hf_constants.HF_HUB_OFFLINE))
                hf_constants.HF_HUB_OFFLINE = True
        except ImportError:
            pass
        yield
    finally:
        for module, attr, value in patched:
            setattr(module, attr, value)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass(frozen=True)
class EmbeddingOptions:
    """Everything a source may read; each source uses the fields that concern it."""

    path: str = ""
    clip_arch: str = "ViT-B-16"
    templates: Tuple[str, ...] = ("{}",)
    column_names: Optional[Tuple[str, ...]] = None
    vocabulary: Optional[Tuple[str, ...]] = None


class EmbeddingSource(abc.ABC):
    """Turns class names into a (C, D) matrix. Rows need not be normalised: the caller does it.

    Subclasses check their inputs (files, architecture) in __init__ so errors surface before any
    cache lookup, and describe in `identity()` everything besides the names that the result
    depends on: that dict is hashed into the cache key.
    """

    name: str = ""
    # Sources that are cheaper to compute than to read from disk opt out of caching.
    cacheable: bool = True
    # Whether the source reads options.templates (prompt encoders); the others ignore them.
    uses_templates: bool = False

    def __init__(self, options: EmbeddingOptions):
        self.options = options

    @abc.abstractmethod
    def identity(self) -> Dict:
        """JSON-serialisable description of the source's inputs (file identity, arch, templates)."""

    @abc.abstractmethod
    def embed(self, class_names: Sequence[str]) -> torch.Tensor:
        """(len(class_names), D) float tensor, row i for class_names[i]."""


class PromptEncoderSource(EmbeddingSource):
    """A text encoder applied to prompts: each (synonym, template) prompt is encoded and
    L2-normalised, then averaged per class (prompt ensembling, as in CLIP's zero-shot recipe)."""

    uses_templates = True

    def __init__(self, options: EmbeddingOptions):
        super().__init__(options)
        self.templates = validate_templates(options.templates)

    @abc.abstractmethod
    def encode_prompts(self, prompts: List[str]) -> torch.Tensor:
        """(len(prompts), D) L2-normalised embeddings."""

    def embed(self, class_names: Sequence[str]) -> torch.Tensor:
        prompts, owner = [], []
        for i, name in enumerate(class_names):
            for part in split_synonyms(name):
                for template in self.templates:
                    prompts.append(fill_template(template, part))
                    owner.append(i)
        encoded = self.encode_prompts(prompts).float()
        if encoded.shape[0] != len(prompts):
            raise RuntimeError(
                f"Source '{self.name}' returned {encoded.shape[0]} embeddings for {len(prompts)} prompts"
            )
        owner = torch.tensor(owner, dtype=torch.long)
        sums = torch.zeros(len(class_names), encoded.shape[1], dtype=encoded.dtype)
        sums.index_add_(0, owner, encoded)
        counts = torch.bincount(owner, minlength=len(class_names)).to(encoded.dtype)
        return sums / counts[:, None]
