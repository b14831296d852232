"""Scores features against fixed class-name embeddings: the projection-based zero-shot classifier.

Why: a class is recognised through its name, so any class with an embedding can be scored, seen or
not. Visual features are projected into the embedding space and compared by cosine similarity;
background gets a learnable embedding, since "background" has no name to describe it.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .class_embeddings import ClassEmbeddings

__all__ = ["EmbeddingClassifier"]


class EmbeddingClassifier(nn.Module):
    """(N, input_dim) features -> (N, K + 1) logits over the K active classes, background last."""

    def __init__(
        self,
        input_dim: int,
        classes: ClassEmbeddings,
        logit_scale: float = 20.0,
        learn_logit_scale: bool = False,
    ):
        super().__init__()
        self.classes = classes
        self.project = nn.Linear(input_dim, self.classes.dim)
        nn.init.normal_(self.project.weight, std=0.01)
        nn.init.constant_(self.project.bias, 0.0)
        scale = torch.tensor(float(logit_scale)).log()
        self.log_logit_scale = nn.Parameter(scale, requires_grad=learn_logit_scale)

    # Convenience views of the class bank.
    @property
    def class_names(self):
        return self.classes.class_names

    @property
    def embedding_dim(self) -> int:
        return self.classes.dim

    @property
    def num_active(self) -> int:
        return self.classes.num_active

    @property
    def active_names(self):
        return self.classes.active_names

    def set_class_names(self, names):
        self.classes.set_class_names(names)

    def logits(self, semantic: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of already-projected features with the active classes + background."""
        return self.log_logit_scale.exp() * F.normalize(semantic, dim=1) @ self.classes.weights().t()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(self.project(features.flatten(1)))
