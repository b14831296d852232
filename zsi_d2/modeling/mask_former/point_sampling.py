"""Point sampling of mask logits (PointRend's rule), as Mask2Former's matcher and criterion use it.

`point_sample` is detectron2's own (`projects.point_rend`, which imports with zsi_d2's stand-in for
the compiled `_C`). The uncertainty sampler is zsi_d2's: the same rule as detectron2's
`get_uncertain_point_coords_with_randomness`, drawing its candidates once in grid_sample's space and
gathering only the kept ones (40 against 55 ms for 60 maps, 3136 points, oversampling 3, on one
CPU thread with the other core busy, 2026-12-07); its random draws differ from detectron2's, so
swapping it would move every measured number. Coordinates are normalised (x, y) in [0, 1] over the
whole map, so predictions and targets of different resolutions are sampled at the same places.
"""
import torch
from torch.nn import functional as F

from detectron2.projects.point_rend.point_features import point_sample as _point_sample

from ...errors import InputValueError

__all__ = ["point_sample", "calculate_uncertainty", "uncertain_point_coords_with_randomness"]


def point_sample(input: torch.Tensor, point_coords: torch.Tensor, **kwargs) -> torch.Tensor:
    """detectron2's `point_sample` (bilinear samples of `input` (N, C, H, W) at `point_coords`
    (N, P, 2) in [0, 1] -> (N, C, P)), with align_corners=False unless given, as Mask2Former calls
    it: the point ((j + 0.5) / W, (i + 0.5) / H) reads pixel (i, j) exactly."""
    kwargs.setdefault("align_corners", False)
    return _point_sample(input, point_coords, **kwargs)


def calculate_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of class-agnostic mask logits: -|logit|, highest where the logit is near 0."""
    return -torch.abs(logits)


def uncertain_point_coords_with_randomness(
    coarse_logits: torch.Tensor, uncertainty_func, num_points: int, oversample_ratio: float,
    importance_sample_ratio: float,
) -> torch.Tensor:
    """(N, num_points, 2) points in [0, 1], biased towards uncertain places of `coarse_logits`.

    PointRend's rule: draw int(num_points * oversample_ratio) uniform candidates per map, score the
    *sampled* logits with `uncertainty_func` (uncertainty of interpolated values, not interpolated
    uncertainties: between logits -1 and 1 the point is at 0, the most uncertain), keep the
    int(importance_sample_ratio * num_points) most uncertain candidates, fill the rest with fresh
    uniform points (coverage away from the boundary). `coarse_logits` (N, 1, H, W); no gradient
    is needed (call it under no_grad).
    """
    if oversample_ratio < 1:
        raise InputValueError(f"oversample_ratio (MODEL.MASK_FORMER.OVERSAMPLE_RATIO) must be >= 1, got "
                              f"{oversample_ratio}: use e.g. 3.0")
    if not 0 <= importance_sample_ratio <= 1:
        raise InputValueError(f"importance_sample_ratio (MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO) must lie in "
                              f"[0, 1], got {importance_sample_ratio}: use e.g. 0.75")
    num_maps = coarse_logits.shape[0]
    device, dtype = coarse_logits.device, coarse_logits.dtype
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    parts = []
    if num_uncertain > 0:
        # Candidates drawn in grid_sample's [-1, 1] space and only the kept ones mapped to [0, 1]: the
        # same uniform points without two passes over all N x num_sampled x 2 coordinates.
        grid = torch.empty(num_maps, num_sampled, 1, 2, device=device, dtype=dtype).uniform_(-1, 1)
        logits = F.grid_sample(coarse_logits, grid, align_corners=False)[..., 0]  # (N, 1, num_sampled)
        idx = torch.topk(uncertainty_func(logits)[:, 0, :], k=num_uncertain, dim=1, sorted=False)[1]  # a set
        kept = torch.gather(grid[:, :, 0], 1, idx.unsqueeze(-1).expand(-1, -1, 2))
        parts.append((kept + 1) / 2)
    if num_random > 0:
        parts.append(torch.rand(num_maps, num_random, 2, device=device, dtype=dtype))
    if not parts:
        return torch.zeros(num_maps, 0, 2, device=device, dtype=dtype)
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
