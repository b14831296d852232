"""The last layer of a pixel-level zero-shot segmenter: (N, D, h, w) pixel features -> (N, K, h, w)
scores over the K classes of the active class set.

Why two: "embedding" is SPNet's semantic projection (a learned 1x1 projection into the class-name
embedding space, scored against fixed name embeddings), so any class with a name can be scored and
classes can be added at test time; "linear" is DeepLab's free 1x1 convolution, one filter per
training class, which the generative methods (ZS3Net, CaGNet, SIGN) re-train over seen + unseen
classes on real seen and generated unseen pixel features. Both return uncalibrated scores: the
model calibrates at test time (SPNet's calibration subtracts gamma from the seen probabilities).
A pixel has no "no object" column: every pixel is some class or ignored.
"""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputValueError
from ..calibration import SeenCalibrated
from ..class_embeddings import ClassEmbeddings, build_class_embeddings_module
from ..class_set import ZeroShotModule, default_class_set

__all__ = ["EmbeddingPixelClassifier", "LinearPixelClassifier", "build_pixel_classifier", "classify_rows"]

SCORES = ("dot", "cosine")


class EmbeddingPixelClassifier(nn.Module, SeenCalibrated, ZeroShotModule):
    """SPNet's projection: score = <W x, e_c> for the unit name embedding e_c of each active class
    ("dot"), or the cosine of the two times `logit_scale` ("cosine")."""

    calibration_extra_columns = 0

    def __init__(self, feature_dim: int, classes: ClassEmbeddings, score: str = "dot", logit_scale: float = 20.0,
                 calibration_gamma: float = 0.0):
        super().__init__()
        if score not in SCORES:
            raise InputValueError(f"MODEL.PIXEL_CLASSIFIER.SCORE '{score}' is not one of {list(SCORES)}")
        self.classes = classes
        self.score = score
        self.logit_scale = float(logit_scale)
        self.project = nn.Conv2d(feature_dim, classes.dim, kernel_size=1)
        nn.init.normal_(self.project.weight, std=0.01)
        nn.init.constant_(self.project.bias, 0.0)
        self.calibration_gamma = calibration_gamma

    @property
    def class_names(self):
        return self.classes.active_names

    def set_class_names(self, names: Sequence[str]):
        self.classes.set_class_names(names)

    def add_class_names(self, names, cfg):
        self.classes.add_class_names(names, cfg)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        embedded = self.project(features)
        if self.score == "cosine":
            embedded = F.normalize(embedded, dim=1) * self.logit_scale
        weights = self.classes.embeddings[self.classes.active]  # (K, E), unit rows
        return torch.einsum("nehw,ke->nkhw", embedded, weights)


class LinearPixelClassifier(nn.Module, SeenCalibrated, ZeroShotModule):
    """A free 1x1 convolution with one filter per class of `class_names` (closed set): it scores only
    those, in the order the class set asks for."""

    calibration_extra_columns = 0

    def __init__(self, feature_dim: int, class_names: Sequence[str], calibration_gamma: float = 0.0):
        super().__init__()
        self.trained_names = tuple(class_names)
        self.conv = nn.Conv2d(feature_dim, len(self.trained_names), kernel_size=1)
        nn.init.normal_(self.conv.weight, std=0.01)
        nn.init.constant_(self.conv.bias, 0.0)
        self.register_buffer("columns", torch.arange(len(self.trained_names)), persistent=False)
        self.calibration_gamma = calibration_gamma

    @property
    def class_names(self):
        return tuple(self.trained_names[i] for i in self.columns.tolist())

    def set_class_names(self, names: Sequence[str]):
        unknown = [n for n in names if n not in self.trained_names]
        if unknown:
            raise InputValueError(
                f"The linear pixel classifier has filters for {list(self.trained_names)} and cannot score {unknown}: "
                "use MODEL.PIXEL_CLASSIFIER.NAME 'embedding' to name new classes at test time")
        self.columns = torch.tensor([self.trained_names.index(n) for n in names], dtype=torch.long,
                                    device=self.conv.weight.device)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.conv(features).index_select(1, self.columns)


def classify_rows(classifier: nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """(n, D) pixel features as rows -> (n, K) scores: how a generative second stage feeds sampled
    (real or generated) pixel features to a pixel classifier."""
    return classifier(rows[:, :, None, None])[:, :, 0, 0]


def build_pixel_classifier(cfg, feature_dim: int) -> nn.Module:
    """The classifier MODEL.PIXEL_CLASSIFIER.NAME names, over the configured datasets' classes."""
    pc = cfg.MODEL.PIXEL_CLASSIFIER
    gamma = cfg.MODEL.ZERO_SHOT.CALIBRATION.GAMMA
    if pc.NAME == "embedding":
        bank = build_class_embeddings_module(cfg, kind="auto", learn_background=False)
        return EmbeddingPixelClassifier(feature_dim, bank, pc.SCORE, cfg.MODEL.ZERO_SHOT.LOGIT_SCALE, gamma)
    if pc.NAME == "linear":
        return LinearPixelClassifier(feature_dim, default_class_set(cfg, "auto").names, gamma)
    raise InputValueError(f"MODEL.PIXEL_CLASSIFIER.NAME '{pc.NAME}' is not one of ['embedding', 'linear']")
