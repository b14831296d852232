"""ZSI's Semantic Mask Head: masks predicted in the class-embedding space.

Why: a standard mask head has one output channel per seen class, so an unseen class has none. Here
the head predicts a D x 28 x 28 semantic map and the class channels are fixed 1x1 convolutions
whose weights are the class embeddings, so any class with an embedding gets a mask channel.
"""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import Conv2d, ConvTranspose2d, ShapeSpec
from detectron2.modeling.roi_heads.mask_head import (
    ROI_MASK_HEAD_REGISTRY,
    BaseMaskRCNNHead,
    mask_rcnn_inference,
    mask_rcnn_loss,
)

from ...modeling.class_embeddings import ClassEmbeddings, build_class_embeddings_module
from ...modeling.class_set import ZeroShotModule, training_class_names
from .composed_conv import compose_after_1x1

__all__ = ["SemanticMaskHead"]


@ROI_MASK_HEAD_REGISTRY.register()
class SemanticMaskHead(BaseMaskRCNNHead, ZeroShotModule):
    """Chained 3x3 convs -> 2x deconv -> 1x1 conv to D -> fixed class-embedding 1x1 convs.

    Per-class BCE on the ground-truth class's channel (detectron2's mask_rcnn_loss), plus an MSE
    reconstruction of the upsampled visual feature from the semantic map ("loss_mask_reconstruction").
    The reconstruction reads a detached visual feature, so it trains the projection to the semantic
    space and the decoder, never the feature itself (see zero_shot_detector.py for why).
    The background channel comes last; Sync-bg overwrites its vector.

    The 1x1 projection to D, the class-embedding 1x1 convs and the decoder are all linear, so they
    are applied as composed 1x1 convs (same values and gradients, see `semantic_map` for the
    explicit path): the D x 28 x 28 map per RoI is never materialised, which on a CPU made the
    head the most expensive part of a ZSI step.
    """

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, conv_dims, classes: ClassEmbeddings,
                 reconstruction_weight: float = 0.5, unseen_scoring: str = "direct",
                 seen_classes: Sequence[str] = (), **kwargs):
        super().__init__(**kwargs)
        # "seen_projection" (the reference's test time): a class that was not trained on gets the
        # mask logits of the seen channels mapped back through the seen vectors, v_c · V_seenᵀ V_seen.
        self.unseen_scoring = unseen_scoring
        self.seen_classes = tuple(seen_classes)
        if not conv_dims:
            raise ValueError("SemanticMaskHead needs at least one conv (MODEL.ROI_MASK_HEAD.NUM_CONV >= 1)")
        convs, channels = [], input_shape.channels
        for dim in conv_dims:  # chained: each conv takes the previous one's output
            convs.append(Conv2d(channels, dim, kernel_size=3, padding=1, activation=F.relu))
            channels = dim
        self.convs = nn.Sequential(*convs)
        self.deconv = ConvTranspose2d(channels, channels, kernel_size=2, stride=2)
        self.to_semantic = Conv2d(channels, classes.dim, kernel_size=1)
        self.classes = classes
        self.reconstruction_weight = reconstruction_weight
        self.decoder = Conv2d(classes.dim, channels, kernel_size=1) if reconstruction_weight > 0 else None
        for m in [*self.convs, self.deconv]:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(m.bias, 0)
        nn.init.normal_(self.to_semantic.weight, std=0.001)
        nn.init.constant_(self.to_semantic.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret.update(
            input_shape=input_shape,
            conv_dims=[cfg.MODEL.ROI_MASK_HEAD.CONV_DIM] * cfg.MODEL.ROI_MASK_HEAD.NUM_CONV,
            classes=build_class_embeddings_module(cfg, learn_background=not cfg.MODEL.ZSI.SYNC_BG),
            reconstruction_weight=cfg.MODEL.ZSI.MASK_RECONSTRUCTION_WEIGHT,
            unseen_scoring=cfg.MODEL.ZSI.UNSEEN_SCORING,
            seen_classes=training_class_names(cfg),
        )
        return ret

    def class_weights(self):
        """(K + 1, D) rows of the class channels: the class embeddings, or at test time with
        "seen_projection" the projected rows for classes outside the seen (training) ones."""
        weights = self.classes.weights()
        if self.training or self.unseen_scoring == "direct":
            return weights
        seen = self.classes.weights_of(self.classes.index_of(self.seen_classes))
        trained = torch.tensor([n in self.seen_classes for n in self.classes.active_names] + [True])
        return torch.where(trained[:, None].to(weights.device), weights, weights @ seen.t() @ seen)

    def set_class_names(self, names):
        self.classes.set_class_names(names)

    def semantic_map(self, x):
        """The explicit D x 28 x 28 semantic map of each RoI (for inspection; forward composes it)."""
        return self.to_semantic(F.relu(self.deconv(self.convs(x))))

    def _through_semantic(self, visual, weight, bias=None):
        """`weight @ to_semantic(visual) + bias` as one 1x1 conv: weight is (out, D)."""
        return F.conv2d(visual, *compose_after_1x1(self.to_semantic, weight, bias))

    def forward(self, x, instances):
        visual = F.relu(self.deconv(self.convs(x)))
        logits = self._through_semantic(visual, self.class_weights())  # (R, K + 1, 28, 28)
        if self.training:
            losses = {"loss_mask": mask_rcnn_loss(logits, instances, self.vis_period) * self.loss_weight}
            if self.decoder is not None:
                feature = visual.detach()
                rebuilt = self._through_semantic(feature, self.decoder.weight.flatten(1), self.decoder.bias)
                losses["loss_mask_reconstruction"] = self.reconstruction_weight * F.mse_loss(rebuilt, feature)
            return losses
        mask_rcnn_inference(logits, instances)
        return instances
