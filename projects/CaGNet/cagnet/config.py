"""CaGNet's config keys (MODEL.CAGNET) beyond zsi_d2's; defaults are the released code's (VOC)."""
from detectron2.config import CfgNode as CN

__all__ = ["add_cagnet_config"]


def add_cagnet_config(cfg):
    """Add MODEL.CAGNET (only keys with defaults). Safe to call twice."""
    if "CAGNET" in cfg.MODEL:
        return cfg
    c = cfg.MODEL.CAGNET = CN()
    # Which of the reference's schedules this run is: "train" (its `step1`: segmenter, contextual
    # module, generator and discriminator trained together on the seen classes), "finetune" (its
    # `mixed`: segmenter and contextual module frozen, STEP1_ITERS step-1 iterations then STEP2_ITERS
    # step-2 iterations on generated seen + unseen features, repeated) or "self_training" (its `st`:
    # step 1 with the segmenter trained again, unlabelled pixels pseudo-labelled by the model itself;
    # TRANSDUCTIVE, then "finetune" again). finetune and self_training start from MODEL.WEIGHTS, a
    # whole CaGNet checkpoint of the phase before.
    c.PHASE = "train"
    # Contextual module: width of the three chained dilated 3x3 convolutions and their dilations;
    # the context selector's weights over the scales ("sigmoid": as released, one independent weight in
    # [0.5, 1) per scale; "softmax": weights summing to one per pixel).
    c.CONTEXT_HIDDEN = 256
    c.CONTEXT_DILATIONS = [1, 2, 5]
    c.SELECTOR = "sigmoid"
    # Whether the selector trains with the contextual module, as the paper describes (and SIGN's code
    # does); False: it keeps its starting weights, as in the released CaGNet code (its convolution is
    # in no optimiser group).
    c.TRAIN_SELECTOR = True
    # Generator ([class embedding ; latent] -> pixel feature, per pixel) and discriminator trunk widths.
    c.GENERATOR_HIDDEN = [1024, 960, 864, 784, 720]
    c.GENERATOR_DROPOUT = [0.1, 0.1, 0.3, 0.5, 0.5]
    c.DISCRIMINATOR_HIDDEN = 1024
    c.DISCRIMINATOR_DROPOUT = 0.5
    # Optimisers: the segmenter side is SOLVER's (SGD, poly), the contextual module at CONTEXTUAL_LR_FACTOR
    # times its rate; discriminator (= classifier) and generator Adam, constant until DECAY_START, then
    # times DECAY_GAMMA every DECAY_STEP iterations (0: never).
    c.CONTEXTUAL_LR_FACTOR = 5.0
    c.DISCRIMINATOR_LR = 2.5e-4
    c.DISCRIMINATOR_WEIGHT_DECAY = 5e-4
    c.GENERATOR_LR = 2e-4
    c.DECAY_START = 10000
    c.DECAY_STEP = 5000
    c.DECAY_GAMMA = 0.71
    # Loss weights (names as the reference's lambda_*): KL of the contextual latent and the segmenter's
    # CE (segmenter side); CE of the discriminator on real, generated (step 1) and step-2 features;
    # the generator's MMD, GAN and CE terms (step 1) and its step-2 CE.
    c.KL_WEIGHT = 100.0
    c.SEGMENTER_CLASS_WEIGHT = 0.5
    c.REAL_CLASS_WEIGHT = 1.0
    c.FAKE_CLASS_WEIGHT = 0.0
    c.TRANSFER_CLASS_WEIGHT = 0.125
    c.MMD_WEIGHT = 50.0
    c.GAN_WEIGHT = 1.0
    c.GENERATOR_CLASS_WEIGHT = 0.0
    c.GENERATOR_TRANSFER_CLASS_WEIGHT = 0.0
    # MMD bandwidths (the reference's) and at most this many pixels of each class per step in it
    # (the reference: one MMD per run of same-class pixels in raster order, a loop over every pixel).
    c.MMD_SIGMAS = [2.0, 5.0, 10.0, 20.0, 40.0, 60.0]
    c.MMD_PIXELS_PER_CLASS = 128
    # finetune: the alternation, and step 2's class prior (1 per seen class, 1 + UNSEEN_RATE per unseen).
    c.STEP1_ITERS = 100
    c.STEP2_ITERS = 100
    c.UNSEEN_RATE = 9.0
    c.SELF_TRAINING = CN()
    # self_training: images-only datasets (no image of DATASETS.TEST) added to DATASETS.TRAIN; an
    # unlabelled pixel takes the highest-ranked unseen class among the model's TOP_P best classes
    # (none: still unlabelled). The reference's self-training config uses TOP_P 1.
    c.SELF_TRAINING.DATASETS = ("zs_shapes_unlabelled",)
    c.SELF_TRAINING.TOP_P = 1
    return cfg
