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
  alone, so it is moved to the band's edge instead of into a neighbouring level: there it lies
  between two zero rows (the middle of the gap, or off the canvas) and reads zero with zero
  gradient. Rounding near the edges cannot change a result.
`MSDeformAttn` maps its pixel offsets to canvas coordinates in its offset layer's weights (a level's
pixel is a canvas pixel) and keeps every op on the sampling tensors broadcasting over leading
dimensions only: exported to ONNX, its attention runs in onnxruntime in a quarter to 0.4 of the time
the earlier form took (pixel offsets / level size, then the canvas map; docs/deployment.md).
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


class _Canvas:
    """Where each level sits on the canvas (see the module docstring), and its coordinates' map to
    grid_sample's: level l's normalised (x, y) goes to (2 x W_l / Wc - 1, 2 (tops[l] + y H_l) / Hc - 1).
    Every per-coordinate constant is laid out per column of the (..., M, L, P, 2) sampling tensors, so
    that the ops on them broadcast over leading dimensions only (onnxruntime runs interleaved
    broadcasts, such as (1, Lq, 1, L, 1, 2) against (1, Lq, M, L, P, 2), several times slower)."""

    def __init__(self, shapes: List[Tuple[int, int]]):
        self.shapes = shapes
        self.tops, row = [], 0
        for h, _ in shapes:
            self.tops.append(row)
            row += h + _GAP
        self.height = row - _GAP
        self.width = max(w for _, w in shapes)

    def paint(self, value: torch.Tensor) -> torch.Tensor:
        """(N, S, M, D) -> (N * M, D, Hc, Wc): each level padded with zero columns on its right and
        the gap rows below it, then stacked (pads and one concatenation: no scattered writes)."""
        N, _, M, D = value.shape
        channels_first = value.permute(0, 2, 3, 1)  # (N, M, D, S)
        levels, start = [], 0
        for i, (h, w) in enumerate(self.shapes):
            level = channels_first[..., start:start + h * w].reshape(N * M, D, h, w)
            below = _GAP if i + 1 < len(self.shapes) else 0
            levels.append(F.pad(level, (0, self.width - w, 0, below)))
            start += h * w
        return torch.cat(levels, dim=2)

    def per_column(self, per_level: List[List[float]], M: int, P: int, **opts) -> torch.Tensor:
        """(M, L, P, 2): an (x, y) constant per level, repeated over heads and points."""
        L = len(self.shapes)
        return torch.tensor(per_level, **opts).view(1, L, 1, 2).expand(M, L, P, 2)

    def level_scale_shift(self, M: int, P: int, **opts):
        """Level-normalised (x, y) to canvas grid coordinates: grid = location * scale + shift."""
        Hc, Wc = self.height, self.width
        scale = [[2.0 * w / Wc, 2.0 * h / Hc] for h, w in self.shapes]
        shift = [[-1.0, 2.0 * t / Hc - 1.0] for t in self.tops]
        return self.per_column(scale, M, P, **opts), self.per_column(shift, M, P, **opts)

    def pixel_step(self, M: int, P: int, **opts) -> torch.Tensor:
        """One pixel of any level in grid coordinates: canvas pixels are level pixels."""
        return self.per_column([[2.0 / self.width, 2.0 / self.height]] * len(self.shapes), M, P, **opts)

    def keep_in_band(self, grid: torch.Tensor) -> torch.Tensor:
        """Moves a point whose row lies outside its level's band (-1.5, H_l + 0.5) (in pixels) to the
        band's edge, in the middle of the zero gap (or off the canvas), where it reads zero with zero
        gradient, as on its level alone; x is left as it is (beyond a level's right border lie zeros)."""
        M, L, P = grid.shape[-4:-1]
        Hc = self.height
        inf = float("inf")
        low = self.per_column([[-inf, 2.0 * (t - 1) / Hc - 1.0] for t in self.tops], M, P,
                              dtype=grid.dtype, device=grid.device)
        high = self.per_column([[inf, 2.0 * (t + h + 1) / Hc - 1.0] for t, (h, _) in zip(self.tops, self.shapes)],
                               M, P, dtype=grid.dtype, device=grid.device)
        return torch.clamp(grid, low, high)


def _sample(canvas: torch.Tensor, grid: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """canvas (N*M, D, Hc, Wc), grid (N, Lq, M, L, P, 2) on the canvas, attention_weights
    (N, Lq, M, L, P) -> (N, Lq, M * D): one grid_sample, then the weighted sum over levels x points."""
    N, Lq, M, L, P, _ = grid.shape
    D = canvas.shape[1]
    grid = grid.reshape(N, Lq, M, L * P, 2).transpose(1, 2).reshape(N * M, Lq, L * P, 2)
    samples = F.grid_sample(canvas, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    weights = attention_weights.reshape(N, Lq, M, L * P).transpose(1, 2).reshape(N * M, 1, Lq, L * P)
    out = (samples * weights).sum(-1).view(N, M * D, Lq)  # (N*M, D, Lq, L*P) summed over L*P
    return out.transpose(1, 2).contiguous()


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
    canvas = _Canvas(shapes)
    scale, shift = canvas.level_scale_shift(M, P, dtype=sampling_locations.dtype, device=sampling_locations.device)
    grid = canvas.keep_in_band(torch.addcmul(shift, sampling_locations, scale))
    return _sample(canvas.paint(value), grid, attention_weights)


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

        shapes = _shape_list(input_spatial_shapes)
        if sum(h * w for h, w in shapes) != S:
            raise ValueError(f"input_flatten has {S} positions, input_spatial_shapes {shapes} sum to another number")
        canvas = _Canvas(shapes)
        opts = dict(dtype=query.dtype, device=query.device)
        # Offsets are in pixels of their level and a level's pixel is a canvas pixel: the offset
        # layer's rows times one pixel's grid step give grid units directly (an op on the weights).
        step = canvas.pixel_step(M, P, **opts).reshape(-1)
        offsets = F.linear(query, self.sampling_offsets.weight * step[:, None], self.sampling_offsets.bias * step)
        scale, shift = canvas.level_scale_shift(M, P, **opts)
        reference = reference_points[:, :, None, :, None, :].expand(N, Lq, M, L, P, 2)  # expanded, not broadcast
        grid = canvas.keep_in_band(torch.addcmul(shift, reference, scale) + offsets.view(N, Lq, M, L, P, 2))
        weights = self.attention_weights(query).view(N, Lq, M, L * P).softmax(-1).view(N, Lq, M, L, P)
        out = _sample(canvas.paint(value), grid, weights)
        return self.output_proj(out)
