"""ZegFormer (Ding et al., CVPR 2022): zero-shot semantic segmentation decoupled into class-agnostic
grouping (queries -> masks) and segment-level classification against the class names' text
embeddings. Built on the mask-classification core (zsi_d2.modeling.mask_former) with MaskFormer's
decoder and criterion as the core's options; see docs/zegformer.md."""
from .config import add_zegformer_config  # noqa: F401
from .meta_arch import ZegFormer  # noqa: F401
from .segment_classifier import SegmentClassifier  # noqa: F401
