"""ZS3Net's generative moment-matching network: (class embedding, noise) -> synthetic feature.

Why: a classifier can only learn an unseen class from examples; the GMMN turns a class embedding
plus noise into fake features of that class, trained on seen classes with ``mmd_loss`` so the
fakes follow the real feature distribution.

Follows ZS3Net ``zs3/modeling/gmmn.py`` ``GMMNnetwork`` (and PADing's copy, used for its GMMN
ablation): ``Linear(E + noise_dim, hidden) -> LeakyReLU(0.2) -> Dropout -> Linear(hidden, D)``
(a single ``Linear`` when ``hidden_dim`` is 0/None), xavier-uniform weights, biases 0.01, input
``cat(embedding, noise)`` in that order. ZS3Net draws the noise from U[0, 1) (``torch.rand``, 300-d)
and uses dropout 0.5; PADing's copy uses dropout 0.4.

Output activation: ZS3Net's last layer is linear even though its real features (DeepLab's last
conv block) are post-ReLU. ``output_activation="relu"`` restricts fakes to that support.
Mask2Former query embeddings are LayerNorm outputs with negative coordinates, so for PADing-style
use it must stay ``None`` (the default, ZS3Net's form).
"""
from typing import Optional

import torch
from torch import nn

__all__ = ["GMMNGenerator"]


class GMMNGenerator(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        feature_dim: int,
        noise_dim: int = 300,
        hidden_dim: Optional[int] = 256,
        dropout: float = 0.5,
        noise_distribution: str = "uniform",
        output_activation: Optional[str] = None,
    ):
        """
        Args:
            noise_distribution: "uniform" (U[0, 1), ZS3Net) or "normal" (N(0, 1)).
            output_activation: None (ZS3Net; required for query embeddings) or "relu".
        """
        super().__init__()
        if noise_distribution not in ("uniform", "normal"):
            raise ValueError(f"noise_distribution must be 'uniform' or 'normal', got {noise_distribution!r}")
        if output_activation not in (None, "relu"):
            raise ValueError(f"output_activation must be None or 'relu', got {output_activation!r}")
        self.embed_dim = embed_dim
        self.feature_dim = feature_dim
        self.noise_dim = noise_dim
        self.noise_distribution = noise_distribution
        in_dim = embed_dim + noise_dim
        if hidden_dim:
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden_dim),
                nn.LeakyReLU(0.2),
                nn.Dropout(dropout),
                nn.Linear(hidden_dim, feature_dim),
            )
        else:
            self.net = nn.Sequential(nn.Linear(in_dim, feature_dim))
        if output_activation == "relu":
            self.net.append(nn.ReLU())
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.constant_(m.bias, 0.01)

    def sample_noise(self, n: int, like: torch.Tensor) -> torch.Tensor:
        shape = (n, self.noise_dim)
        if self.noise_distribution == "uniform":
            return torch.rand(shape, dtype=like.dtype, device=like.device)
        return torch.randn(shape, dtype=like.dtype, device=like.device)

    def forward(self, class_embeddings: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(n, E) class embeddings (one row per sample to generate) -> (n, feature_dim).

        ``noise`` (n, noise_dim) fixes the latent code; in ``eval()`` (no dropout) the output is then
        a deterministic function of (embedding, noise).
        """
        if class_embeddings.dim() != 2 or class_embeddings.shape[1] != self.embed_dim:
            raise ValueError(
                f"GMMNGenerator expects (n, {self.embed_dim}) embeddings, got {tuple(class_embeddings.shape)}"
            )
        if noise is None:
            noise = self.sample_noise(class_embeddings.shape[0], class_embeddings)
        return self.net(torch.cat([class_embeddings, noise], dim=1))
