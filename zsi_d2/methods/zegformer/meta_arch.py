"""ZegFormer's meta-architecture: the mask-classification core with ZegFormer's segment classifier.

What ZegFormer adds to the core is configuration (MaskFormer's decoder over the backbone's res5,
MaskFormer's whole-mask criterion: configs/zegformer/) and, here, its segment classifier and its
test-time seen-score subtraction on the semantic output (MODEL.ZEGFORMER.GZERO_CALIBRATE). The
decoder may also be the core's Mask2Former decoder (a config change). Training, class-set
switching and the semantic / panoptic / instance outputs are the core's.
"""
from typing import Dict, List

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList

from ...errors import InputValueError
from ...modeling.mask_former.meta_arch import ZeroShotMaskFormer
from .segment_classifier import build_segment_classifier

__all__ = ["ZegFormer"]


@META_ARCH_REGISTRY.register()
class ZegFormer(ZeroShotMaskFormer):
    """Class-agnostic segments from queries, classified by name (Ding et al., CVPR 2022)."""

    @configurable
    def __init__(self, *, gzero_calibrate: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.gzero_calibrate = gzero_calibrate

    @classmethod
    def from_config(cls, cfg):
        if cfg.MODEL.ZEGFORMER.GZERO_CALIBRATE < 0:
            raise InputValueError(f"MODEL.ZEGFORMER.GZERO_CALIBRATE must be >= 0, got {cfg.MODEL.ZEGFORMER.GZERO_CALIBRATE}")
        ret = super().from_config(cfg)
        ret["gzero_calibrate"] = cfg.MODEL.ZEGFORMER.GZERO_CALIBRATE
        return ret

    @classmethod
    def build_classifier(cls, cfg):
        if cfg.MODEL.MASK_FORMER.CLASSIFIER != "embedding":
            raise InputValueError(f"ZegFormer classifies segments by their class names' embeddings: "
                                  f"MODEL.MASK_FORMER.CLASSIFIER '{cfg.MODEL.MASK_FORMER.CLASSIFIER}' must be "
                                  "'embedding' (its segment classifier replaces it)")
        return build_segment_classifier(cfg)

    def inference(self, outputs: Dict, batched_inputs: List[Dict], images: ImageList,
                  panoptic_as_tensors: bool = False) -> List[Dict]:
        results = super().inference(outputs, batched_inputs, images, panoptic_as_tensors)
        if self.gzero_calibrate and self.semantic_on:
            seen = self.class_set.is_seen_dataset.to(self.device)
            for r in results:
                r["sem_seg"] = r["sem_seg"] - self.gzero_calibrate * seen[:, None, None].to(r["sem_seg"].dtype)
        return results
