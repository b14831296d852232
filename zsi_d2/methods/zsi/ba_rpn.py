"""BA-RPN: an RPN whose objectness is decided in the semantic (class-embedding) space.

Why: a standard RPN learns "object" from seen classes only; scoring proposals against a
background vector that starts from the embedding of "background" and is learned keeps the
notion of background explicit, and that learned vector is what Sync-bg hands to the heads.
"""
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import Conv2d
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.proposal_generator.rpn import RPN_HEAD_REGISTRY

from ...embeddings import build_background_embedding
from ...errors import InputValueError
from .composed_conv import compose_after_1x1

__all__ = ["BackgroundAwareRPNHead"]


@RPN_HEAD_REGISTRY.register()
class BackgroundAwareRPNHead(nn.Module):
    """3x3 conv -> 1x1 conv to the semantic space ("T") -> bias-free fg/bg classifier per anchor.

    The reference scores each anchor with a 2-way softmax over (background, foreground) rows of a
    bias-free 1x1 conv; detectron2's RPN takes one logit per anchor with a sigmoid, and
    sigmoid(s·w_fg - s·w_bg) is exactly that softmax's foreground probability.

    T and the classifier are both linear with nothing in between, so they are applied as one
    composed 1x1 conv (same values and gradients) instead of materialising a D-channel semantic
    map on every FPN level, which made ZSI twice as slow as the baseline on a CPU.
    """

    @configurable
    def __init__(self, *, in_channels: int, num_anchors: int, box_dim: int, background: torch.Tensor):
        super().__init__()
        dim = background.numel()
        self.conv = Conv2d(in_channels, in_channels, kernel_size=3, padding=1, activation=F.relu)
        self.to_semantic = Conv2d(in_channels, dim, kernel_size=1)
        self.foreground = nn.Parameter(torch.randn(num_anchors, dim) * 0.01)
        # Background rows start from the "background" embedding and are learned.
        self.background = nn.Parameter(background.detach().float().repeat(num_anchors, 1))
        self.anchor_deltas = Conv2d(in_channels, num_anchors * box_dim, kernel_size=1)
        for layer in (self.conv, self.to_semantic, self.anchor_deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape):
        in_channels = {s.channels for s in input_shape}
        if len(in_channels) != 1:
            raise InputValueError(f"BA-RPN needs the same channel count on every level, got {sorted(in_channels)}: "
                                  "use an FPN backbone (MODEL.BACKBONE.NAME), as the ZSI configs do")
        anchors = build_anchor_generator(cfg, input_shape)
        if len(set(anchors.num_anchors)) != 1:
            raise InputValueError("BA-RPN needs the same number of anchors on every level: give every level as many "
                                  "MODEL.ANCHOR_GENERATOR.SIZES and ASPECT_RATIOS")
        return {
            "in_channels": in_channels.pop(),
            "num_anchors": anchors.num_anchors[0],
            "box_dim": anchors.box_dim,
            "background": build_background_embedding(cfg),
        }

    def background_vector(self) -> torch.Tensor:
        """The learned background vector (mean of the per-anchor background rows), with gradient."""
        return self.background.mean(dim=0)

    def objectness_weights(self):
        """(A, C, 1, 1) weight and (A,) bias of T followed by the fg-vs-bg classifier."""
        classifier = self.foreground - self.background  # (A, D): log-odds of foreground vs background
        return compose_after_1x1(self.to_semantic, classifier)

    def forward(self, features: List[torch.Tensor]):
        weight, bias = self.objectness_weights()
        objectness, deltas = [], []
        for x in features:
            t = self.conv(x)
            objectness.append(F.conv2d(t, weight, bias))
            deltas.append(self.anchor_deltas(t))
        return objectness, deltas
