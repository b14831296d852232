"""Scores features against fixed class-name embeddings: the projection-based zero-shot classifier.

Why: a class is recognised through its name, so any class with an embedding can be scored, seen or
not. Visual features are projected into the embedding space and compared by cosine similarity;
background gets a learnable embedding, since "background" has no name to describe it.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .class_set import ZeroShotModule

__all__ = ["EmbeddingClassifier"]


class EmbeddingClassifier(nn.Module, ZeroShotModule):
    """(N, input_dim) features -> (N, K + 1) logits over the K active classes, background last."""

    def __init__(
        self,
        input_dim: int,
        class_names: Sequence[str],
        class_embeddings: torch.Tensor,
        background_embedding: Optional[torch.Tensor] = None,
        logit_scale: float = 20.0,
        learn_logit_scale: bool = False,
    ):
        super().__init__()
        if class_embeddings.dim() != 2 or class_embeddings.shape[0] != len(class_names):
            raise ValueError(
                f"class_embeddings must be ({len(class_names)}, D), got {tuple(class_embeddings.shape)}"
            )
        dim = class_embeddings.shape[1]
        self.class_names: Tuple[str, ...] = tuple(class_names)
        self.project = nn.Linear(input_dim, dim)
        nn.init.normal_(self.project.weight, std=0.01)
        nn.init.constant_(self.project.bias, 0.0)
        # Not saved in checkpoints: embeddings come from the config, so a trained model can be
        # evaluated on any class names the embedding source can encode.
        self.register_buffer("class_embeddings", F.normalize(class_embeddings.float(), dim=1), persistent=False)
        if background_embedding is None:
            background_embedding = torch.randn(dim) * 0.01
        if background_embedding.shape != (dim,):
            raise ValueError(f"background_embedding must be ({dim},), got {tuple(background_embedding.shape)}")
        self.background = nn.Parameter(background_embedding.detach().clone().float())
        scale = torch.tensor(float(logit_scale)).log()
        self.log_logit_scale = nn.Parameter(scale, requires_grad=learn_logit_scale)
        self.register_buffer("active", torch.arange(len(self.class_names)), persistent=False)

    @property
    def embedding_dim(self) -> int:
        return self.class_embeddings.shape[1]

    @property
    def num_active(self) -> int:
        return int(self.active.numel())

    @property
    def active_names(self) -> Tuple[str, ...]:
        return tuple(self.class_names[i] for i in self.active.tolist())

    def set_class_names(self, names):
        missing = [n for n in names if n not in self.class_names]
        if missing:
            raise KeyError(
                f"No embedding for classes {missing}: this classifier was built for {list(self.class_names)}. "
                "Add the dataset to DATASETS.TRAIN/TEST of the config so its classes are embedded."
            )
        index = [self.class_names.index(n) for n in names]
        self.active = torch.tensor(index, dtype=torch.long, device=self.class_embeddings.device)

    def weights(self, background: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(K + 1, D) unit vectors: active class embeddings, then background."""
        bg = self.background if background is None else background
        return torch.cat([self.class_embeddings[self.active], F.normalize(bg, dim=0)[None]], dim=0)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.project(features.flatten(1)), dim=1)

    def forward(self, features: torch.Tensor, background: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.log_logit_scale.exp() * self.embed(features) @ self.weights(background).t()
