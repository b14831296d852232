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

from ...errors import InputValueError
from ...modeling.class_embeddings import ClassEmbeddings, build_class_embeddings_module
from ...modeling.class_set import ZeroShotModule, training_class_names
from .composed_conv import compose_after_1x1

__all__ = ["SemanticMaskHead", "SMH_ENCODERS"]

SMH_ENCODERS = ("linear", "conv3x3")


@ROI_MASK_HEAD_REGISTRY.register()
class SemanticMaskHead(BaseMaskRCNNHead, ZeroShotModule):
    """Chained 3x3 convs -> 2x deconv -> 1x1 conv to D -> fixed class-embedding 1x1 convs.

    Per-class BCE on the ground-truth class's channel (detectron2's mask_rcnn_loss), plus an MSE
    reconstruction of the upsampled visual feature from the semantic map ("loss_mask_reconstruction").
    The reconstruction reads a detached visual feature, so it trains the projection to the semantic
    space and the decoder, never the feature itself (see zero_shot_detector.py for why).
    The background channel comes last; Sync-bg overwrites its vector.

    Encoder/decoder (MODEL.ZSI.SMH_ENCODER):
    - "linear" (default): a 1x1 projection to D and a 1x1 decoder. With the class-embedding 1x1
      convs everything after the deconv is linear, so it is applied as composed 1x1 convs (same
      values and gradients, see `semantic_map` for the explicit path): the D x 28 x 28 map per RoI
      is never materialised, which on a CPU made the head the most expensive part of a ZSI step.
    - "conv3x3" (the reference code's form): 3x3 conv C->D + ReLU, then a learnable 3x3 conv
      D->D, scored by the class-embedding 1x1 convs; the decoder is a 3x3 pair D->D + ReLU, D->C.
      The semantic map is materialised (nothing to compose).
    """

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, conv_dims, classes: ClassEmbeddings,
                 reconstruction_weight: float = 0.5, unseen_scoring: str = "direct",
                 seen_classes: Sequence[str] = (), encoder: str = "linear", **kwargs):
        super().__init__(**kwargs)
        if encoder not in SMH_ENCODERS:
            raise InputValueError(f"MODEL.ZSI.SMH_ENCODER must be one of {SMH_ENCODERS}, got '{encoder}'")
        self.encoder = encoder
        # "seen_projection" (the reference's test time): a class that was not trained on gets the
        # mask logits of the seen channels mapped back through the seen vectors, v_c · V_seenᵀ V_seen.
        self.unseen_scoring = unseen_scoring
        self.seen_classes = tuple(seen_classes)
        if not conv_dims:
            raise InputValueError("SemanticMaskHead needs at least one conv (MODEL.ROI_MASK_HEAD.NUM_CONV >= 1)")
        convs, channels = [], input_shape.channels
        for dim in conv_dims:  # chained: each conv takes the previous one's output
            convs.append(Conv2d(channels, dim, kernel_size=3, padding=1, activation=F.relu))
            channels = dim
        self.convs = nn.Sequential(*convs)
        self.deconv = ConvTranspose2d(channels, channels, kernel_size=2, stride=2)
        self.classes = classes
        self.reconstruction_weight = reconstruction_weight
        dim = classes.dim
        if encoder == "linear":
            self.to_semantic = Conv2d(channels, dim, kernel_size=1)
            self.decoder = Conv2d(dim, channels, kernel_size=1) if reconstruction_weight > 0 else None
            relu_layers, last = [], self.to_semantic
        else:
            self.to_semantic = nn.Sequential(
                Conv2d(channels, dim, kernel_size=3, padding=1, activation=F.relu),
                Conv2d(dim, dim, kernel_size=3, padding=1),
            )
            self.decoder = nn.Sequential(
                Conv2d(dim, dim, kernel_size=3, padding=1, activation=F.relu),
                Conv2d(dim, channels, kernel_size=3, padding=1),
            ) if reconstruction_weight > 0 else None
            relu_layers, last = [self.to_semantic[0]], self.to_semantic[1]
        for m in [*self.convs, self.deconv, *relu_layers]:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(m.bias, 0)
        nn.init.normal_(last.weight, std=0.001)
        nn.init.constant_(last.bias, 0)

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
            encoder=cfg.MODEL.ZSI.SMH_ENCODER,
        )
        return ret

    def class_weights(self):
        """(K + 1, D) rows of the class channels: the class embeddings, or at test time with
        "seen_projection" the projected rows for classes outside the seen (training) ones."""
        weights = self.classes.weights()
        if self.training or self.unseen_scoring == "direct":
            return weights
        seen = self.classes.seen_basis(self.seen_classes)
        trained = torch.tensor([n in self.seen_classes for n in self.classes.active_names] + [True])
        return torch.where(trained[:, None].to(weights.device), weights, weights @ seen.t() @ seen)

    def set_class_names(self, names):
        self.classes.set_class_names(names)

    def semantic_map(self, x):
        """The explicit D x 28 x 28 semantic map of each RoI (for inspection; forward composes it)."""
        return self.to_semantic(F.relu(self.deconv(self.convs(x))))

    def _class_logits(self, visual):
        """(R, K + 1, 28, 28) class-channel logits of the visual map (R, C, 28, 28)."""
        weights = self.class_weights()
        if self.encoder == "linear":  # weights @ to_semantic(visual) as one 1x1 conv
            return F.conv2d(visual, *compose_after_1x1(self.to_semantic, weights))
        return F.conv2d(self.to_semantic(visual), weights[:, :, None, None])

    def _rebuild(self, feature):
        """The decoder's reconstruction of the visual map from its semantic map."""
        if self.encoder == "linear":  # decoder(to_semantic(feature)) as one 1x1 conv
            return F.conv2d(feature, *compose_after_1x1(self.to_semantic, self.decoder.weight.flatten(1),
                                                        self.decoder.bias))
        return self.decoder(self.to_semantic(feature))

    def reconstruction_loss(self, feature):
        """MSE between the detached visual map (R, C, 28, 28) and its reconstruction `_rebuild`.

        With the linear encoder the residual of every pixel is A f + c (A = the composed 1x1 map
        minus the identity, c its bias), so the mean of its square is
        (tr(A S Aᵀ) + 2 cᵀ A m + N cᵀ c) / (N C) with S = Σ f fᵀ and m = Σ f over the N pixels.
        S and m are constants (the feature is detached): one C x C product replaces the rebuilt
        map, its MSE and their backward pass, with the same value and gradients (tested).
        """
        if self.encoder != "linear":
            return F.mse_loss(self._rebuild(feature), feature)
        weight, bias = compose_after_1x1(self.to_semantic, self.decoder.weight.flatten(1), self.decoder.bias)
        residual_map = weight.flatten(1) - torch.eye(weight.shape[0], dtype=weight.dtype, device=weight.device)
        per_roi = feature.flatten(2)  # (R, C, P): batched products need no (C, N) copy of the map
        second_moment = torch.matmul(per_roi, per_roi.transpose(1, 2)).sum(dim=0)
        total = per_roi.sum(dim=(0, 2))
        count = per_roi.shape[0] * per_roi.shape[2]
        if count == 0:  # no foreground RoI in the batch: a zero that keeps the graph (as mask_rcnn_loss)
            return (weight.sum() + bias.sum()) * 0.0
        squared = ((residual_map @ second_moment) * residual_map).sum() + 2 * bias @ (residual_map @ total) \
            + count * bias @ bias
        return squared / (count * per_roi.shape[1])

    def forward(self, x, instances):
        visual = F.relu(self.deconv(self.convs(x)))
        logits = self._class_logits(visual)
        if self.training:
            losses = {"loss_mask": mask_rcnn_loss(logits, instances, self.vis_period) * self.loss_weight}
            if self.decoder is not None:
                losses["loss_mask_reconstruction"] = self.reconstruction_weight * self.reconstruction_loss(visual.detach())
            return losses
        mask_rcnn_inference(logits, instances)
        return instances
