"""Classifies the transformer decoder's query embeddings: (B, Q, C) -> (B, Q, K + 1), no object last.

Why these: "embedding" scores queries by cosine similarity with class-name embeddings (the shared
EmbeddingClassifier, whose learnable background vector is the "no object" class), so any class
with a name can be scored and classes can be added at test time; "linear" is the closed-set
classifier of Mask2Former, one weight per training class. The generative methods' second stage
re-trains a classifier on real seen and generated unseen features (zsi_d2.modeling.generative):
PADing's reference code gives it a free linear row per class (`LinearQueryClassifier` over all
classes, rows copied from stage 1 by `expand_linear_state`); `FreePrototypeQueryClassifier` is the
name-embedding head with each trained class's prototype made free, starting at its name embedding.
Each returns uncalibrated logits; the model's `inference` applies the test-time calibration.
"""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputValueError
from ..calibration import SeenCalibrated
from ..class_set import ZeroShotModule, default_class_set
from ..embedding_classifier import EmbeddingClassifier
from ..roi_heads.projection_box_predictor import build_embedding_classifier

__all__ = ["EmbeddingQueryClassifier", "FreePrototypeQueryClassifier", "LinearQueryClassifier", "build_query_classifier",
           "expand_linear_state"]


class EmbeddingQueryClassifier(nn.Module, SeenCalibrated, ZeroShotModule):
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

    def embed(self, queries: torch.Tensor) -> torch.Tensor:
        """Queries projected into the class-embedding space (what the logits compare)."""
        return self.classifier.project(queries)

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        shape = queries.shape[:-1]
        logits = self.classifier.logits(self.embed(queries.reshape(-1, queries.shape[-1])))
        return logits.reshape(*shape, -1)


class FreePrototypeQueryClassifier(EmbeddingQueryClassifier):
    """The name-embedding classifier with one free prototype per class of `trained_names`, each
    starting at its (unit) name embedding, so the starting function is the embedding classifier's;
    a class outside `trained_names` is still scored by its name embedding."""

    def __init__(self, classifier: EmbeddingClassifier, trained_names: Sequence[str], calibration_gamma: float = 0.0):
        super().__init__(classifier, calibration_gamma)
        self.trained_names = tuple(trained_names)
        bank = classifier.classes
        self.prototypes = nn.Parameter(bank.embeddings[bank.index_of(self.trained_names)].clone())
        self.register_buffer("_from_prototype", torch.zeros(0, dtype=torch.long), persistent=False)
        self.set_class_names(self.classifier.active_names)

    def set_class_names(self, names: Sequence[str]):
        super().set_class_names(names)
        # Derived once per class set: for each active class, its prototype row (or -1: name embedding).
        self._from_prototype = torch.tensor([self.trained_names.index(n) if n in self.trained_names else -1
                                             for n in names], dtype=torch.long, device=self.prototypes.device)

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        shape = queries.shape[:-1]
        weights = self.classifier.classes.weights()  # (K + 1, D): active names, then no object
        free = self._from_prototype >= 0
        rows = torch.nonzero(free).flatten()
        weights = weights.index_copy(0, rows, F.normalize(self.prototypes[self._from_prototype[free]], dim=1))
        semantic = F.normalize(self.embed(queries.reshape(-1, queries.shape[-1])), dim=1)
        logits = self.classifier.log_logit_scale.exp() * semantic @ weights.t()
        return logits.reshape(*shape, -1)


class LinearQueryClassifier(nn.Module, SeenCalibrated, ZeroShotModule):
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

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        return self.linear(queries)[..., self.columns]


def expand_linear_state(weight: torch.Tensor, bias: torch.Tensor, old_names: Sequence[str],
                        new_names: Sequence[str]):
    """A linear classifier's (weight, bias) over `old_names` + no object, as rows over `new_names` +
    no object: each old class's row and the no-object row copied, the other classes' rows zero
    (PADing's tools/preprocess_pretrained_weight.py for its stage-2 `new_fc`)."""
    old_names, new_names = list(old_names), list(new_names)
    if weight.shape[0] != len(old_names) + 1:
        raise ValueError(f"a linear classifier over {len(old_names)} classes + no object has {len(old_names) + 1} rows, "
                         f"got {weight.shape[0]}")
    missing = [n for n in old_names if n not in new_names]
    if missing:
        raise ValueError(f"classes {missing} of the old classifier are not in the new class list")
    new_weight = weight.new_zeros((len(new_names) + 1, weight.shape[1]))
    new_bias = bias.new_zeros((len(new_names) + 1,))
    rows = torch.tensor([new_names.index(n) for n in old_names] + [len(new_names)], dtype=torch.long)
    new_weight[rows] = weight
    new_bias[rows] = bias
    return new_weight, new_bias


def build_query_classifier(cfg) -> nn.Module:
    hidden = cfg.MODEL.MASK_FORMER.HIDDEN_DIM
    gamma = cfg.MODEL.ZERO_SHOT.CALIBRATION.GAMMA
    kind = cfg.MODEL.MASK_FORMER.CLASSIFIER
    if kind == "embedding":
        return EmbeddingQueryClassifier(build_embedding_classifier(cfg, hidden, kind="auto"), gamma)
    if kind == "linear":
        return LinearQueryClassifier(hidden, default_class_set(cfg, "auto").names, gamma)
    raise InputValueError(f"MODEL.MASK_FORMER.CLASSIFIER '{kind}' is not one of ['embedding', 'linear']")
