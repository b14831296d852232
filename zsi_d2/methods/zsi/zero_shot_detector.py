"""ZSI's zero-shot detector: RoI feature -> semantic projection -> similarity with class embeddings,
with an encoder-decoder whose decoder rebuilds the RoI feature from the semantic one.

Why the decoder: reconstructing the visual feature forces the semantic projection to keep what
the image shows rather than only what separates the seen classes, which is what unseen classes
need (ZSI, Sec. 3.3). It is used in training only.

The reconstruction trains the semantic projection and the decoder only: it reads a detached copy
of the RoI feature. With gradient into the feature, as in the reference code, the loss is won by
changing the feature instead. On zs_shapes that collapsed the features to zero (reconstruction
loss 12 -> 0.002 in 80 iterations, classification stopped learning), and with only the target
detached it blew them up (reconstruction loss 1e5, mask loss 177).
"""
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference_single_image
from detectron2.structures import Instances

from ...errors import InputValueError
from ...modeling.class_set import training_class_names
from ...modeling.roi_heads.projection_box_predictor import ProjectionBoxPredictor

__all__ = ["ZeroShotDetectorPredictor", "UNSEEN_SCORING"]

UNSEEN_SCORING = ("direct", "seen_projection")


class ZeroShotDetectorPredictor(ProjectionBoxPredictor):
    """The projection box predictor plus ZSI's reconstruction loss and optional per-group NMS in GZSI.

    It keeps detectron2's predictor contract: `forward` returns (scores, proposal_deltas) in
    training too, so detectron2's box-head code (e.g. TRAIN_ON_PRED_BOXES) works unchanged. The
    reconstruction needs the RoI features, which detectron2's `losses` is not given: ZSIROIHeads
    passes them to `reconstruction_losses`.
    """

    @configurable
    def __init__(self, input_shape, *, reconstruction_weight: float = 0.5, gzsi_per_group_nms: bool = False,
                 unseen_scoring: str = "direct", seen_classes: Sequence[str] = (), **kwargs):
        super().__init__(input_shape, **kwargs)
        if unseen_scoring not in UNSEEN_SCORING:
            raise InputValueError(f"MODEL.ZSI.UNSEEN_SCORING must be one of {UNSEEN_SCORING}, got '{unseen_scoring}'")
        if unseen_scoring == "seen_projection" and not seen_classes:
            raise InputValueError("MODEL.ZSI.UNSEEN_SCORING 'seen_projection' needs the seen classes: set DATASETS.TRAIN")
        self.unseen_scoring = unseen_scoring
        # The classes the detector was trained on: what "seen_projection" scores through.
        self.seen_classes = tuple(seen_classes)
        self.reconstruction_weight = reconstruction_weight
        input_dim = self.cls_score.project.in_features
        self.decoder = nn.Linear(self.cls_score.embedding_dim, input_dim) if reconstruction_weight > 0 else None
        self.gzsi_per_group_nms = gzsi_per_group_nms
        # Groups of local class indices that get their own NMS and top-k; follows the class set.
        self.nms_groups: Optional[Sequence[torch.Tensor]] = None

    @classmethod
    def from_config(cls, cfg, input_shape):
        # With Sync-bg the background comes from BA-RPN, so the head's own stays unused and frozen.
        ret = super().from_config(cfg, input_shape, learn_background=not cfg.MODEL.ZSI.SYNC_BG)
        ret["reconstruction_weight"] = cfg.MODEL.ZSI.BOX_RECONSTRUCTION_WEIGHT
        ret["gzsi_per_group_nms"] = cfg.MODEL.ZSI.GZSI_PER_GROUP_NMS
        ret["unseen_scoring"] = cfg.MODEL.ZSI.UNSEEN_SCORING
        ret["seen_classes"] = training_class_names(cfg)
        return ret

    def forward(self, x):
        if self.training or self.unseen_scoring == "direct":
            return super().forward(x)
        x = x.flatten(1)
        return self.seen_projection_scores(x), self.bbox_pred(x)

    def seen_projection_scores(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K + 1) scores of the K active classes and background, as the reference scores them at
        test time: p = softmax over the seen classes + background, then score(c) = p · V_seen · v_c
        (V_seen: the seen and background unit vectors, v_c: class c's). Scores, not logits:
        `predict_probs` returns them as they are."""
        classifier = self.cls_score
        semantic = classifier.project(x.flatten(1))
        seen = classifier.classes.seen_basis(self.seen_classes)
        p = F.softmax(classifier.log_logit_scale.exp() * F.normalize(semantic, dim=1) @ seen.t(), dim=1)
        return (p @ seen) @ classifier.classes.weights().t()

    def predict_probs(self, predictions, proposals, gamma=None):
        if self.training or self.unseen_scoring == "direct":
            return super().predict_probs(predictions, proposals, gamma)
        scores, _ = predictions  # already scores: calibrated stacking subtracts gamma from them
        return self.calibrate(scores, gamma).split([len(p) for p in proposals], dim=0)

    def set_class_set(self, class_set):
        super().set_class_set(class_set)
        per_group = self.gzsi_per_group_nms and class_set.mode == "gzsi"
        self.nms_groups = class_set.group_indices if per_group else None

    def reconstruction_losses(self, features: torch.Tensor) -> Dict[str, torch.Tensor]:
        """{"loss_box_reconstruction": ...} for the RoI features the predictor was given; {} when off.

        The feature is detached (see the module docstring): the loss trains the semantic
        projection and the decoder, never the feature.
        """
        if self.decoder is None:
            return {}
        feature = features.flatten(1).detach()
        rebuilt = self.decoder(self.cls_score.project(feature))
        return {"loss_box_reconstruction": self.reconstruction_weight * F.mse_loss(rebuilt, feature)}

    def inference(self, predictions, proposals, gamma=None):
        if not self.nms_groups:
            return super().inference(predictions, proposals, gamma)
        # Per-group NMS (the reference's GZSI inference): NMS and top-k within seen and within unseen
        # classes, so confident seen detections cannot crowd out unseen ones. (With "direct" scoring
        # the class probabilities come from one softmax over all classes, which the reference does
        # not compute; "seen_projection" is the reference's scoring.)
        boxes = self.predict_boxes(predictions, proposals)
        scores = self.predict_probs(predictions, proposals, gamma)
        results = []
        for image_boxes, image_scores, proposal in zip(boxes, scores, proposals):
            background = torch.tensor([image_scores.shape[1] - 1], device=image_scores.device)
            parts = []
            for group in self.nms_groups:
                group = group.to(image_scores.device)
                if group.numel() == 0:
                    continue
                kept, _ = fast_rcnn_inference_single_image(
                    image_boxes, image_scores[:, torch.cat([group, background])], proposal.image_size,
                    self.test_score_thresh, self.test_nms_thresh, self.test_topk_per_image,
                )
                kept.pred_classes = group[kept.pred_classes]
                parts.append(kept)
            results.append(Instances.cat(parts))
        return results, [None] * len(results)
