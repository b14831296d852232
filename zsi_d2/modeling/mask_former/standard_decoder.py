"""MaskFormer's transformer decoder (DETR's), without a class head: the decoder ZegFormer ships.

Why it is here: ZegFormer (and MaskFormer) decode learned queries with a plain DETR transformer
over ONE feature map (MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE, the backbone's "res5" in their
configs), not Mask2Former's masked attention over three levels. It is an option of the core
(`TRANSFORMER_DECODER_NAME: "StandardTransformerDecoder"`), built from the same attention, FFN and
mask-embedding blocks as `MultiScaleMaskedTransformerDecoder`, and returns the same dict, so the
query classifier, the criterion and inference read it unchanged.

DETR's order per decoder layer is self-attention -> cross-attention (no mask) -> FFN; the target
starts at zero and the learned query embedding is its position. Every layer's output goes
through the shared decoder norm and makes one prediction (DEC_LAYERS predictions: MaskFormer's
convention; Mask2Former's DEC_LAYERS also counts a prediction from the queries alone).
`ENC_LAYERS` DETR encoder layers (self-attention + FFN over the flattened map) come first
(0 in MaskFormer's and ZegFormer's configs).
"""
from typing import Dict

import fvcore.nn.weight_init as weight_init
import torch
from torch import Tensor, nn

from detectron2.config import configurable

from .position_encoding import PositionEmbeddingSine
from .transformer_decoder import (
    MLP, TRANSFORMER_DECODER_REGISTRY, CrossAttentionLayer, FFNLayer, SelfAttentionLayer,
)

__all__ = ["StandardTransformerDecoder"]


@TRANSFORMER_DECODER_REGISTRY.register()
class StandardTransformerDecoder(nn.Module):
    """DETR encoder (optional) + decoder over one feature map; a prediction after every layer."""

    takes_multi_scale_features = False  # forward's first argument is one (B, C, H, W) map

    @configurable
    def __init__(self, in_channels: int, *, hidden_dim: int, num_queries: int, nheads: int, dim_feedforward: int,
                 enc_layers: int, dec_layers: int, pre_norm: bool, mask_dim: int, enforce_input_project: bool,
                 dropout: float = 0.1):
        """
        Args:
            in_channels: width of the input feature map.
            hidden_dim, num_queries, nheads, dim_feedforward, dropout, pre_norm: as DETR's transformer.
            enc_layers: DETR encoder layers before the decoder (0: the map is the memory as it is).
            dec_layers: decoder layers = predictions.
            mask_dim: width of the per-pixel mask features.
            enforce_input_project: a 1x1 input projection even when in_channels == hidden_dim.
        """
        super().__init__()
        if dec_layers < 1:
            raise ValueError(f"StandardTransformerDecoder needs at least one decoder layer, got {dec_layers}")
        self.num_queries = num_queries
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.encoder_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, dropout=dropout, normalize_before=pre_norm) for _ in range(enc_layers))
        self.encoder_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, dropout=dropout, normalize_before=pre_norm) for _ in range(enc_layers))
        # DETR: a pre-norm encoder ends with a LayerNorm, a post-norm one already ends normed.
        self.encoder_norm = nn.LayerNorm(hidden_dim) if pre_norm and enc_layers > 0 else nn.Identity()
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, dropout=dropout, normalize_before=pre_norm) for _ in range(dec_layers))
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads, dropout=dropout, normalize_before=pre_norm)
            for _ in range(dec_layers))
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, dropout=dropout, normalize_before=pre_norm) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)  # learnable query positions
        if in_channels != hidden_dim or enforce_input_project:
            self.input_proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
            weight_init.c2_xavier_fill(self.input_proj)
        else:
            self.input_proj = nn.Identity()
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels):
        mf = cfg.MODEL.MASK_FORMER
        return {
            "in_channels": in_channels,
            "hidden_dim": mf.HIDDEN_DIM,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "nheads": mf.NHEADS,
            "dim_feedforward": mf.DIM_FEEDFORWARD,
            "enc_layers": mf.ENC_LAYERS,
            "dec_layers": mf.DEC_LAYERS,
            "pre_norm": mf.PRE_NORM,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            "enforce_input_project": mf.ENFORCE_INPUT_PROJ,
            "dropout": mf.DROPOUT,
        }

    def forward(self, x: Tensor, mask_features: Tensor) -> Dict:
        """
        Args:
            x: (B, in_channels, H, W) the map the queries attend to.
            mask_features: (B, mask_dim, H', W') per-pixel embeddings.

        Returns: as `MultiScaleMaskedTransformerDecoder.forward` ("pred_queries", "pred_masks" of the
        last layer; "aux_outputs" of the earlier ones, first to last-but-one).
        """
        pos = self.pe_layer(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        memory = self.input_proj(x).flatten(2).transpose(1, 2).contiguous()
        pos = pos.to(memory.dtype)
        for attn, ffn in zip(self.encoder_self_attention_layers, self.encoder_ffn_layers):
            memory = ffn(attn(memory, pos))
        memory = self.encoder_norm(memory)
        memory_key = memory + pos

        bs = x.shape[0]
        query_pos = self.query_embed.weight.unsqueeze(0)  # (1, Q, C), broadcast over the batch
        output = torch.zeros(bs, self.num_queries, query_pos.shape[-1], dtype=memory.dtype, device=memory.device)
        predictions = []
        for self_attn, cross_attn, ffn in zip(self.transformer_self_attention_layers,
                                              self.transformer_cross_attention_layers, self.transformer_ffn_layers):
            output = self_attn(output, query_pos)
            output = cross_attn(output, memory, memory_key, None, query_pos)
            output = ffn(output)
            queries = self.decoder_norm(output)
            predictions.append((queries, torch.einsum("bqc,bchw->bqhw", self.mask_embed(queries), mask_features)))
        return {
            "pred_queries": predictions[-1][0],
            "pred_masks": predictions[-1][1],
            "aux_outputs": [{"pred_queries": q, "pred_masks": m} for q, m in predictions[:-1]],
        }
