"""Fold a linear map applied after a 1x1 conv into the conv itself.

Why: ZSI scores features in the semantic space (a 1x1 conv to D channels) against fixed or
learned vectors. `rows @ conv(x)` equals one 1x1 conv with weight `rows @ W` and bias `rows @ b`,
so the D-channel map never has to exist: BA-RPN on every FPN level and the Semantic Mask Head on
every RoI were the slowest parts of a ZSI step on a CPU before this.
"""
from typing import Optional, Tuple

import torch
from torch import nn

__all__ = ["compose_after_1x1"]


def compose_after_1x1(
    conv: nn.Conv2d, rows: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(weight (K, C, 1, 1), bias (K,)) of the conv equal to `rows @ conv(x) + bias`; rows is (K, D)."""
    weight = rows @ conv.weight.flatten(1)  # (K, C)
    composed_bias = rows @ conv.bias
    if bias is not None:
        composed_bias = composed_bias + bias
    return weight[:, :, None, None], composed_bias
