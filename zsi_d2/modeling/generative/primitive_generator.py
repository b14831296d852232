"""PADing's primitive generator: a class embedding queries learned primitives -> fake query embedding.

Why: a fake unseen-class query embedding is assembled from K learnable "primitives" (fine-grained
attributes shared across classes), picked by cross-attention from the class embedding; the shared
primitives carry what seen classes taught about the query-embedding space to unseen ones.

Follows PADing (``PADing/PADing_model.py`` + ``modeling/transformer_decoder/transformer.py``):
- ``fc_projection``: Linear(E, D) on the class embedding -> the single query token (D = 256).
  PADing also uses this *projected* embedding (trainable) as the class side of its relationship
  alignment and relation losses: ``project_embeddings`` exposes it.
- ``dict_feature``: ``nn.Embedding(TRANS_MEMORY_NUM_QUERY=400, D)`` (default N(0, 1) init), the
  memory, shared by every sample; no positional encodings on either side.
- ``TRANS_NUM_LAYER=3`` DETR post-norm decoder layers (8 heads, FFN 1024, ReLU), dropout
  ``TRANS_DROP_RATE`` (0.1 panoptic/instance, 0.3 semantic) on attention weights and residuals,
  then a final LayerNorm (so fakes, like real Mask2Former queries, are LayerNorm outputs).
- Each class embedding is its own batch element with a length-1 query sequence, so samples do not
  attend to each other (self-attention over one token is just its value/output projections).
- Noise (``MODEL.MASK_FORMER.NOISE=True``): in every layer, ``tgt + N(0, 1)`` (std 1, shape of the
  query) after the cross-attention residual and before ``norm2``. PADing adds it in train and eval
  alike (``noise_in_eval=True``); ``noise_in_eval=False`` makes ``eval()`` deterministic.
- Init: PyTorch defaults (PADing's decoder does not re-initialise).
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PrimitiveGenerator"]


class _PostNormDecoderLayer(nn.Module):
    """self-attn -> add & norm -> cross-attn -> add -> (+ noise) -> norm -> FFN -> add & norm."""

    def __init__(self, d_model: int, nheads: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nheads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, nheads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, noise: Optional[torch.Tensor]) -> torch.Tensor:
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(tgt, tgt, tgt, need_weights=False)[0]))
        # Every sample's single token attends the same primitives: one sequence of n queries against
        # (1, K, D) memory is the same attention, with the primitives' keys/values projected once.
        cross = self.cross_attn(tgt.transpose(0, 1), memory, memory, need_weights=False)[0].transpose(0, 1)
        tgt = tgt + self.dropout2(cross)
        if noise is not None:
            tgt = tgt + noise
        tgt = self.norm2(tgt)
        tgt = tgt + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(tgt)))))
        return self.norm3(tgt)


class PrimitiveGenerator(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        feature_dim: int = 256,
        num_primitives: int = 400,
        num_layers: int = 3,
        nheads: int = 8,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        noise_std: float = 1.0,
        noise_in_eval: bool = True,
    ):
        """
        Args:
            embed_dim: class-embedding width E (CLIP 512, word2vec 300, ...).
            feature_dim: query-embedding width D (Mask2Former HIDDEN_DIM).
            noise_std: std of the per-layer Gaussian noise (PADing: 1.0; 0 disables it).
            noise_in_eval: keep adding noise in ``eval()`` (PADing) or not (deterministic eval).
        """
        super().__init__()
        self.embed_dim = embed_dim
        self.feature_dim = feature_dim
        self.num_layers = num_layers
        self.noise_std = float(noise_std)
        self.noise_in_eval = noise_in_eval
        self.project = nn.Linear(embed_dim, feature_dim)
        self.primitives = nn.Embedding(num_primitives, feature_dim)
        self.layers = nn.ModuleList(
            [_PostNormDecoderLayer(feature_dim, nheads, dim_feedforward, dropout) for _ in range(num_layers)]
        )
        self.norm = nn.LayerNorm(feature_dim)

    def project_embeddings(self, class_embeddings: torch.Tensor) -> torch.Tensor:
        """(n, E) -> (n, D): the query token, also PADing's class side of the alignment losses."""
        return self.project(class_embeddings)

    def _uses_noise(self) -> bool:
        return self.noise_std > 0 and (self.training or self.noise_in_eval)

    def forward(self, class_embeddings: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(n, E) class embeddings (one row per sample to generate) -> (n, D) fake query embeddings.

        ``noise``: optional (num_layers, n, D) tensor added as is in each layer (already scaled),
        to fix the randomness; otherwise ``noise_std * N(0, 1)`` is drawn when noise is in use.
        """
        if class_embeddings.dim() != 2 or class_embeddings.shape[1] != self.embed_dim:
            raise ValueError(
                f"PrimitiveGenerator expects (n, {self.embed_dim}) embeddings, got {tuple(class_embeddings.shape)}"
            )
        n = class_embeddings.shape[0]
        tgt = self.project(class_embeddings).unsqueeze(1)  # (n, 1, D)
        memory = self.primitives.weight.unsqueeze(0)  # (1, K, D): shared by every sample
        if noise is not None and tuple(noise.shape) != (self.num_layers, n, self.feature_dim):
            raise ValueError(f"noise must be ({self.num_layers}, {n}, {self.feature_dim}), got {tuple(noise.shape)}")
        for i, layer in enumerate(self.layers):
            if noise is not None:
                layer_noise = noise[i].unsqueeze(1)
            elif self._uses_noise():
                layer_noise = self.noise_std * torch.randn_like(tgt)
            else:
                layer_noise = None
            tgt = layer(tgt, memory, layer_noise)
        return self.norm(tgt).squeeze(1)
