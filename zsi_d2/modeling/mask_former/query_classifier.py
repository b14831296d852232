"""Classifies the transformer decoder's query embeddings: (B, Q, C) -> (B, Q, K + 1), no object last.

Why two: "embedding" scores queries by cosine similarity with class-name embeddings (the shared
EmbeddingClassifier, whose learnable background vector is the "no object" class), so any class
with a name can be scored and classes can be added at test time; "linear" is the closed-set
classifier of Mask2Former, one weight per training class, for comparison.
"""
from typing import Sequence

import torch
from torch import nn

from ...errors import InputValueError
from ..calibration import SeenCalibrated
from ..class_set import ZeroShotModule, default_class_set
from ..embedding_classifier import EmbeddingClassifier
from ..roi_heads.projection_box_predictor import build_embedding_classifier

__all__ = ["EmbeddingQueryClassifier", "LinearQueryClassifier", "build_query_classifier"]


class EmbeddingQueryClassifier(nn.Module, ZeroShotModule, SeenCalibrated):
    """Cosine similarity of projected queries with the active classes' name embeddings, over a
    temperature; "no object" is the bank's learnable background vector."""

    def __init__(self, classifier: EmbeddingClassifier, calibration_gamma: float = 0.0):
        super().__init__()
        self.classifier = classifier
        self.calibration_gamma = calibration_gamma

    @property
    def class_names(self):
        return self.classifier.active_names

    def set_class_names(self, names: Sequence[str]):
        self.classifier.set_class_names(names)

    def set_class_set(self, class_set):
        super().set_class_set(class_set)
        self.set_calibration_seen(class_set.names, class_set.unseen)  # + the no-object column

    def embed(self, queries: torch.Tensor) -> torch.Tensor:
        """Queries projected into the class-embedding space (what the logits compare)."""
        return self.classifier.project(queries)

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        shape = queries.shape[:-1]
        logits = self.classifier.logits(self.embed(queries.reshape(-1, queries.shape[-1])))
        return self.calibrate(logits).reshape(*shape, -1)


class LinearQueryClassifier(nn.Module, ZeroShotModule, SeenCalibrated):
    """One linear weight per training class + no object (closed set): it can score only those."""

    def __init__(self, hidden_dim: int, class_names: Sequence[str], calibration_gamma: float = 0.0):
        super().__init__()
        self.trained_names = tuple(class_names)
        self.linear = nn.Linear(hidden_dim, len(self.trained_names) + 1)
        self.register_buffer("columns", torch.arange(len(self.trained_names) + 1), persistent=False)
        self.calibration_gamma = calibration_gamma

    @property
    def class_names(self):
        return tuple(self.trained_names[i] for i in self.columns[:-1].tolist())

    def set_class_names(self, names: Sequence[str]):
        unknown = [n for n in names if n not in self.trained_names]
        if unknown:
            raise InputValueError(
                f"The linear query classifier was trained on {list(self.trained_names)} and cannot score "
                f"{unknown}: use MODEL.MASK_FORMER.CLASSIFIER 'embedding' to name new classes at test time"
            )
        index = [self.trained_names.index(n) for n in names] + [len(self.trained_names)]
        self.columns = torch.tensor(index, dtype=torch.long, device=self.linear.weight.device)

    def set_class_set(self, class_set):
        super().set_class_set(class_set)
        self.set_calibration_seen(class_set.names, class_set.unseen)

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        return self.calibrate(self.linear(queries)[..., self.columns])


def build_query_classifier(cfg) -> nn.Module:
    hidden = cfg.MODEL.MASK_FORMER.HIDDEN_DIM
    gamma = cfg.MODEL.ZERO_SHOT.CALIBRATION.GAMMA
    kind = cfg.MODEL.MASK_FORMER.CLASSIFIER
    if kind == "embedding":
        return EmbeddingQueryClassifier(build_embedding_classifier(cfg, hidden, kind="auto"), gamma)
    if kind == "linear":
        return LinearQueryClassifier(hidden, default_class_set(cfg, "auto").names, gamma)
    raise InputValueError(f"MODEL.MASK_FORMER.CLASSIFIER '{kind}' is not one of ['embedding', 'linear']")
