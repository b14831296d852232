"""Named prompt ensembles, chosen with MODEL.ZERO_SHOT.EMBEDDING.PROMPT_ENSEMBLE.

ZegFormer (Ding et al., CVPR 2022) embeds every class name with one of three named template sets
(its `MODEL.PROMPT_ENSEMBLE_TYPE`): "single", "imagenet_select" and "imagenet"; its CLIP image
branch scores masks against a fourth, larger set (IMAGENET_TEMPLATES_SELECT_CLIP). The strings
below are those of dingjiansw101/ZegFormer @8cb9e8f, mask_former/third_party/imagenet_templates.py
(its v1 select set and its v9 CLIP set; the ImageNet set is CLIP's 80 prompt-engineering templates)
and of `transformer_zeroshot_predictor.py` for "single". Trailing periods and capitals are kept as
published: they change the text encoder's output.

A named ensemble is only a list of templates: the source ensembles it exactly as PROMPT_TEMPLATES
(every template x synonym prompt encoded, L2-normalised, averaged; the mean renormalised), and the
cache key holds the resolved templates, so a name and the same list typed out share one cache entry.
Sources that embed names without prompts (word_vectors, attributes) ignore it, with an info line.
"""
from typing import Dict, List, Sequence, Tuple

from ..errors import InputValueError
from .base import CFG_KEY, validate_templates

__all__ = [
    "IMAGENET_TEMPLATES",
    "IMAGENET_TEMPLATES_SELECT",
    "IMAGENET_TEMPLATES_SELECT_CLIP",
    "SINGLE_TEMPLATES",
    "get_prompt_ensemble",
    "list_prompt_ensembles",
    "register_prompt_ensemble",
    "resolve_prompt_templates",
]

# ZegFormer's "single" (its VOC config's and its R-101 COCO-Stuff GZSS eval config's choice).
SINGLE_TEMPLATES = ("A photo of a {} in the scene",)

IMAGENET_TEMPLATES = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.",
    "a bright photo of the {}.", "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.",
    "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.", "a photo of one {}.",
    "a doodle of a {}.", "a close-up photo of the {}.", "a photo of a {}.", "the origami {}.",
    "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.", "a origami {}.",
    "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.", "a photo of the clean {}.",
    "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.", "a photo of a weird {}.",
    "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.", "a embroidered {}.",
    "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)

IMAGENET_TEMPLATES_SELECT = (
    "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
    "a {} in a video game.", "art of the {}.", "a photo of the small {}.", "A photo of a {} in the scene",
)

IMAGENET_TEMPLATES_SELECT_CLIP = (
    "a bad photo of the {}.", "a photo of the large {}.", "a photo of the small {}.",
    "a cropped photo of a {}.", "This is a photo of a {}", "This is a photo of a small {}",
    "This is a photo of a medium {}", "This is a photo of a large {}", "This is a masked photo of a {}",
    "This is a masked photo of a small {}", "This is a masked photo of a medium {}",
    "This is a masked photo of a large {}", "This is a cropped photo of a {}",
    "This is a cropped photo of a small {}", "This is a cropped photo of a medium {}",
    "This is a cropped photo of a large {}", "A photo of a {} in the scene",
    "a bad photo of the {} in the scene", "a photo of the large {} in the scene",
    "a photo of the small {} in the scene", "a cropped photo of a {} in the scene",
    "a photo of a masked {} in the scene", "There is a {} in the scene", "There is the {} in the scene",
    "This is a {} in the scene", "This is the {} in the scene", "This is one {} in the scene",
    "There is a masked {} in the scene", "There is the masked {} in the scene",
    "This is a masked {} in the scene", "This is the masked {} in the scene",
    "This is one masked {} in the scene",
)

_ENSEMBLES: Dict[str, Tuple[str, ...]] = {}


def register_prompt_ensemble(name: str, templates: Sequence[str]) -> None:
    """Make `templates` selectable as MODEL.ZERO_SHOT.EMBEDDING.PROMPT_ENSEMBLE=`name`."""
    key = str(name).strip().lower()
    if not key:
        raise InputValueError("A prompt ensemble needs a non-empty name: name it")
    if key in _ENSEMBLES:
        raise InputValueError(f"Prompt ensemble '{key}' is already registered: choose another name")
    _ENSEMBLES[key] = validate_templates(templates)


def list_prompt_ensembles() -> List[str]:
    return sorted(_ENSEMBLES)


def get_prompt_ensemble(name: str) -> Tuple[str, ...]:
    """The templates of a named ensemble; an unknown name lists the valid ones."""
    key = str(name).strip().lower()
    if key not in _ENSEMBLES:
        raise InputValueError(
            f"Unknown prompt ensemble '{name}' ({CFG_KEY}.PROMPT_ENSEMBLE): set it to one of "
            f"{list_prompt_ensembles()}, or to '' to use {CFG_KEY}.PROMPT_TEMPLATES"
        )
    return _ENSEMBLES[key]


def resolve_prompt_templates(templates, prompt_ensemble: str = "") -> Tuple[str, ...]:
    """The templates a source gets: PROMPT_TEMPLATES as given when no ensemble is named (today's
    behaviour), else the named ensemble's. Naming both is refused rather than silently merged."""
    if isinstance(templates, str):
        templates = (templates,)
    templates = tuple(templates)
    if not str(prompt_ensemble or "").strip():
        return templates
    if templates != ("{}",):
        raise InputValueError(
            f"{CFG_KEY}.PROMPT_ENSEMBLE={prompt_ensemble!r} and {CFG_KEY}.PROMPT_TEMPLATES={list(templates)} "
            "both set the prompts: keep one (PROMPT_TEMPLATES ['{}'] to use the ensemble)"
        )
    return get_prompt_ensemble(prompt_ensemble)


register_prompt_ensemble("single", SINGLE_TEMPLATES)
register_prompt_ensemble("imagenet_select", IMAGENET_TEMPLATES_SELECT)
register_prompt_ensemble("imagenet", IMAGENET_TEMPLATES)
# Not a PROMPT_ENSEMBLE_TYPE of ZegFormer: the text side of its CLIP image branch, named for reuse.
register_prompt_ensemble("imagenet_select_clip", IMAGENET_TEMPLATES_SELECT_CLIP)
