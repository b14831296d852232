"""Mask-classification core (Mask2Former-style), pure PyTorch: see docs/design/mask_former_core.md.

Importing registers ZeroShotMaskFormer (META_ARCH_REGISTRY), the pixel decoders
(PIXEL_DECODER_REGISTRY) and the transformer decoders (TRANSFORMER_DECODER_REGISTRY: Mask2Former's
and MaskFormer's).
"""
from .config import add_mask_former_config  # noqa: F401
from .meta_arch import ZeroShotMaskFormer  # noqa: F401
from .pixel_decoder import PIXEL_DECODER_REGISTRY, build_pixel_decoder  # noqa: F401
from .transformer_decoder import TRANSFORMER_DECODER_REGISTRY, build_transformer_decoder  # noqa: F401
from .standard_decoder import StandardTransformerDecoder  # noqa: F401
