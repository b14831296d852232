"""Registry of zero-shot feature generators, keyed by the names a config gives (e.g. MODEL.PADING.GENERATOR).

Why: PADing's ablation swaps its primitive generator for ZS3Net's GMMN; the pixel-level methods
(ZS3Net, CaGNet, SIGN) pick theirs the same way. Entries are builder functions taking the
generator's constructor keyword arguments.
"""
from detectron2.utils.registry import Registry

from ...errors import InputValueError
from .gmmn import GMMNGenerator
from .primitive_generator import PrimitiveGenerator

__all__ = ["GENERATOR_REGISTRY", "build_generator"]

GENERATOR_REGISTRY = Registry("ZERO_SHOT_GENERATOR")
GENERATOR_REGISTRY.__doc__ = "name -> builder(**kwargs) of a feature generator (nn.Module)."


@GENERATOR_REGISTRY.register()
def primitive(**kwargs) -> PrimitiveGenerator:
    return PrimitiveGenerator(**kwargs)


@GENERATOR_REGISTRY.register()
def gmmn(**kwargs) -> GMMNGenerator:
    return GMMNGenerator(**kwargs)


def build_generator(name: str, **kwargs):
    """``build_generator("primitive", embed_dim=512)``; ValueError naming the valid names otherwise."""
    if name not in GENERATOR_REGISTRY:
        valid = ", ".join(sorted(k for k, _ in GENERATOR_REGISTRY))
        raise InputValueError(f"Unknown zero-shot generator {name!r} (MODEL.PADING.GENERATOR): use one of {valid}")
    return GENERATOR_REGISTRY.get(name)(**kwargs)
