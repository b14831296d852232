"""Mask2Former's multi-scale masked-attention transformer decoder, without a class head.

Why no class head: the queries are scored by the model's classifier (zsi_d2's embedding or linear
query classifier, owned by the meta-architecture), so classes can change without touching the
decoder, and PADing's generator imitates exactly what that classifier sees. The decoder therefore
returns, for every prediction, the decoder-normed query embeddings (`pred_queries`) next to the
mask logits; the classifier scores `pred_queries` of every layer (deep supervision).

Module and parameter names follow Mask2Former's (transformer_cross_attention_layers.i.multihead_attn,
decoder_norm, query_feat, mask_embed.layers, ...), so the decoder part of a Mask2Former checkpoint
loads; its `class_embed` has no counterpart here. With the same weights, the masks of every
prediction agreed with Mask2Former's code within 3e-6 (post- and pre-norm, checked once by hand).
Tensors are batch-first inside and attention runs on F.scaled_dot_product_attention with one mask
broadcast over the heads (see `MultiheadAttention`).

Pure PyTorch, CPU and GPU, traceable with torch.jit.trace (no control flow on tensor values).
"""
from typing import Dict, List, Optional

import fvcore.nn.weight_init as weight_init
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.utils.registry import Registry

from .position_encoding import PositionEmbeddingSine

__all__ = [
    "TRANSFORMER_DECODER_REGISTRY",
    "build_transformer_decoder",
    "MultiScaleMaskedTransformerDecoder",
    "masked_attention_mask",
]

TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_MODULE")
TRANSFORMER_DECODER_REGISTRY.__doc__ = """
Registry for transformer decoders of the mask-classification core. A registered class is called
as `cls(cfg, in_channels)` and its forward as `(multi_scale_features, mask_features) -> dict`
(see `MultiScaleMaskedTransformerDecoder.forward`).
"""


def build_transformer_decoder(cfg, in_channels: int) -> nn.Module:
    """The decoder named by cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME, over `in_channels` wide maps."""
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    return TRANSFORMER_DECODER_REGISTRY.get(name)(cfg, in_channels)


def masked_attention_mask(mask_logits: Tensor, size) -> Tensor:
    """Where each query may *not* attend at the next layer: (B, Q, H, W) logits -> (B, Q, h*w) bool.

    Mask2Former's rule: the predicted mask, resized bilinearly to the attended level's `size`
    (h, w), is True (blocked) where its probability is below 0.5. A query blocked everywhere is
    un-blocked everywhere instead (a fully masked softmax row would be NaN). The mask is a
    constant for autograd: the logits are detached first, so nothing is recorded for backward.
    """
    m = F.interpolate(mask_logits.detach(), size=size, mode="bilinear", align_corners=False)
    m = m.sigmoid().flatten(2) < 0.5
    return m & ~m.all(dim=-1, keepdim=True)


class MultiheadAttention(nn.Module):
    """nn.MultiheadAttention's parameters and init, batch-first, on F.scaled_dot_product_attention.

    Why not nn.MultiheadAttention: it wants the mask copied once per head, (B * heads, Q, S), and
    its shape checks warn under torch.jit.trace. Here one (B, 1, Q, S) mask broadcasts over the
    heads. The state-dict names are nn.MultiheadAttention's (in_proj_weight, in_proj_bias,
    out_proj), so weights move between the two.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        assert embed_dim % num_heads == 0, (embed_dim, num_heads)
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
        """query (B, L, C), key and value (B, S, C); attn_mask (B, L, S) bool, True = blocked."""
        c = self.embed_dim
        w, b = self.in_proj_weight, self.in_proj_bias
        if query is key:  # self-attention: one matmul for queries and keys
            q, k = F.linear(query, w[: 2 * c], b[: 2 * c]).chunk(2, dim=-1)
        else:
            q, k = F.linear(query, w[:c], b[:c]), F.linear(key, w[c : 2 * c], b[c : 2 * c])
        v = F.linear(value, w[2 * c :], b[2 * c :])
        allowed = None if attn_mask is None else ~attn_mask.unsqueeze(1)  # SDPA: True = attend
        x = F.scaled_dot_product_attention(
            self._split_heads(q),
            self._split_heads(k),
            self._split_heads(v),
            attn_mask=allowed,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out_proj(x.transpose(1, 2).flatten(2))

    def _split_heads(self, x: Tensor) -> Tensor:
        """(B, L, C) -> (B, heads, L, C / heads)."""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)


class SelfAttentionLayer(nn.Module):
    """Self-attention among the queries; batch-first (B, Q, C) tensors."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(self, tgt: Tensor, query_pos: Tensor) -> Tensor:
        x = self.norm(tgt) if self.normalize_before else tgt
        q = x + query_pos
        x = self.self_attn(q, q, x)
        tgt = tgt + self.dropout(x)
        return tgt if self.normalize_before else self.norm(tgt)


class CrossAttentionLayer(nn.Module):
    """Masked cross-attention from the queries to one feature level; batch-first tensors."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False):
        super().__init__()
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(self, tgt: Tensor, memory: Tensor, memory_key: Tensor, attn_mask: Tensor, query_pos: Tensor) -> Tensor:
        """memory_key = memory + its positional encoding, computed once per forward, not per layer.

        attn_mask: (B, Q, S) bool, True = blocked (`masked_attention_mask`).
        """
        x = self.norm(tgt) if self.normalize_before else tgt
        x = self.multihead_attn(x + query_pos, memory_key, memory, attn_mask=attn_mask)
        tgt = tgt + self.dropout(x)
        return tgt if self.normalize_before else self.norm(tgt)


class FFNLayer(nn.Module):
    """Two-layer ReLU feed-forward block with a residual connection."""

    def __init__(self, d_model: int, dim_feedforward: int = 2048, dropout: float = 0.0, normalize_before: bool = False):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(self, tgt: Tensor) -> Tensor:
        x = self.norm(tgt) if self.normalize_before else tgt
        x = self.linear2(self.dropout(F.relu(self.linear1(x))))
        tgt = tgt + self.dropout(x)
        return tgt if self.normalize_before else self.norm(tgt)


def _xavier_init(module: nn.Module):
    """Mask2Former's init of its decoder layers: Xavier-uniform on every matrix."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class MLP(nn.Module):
    """Linear layers with ReLU between them (not after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


@TRANSFORMER_DECODER_REGISTRY.register()
class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Mask2Former's decoder: learned queries refined by masked attention over 3 feature levels.

    Each prediction's mask decides where the queries look at the next layer (masked attention);
    layers visit the levels round-robin, lowest resolution first. There are `dec_layers + 1`
    predictions: one from the learnable queries alone, then one after each layer.
    """

    num_feature_levels = 3  # Mask2Former always uses 3 scales

    @configurable
    def __init__(
        self,
        in_channels: int,
        *,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        pre_norm: bool,
        mask_dim: int,
        enforce_input_project: bool,
        dropout: float = 0.0,
    ):
        """
        Args:
            in_channels: width of the multi-scale feature maps.
            hidden_dim: transformer width C (also the width of `pred_queries`).
            num_queries: Q learned queries.
            nheads, dim_feedforward, dropout: of every attention / FFN block.
            dec_layers: transformer layers, i.e. cfg DEC_LAYERS - 1 (cfg counts the prediction
                from the learnable queries too; Mask2Former's convention).
            pre_norm: LayerNorm before each block instead of after it.
            mask_dim: width of the mask features the mask embeddings are dotted with.
            enforce_input_project: 1x1 input projections even when in_channels == hidden_dim.
        """
        super().__init__()
        assert dec_layers >= 0, dec_layers
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.num_queries = num_queries

        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)

        self.transformer_self_attention_layers = nn.ModuleList()
        self.transformer_cross_attention_layers = nn.ModuleList()
        self.transformer_ffn_layers = nn.ModuleList()
        for _ in range(dec_layers):
            self.transformer_self_attention_layers.append(
                SelfAttentionLayer(hidden_dim, nheads, dropout=dropout, normalize_before=pre_norm)
            )
            self.transformer_cross_attention_layers.append(
                CrossAttentionLayer(hidden_dim, nheads, dropout=dropout, normalize_before=pre_norm)
            )
            self.transformer_ffn_layers.append(
                FFNLayer(hidden_dim, dim_feedforward, dropout=dropout, normalize_before=pre_norm)
            )
        self.decoder_norm = nn.LayerNorm(hidden_dim)

        self.query_feat = nn.Embedding(num_queries, hidden_dim)  # learnable query features
        self.query_embed = nn.Embedding(num_queries, hidden_dim)  # learnable query positions
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                # Plain nn.Conv2d: detectron2's wrapper tests numel() in forward, a TracerWarning.
                proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
                weight_init.c2_xavier_fill(proj)
                self.input_proj.append(proj)
            else:
                self.input_proj.append(nn.Sequential())

        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels):
        mf = cfg.MODEL.MASK_FORMER
        assert mf.DEC_LAYERS >= 1, "DEC_LAYERS counts the prediction from the learnable queries"
        return {
            "in_channels": in_channels,
            "hidden_dim": mf.HIDDEN_DIM,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "nheads": mf.NHEADS,
            "dim_feedforward": mf.DIM_FEEDFORWARD,
            "dec_layers": mf.DEC_LAYERS - 1,
            "pre_norm": mf.PRE_NORM,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            "enforce_input_project": mf.ENFORCE_INPUT_PROJ,
            "dropout": mf.DROPOUT,
        }

    def forward(self, multi_scale_features: List[Tensor], mask_features: Tensor) -> Dict:
        """
        Args:
            multi_scale_features: 3 maps (B, in_channels, H_l, W_l), lowest resolution first.
            mask_features: (B, mask_dim, H, W) per-pixel embeddings (the pixel decoder's output).

        Returns:
            {"pred_queries": (B, Q, C) query embeddings of the last prediction (decoder-normed:
            what a classifier scores and what PADing's generator imitates),
            "pred_masks": (B, Q, H, W) mask logits of the last prediction,
            "aux_outputs": [{"pred_queries", "pred_masks"}] of the earlier predictions, first
            (learnable queries alone) to last-but-one}.
        """
        assert len(multi_scale_features) == self.num_feature_levels
        memories, memory_keys, sizes = [], [], []
        for i, x in enumerate(multi_scale_features):
            sizes.append(x.shape[-2:])
            # (B, C, H, W) -> (B, HW, C), contiguous once here rather than copied by every
            # layer's projections; key = value + position, fixed across layers.
            src = self.input_proj[i](x).flatten(2).transpose(1, 2) + self.level_embed.weight[i]
            src = src.contiguous()
            pos = self.pe_layer(x).flatten(2).transpose(1, 2)
            memories.append(src)
            memory_keys.append(src + pos.to(src.dtype))

        bs = mask_features.shape[0]
        query_pos = self.query_embed.weight.unsqueeze(0)  # (1, Q, C), broadcast over the batch
        output = self.query_feat.weight.unsqueeze(0).expand(bs, -1, -1)

        predictions = [self._predict(output, mask_features)]
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            attn_mask = masked_attention_mask(predictions[-1][1], sizes[level])
            output = self.transformer_cross_attention_layers[i](
                output, memories[level], memory_keys[level], attn_mask, query_pos
            )
            output = self.transformer_self_attention_layers[i](output, query_pos)
            output = self.transformer_ffn_layers[i](output)
            predictions.append(self._predict(output, mask_features))

        return {
            "pred_queries": predictions[-1][0],
            "pred_masks": predictions[-1][1],
            "aux_outputs": [{"pred_queries": q, "pred_masks": m} for q, m in predictions[:-1]],
        }

    def _predict(self, output: Tensor, mask_features: Tensor):
        """(B, Q, C) decoder state -> (pred_queries (B, Q, C), pred_masks (B, Q, H, W) logits)."""
        queries = self.decoder_norm(output)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(queries), mask_features)
        return queries, masks
