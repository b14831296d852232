"""Class-name embeddings for zero-shot classifiers: names in, (C, D) unit rows out.

Sources (MODEL.ZERO_SHOT.EMBEDDING.SOURCE): "minilm" (default, offline sentence encoder),
"clip" (open_clip text tower from a local checkpoint), "word_vectors" (GloVe/word2vec text or a
ZSI D x (1+C) matrix), "attributes" (multi-hot words, an oracle for zs_shapes). Results are cached
on disk (see `cache`). Named prompt ensembles (MODEL.ZERO_SHOT.EMBEDDING.PROMPT_ENSEMBLE: ZegFormer's
"single", "imagenet_select", "imagenet") live in `prompts`. Heavy libraries (open_clip,
transformers) load only when a source needs them.
"""
from . import attributes, clip_text, prompts, sentence_encoder, word_vectors  # noqa: F401  (register sources)
from .attributes import attribute_vocabulary
from .base import (
    EMBEDDING_SOURCE_REGISTRY,
    EmbeddingOptions,
    EmbeddingSource,
    MissingEmbeddingError,
    PromptEncoderSource,
    list_sources,
    register_source,
    split_synonyms,
)
from .build import (
    build_background_embedding, build_class_embeddings, get_class_embeddings, resolve_split, unit_class_embeddings,
)
from .cache import resolve_cache_dir
from .prompts import get_prompt_ensemble, list_prompt_ensembles, register_prompt_ensemble

__all__ = [
    "EMBEDDING_SOURCE_REGISTRY",
    "EmbeddingOptions",
    "EmbeddingSource",
    "MissingEmbeddingError",
    "PromptEncoderSource",
    "attribute_vocabulary",
    "build_background_embedding",
    "build_class_embeddings",
    "unit_class_embeddings",
    "get_class_embeddings",
    "get_prompt_ensemble",
    "list_prompt_ensembles",
    "list_sources",
    "register_prompt_ensemble",
    "register_source",
    "resolve_cache_dir",
    "resolve_split",
    "split_synonyms",
]
