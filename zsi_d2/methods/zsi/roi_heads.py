"""ZSI's ROI heads: the zero-shot detector for boxes; masks from MODEL.ROI_MASK_HEAD.NAME
(SemanticMaskHead, or a class-agnostic standard head for the ablation)."""
from typing import Dict, List

import torch

from detectron2.modeling import ROI_HEADS_REGISTRY
from detectron2.structures import Boxes, Instances

from ...modeling.roi_heads import ZeroShotROIHeads
from .zero_shot_detector import ZeroShotDetectorPredictor

__all__ = ["ZSIROIHeads"]


@ROI_HEADS_REGISTRY.register()
class ZSIROIHeads(ZeroShotROIHeads):
    """ZeroShotROIHeads with the zero-shot detector, whose reconstruction loss needs the RoI features.

    detectron2's predictor contract hands `losses` the predictions only, so the training branch of
    `_forward_box` is detectron2's (StandardROIHeads._forward_box, TRAIN_ON_PRED_BOXES included)
    plus the predictor's `reconstruction_losses` of the same box features.
    """

    box_predictor_cls = ZeroShotDetectorPredictor

    def _forward_box(self, features: Dict[str, torch.Tensor], proposals: List[Instances]):
        if not self.training:
            return super()._forward_box(features, proposals)
        box_features = self.box_pooler([features[f] for f in self.box_in_features], [x.proposal_boxes for x in proposals])
        box_features = self.box_head(box_features)
        predictions = self.box_predictor(box_features)
        losses = self.box_predictor.losses(predictions, proposals)
        losses.update(self.box_predictor.reconstruction_losses(box_features))
        del box_features
        # proposals are modified in place below, so the losses must be computed first.
        if self.train_on_pred_boxes:
            with torch.no_grad():
                pred_boxes = self.box_predictor.predict_boxes_for_gt_classes(predictions, proposals)
                for proposals_per_image, pred_boxes_per_image in zip(proposals, pred_boxes):
                    proposals_per_image.proposal_boxes = Boxes(pred_boxes_per_image)
        return losses
