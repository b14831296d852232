"""ZegFormer's segment classifier: segment embeddings scored against the class names' text embeddings.

As released (transformer_zeroshot_predictor.py): each decoder layer's query embedding goes through
one linear projection to the text space and is L2-normalised; its logits are
scale * cos(segment, name) for every active class (text embeddings unit-norm) and
scale * segment . background for "no object", where the learnable background vector is *not*
normalised (Kaiming-uniform init, a = sqrt(5)), and the projection keeps nn.Linear's default init.
The scale is 1 / temperature (0.01 -> MODEL.ZERO_SHOT.LOGIT_SCALE 100). The core's
EmbeddingQueryClassifier differs in those three details (a unit background, a small-normal
projection init, any scale), so ZegFormer gets this subclass of it: the same class bank, class-set
switching and calibration.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from ...modeling.mask_former.query_classifier import EmbeddingQueryClassifier
from ...modeling.roi_heads.projection_box_predictor import build_embedding_classifier

__all__ = ["SegmentClassifier", "build_segment_classifier"]


class SegmentClassifier(EmbeddingQueryClassifier):
    """(..., C) query embeddings -> (..., K + 1) logits, "no object" last (ZegFormer's head)."""

    def __init__(self, classifier, calibration_gamma: float = 0.0):
        super().__init__(classifier, calibration_gamma)
        self.classifier.project.reset_parameters()  # nn.Linear's init, as released
        background = self.classifier.classes.background
        with torch.no_grad():  # nn.init.kaiming_uniform_(a=sqrt(5)) of a (1, D) parameter, as released
            nn.init.kaiming_uniform_(background.view(1, -1), a=math.sqrt(5))

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        shape = queries.shape[:-1]
        segment = F.normalize(self.embed(queries.reshape(-1, queries.shape[-1])), dim=1)
        classes = self.classifier.classes
        names = classes.weights()[:-1]  # (K, D) unit text embeddings of the active classes
        weights = torch.cat([names, classes.current_background()[None]])  # background as it is
        logits = self.classifier.log_logit_scale.exp() * segment @ weights.t()
        return logits.reshape(*shape, -1)


def build_segment_classifier(cfg) -> SegmentClassifier:
    return SegmentClassifier(build_embedding_classifier(cfg, cfg.MODEL.MASK_FORMER.HIDDEN_DIM, kind="auto"),
                             cfg.MODEL.ZERO_SHOT.CALIBRATION.GAMMA)
