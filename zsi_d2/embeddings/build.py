"""Entry points: class names (+ config) in, (C, D) L2-normalised float32 tensor out.

`get_class_embeddings` is the config-free core; `build_class_embeddings` and
`build_background_embedding` read MODEL.ZERO_SHOT.EMBEDDING and the split, so the model code never
has to know which source is configured.
"""
import logging
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..errors import InputValueError
from .attributes import attribute_vocabulary
from .base import CFG_KEY, EmbeddingOptions, MissingEmbeddingError, get_source_class, validate_class_names
from .cache import CACHE_FORMAT_VERSION, EmbeddingCache, resolve_cache_dir
from .prompts import resolve_prompt_templates
from .word_vectors import BACKGROUND, plain_file_dim

__all__ = ["build_background_embedding", "build_class_embeddings", "get_class_embeddings", "resolve_split",
           "unit_class_embeddings"]

logger = logging.getLogger(__name__)


def _finalise(emb: torch.Tensor, names, source: str) -> torch.Tensor:
    """Check the source's output and L2-normalise rows (a zero row cannot be normalised)."""
    emb = torch.as_tensor(emb).detach().cpu().float()
    if emb.dim() != 2 or emb.shape[0] != len(names):
        raise RuntimeError(f"Source '{source}' returned shape {tuple(emb.shape)} for {len(names)} class names")
    norms = emb.norm(dim=1)
    bad = [n for n, ok in zip(names, torch.isfinite(emb).all(dim=1) & (norms > 1e-12)) if not ok]
    if bad:
        raise InputValueError(f"Source '{source}' ({CFG_KEY}.SOURCE) gives zero or non-finite embeddings for "
                              f"classes {bad}: fix their vectors (in {CFG_KEY}.PATH) or choose another source")
    return F.normalize(emb, dim=1).contiguous()


def _check_dim(emb: torch.Tensor, dim: int, source: str):
    dim = int(dim or 0)
    if dim > 0 and emb.shape[1] != dim:
        raise InputValueError(
            f"{CFG_KEY}.DIM={dim} but source '{source}' gives {emb.shape[1]}-d embeddings: set DIM to "
            f"{emb.shape[1]} (or 0 to accept any), or pick a source of dimension {dim}"
        )


def get_class_embeddings(
    source: str,
    class_names: Sequence[str],
    *,
    path: str = "",
    clip_arch: str = "ViT-B-16",
    templates=("{}",),
    prompt_ensemble: str = "",
    dim: int = 0,
    cache_dir: str = "",
    column_names: Optional[Sequence[str]] = None,
    vocabulary: Optional[Sequence[str]] = None,
) -> torch.Tensor:
    """(C, D) float32 CPU tensor, rows L2-normalised, row i for class_names[i].

    source: a registered source ("minilm", "clip", "word_vectors", "attributes", ...).
    path: word-vector file / open_clip checkpoint / local sentence-encoder folder.
    templates: prompt templates with "{}"; text encoders average over them (and over synonyms).
    prompt_ensemble: a named template set (zsi_d2.embeddings.prompts: "single", "imagenet_select",
    "imagenet", ...) used instead of `templates`; "" = use `templates`.
    dim: expected D (0 = any). cache_dir: cache folder ("" = env ZSI_D2_CACHE or
    ~/.cache/zsi_d2/embeddings; "none" disables). column_names: names of the columns of a
    ZSI-layout word-vector matrix, background first. vocabulary: the "attributes" word list.
    """
    names = validate_class_names(class_names)
    source_cls = get_source_class(source)
    templates = resolve_prompt_templates(templates, prompt_ensemble)
    if templates != ("{}",) and not source_cls.uses_templates:
        what = f"PROMPT_ENSEMBLE '{prompt_ensemble}'" if prompt_ensemble else f"PROMPT_TEMPLATES {list(templates)}"
        logger.info("Source '%s' embeds class names without prompts: %s.%s is ignored", source_cls.name, CFG_KEY, what)
    options = EmbeddingOptions(
        path=str(path or ""),
        clip_arch=str(clip_arch or ""),
        templates=templates,
        column_names=tuple(column_names) if column_names is not None else None,
        vocabulary=tuple(vocabulary) if vocabulary is not None else None,
    )
    src = source_cls(options)  # validates files/arch before any cache lookup
    root = resolve_cache_dir(cache_dir) if src.cacheable else None
    cache = EmbeddingCache(root) if root else None
    payload = None
    emb = None
    if cache is not None:
        payload = {
            "format": CACHE_FORMAT_VERSION,
            "source": src.name,
            "identity": src.identity(),
            "class_names": list(names),
        }
        emb = cache.load(src.name, payload)
    if emb is None:
        logger.info("Computing %d class embeddings with source '%s'", len(names), src.name)
        emb = _finalise(src.embed(names), names, src.name)
        if cache is not None:
            cache.save(src.name, payload, emb)
    _check_dim(emb, dim, src.name)
    return emb


def _dataset_metadata(cfg):
    """(split names, class names) recorded in the configured datasets' metadata."""
    try:
        from detectron2.data import MetadataCatalog
    except ImportError:
        return [], []
    splits, names = [], []
    for dataset in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        meta = MetadataCatalog.get(dataset)
        split = meta.get("zero_shot_split", None)  # set by zsi_d2.data.set_zero_shot_metadata
        if split and split not in splits:
            splits.append(split)
        for field in ("thing_classes", "stuff_classes", "seen_classes", "unseen_classes"):
            for n in meta.get(field, None) or ():
                if n not in names:
                    names.append(n)
    return splits, names


def resolve_split(cfg, class_names: Optional[Sequence[str]] = None):
    """The split that fixes column order / vocabulary: MODEL.ZERO_SHOT.SPLIT, else the one split
    the configured datasets' metadata names, else the one registered split containing all the
    class names (given, or from the metadata); None when that is ambiguous."""
    from ..data.splits import get_split, list_splits

    name = cfg.MODEL.ZERO_SHOT.SPLIT
    if name:
        return get_split(name)
    meta_splits, meta_names = _dataset_metadata(cfg)
    if len(meta_splits) == 1:
        split = get_split(meta_splits[0])
        if not class_names or set(class_names) <= set(split.classes) | set(split.ignored):
            return split
    names = set(class_names or meta_names)
    if not names:
        return None
    fits = {}
    for split_name in list_splits():
        split = get_split(split_name)
        if names <= set(split.classes) | set(split.ignored):
            fits.setdefault((split.classes, split.ignored), split)
    if len(fits) == 1:
        split = next(iter(fits.values()))
        logger.info("MODEL.ZERO_SHOT.SPLIT is empty; using split '%s', the only one naming these classes", split.name)
        return split
    return None


def _cfg_options(cfg, class_names=None):
    """Keyword arguments of get_class_embeddings taken from the config (+ split-derived ones)."""
    e = cfg.MODEL.ZERO_SHOT.EMBEDDING
    source = str(e.SOURCE).strip().lower()
    kwargs = dict(
        path=e.PATH,
        clip_arch=e.CLIP_ARCH,
        templates=tuple(e.PROMPT_TEMPLATES),
        prompt_ensemble=e.PROMPT_ENSEMBLE,
        dim=int(e.DIM),
        cache_dir=e.CACHE_DIR,
    )
    if source in ("word_vectors", "attributes"):
        split = resolve_split(cfg, class_names)
        if split is not None and source == "word_vectors":
            kwargs["column_names"] = (BACKGROUND,) + tuple(split.classes)
        if split is not None and source == "attributes":
            # The split (not the caller's subset) fixes D, so seen-only and all-class calls agree.
            kwargs["vocabulary"] = attribute_vocabulary(split.classes + split.ignored)
    return source, kwargs


def build_class_embeddings(cfg, class_names: Sequence[str], split_for: Optional[Sequence[str]] = None) -> torch.Tensor:
    """(C, D) embeddings of `class_names` from the source configured in MODEL.ZERO_SHOT.EMBEDDING.
    `split_for`: the names that find the split (default `class_names`); a model's own class names, when
    names outside its split are embedded in its space (a word-vector matrix's columns, the attribute words)."""
    names = validate_class_names(class_names)
    source, kwargs = _cfg_options(cfg, names if split_for is None else tuple(split_for))
    return get_class_embeddings(source, names, **kwargs)


def build_background_embedding(cfg, class_names: Optional[Sequence[str]] = None) -> torch.Tensor:
    """(D,) background embedding: column 0 of a ZSI-layout word-vector matrix, otherwise the
    source's embedding of "background". `class_names` only helps the attributes source find its
    vocabulary when MODEL.ZERO_SHOT.SPLIT is empty."""
    source, kwargs = _cfg_options(cfg, class_names)
    if source == "attributes" and "vocabulary" not in kwargs:
        if not class_names:
            raise InputValueError(
                "SOURCE=attributes: the background vector's dimension depends on the class vocabulary; "
                "set MODEL.ZERO_SHOT.SPLIT (or pass class_names to build_background_embedding)"
            )
        kwargs["vocabulary"] = attribute_vocabulary(validate_class_names(class_names))
    try:
        return get_class_embeddings(source, (BACKGROUND,), **kwargs)[0]
    except MissingEmbeddingError:
        if source != "word_vectors":
            raise
    # A plain "word v1 ... vD" file need not contain the word "background": no class name describes
    # background anyway, so it starts as a random unit vector and is learned (as in every zsi_d2 head).
    dim = plain_file_dim(cfg.MODEL.ZERO_SHOT.EMBEDDING.PATH)
    logger.warning(
        f"The word-vector file {cfg.MODEL.ZERO_SHOT.EMBEDDING.PATH} has no word 'background': the background "
        "embedding starts as a random unit vector and is learned. Add a 'background' line to the file to fix it."
    )
    return F.normalize(torch.randn(dim), dim=0)


def unit_class_embeddings(cfg, class_names: Sequence[str]) -> torch.Tensor:
    """(C, D) float32 embeddings of `class_names`, each of unit length: what the feature generators of
    PADing, ZS3Net and CaGNet are conditioned on."""
    return F.normalize(build_class_embeddings(cfg, class_names).float(), dim=1)
