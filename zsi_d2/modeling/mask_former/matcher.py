"""Hungarian matching of mask-classification predictions to ground-truth segments (Mask2Former's costs).

Cost of query q for target j = cost_class * (-softmax probability of j's class)
+ cost_mask * (sigmoid BCE averaged over points) + cost_dice * (1 - dice), both mask terms on the
same `num_points` uniform random points for every query and target of an image (cheap and unbiased;
the full-resolution costs are not needed to rank queries). One `linear_sum_assignment` per image.

Why it is batched: on a CPU the reference spends about 15 % of a step here. All images (and, via
`match_layers`, all decoder layers) share one `grid_sample` per layer for the predictions, one per
image for the targets, one batched matmul for both mask costs, and a single copy to the CPU.
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from ...errors import InputValueError
from .point_sampling import point_sample

__all__ = ["HungarianMatcher", "batch_mask_costs", "fast_softplus"]


def _sum_softplus(x: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
    """sum over the last dim of softplus(x) = max(x, 0) - log(sigmoid(|x|)), reusing prob = sigmoid(x):
    sigmoid(|x|) = max(prob, 1 - prob) lies in [0.5, 1], so its log is accurate (absolute error ~1e-7)."""
    return x.clamp(min=0).sum(-1) - torch.maximum(prob, 1 - prob).log().sum(-1)


def fast_softplus(x: torch.Tensor) -> torch.Tensor:
    """softplus(x) = log(1 + e^x) = max(x, 0) + log(1 + e^-|x|), stable (absolute error ~1e-7).

    Why: F.softplus and log1p are scalar loops on a CPU, ~10x slower than vectorised exp and log;
    the matcher only ranks costs, so log(1 + e) instead of log1p(e) costs nothing that matters.
    """
    a = x.abs()
    return 0.5 * (x + a) + torch.log(1 + torch.exp(-a))


def batch_mask_costs(pred_points: torch.Tensor, tgt_points: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pairwise mask costs of predictions and targets sampled at the same P points.

    pred_points (N, Q, P) logits, tgt_points (N, T, P) in [0, 1] -> (bce (N, Q, T), dice (N, Q, T)):
    bce = mean over points of BCE-with-logits; dice = 1 - (2 sum(p t) + 1) / (sum p + sum t + 1),
    p = sigmoid. The BCE uses softplus(x) - x t = BCE(x, t), so one matmul gives every pair
    (no (Q, T, P) tensor).
    """
    num_points = pred_points.shape[-1]
    prob = pred_points.sigmoid()
    # One matmul for both terms, t @ [x; sigmoid(x)]^T (this order is ~2x faster on a CPU for few targets).
    prods = torch.bmm(tgt_points, torch.cat([pred_points, prob], dim=1).transpose(1, 2)).transpose(1, 2)
    xt, pt = prods.split(pred_points.shape[1], dim=1)
    bce = (_sum_softplus(pred_points, prob).unsqueeze(-1) - xt) / num_points
    dice = 1 - (2 * pt + 1) / (prob.sum(-1, keepdim=True) + tgt_points.sum(-1).unsqueeze(1) + 1)
    return bce, dice


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets minimising the weighted cost (no gradient).

    Unmatched queries are "no object" for the criterion. With more targets than queries only Q
    targets are matched (scipy's rectangular assignment).
    """

    def __init__(self, cost_class: float = 1.0, cost_mask: float = 1.0, cost_dice: float = 1.0,
                 num_points: int = 112 * 112):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise InputValueError("HungarianMatcher: all costs are 0 (MODEL.MASK_FORMER.CLASS_WEIGHT, MASK_WEIGHT, "
                                  "DICE_WEIGHT): make at least one positive")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    def _point_coords(self, num_layers: int, num_images: int, device) -> torch.Tensor:
        """(L, B, P, 2) uniform points, one set per prediction and image (a method so tests can fix it)."""
        return torch.rand(num_layers, num_images, self.num_points, 2, device=device)

    @torch.no_grad()
    def cost_matrices(self, predictions: Sequence[Tuple[torch.Tensor, torch.Tensor]], targets: List[Dict],
                      point_coords: torch.Tensor) -> torch.Tensor:
        """(L, B, Q, T_max) cost of every query for every target (columns past an image's n: padding).

        predictions: L pairs (pred_logits (B, Q, K+1), pred_masks (B, Q, H, W)); targets: B dicts with
        "labels" (n,) and "masks" (n, H', W') covering the same image area as the predictions;
        point_coords (L, B, P, 2) in [0, 1].
        """
        num_layers, num_images = len(predictions), len(targets)
        device = predictions[0][1].device
        sizes = [len(t["labels"]) for t in targets]
        t_max = max(sizes)
        num_points = point_coords.shape[2]
        # Targets: one grid_sample per image covers the points of every layer.
        tgt_points = torch.zeros(num_layers, num_images, t_max, num_points, device=device)
        labels = torch.zeros(num_images, t_max, dtype=torch.long, device=device)
        for b, (t, n) in enumerate(zip(targets, sizes)):
            if n == 0:
                continue
            masks = t["masks"].to(device=device, dtype=torch.float32)
            coords = point_coords[:, b].reshape(1, num_layers * num_points, 2)
            sampled = point_sample(masks.unsqueeze(0), coords)  # (1, n, L * P)
            tgt_points[:, b, :n] = sampled.view(n, num_layers, num_points).transpose(0, 1)
            labels[b, :n] = t["labels"].to(device)
        costs = []
        for layer, (pred_logits, pred_masks) in enumerate(predictions):
            prob = pred_logits.float().softmax(-1)
            cost_class = -prob.gather(2, labels.unsqueeze(1).expand(-1, prob.shape[1], -1))
            pred_points = point_sample(pred_masks.float(), point_coords[layer])  # (B, Q, P)
            cost_bce, cost_dice = batch_mask_costs(pred_points, tgt_points[layer])
            costs.append(self.cost_class * cost_class + self.cost_mask * cost_bce + self.cost_dice * cost_dice)
        return torch.stack(costs)

    @torch.no_grad()
    def match_layers(self, predictions: Sequence[Tuple[torch.Tensor, torch.Tensor]],
                     targets: List[Dict]) -> List[List[Tuple[torch.Tensor, torch.Tensor]]]:
        """`forward` for L predictions of the same images at once (deep supervision): [layer][image]."""
        num_layers, num_images = len(predictions), len(targets)
        if num_images != predictions[0][0].shape[0]:
            raise ValueError(f"{num_images} targets for a batch of {predictions[0][0].shape[0]} images")
        sizes = [len(t["labels"]) for t in targets]
        empty = torch.zeros(0, dtype=torch.int64)
        if max(sizes, default=0) == 0:
            return [[(empty, empty) for _ in range(num_images)] for _ in range(num_layers)]
        coords = self._point_coords(num_layers, num_images, predictions[0][1].device)
        # float32 costs even under AMP: a half-precision matmul over thousands of points overflows.
        with torch.autocast(device_type=coords.device.type, enabled=False):
            costs = self.cost_matrices(predictions, targets, coords).cpu().numpy()
        if not np.isfinite(costs).all():
            raise FloatingPointError("HungarianMatcher: non-finite matching cost (NaN or inf in the predictions)")
        out = []
        for layer in range(num_layers):
            row = []
            for b, n in enumerate(sizes):
                if n == 0:
                    row.append((empty, empty))
                    continue
                q_idx, t_idx = linear_sum_assignment(costs[layer, b, :, :n])
                row.append((torch.as_tensor(q_idx, dtype=torch.int64), torch.as_tensor(t_idx, dtype=torch.int64)))
            out.append(row)
        return out

    @torch.no_grad()
    def forward(self, pred_logits: torch.Tensor, pred_masks: torch.Tensor,
                targets: List[Dict]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Per image (query_idx, target_idx), int64 CPU tensors of length min(Q, n), queries ascending.

        pred_logits (B, Q, K+1) (last column: no object), pred_masks (B, Q, H, W) logits, targets: B
        dicts {"labels": (n,) long local class indices, "masks": (n, H', W') bool or float} whose
        masks span the same image area as pred_masks (padded like the images), any resolution.
        """
        return self.match_layers([(pred_logits, pred_masks)], targets)[0]

    def extra_repr(self) -> str:
        return (f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, cost_dice={self.cost_dice}, "
                f"num_points={self.num_points}")
