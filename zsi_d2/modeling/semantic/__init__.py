"""Pixel-level zero-shot semantic segmentation: a DeepLab-style model whose last layer scores pixel
features against class names (SPNet) or is re-trained on generated features (ZS3Net, CaGNet, SIGN).
Importing registers ZeroShotSemanticSegmentor and PixelGenerativeSegmentor."""
from .config import add_semantic_config  # noqa: F401
from .meta_arch import ZeroShotSemanticSegmentor, build_pixel_feature_head, pixel_feature_dim  # noqa: F401
from .generative import PixelGenerativeSegmentor, at_most_per_class, compute_pixel_bank, labels_at  # noqa: F401
from .pixel_classifier import (  # noqa: F401
    EmbeddingPixelClassifier, LinearPixelClassifier, build_pixel_classifier, classify_rows,
)
