"""Config keys of the pixel-level zero-shot semantic model (ZeroShotSemanticSegmentor).

The head is detectron2's DeepLabV3PlusHead (detectron2.projects.deeplab), read through the keys of
detectron2's DeepLab project, so its YAML files read here; zsi_d2 adds the pixel classifier's keys.
Only adds keys with defaults (detectron2 style); safe to call twice.
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_semantic_config"]


def add_semantic_config(cfg):
    """Add MODEL.PIXEL_CLASSIFIER and the DeepLab head's MODEL.SEM_SEG_HEAD keys."""
    if "PIXEL_CLASSIFIER" in cfg.MODEL:
        return cfg
    head = cfg.MODEL.SEM_SEG_HEAD
    # detectron2's DeepLab project keys (projects/DeepLab/deeplab/config.py), same defaults:
    # low-level features fused by the DeepLabV3+ decoder and their projected widths ...
    head.PROJECT_FEATURES = ["res2"]
    head.PROJECT_CHANNELS = [48]
    # ... ASPP on the coarsest of SEM_SEG_HEAD.IN_FEATURES: width, the three dilations, dropout.
    head.ASPP_CHANNELS = 256
    head.ASPP_DILATIONS = [6, 12, 18]
    head.ASPP_DROPOUT = 0.1
    head.USE_DEPTHWISE_SEPARABLE_CONV = False
    # The head's own loss type is not used: the zero-shot model computes a cross entropy over the
    # classes of its class set (ignored pixels: SEM_SEG_HEAD.IGNORE_VALUE).
    head.LOSS_TYPE = "cross_entropy"

    pc = cfg.MODEL.PIXEL_CLASSIFIER = CN()
    # The last layer, scoring each pixel feature: "embedding" (SPNet: a learned 1x1 projection into
    # the class-name embedding space, scored against the fixed embeddings of the class set, so
    # unseen classes can be named) or "linear" (DeepLab / ZS3Net stage 1: a free 1x1 convolution
    # with one filter per training class; a closed set).
    pc.NAME = "embedding"
    # "embedding" scores: "dot" (SPNet: projected feature . unit name embedding) or "cosine" (both
    # unit length, times MODEL.ZERO_SHOT.LOGIT_SCALE).
    pc.SCORE = "dot"
    return cfg
