"""ZSI's ROI heads: the zero-shot detector for boxes; masks from MODEL.ROI_MASK_HEAD.NAME
(SemanticMaskHead, or a class-agnostic standard head for the ablation)."""
from typing import Dict, List

import torch

from detectron2.modeling import ROI_HEADS_REGISTRY
from detectron2.structures import Instances

from ...modeling.roi_heads import ZeroShotROIHeads
from .zero_shot_detector import ZeroShotDetectorPredictor

__all__ = ["ZSIROIHeads"]


@ROI_HEADS_REGISTRY.register()
class ZSIROIHeads(ZeroShotROIHeads):
    """ZeroShotROIHeads with the zero-shot detector, whose reconstruction loss needs the RoI features.

    detectron2's predictor contract hands `losses` the predictions only, so in training the box
    head's output is caught for this one call (a forward hook held in a local, removed at once) and
    the predictor's `reconstruction_losses` of those same features join detectron2's own box losses;
    the rest of `_forward_box` (TRAIN_ON_PRED_BOXES included) stays detectron2's.
    """

    box_predictor_cls = ZeroShotDetectorPredictor

    def _forward_box(self, features: Dict[str, torch.Tensor], proposals: List[Instances]):
        if not self.training:
            return super()._forward_box(features, proposals)
        box_features = []
        hook = self.box_head.register_forward_hook(lambda module, inputs, output: box_features.append(output))
        try:
            losses = super()._forward_box(features, proposals)
        finally:
            hook.remove()
        (features_of_this_call,) = box_features
        losses.update(self.box_predictor.reconstruction_losses(features_of_this_call))
        return losses
