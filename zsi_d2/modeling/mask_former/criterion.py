"""Set criterion of mask classification (Mask2Former's losses): class CE plus point-sampled mask losses.

Per prediction (the last decoder layer and, with deep supervision, every earlier one): Hungarian
matching, then
- loss_ce: softmax CE over all queries, unmatched ones labelled "no object" (the last column);
  per-class weights: 1 with `no_object_weight` on the last column, or the caller's
  `class_loss_weights` (PADing's stage 2 up-weights unseen classes);
- loss_mask: sigmoid BCE averaged over points, summed over matched masks / num_masks;
- loss_dice: 1 - (2 sum(p t) + 1) / (sum p + sum t + 1) on the same points, summed / num_masks.
The points are PointRend's importance sample of each matched *prediction* (its uncertainty,
without gradient); targets are sampled at the same normalised coordinates, so they may have any
resolution. num_masks = targets in the batch, averaged over processes, at least 1.
Losses come back weighted (class / mask / dice weight); aux ones are suffixed `_0`, `_1`, ...

K is read from `pred_logits` on every call: the class set differs between training and PADing's
stage 2 (and at test time), so nothing here depends on a fixed number of classes.
"""
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
from detectron2.config import configurable
from detectron2.utils import comm
from torch import nn
from torch.nn import functional as F

from .matcher import HungarianMatcher, fast_softplus
from .point_sampling import calculate_uncertainty, point_sample, uncertain_point_coords_with_randomness

__all__ = ["SetCriterion"]


class _SigmoidBCE(torch.autograd.Function):
    """Elementwise BCE with logits; forward by vectorised exp/log (F.binary_cross_entropy_with_logits
    runs a scalar log-sigmoid loop on a CPU, ~5x slower), exact gradient sigmoid(x) - t."""

    @staticmethod
    def forward(ctx, logits, labels):
        ctx.save_for_backward(logits, labels)
        return fast_softplus(logits) - logits * labels

    @staticmethod
    def backward(ctx, grad):
        logits, labels = ctx.saved_tensors
        return grad * (logits.sigmoid() - labels), None


def _sample_targets(masks: torch.Tensor, tgt_idx: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """(R, P) values of masks[tgt_idx[r]] (n, H', W') at coords[r] (R, P, 2).

    Why grouped by target: with deep supervision each target is matched once per layer, and
    gathering masks[tgt_idx] would copy a full-resolution mask per row (L copies of every target);
    instead each target's rows are stacked as one grid and its mask is sampled once, in float only
    for this image.
    """
    num_rows, num_points = coords.shape[:2]
    order = torch.argsort(tgt_idx, stable=True)
    tgt_sorted = tgt_idx[order]
    counts = torch.bincount(tgt_sorted, minlength=masks.shape[0])
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(num_rows, device=coords.device) - starts[tgt_sorted]  # row's place within its target
    max_count = int(counts.max())
    grid = coords.new_zeros(masks.shape[0], max_count, num_points, 2)
    grid[tgt_sorted, rank] = coords[order]
    sampled = point_sample(masks.unsqueeze(1).to(coords.dtype), grid.view(masks.shape[0], -1, 2))
    out = torch.empty(num_rows, num_points, device=coords.device, dtype=coords.dtype)
    out[order] = sampled.view(masks.shape[0], max_count, num_points)[tgt_sorted, rank]
    return out


class SetCriterion(nn.Module):
    """Hungarian-matched class and mask losses of one prediction per decoder layer."""

    @configurable
    def __init__(self, matcher, class_weight: float = 2.0, mask_weight: float = 5.0, dice_weight: float = 5.0,
                 no_object_weight: float = 0.1, num_points: int = 112 * 112, oversample_ratio: float = 3.0,
                 importance_sample_ratio: float = 0.75, deep_supervision: bool = True):
        super().__init__()
        self.matcher = matcher
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.no_object_weight = no_object_weight
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.deep_supervision = deep_supervision
        # Upper bound on importance-sampling candidates (rows x oversampled points) per pass.
        self.max_candidates = 1 << 24

    @classmethod
    def from_config(cls, cfg):
        mf = cfg.MODEL.MASK_FORMER
        # Matching costs = loss weights, as Mask2Former builds its matcher.
        matcher = HungarianMatcher(cost_class=mf.CLASS_WEIGHT, cost_mask=mf.MASK_WEIGHT, cost_dice=mf.DICE_WEIGHT,
                                   num_points=mf.TRAIN_NUM_POINTS)
        return {
            "matcher": matcher,
            "class_weight": mf.CLASS_WEIGHT,
            "mask_weight": mf.MASK_WEIGHT,
            "dice_weight": mf.DICE_WEIGHT,
            "no_object_weight": mf.NO_OBJECT_WEIGHT,
            "num_points": mf.TRAIN_NUM_POINTS,
            "oversample_ratio": mf.OVERSAMPLE_RATIO,
            "importance_sample_ratio": mf.IMPORTANCE_SAMPLE_RATIO,
            "deep_supervision": mf.DEEP_SUPERVISION,
        }

    def _match(self, layers: List[Dict], targets: List[Dict]):
        """Indices [layer][image]; one batched call when the matcher offers it."""
        if hasattr(self.matcher, "match_layers"):
            return self.matcher.match_layers([(o["pred_logits"], o["pred_masks"]) for o in layers], targets)
        return [self.matcher(o["pred_logits"], o["pred_masks"], targets) for o in layers]

    def _num_masks(self, targets: List[Dict], device) -> float:
        num_masks = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        world_size = comm.get_world_size()
        if world_size > 1:
            dist.all_reduce(num_masks)
        return torch.clamp(num_masks / world_size, min=1).item()

    def _class_weights(self, num_columns: int, class_loss_weights: Optional[torch.Tensor], device) -> torch.Tensor:
        if class_loss_weights is None:
            weight = torch.ones(num_columns, device=device)
            weight[-1] = self.no_object_weight
            return weight
        if class_loss_weights.shape != (num_columns,):
            raise ValueError(f"class_loss_weights of shape {tuple(class_loss_weights.shape)} for {num_columns} "
                             "logit columns (K classes + no object)")
        return class_loss_weights.to(device=device, dtype=torch.float32)

    def _loss_ce(self, pred_logits, indices, targets, weight) -> torch.Tensor:
        logits = pred_logits.float()
        target_classes = torch.full(logits.shape[:2], logits.shape[2] - 1, dtype=torch.long, device=logits.device)
        for b, (q_idx, t_idx) in enumerate(indices):
            if len(q_idx):
                target_classes[b, q_idx.to(logits.device)] = targets[b]["labels"][t_idx.to(logits.device)]
        return F.cross_entropy(logits.transpose(1, 2), target_classes, weight)

    def _mask_losses(self, layers, indices, targets, num_masks):
        """Per layer (bce, dice) sums / num_masks; all layers' matched masks share one sampling pass."""
        num_layers = len(layers)
        shapes = {tuple(o["pred_masks"].shape[-2:]) for o in layers}
        if len(shapes) > 1:  # layers at different resolutions: one pass each
            out = [self._mask_losses([o], [ind], targets, num_masks) for o, ind in zip(layers, indices)]
            return [x for pair in out for x in pair[0]], [x for pair in out for x in pair[1]]
        device = layers[0]["pred_masks"].device
        src, row_layer, row_img, row_tgt = [], [], [], []
        for layer, (o, layer_indices) in enumerate(zip(layers, indices)):
            b_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(layer_indices)]).to(device)
            q_idx = torch.cat([q for q, _ in layer_indices]).to(device)
            src.append(o["pred_masks"][b_idx, q_idx])
            row_layer.append(torch.full_like(b_idx, layer))
            row_img.append(b_idx)
            row_tgt.append(torch.cat([t for _, t in layer_indices]).to(device))
        src = torch.cat(src).float().unsqueeze(1)  # (R, 1, H, W)
        row_layer, row_img, row_tgt = torch.cat(row_layer), torch.cat(row_img), torch.cat(row_tgt)
        if src.shape[0] == 0:  # no target in the batch: zeros that keep every layer in the graph
            zeros = [o["pred_masks"].sum() * 0.0 for o in layers]
            return zeros, list(zeros)
        with torch.no_grad():
            # Candidates cost R x oversample x P; chunks bound that memory for large configurations.
            chunk = max(1, self.max_candidates // max(1, int(self.num_points * self.oversample_ratio)))
            coords = torch.cat([
                uncertain_point_coords_with_randomness(
                    part, calculate_uncertainty, self.num_points, self.oversample_ratio, self.importance_sample_ratio)
                for part in src.split(chunk)
            ])
            labels = torch.empty(src.shape[0], coords.shape[1], device=device)
            for b, t in enumerate(targets):
                sel = torch.nonzero(row_img == b).squeeze(1)
                if sel.numel():
                    labels[sel] = _sample_targets(t["masks"], row_tgt[sel], coords[sel])
        logits = point_sample(src, coords).squeeze(1)  # (R, P)
        bce = _SigmoidBCE.apply(logits, labels).mean(1)
        prob = logits.sigmoid()
        dice = 1 - (2 * (prob * labels).sum(-1) + 1) / (prob.sum(-1) + labels.sum(-1) + 1)
        zeros = logits.new_zeros(num_layers)
        bce = zeros.index_add(0, row_layer, bce) / num_masks
        dice = zeros.index_add(0, row_layer, dice) / num_masks
        return list(bce.unbind()), list(dice.unbind())

    def forward(self, outputs: Dict, targets: List[Dict],
                class_loss_weights: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Weighted losses of `outputs` ({"pred_logits" (B, Q, K+1), "pred_masks" (B, Q, H, W),
        "aux_outputs": [same keys]}) against `targets` (B dicts {"labels" (n,) local, "masks" (n, H', W')}
        spanning the prediction's image area); `class_loss_weights` (K+1,) replaces the default CE weights.
        """
        layers = [outputs]
        if self.deep_supervision:
            layers += list(outputs.get("aux_outputs", []))
        pred_logits = outputs["pred_logits"]
        device = pred_logits.device
        num_classes = pred_logits.shape[-1] - 1
        # Masks stay bool (or whatever they are) until each image's are sampled: a float copy of every
        # full-resolution target would be the largest tensor of the step.
        targets = [{"labels": t["labels"].to(device=device, dtype=torch.long), "masks": t["masks"].to(device)}
                   for t in targets]
        all_labels = torch.cat([t["labels"] for t in targets]) if targets else torch.zeros(0, dtype=torch.long)
        if all_labels.numel():
            lo, hi = torch.stack([all_labels.min(), all_labels.max()]).tolist()  # one device sync
            if lo < 0 or hi >= num_classes:
                raise ValueError(f"SetCriterion: target labels must lie in [0, {num_classes}) (the model's class "
                                 f"set), got {lo}..{hi}")

        indices = self._match(layers, targets)
        num_masks = self._num_masks(targets, device)
        weight = self._class_weights(num_classes + 1, class_loss_weights, device)
        bce, dice = self._mask_losses(layers, indices, targets, num_masks)
        losses = {}
        for layer, o in enumerate(layers):
            suffix = "" if layer == 0 else f"_{layer - 1}"
            losses["loss_ce" + suffix] = self.class_weight * self._loss_ce(o["pred_logits"], indices[layer], targets,
                                                                            weight)
            losses["loss_mask" + suffix] = self.mask_weight * bce[layer]
            losses["loss_dice" + suffix] = self.dice_weight * dice[layer]
        return losses

    def extra_repr(self) -> str:
        return (f"class_weight={self.class_weight}, mask_weight={self.mask_weight}, dice_weight={self.dice_weight}, "
                f"no_object_weight={self.no_object_weight}, num_points={self.num_points}, "
                f"oversample_ratio={self.oversample_ratio}, importance_sample_ratio={self.importance_sample_ratio}, "
                f"deep_supervision={self.deep_supervision}")
