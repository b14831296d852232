"""Pixel decoders: backbone features -> per-pixel mask features + the transformer decoder's inputs.

Two registered decoders with one interface, `forward_features(features) -> (mask_features,
transformer_encoder_features, multi_scale_features)`:
- `MSDeformAttnPixelDecoder` (Mask2Former's): a multi-scale deformable-attention encoder over the
  low-resolution levels, then FPN lateral/output convs for the higher resolutions down to
  COMMON_STRIDE.
- `FPNPixelDecoder`: a plain FPN (MaskFormer's base decoder), the cheap option.
Parameter names follow Mask2Former's modules, so their pixel-decoder weights load as they are.
"""
import copy
import logging
from typing import Callable, Dict, List, Optional, Tuple, Union

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.utils.registry import Registry
from torch import nn
from torch.nn import functional as F

from ...errors import InputValueError
from .ms_deform_attn import MSDeformAttn
from .position_encoding import PositionEmbeddingSine

__all__ = [
    "PIXEL_DECODER_REGISTRY",
    "build_pixel_decoder",
    "MSDeformAttnEncoderLayer",
    "MSDeformAttnEncoder",
    "MSDeformAttnEncoderOnly",
    "MSDeformAttnPixelDecoder",
    "FPNPixelDecoder",
]

logger = logging.getLogger(__name__)

PIXEL_DECODER_REGISTRY = Registry("PIXEL_DECODER")
PIXEL_DECODER_REGISTRY.__doc__ = """
Pixel decoders of the mask-classification models. A registered class is called with
`(cfg, input_shape)` and has `forward_features(features: Dict[str, Tensor]) -> (mask_features,
transformer_encoder_features, multi_scale_features)`.
"""

# Number of feature maps handed to the transformer decoder (lowest resolution first).
NUM_MULTI_SCALE_FEATURES = 3


def build_pixel_decoder(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """Build the decoder named by cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME."""
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    return PIXEL_DECODER_REGISTRY.get(name)(cfg, input_shape)


def _float_features(x: torch.Tensor) -> torch.Tensor:
    """Deformable attention and GroupNorm run in float32 (or float64); half precision is cast up."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _sorted_by_stride(input_shape: Dict[str, ShapeSpec]) -> List[Tuple[str, ShapeSpec]]:
    return sorted(input_shape.items(), key=lambda kv: kv[1].stride)


class MSDeformAttnEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention over all levels, then an FFN."""

    def __init__(self, d_model=256, d_ffn=1024, dropout=0.0, n_levels=4, n_heads=8, n_points=4):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes, level_start_index, padding_mask=None):
        src2 = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index, padding_mask)
        src = self.norm1(src + self.dropout1(src2))
        src2 = self.linear2(self.dropout2(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout3(src2))


class MSDeformAttnEncoder(nn.Module):
    """A stack of encoder layers sharing one set of reference points and position embeddings."""

    def __init__(self, encoder_layer: MSDeformAttnEncoderLayer, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers

    def forward(self, src, spatial_shapes, level_start_index, reference_points, pos, padding_mask=None):
        out = src
        for layer in self.layers:
            out = layer(out, pos, reference_points, spatial_shapes, level_start_index, padding_mask)
        return out


class MSDeformAttnEncoderOnly(nn.Module):
    """Flattens the levels, adds level embeddings to the position embeddings, runs the encoder."""

    def __init__(
        self, d_model=256, nhead=8, num_encoder_layers=6, dim_feedforward=1024, dropout=0.0,
        num_feature_levels=4, enc_n_points=4,
    ):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        layer = MSDeformAttnEncoderLayer(d_model, dim_feedforward, dropout, num_feature_levels, nhead, enc_n_points)
        self.encoder = MSDeformAttnEncoder(layer, num_encoder_layers)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self._reset_parameters()

    def _reset_parameters(self):
        """Deformable DETR's: Xavier for every matrix, the attention modules' own init, N(0, 1)
        level embeddings."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)

    @staticmethod
    def reference_points(shapes: List[Tuple[int, int]], device, dtype) -> torch.Tensor:
        """(1, S, L, 2): each position's pixel centre, normalised (x, y), the same on every level
        (no padding mask, so every valid ratio is 1)."""
        points = []
        for h, w in shapes:
            ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
            xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
            points.append(torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)], -1).view(h * w, 2))
        return torch.cat(points, 0).view(1, -1, 1, 2).expand(-1, -1, len(shapes), -1)

    def forward(self, srcs: List[torch.Tensor], pos_embeds: List[torch.Tensor]):
        """
        Args:
            srcs: L maps (B, C, H_l, W_l); pos_embeds: L maps (1 or B, C, H_l, W_l).
        Returns:
            memory (B, S, C), spatial_shapes (L, 2) long, level_start_index (L,) long, the shapes as
            a list of (H_l, W_l).
        """
        shapes = [(s.shape[2], s.shape[3]) for s in srcs]
        src_flatten = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos_flatten = torch.cat(
            [p.flatten(2).transpose(1, 2) + self.level_embed[lvl] for lvl, p in enumerate(pos_embeds)], 1
        )
        device = src_flatten.device
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=device)
        sizes = spatial_shapes.prod(1)
        level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
        reference_points = self.reference_points(shapes, device, src_flatten.dtype)
        memory = self.encoder(src_flatten, spatial_shapes, level_start_index, reference_points, pos_flatten)
        return memory, spatial_shapes, level_start_index, shapes


def _fpn_convs(in_channels, conv_dim, norm, with_lateral=True):
    """Lateral 1x1 (optional) and output 3x3 conv of one FPN level, Caffe2 Xavier init."""
    use_bias = norm == ""
    lateral = None
    if with_lateral:
        lateral = Conv2d(in_channels, conv_dim, kernel_size=1, bias=use_bias, norm=get_norm(norm, conv_dim))
        weight_init.c2_xavier_fill(lateral)
    output = Conv2d(
        conv_dim if with_lateral else in_channels, conv_dim, kernel_size=3, stride=1, padding=1,
        bias=use_bias, norm=get_norm(norm, conv_dim), activation=F.relu,
    )
    weight_init.c2_xavier_fill(output)
    return lateral, output


def _fpn_args(cfg, input_shape: Dict[str, ShapeSpec]) -> Dict:
    """The arguments both pixel decoders take from MODEL.SEM_SEG_HEAD."""
    ssh = cfg.MODEL.SEM_SEG_HEAD
    return {
        "input_shape": {k: v for k, v in input_shape.items() if k in ssh.IN_FEATURES},
        "conv_dim": ssh.CONVS_DIM,
        "mask_dim": ssh.MASK_DIM,
        "norm": ssh.NORM,
    }


@PIXEL_DECODER_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """Mask2Former's pixel decoder: deformable encoder over `transformer_in_features`, then an
    FPN top-down path over the remaining higher-resolution features down to `common_stride`."""

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_enc_layers: int,
        transformer_n_points: int = 4,
        conv_dim: int,
        mask_dim: int,
        norm: Optional[Union[str, Callable]] = "GN",
        transformer_in_features: List[str],
        common_stride: int,
    ):
        """
        Args:
            input_shape: channels and stride of each input feature (the backbone's outputs used).
            transformer_*: the deformable encoder's dropout, heads, FFN width, layers, points.
            conv_dim: width of the encoder and of every FPN map.
            mask_dim: width of the per-pixel mask features.
            norm: normalisation of the FPN convs (the encoder's input projections always use
                GroupNorm(32), as published).
            transformer_in_features: the input features the encoder attends over.
            common_stride: stride of the mask features.
        """
        super().__init__()
        missing = [f for f in transformer_in_features if f not in input_shape]
        if missing:
            raise InputValueError(f"deformable encoder features {missing} "
                                  "(MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES) are not among the "
                                  f"inputs {list(input_shape)} (MODEL.SEM_SEG_HEAD.IN_FEATURES): choose among them")
        if conv_dim % 32 != 0:
            raise InputValueError(f"MODEL.SEM_SEG_HEAD.CONVS_DIM ({conv_dim}) must be divisible by 32 (GroupNorm(32) "
                                  "input projections): use e.g. 256")
        shapes = _sorted_by_stride(input_shape)
        self.in_features = [k for k, _ in shapes]  # high resolution first
        # Encoder levels, lowest resolution first (the order of the encoder's level embeddings).
        enc = [(k, v) for k, v in shapes if k in transformer_in_features][::-1]
        self.transformer_in_features = [k for k, _ in enc]
        self.transformer_num_feature_levels = len(enc)
        self.input_proj = nn.ModuleList()
        for _, spec in enc:
            proj = nn.Sequential(nn.Conv2d(spec.channels, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)
            self.input_proj.append(proj)
        self.transformer = MSDeformAttnEncoderOnly(
            d_model=conv_dim,
            nhead=transformer_nheads,
            num_encoder_layers=transformer_enc_layers,
            dim_feedforward=transformer_dim_feedforward,
            dropout=transformer_dropout,
            num_feature_levels=self.transformer_num_feature_levels,
            enc_n_points=transformer_n_points,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)

        # FPN levels: the inputs finer than the encoder's finest level, down to common_stride.
        min_enc_stride = min(spec.stride for _, spec in enc)
        fpn = [(k, v) for k, v in shapes if common_stride <= v.stride < min_enc_stride]
        out_stride = fpn[0][1].stride if fpn else min_enc_stride
        if out_stride != common_stride:
            raise InputValueError(
                f"mask features would have stride {out_stride}, not MODEL.SEM_SEG_HEAD.COMMON_STRIDE {common_stride}: "
                "set it to the stride of an input finer than the encoder features (inputs "
                f"{[(k, v.stride) for k, v in shapes]}, encoder features {self.transformer_in_features})"
            )
        self.num_fpn_levels = len(fpn)
        self.common_stride = common_stride
        lateral_convs, output_convs = [], []
        for idx, (_, spec) in enumerate(fpn):
            lateral, output = _fpn_convs(spec.channels, conv_dim, norm)
            self.add_module(f"adapter_{idx + 1}", lateral)
            self.add_module(f"layer_{idx + 1}", output)
            lateral_convs.append(lateral)
            output_convs.append(output)
        # Top-down order (low to high resolution); plain lists: the modules are registered above.
        self.fpn_features = [k for k, _ in fpn][::-1]
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1, stride=1, padding=0)  # 1x1, as published
        weight_init.c2_xavier_fill(self.mask_features)
        self.maskformer_num_feature_levels = NUM_MULTI_SCALE_FEATURES
        logger.debug(
            "MSDeformAttnPixelDecoder: encoder over %s, FPN over %s", self.transformer_in_features, self.fpn_features
        )

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ssh = cfg.MODEL.SEM_SEG_HEAD
        return {
            **_fpn_args(cfg, input_shape),
            "transformer_dropout": cfg.MODEL.MASK_FORMER.DROPOUT,
            "transformer_nheads": ssh.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS,
            "transformer_dim_feedforward": ssh.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD,
            "transformer_enc_layers": ssh.TRANSFORMER_ENC_LAYERS,
            "transformer_n_points": ssh.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS,
            "transformer_in_features": ssh.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES,
            "common_stride": ssh.COMMON_STRIDE,
        }

    def forward_features(self, features: Dict[str, torch.Tensor]):
        """
        Returns:
            mask_features: (B, mask_dim, H / common_stride, W / common_stride).
            transformer_encoder_features: (B, conv_dim, h, w), the encoder output at its lowest
                resolution.
            multi_scale_features: 3 maps (B, conv_dim, ., .), lowest resolution first.
        """
        device_type = features[self.transformer_in_features[0]].device.type
        with torch.autocast(device_type=device_type, enabled=False):  # deformable attention in fp32
            return self._forward_features(features)

    def _forward_features(self, features):
        srcs, pos = [], []
        for proj, name in zip(self.input_proj, self.transformer_in_features):
            x = _float_features(features[name])
            srcs.append(proj(x))
            pos.append(self.pe_layer(x))  # (1, C, H, W) broadcast view: computed once per level
        memory, _, _, shapes = self.transformer(srcs, pos)
        B = memory.shape[0]
        out = [
            z.transpose(1, 2).view(B, -1, h, w)
            for z, (h, w) in zip(memory.split([h * w for h, w in shapes], dim=1), shapes)
        ]
        for name, lateral, output in zip(self.fpn_features, self.lateral_convs, self.output_convs):
            cur = lateral(_float_features(features[name]))
            y = cur + F.interpolate(out[-1], size=cur.shape[-2:], mode="bilinear", align_corners=False)
            out.append(output(y))
        return self.mask_features(out[-1]), out[0], out[: self.maskformer_num_feature_levels]

    def forward(self, features):
        return self.forward_features(features)


@PIXEL_DECODER_REGISTRY.register()
class FPNPixelDecoder(nn.Module):
    """Plain FPN over every input feature (MaskFormer's base pixel decoder): the top level through
    a 3x3 conv, each finer level a lateral 1x1 conv plus the nearest-upsampled coarser output,
    then a 3x3 conv."""

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        conv_dim: int,
        mask_dim: int,
        norm: Optional[Union[str, Callable]] = "GN",
    ):
        super().__init__()
        shapes = _sorted_by_stride(input_shape)
        if not shapes:
            raise InputValueError("FPNPixelDecoder needs at least one input feature: name backbone features in "
                                  "MODEL.SEM_SEG_HEAD.IN_FEATURES")
        self.in_features = [k for k, _ in shapes]  # high resolution first
        lateral_convs, output_convs = [], []
        for idx, (_, spec) in enumerate(shapes):
            top = idx == len(shapes) - 1
            lateral, output = _fpn_convs(spec.channels, conv_dim, norm, with_lateral=not top)
            if lateral is not None:
                self.add_module(f"adapter_{idx + 1}", lateral)
            self.add_module(f"layer_{idx + 1}", output)
            lateral_convs.append(lateral)
            output_convs.append(output)
        self.lateral_convs = lateral_convs[::-1]  # top-down order
        self.output_convs = output_convs[::-1]
        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=3, stride=1, padding=1)
        weight_init.c2_xavier_fill(self.mask_features)
        self.maskformer_num_feature_levels = NUM_MULTI_SCALE_FEATURES

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        return _fpn_args(cfg, input_shape)

    def forward_features(self, features: Dict[str, torch.Tensor]):
        """Same outputs as MSDeformAttnPixelDecoder's; transformer_encoder_features is the top
        FPN output (there is no encoder)."""
        outs = []
        y = None
        for name, lateral, output in zip(self.in_features[::-1], self.lateral_convs, self.output_convs):
            x = features[name]
            if lateral is None:
                y = output(x)
            else:
                cur = lateral(x)
                y = output(cur + F.interpolate(y, size=cur.shape[-2:], mode="nearest"))
            outs.append(y)
        return self.mask_features(y), outs[0], outs[: self.maskformer_num_feature_levels]

    def forward(self, features):
        return self.forward_features(features)
