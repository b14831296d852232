"""CaGNet's self-training labels: an unlabelled pixel takes the highest-ranked unseen class among
the model's TOP_P best classes there (the reference's `construct_gt_st`); labelled pixels keep theirs.

Why: the model's own confident unseen predictions on images nobody labelled become real training
pixels of the unseen classes (transductive: images and predictions only, never an unseen label).
"""
import torch

__all__ = ["top_p_pseudo_labels"]


def top_p_pseudo_labels(logits: torch.Tensor, targets: torch.Tensor, unseen: torch.Tensor, top_p: int,
                        ignore_value: int, inside: torch.Tensor) -> torch.Tensor:
    """logits (N, K, h, w), targets (N, h, w) (ignore_value = unlabelled), unseen (U,) class indices,
    inside (N, h, w) the pixels of the images (not padding) -> new targets (N, h, w)."""
    top = logits.topk(min(top_p, logits.shape[1]), dim=1).indices  # (N, p, h, w), best first
    is_unseen = torch.isin(top, unseen)
    first = is_unseen.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first unseen rank (0 when none)
    chosen = top.gather(1, first)[:, 0]
    where = (targets == ignore_value) & is_unseen.any(dim=1) & inside
    return torch.where(where, chosen, targets)
