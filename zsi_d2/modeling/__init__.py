"""Model components; importing registers them in detectron2's registries."""
from .backbone import EfficientNetLite, build_efficientnet_lite_fpn_backbone  # noqa: F401
from .class_set import ClassSet, ZeroShotModule, apply_class_set, dataset_class_set, use_class_set  # noqa: F401
from .vocabulary import class_set_metadata, set_vocabulary  # noqa: F401
from .class_embeddings import ClassEmbeddings  # noqa: F401
from .embedding_classifier import EmbeddingClassifier  # noqa: F401
from .meta_arch import ZeroShotRCNN  # noqa: F401
from .roi_heads import ProjectionBoxPredictor, ZeroShotROIHeads  # noqa: F401
from .mask_former import ZeroShotMaskFormer  # noqa: F401
from .semantic import ZeroShotSemanticSegmentor  # noqa: F401
