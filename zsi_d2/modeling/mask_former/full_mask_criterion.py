"""MaskFormer's set criterion: Hungarian matching and mask losses on whole masks (focal + dice).

Why a second criterion: MaskFormer, and ZegFormer built on it, score every pixel of a matched mask
with a sigmoid focal loss (alpha 0.25, gamma 2; weight 20 in their configs) and a dice loss
(weight 1), and match on the same two costs over whole masks; Mask2Former (the core's default
`SetCriterion`) samples points instead. The class loss, the "no object" weight, deep supervision
and the loss names are the core's, so everything that reads the losses works with either
(MODEL.MASK_FORMER.CRITERION "full_mask" selects this one).

Geometry: predictions are upsampled bilinearly to the targets' size for the losses (targets are
padded to the batch tensor, as the core prepares them); for matching, targets are downsampled
(nearest) to the prediction's size, as MaskFormer does to save memory.
"""
from typing import Dict, List, Tuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable

from ...errors import InputValueError
from .criterion import SetCriterion

__all__ = ["FullMaskHungarianMatcher", "FullMaskSetCriterion", "pairwise_dice_cost", "pairwise_focal_cost",
           "sigmoid_focal_loss"]


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """(N, P) logits and 0/1 targets -> (N,) focal loss averaged over the P pixels (RetinaNet's)."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, P) logits and targets -> (N,) 1 - (2 sum(p t) + 1) / (sum p + sum t + 1), p = sigmoid."""
    prob = logits.sigmoid()
    return 1 - (2 * (prob * targets).sum(-1) + 1) / (prob.sum(-1) + targets.sum(-1) + 1)


def pairwise_focal_cost(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                        gamma: float = 2.0) -> torch.Tensor:
    """(Q, P) logits, (T, P) targets -> (Q, T): `sigmoid_focal_loss` of every prediction against every
    target, as two matmuls (the positive and negative terms) instead of a (Q, T, P) tensor."""
    prob = logits.sigmoid()
    pos = (1 - prob) ** gamma * F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = prob ** gamma * F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    if alpha >= 0:
        pos, neg = pos * alpha, neg * (1 - alpha)
    return (pos @ targets.t() + neg @ (1 - targets).t()) / logits.shape[1]


def pairwise_dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(Q, P) logits, (T, P) targets -> (Q, T) `dice_loss` of every pair."""
    prob = logits.sigmoid()
    return 1 - (2 * prob @ targets.t() + 1) / (prob.sum(-1)[:, None] + targets.sum(-1)[None, :] + 1)


class FullMaskHungarianMatcher(nn.Module):
    """MaskFormer's matcher: cost = cost_class * (-p(class)) + cost_mask * focal + cost_dice * dice,
    on whole masks at the prediction's resolution; one assignment per image (no gradient)."""

    def __init__(self, cost_class: float = 1.0, cost_mask: float = 1.0, cost_dice: float = 1.0):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise InputValueError("FullMaskHungarianMatcher: all costs are 0 (MODEL.MASK_FORMER.CLASS_WEIGHT, "
                                  "MASK_WEIGHT, DICE_WEIGHT): make at least one positive")
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice

    @torch.no_grad()
    def cost_matrix(self, pred_logits: torch.Tensor, pred_masks: torch.Tensor, target: Dict) -> torch.Tensor:
        """(Q, n) cost of one image: pred_logits (Q, K+1), pred_masks (Q, H, W), target {"labels", "masks"}."""
        prob = pred_logits.float().softmax(-1)
        cost_class = -prob[:, target["labels"]]
        tgt = F.interpolate(target["masks"][:, None].float(), size=pred_masks.shape[-2:], mode="nearest")
        out, tgt = pred_masks.float().flatten(1), tgt[:, 0].flatten(1)
        return (self.cost_class * cost_class + self.cost_mask * pairwise_focal_cost(out, tgt)
                + self.cost_dice * pairwise_dice_cost(out, tgt))

    @torch.no_grad()
    def forward(self, pred_logits: torch.Tensor, pred_masks: torch.Tensor,
                targets: List[Dict]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """[(query indices, target indices)] per image, as the core's matcher returns them."""
        empty = torch.zeros(0, dtype=torch.int64)
        indices = []
        for b, target in enumerate(targets):
            if len(target["labels"]) == 0:
                indices.append((empty, empty))
                continue
            cost = self.cost_matrix(pred_logits[b], pred_masks[b], target).cpu().numpy()
            if not np.isfinite(cost).all():
                raise FloatingPointError("FullMaskHungarianMatcher: non-finite matching cost (NaN or inf in the "
                                         "predictions)")
            q_idx, t_idx = linear_sum_assignment(cost)
            indices.append((torch.as_tensor(q_idx, dtype=torch.int64), torch.as_tensor(t_idx, dtype=torch.int64)))
        return indices


class FullMaskSetCriterion(SetCriterion):
    """The core's class loss with MaskFormer's whole-mask focal ("loss_mask") and dice losses."""

    @configurable
    def __init__(self, matcher, class_weight: float = 1.0, mask_weight: float = 20.0, dice_weight: float = 1.0,
                 no_object_weight: float = 0.1, deep_supervision: bool = True, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0):
        super().__init__(matcher, class_weight=class_weight, mask_weight=mask_weight, dice_weight=dice_weight,
                         no_object_weight=no_object_weight, deep_supervision=deep_supervision)
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma

    @classmethod
    def from_config(cls, cfg):
        mf = cfg.MODEL.MASK_FORMER
        return {
            "matcher": FullMaskHungarianMatcher(mf.CLASS_WEIGHT, mf.MASK_WEIGHT, mf.DICE_WEIGHT),
            "class_weight": mf.CLASS_WEIGHT,
            "mask_weight": mf.MASK_WEIGHT,
            "dice_weight": mf.DICE_WEIGHT,
            "no_object_weight": mf.NO_OBJECT_WEIGHT,
            "deep_supervision": mf.DEEP_SUPERVISION,
        }

    def _mask_losses(self, layers, indices, targets, num_masks):
        """Per layer (focal, dice) sums over matched masks / num_masks, on whole masks."""
        focal, dice = [], []
        for o, layer_indices in zip(layers, indices):
            src, tgt = [], []
            for b, (q_idx, t_idx) in enumerate(layer_indices):
                if len(q_idx):
                    src.append(o["pred_masks"][b, q_idx.to(o["pred_masks"].device)])
                    tgt.append(targets[b]["masks"][t_idx.to(targets[b]["masks"].device)])
            if not src:  # no target in the batch: zeros that keep the layer in the graph
                zero = o["pred_masks"].sum() * 0.0
                focal.append(zero)
                dice.append(zero)
                continue
            tgt = torch.cat(tgt).float()
            src = F.interpolate(torch.cat(src).float()[:, None], size=tgt.shape[-2:], mode="bilinear",
                                align_corners=False)[:, 0]
            src, tgt = src.flatten(1), tgt.flatten(1)
            focal.append(sigmoid_focal_loss(src, tgt, self.focal_alpha, self.focal_gamma).sum() / num_masks)
            dice.append(dice_loss(src, tgt).sum() / num_masks)
        return focal, dice

    def extra_repr(self) -> str:
        return (f"class_weight={self.class_weight}, mask_weight={self.mask_weight}, dice_weight={self.dice_weight}, "
                f"no_object_weight={self.no_object_weight}, focal_alpha={self.focal_alpha}, "
                f"focal_gamma={self.focal_gamma}, deep_supervision={self.deep_supervision}")
