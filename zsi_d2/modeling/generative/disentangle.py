"""PADing's feature disentanglement: semantic-related and -unrelated codes, and a decoder.

Why: a query embedding mixes class semantics with instance detail (pose, context); relations to
the class embeddings should be asked of the semantic part only, so the alignment losses are
computed on the "related" code while the "unrelated" code is pushed toward noise and both must
together rebuild the feature (so nothing is simply thrown away).

Follows PADing (``PADing/utils/network_utils.py`` ``Encoder``/``Decoder``, losses in
``PADing_model.py``), both codes of the feature's width:
- encoder (one per code): ``Linear(D, D) -> Linear(D, D) -> LeakyReLU(0.2) -> Dropout``
  (two linears without a non-linearity between them, as in PADing);
- decoder: ``Linear(2D, D) -> LeakyReLU(0.2) -> Dropout -> Linear(D, D) -> LeakyReLU(0.2) -> Dropout``
  on ``cat(related, unrelated)``. The final LeakyReLU + Dropout is PADing's even though its targets
  (LayerNorm outputs) can be negative; ``decoder_output_activation=False`` drops them;
- dropout ``DROP_OUT_ED`` (0.1 in the released configs, 0.2 the config default).
- ``loss_reconstruction = F.l1_loss(decoder(cat(related, unrelated)), x)`` (mean over entries);
- ``loss_unrelated = softmax_kl(unrelated, N(0, 1) sample, tau=0.1)``: *not* a Gaussian KL nor an MMD:
  PADing softmaxes each unrelated code over its feature dimension (T = 0.1) and matches it with
  KL to the softmax of a fresh standard-normal sample (``alignment.softmax_kl``).
"""
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .alignment import softmax_kl

__all__ = ["FeatureDisentangler"]


def _encoder(dim: int, latent_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim, latent_dim), nn.Linear(latent_dim, latent_dim), nn.LeakyReLU(0.2), nn.Dropout(dropout)
    )


class FeatureDisentangler(nn.Module):
    def __init__(
        self,
        feature_dim: int = 256,
        latent_dim: Optional[int] = None,
        dropout: float = 0.1,
        tau: float = 0.1,
        decoder_output_activation: bool = True,
    ):
        """
        Args:
            latent_dim: width of each code (PADing: the feature width, the default).
            tau: temperature of the unrelated-code loss (PADing: 0.1).
        """
        super().__init__()
        latent_dim = latent_dim or feature_dim
        self.tau = tau
        self.related_encoder = _encoder(feature_dim, latent_dim, dropout)
        self.unrelated_encoder = _encoder(feature_dim, latent_dim, dropout)
        layers = [nn.Linear(2 * latent_dim, feature_dim), nn.LeakyReLU(0.2), nn.Dropout(dropout)]
        layers.append(nn.Linear(feature_dim, feature_dim))
        if decoder_output_activation:
            layers += [nn.LeakyReLU(0.2), nn.Dropout(dropout)]
        self.decoder = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(n, D) -> (related (n, L), unrelated (n, L))."""
        return self.related_encoder(x), self.unrelated_encoder(x)

    def reconstruct(self, related: torch.Tensor, unrelated: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([related, unrelated], dim=1))

    def losses(
        self,
        x: torch.Tensor,
        parts: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        noise: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        """Unweighted losses of x (n, D); ``parts`` = ``self(x)`` to reuse (same dropout draw as the
        related code used for alignment), ``noise`` the N(0, 1) target (drawn when None)."""
        related, unrelated = parts if parts is not None else self(x)
        if noise is None:
            noise = torch.randn_like(unrelated)
        return {
            "loss_reconstruction": F.l1_loss(self.reconstruct(related, unrelated), x),
            "loss_unrelated": softmax_kl(unrelated, noise, self.tau),
        }
