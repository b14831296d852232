"""ZSI's zero-shot detector: RoI feature -> semantic projection -> similarity with class embeddings,
with an encoder-decoder whose decoder rebuilds the RoI feature from the semantic one.

Why the decoder: reconstructing the visual feature forces the semantic projection to keep what
the image shows rather than only what separates the seen classes, which is what unseen classes
need (ZSI, Sec. 3.3). It is used in training only.
"""
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable

from ...modeling.roi_heads.projection_box_predictor import ProjectionBoxPredictor

__all__ = ["ZeroShotDetectorPredictor"]


class ZeroShotDetectorPredictor(ProjectionBoxPredictor):
    """The projection box predictor plus ZSI's reconstruction loss ("loss_box_reconstruction")."""

    @configurable
    def __init__(self, input_shape, *, reconstruction_weight: float = 0.5, **kwargs):
        super().__init__(input_shape, **kwargs)
        self.reconstruction_weight = reconstruction_weight
        input_dim = self.cls_score.project.in_features
        self.decoder = nn.Linear(self.cls_score.embedding_dim, input_dim) if reconstruction_weight > 0 else None

    @classmethod
    def from_config(cls, cfg, input_shape):
        # With Sync-bg the background comes from BA-RPN, so the head's own stays unused and frozen.
        ret = super().from_config(cfg, input_shape, learn_background=not cfg.MODEL.ZSI.SYNC_BG)
        ret["reconstruction_weight"] = cfg.MODEL.ZSI.BOX_RECONSTRUCTION_WEIGHT
        return ret

    def forward(self, x):
        x = x.flatten(1)
        semantic = self.cls_score.project(x)
        scores = self.cls_score.logits(semantic)
        deltas = self.bbox_pred(x)
        if self.training and self.decoder is not None:
            return scores, deltas, F.mse_loss(self.decoder(semantic), x)
        return scores, deltas

    def losses(self, predictions, proposals):
        losses = super().losses(predictions[:2], proposals)
        if len(predictions) == 3:
            losses["loss_box_reconstruction"] = self.reconstruction_weight * predictions[2]
        return losses
