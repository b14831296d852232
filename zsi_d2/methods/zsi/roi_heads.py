"""ZSI's ROI heads: the zero-shot detector for boxes; masks from MODEL.ROI_MASK_HEAD.NAME
(SemanticMaskHead, or a class-agnostic standard head for the ablation)."""
from detectron2.modeling import ROI_HEADS_REGISTRY

from ...modeling.roi_heads import ZeroShotROIHeads
from .zero_shot_detector import ZeroShotDetectorPredictor

__all__ = ["ZSIROIHeads"]


@ROI_HEADS_REGISTRY.register()
class ZSIROIHeads(ZeroShotROIHeads):
    box_predictor_cls = ZeroShotDetectorPredictor
