"""Multi-scale deformable attention (Deformable DETR), pure PyTorch, CPU and GPU, no compiled op.

`ms_deform_attn` is the same op as Mask2Former's `ms_deform_attn_core_pytorch` (bilinear sampling,
zero padding, align_corners=False, weighted sum over levels and points) but samples every level
in one `grid_sample` call: the levels are stacked top to bottom on one zero canvas per image and
head (two zero rows between levels, zero columns right of the narrower ones) and the sampling
grid is mapped onto each level's place on the canvas. This is exact, not an approximation:
- x never needs care: beyond a level's right border lie zero columns, then grid_sample's own zero
  padding, exactly what the level alone would read;
- a point whose row coordinate y * H - 0.5 lies in (-1.5, H + 0.5) touches only its level's rows
  and the zero gap rows; a point outside that band reads zero with zero gradient on its level
  alone, so it is sent off the canvas instead of into a neighbouring level. The band's edges lie
  in the middle of the zero gap, so rounding near them cannot change a result.
On CPU this is faster than the per-level loop on large maps and no slower on small ones (see
tools/benchmark_deform_attn.py); zero-padding every level to the largest one and stacking levels
along the batch axis (also exact) was slower on small maps.
"""
import logging
import math
from typing import List, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import InputValueError

__all__ = ["ms_deform_attn", "ms_deform_attn_per_level", "MSDeformAttn"]

logger = logging.getLogger(__name__)

# Zero rows between levels on the canvas: two, so that the row band of a level (see the module
# docstring) ends inside zeros.
_GAP = 2

SpatialShapes = Union[torch.Tensor, Sequence[Tuple[int, int]]]


def _shape_list(spatial_shapes: SpatialShapes) -> List[Tuple[int, int]]:
    """(H, W) of each level as Python ints (the canvas layout needs them on the host)."""
    if isinstance(spatial_shapes, torch.Tensor):
        spatial_shapes = spatial_shapes.tolist()
    return [(int(h), int(w)) for h, w in spatial_shapes]


def _check_shapes(value, shapes, sampling_locations, attention_weights):
    N, S, M, _ = value.shape
    L, P = sampling_locations.shape[3], sampling_locations.shape[4]
    if sum(h * w for h, w in shapes) != S:
        raise ValueError(f"value has {S} positions, spatial_shapes {shapes} sum to another number")
    if len(shapes) != L:
        raise ValueError(f"sampling_locations have {L} levels, spatial_shapes {len(shapes)}")
    if attention_weights.shape != sampling_locations.shape[:-1] or sampling_locations.shape[2] != M:
        raise ValueError(
            f"shapes disagree: value {tuple(value.shape)}, sampling_locations "
            f"{tuple(sampling_locations.shape)}, attention_weights {tuple(attention_weights.shape)}"
        )
    return N, S, M, L, P


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: SpatialShapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """
    Args:
        value: (N, S, M, D), S = sum_l H_l * W_l, levels in order, each level row-major.
        spatial_shapes: (L, 2) long tensor or sequence of (H_l, W_l).
        sampling_locations: (N, Lq, M, L, P, 2), normalised (x, y); (0, 0) is the top-left corner
            of a level and (1, 1) its bottom-right corner; may lie outside [0, 1].
        attention_weights: (N, Lq, M, L, P).
    Returns:
        (N, Lq, M * D): per query and head, the attention-weighted sum of the bilinear samples.
    """
    shapes = _shape_list(spatial_shapes)
    N, S, M, L, P = _check_shapes(value, shapes, sampling_locations, attention_weights)
    D = value.shape[3]
    Lq = sampling_locations.shape[1]
    # Canvas rows: level l starts at row tops[l], GAP zero rows between levels.
    tops, row = [], 0
    for h, _ in shapes:
        tops.append(row)
        row += h + _GAP
    Hc = row - _GAP
    Wc = max(w for _, w in shapes)

    canvas = value.new_zeros(N, M, D, Hc, Wc)
    start = 0
    for (h, w), top in zip(shapes, tops):  # copies only; the sampling below is one call
        level = value[:, start:start + h * w].view(N, h, w, M, D).permute(0, 3, 4, 1, 2)
        canvas[:, :, :, top:top + h, :w] = level
        start += h * w

    # Level l's (x, y) in [0, 1] span W_l of the Wc columns and H_l rows from tops[l] of the Hc:
    # grid = (2 x W_l / Wc - 1, 2 (tops[l] + y H_l) / Hc - 1).
    opts = dict(dtype=sampling_locations.dtype, device=sampling_locations.device)
    scale = torch.tensor([[2.0 * w / Wc, 2.0 * h / Hc] for h, w in shapes], **opts).view(L, 1, 2)
    shift = torch.tensor([[-1.0, 2.0 * t / Hc - 1.0] for t in tops], **opts).view(L, 1, 2)
    heights = torch.tensor([float(h) for h, _ in shapes], **opts).view(L, 1)
    grid = torch.addcmul(shift, sampling_locations, scale)  # (N, Lq, M, L, P, 2)
    # Row band (-1.5, H_l + 0.5) in pixels, i.e. -1 < y H_l < H_l + 1; outside it: off the canvas.
    y_pixels = sampling_locations[..., 1] * heights
    in_band = (y_pixels > -1.0) & (y_pixels < heights + 1.0)
    grid = torch.where(in_band[..., None], grid, grid.new_tensor(-3.0))
    grid = grid.transpose(1, 2).reshape(N * M, Lq, L * P, 2)
    samples = F.grid_sample(
        canvas.view(N * M, D, Hc, Wc), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )  # (N*M, D, Lq, L*P)
    weights = attention_weights.transpose(1, 2).reshape(N * M, 1, Lq, L * P)
    out = (samples * weights).sum(-1).view(N, M * D, Lq)
    return out.transpose(1, 2).contiguous()


def ms_deform_attn_per_level(
    value: torch.Tensor,
    spatial_shapes: SpatialShapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The published per-level loop (one grid_sample per level); the reference for tests and speed."""
    shapes = _shape_list(spatial_shapes)
    N, S, M, L, P = _check_shapes(value, shapes, sampling_locations, attention_weights)
    D = value.shape[3]
    Lq = sampling_locations.shape[1]
    grids = 2.0 * sampling_locations - 1.0
    per_level = []
    for lvl, (v, (h, w)) in enumerate(zip(value.split([h * w for h, w in shapes], dim=1), shapes)):
        v = v.flatten(2).transpose(1, 2).reshape(N * M, D, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (N*M, Lq, P, 2)
        per_level.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    samples = torch.stack(per_level, dim=-2).flatten(-2)  # (N*M, D, Lq, L*P)
    weights = attention_weights.transpose(1, 2).reshape(N * M, 1, Lq, L * P)
    out = (samples * weights).sum(-1).view(N, M * D, Lq)
    return out.transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module: each query attends to `n_points` learned offsets
    around its reference point on each of `n_levels` feature maps, per head."""

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads != 0:
            raise InputValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads}): in the pixel "
                                  "decoder, choose MODEL.SEM_SEG_HEAD.CONVS_DIM and "
                                  "DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS to match")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self):
        """Deformable DETR's init: zero offset weights, and offset biases that start head h's
        points on a ray at angle 2*pi*h/n_heads (scaled to the unit square), point k at distance
        k + 1 pixels; uniform attention; Xavier value and output projections."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        dirs = torch.stack([angles.cos(), angles.sin()], -1)
        dirs = dirs / dirs.abs().max(-1, keepdim=True).values
        steps = torch.arange(1, self.n_points + 1, dtype=torch.float32)
        bias = dirs.view(self.n_heads, 1, 1, 2) * steps.view(1, 1, self.n_points, 1)
        bias = bias.expand(self.n_heads, self.n_levels, self.n_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.reshape(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        input_level_start_index: torch.Tensor = None,
        input_padding_mask: torch.Tensor = None,
    ) -> torch.Tensor:
        """
        Args:
            query: (N, Lq, C).
            reference_points: (N, Lq, L, 2) normalised (x, y) in [0, 1] (N may be 1: broadcast).
            input_flatten: (N, S, C), the levels flattened and concatenated.
            input_spatial_shapes: (L, 2) long, (H_l, W_l).
            input_level_start_index: (L,), unused here (kept for the published signature).
            input_padding_mask: (N, S) bool, True at padding: those values are zeroed.
        Returns:
            (N, Lq, C)
        """
        N, Lq, _ = query.shape
        S = input_flatten.shape[1]
        M, L, P = self.n_heads, self.n_levels, self.n_points
        if reference_points.shape[-1] != 2:
            raise ValueError(f"reference_points must end in (x, y), got {tuple(reference_points.shape)}")

        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(N, S, M, self.d_model // M)

        offsets = self.sampling_offsets(query).view(N, Lq, M, L, P, 2)
        weights = self.attention_weights(query).view(N, Lq, M, L * P).softmax(-1).view(N, Lq, M, L, P)
        # Offsets are in pixels of each level: divide by (W_l, H_l).
        inv_size = 1.0 / input_spatial_shapes.flip(-1).to(offsets.dtype)
        locations = torch.addcmul(
            reference_points[:, :, None, :, None, :], offsets, inv_size.view(1, 1, 1, L, 1, 2)
        )
        out = ms_deform_attn(value, input_spatial_shapes, locations, weights)
        return self.output_proj(out)
