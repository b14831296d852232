"""ZegFormer's meta-architecture: the mask-classification core with ZegFormer's segment classifier
and, at test time, its CLIP image branch and seen-score subtraction on the semantic output.

What ZegFormer adds to the core is mostly configuration (MaskFormer's decoder over the backbone's
res5 and MaskFormer's whole-mask criterion, both options of the core: configs/zegformer/); here:
- its segment classifier (`SegmentClassifier`);
- the CLIP image branch (zsi_d2.modeling.clip_image_branch; on with a local CLIP checkpoint): the
  semantic output sums the fused segmenter + CLIP probabilities as published; the panoptic and
  instance outputs (the core's, which ZegFormer does not have) stay the segmenter's;
- MODEL.MASK_FORMER.GZERO_CALIBRATE, subtracted from the seen channels of the semantic output last.
The decoder may also be the core's Mask2Former decoder (a config change).
"""
from typing import Dict, List

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList

from ...errors import InputValueError
from ...modeling.clip_image_branch import ClipImageBranch, gzero_calibrate
from ...modeling.mask_former.meta_arch import ZeroShotMaskFormer
from .segment_classifier import build_segment_classifier

__all__ = ["ZegFormer"]


@META_ARCH_REGISTRY.register()
class ZegFormer(ZeroShotMaskFormer):
    """Class-agnostic segments from queries, classified by name (Ding et al., CVPR 2022)."""

    @configurable
    def __init__(self, *, image_branch: ClipImageBranch, gzero_calibrate: float = -1.0, **kwargs):
        super().__init__(**kwargs)
        self.image_branch = image_branch
        self.gzero_calibrate = gzero_calibrate

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["image_branch"] = ClipImageBranch(cfg)
        ret["gzero_calibrate"] = cfg.MODEL.MASK_FORMER.GZERO_CALIBRATE
        return ret

    @classmethod
    def build_classifier(cls, cfg):
        if cfg.MODEL.MASK_FORMER.CLASSIFIER != "embedding":
            raise InputValueError(f"ZegFormer classifies segments by their class names' embeddings: "
                                  f"MODEL.MASK_FORMER.CLASSIFIER '{cfg.MODEL.MASK_FORMER.CLASSIFIER}' must be "
                                  "'embedding' (its segment classifier replaces it)")
        return build_segment_classifier(cfg)

    def semantic_class_probabilities(self, mask_cls, mask_pred, batched_input):
        if not self.image_branch.enabled:
            return None
        text = self.image_branch.class_embeddings(self.class_set.names)
        return self.image_branch.classify(batched_input["image"], mask_pred, mask_cls, self.class_set.is_seen, text)

    def inference(self, outputs: Dict, batched_inputs: List[Dict], images: ImageList,
                  panoptic_as_tensors: bool = False) -> List[Dict]:
        results = super().inference(outputs, batched_inputs, images, panoptic_as_tensors)
        if self.semantic_on and self.gzero_calibrate > 0:
            seen = self.class_set.is_seen_dataset
            for r in results:
                r["sem_seg"] = gzero_calibrate(r["sem_seg"], seen, self.gzero_calibrate)
        return results
