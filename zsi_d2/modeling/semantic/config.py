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
    # detectron2's DeepLab ResNet (build_resnet_deeplab_backbone, the GPU configs): res4 dilation,
    # res5's multi-grid dilations and the stem ("deeplab": three 3x3 convolutions).
    res = cfg.MODEL.RESNETS
    res.RES4_DILATION = 1
    res.RES5_MULTI_GRID = [1, 1, 1]
    res.STEM_TYPE = "basic"

    pc = cfg.MODEL.PIXEL_CLASSIFIER = CN()
    # The last layer, scoring each pixel feature: "embedding" (SPNet: a learned 1x1 projection into
    # the class-name embedding space, scored against the fixed embeddings of the class set, so
    # unseen classes can be named) or "linear" (DeepLab / ZS3Net stage 1: a free 1x1 convolution
    # with one filter per training class; a closed set).
    pc.NAME = "embedding"
    # "embedding" scores: "dot" (SPNet: projected feature . unit name embedding) or "cosine" (both
    # unit length, times MODEL.ZERO_SHOT.LOGIT_SCALE).
    pc.SCORE = "dot"

    g = cfg.MODEL.PIXEL_GENERATIVE = CN()
    # The second stage of the pixel-level generative methods (PixelGenerativeSegmentor; ZS3Net's
    # defaults): the stage-1 segmenter frozen, its pixel features cached, a generator trained on them,
    # the last classifier re-trained over seen + unseen classes.
    # Generator (zsi_d2.modeling.generative's registry) and its GMMN settings: noise width and
    # distribution ("uniform": ZS3Net's torch.rand), hidden width, dropout.
    g.GENERATOR = "gmmn"
    g.GMMN_NOISE_DIM = 300
    g.GMMN_NOISE = "uniform"
    g.GMMN_HIDDEN_DIM = 256
    g.GMMN_DROPOUT = 0.5
    # Generator loss: MMD with Gaussian kernels of these bandwidths, per seen class (ZS3Net) or over
    # the whole batch; optional CE of the classifier on the generated seen features.
    g.MMD_WEIGHT = 1.0
    g.MMD_SIGMAS = [2.0, 5.0, 10.0, 20.0, 40.0, 80.0]
    g.MMD_PER_CLASS = True
    g.GENERATOR_CLASS_WEIGHT = 0.0
    # The pixel bank: per training image, this many pixels of each labelled class, drawn with
    # replacement at the feature resolution (ZS3Net: 128); images per forward while computing it.
    g.PIXELS_PER_CLASS = 128
    g.BANK_IMAGES_PER_FORWARD = 8
    g.FEATURE_CACHE_DIR = ""
    # Each step: the features of this many images; the classifier step adds GENERATED_PER_CLASS
    # generated features of each of NUM_CHOOSE random unseen classes (0: all of them).
    g.IMAGES_PER_BATCH = 8
    g.NUM_CHOOSE = 0
    g.GENERATED_PER_CLASS = 128
    g.UNSEEN_CLASS_WEIGHT = 1.0
    # The re-trained classifier: SGD (ZS3Net: lr 0.07 with momentum), constant rate; its filters start
    # from random values (ZS3Net re-initialises it), not from stage 1's.
    g.CLASSIFIER_LR = 0.07
    g.CLASSIFIER_MOMENTUM = 0.9
    g.CLASSIFIER_WEIGHT_DECAY = 5e-4
    return cfg
