"""Config keys of the mask-classification core (Mask2Former's names, so its YAML files read here).

Only adds keys with defaults (detectron2 style); `add_mask_former_config` is safe to call twice.
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_mask_former_config"]


def add_mask_former_config(cfg):
    """Add the core's keys: MODEL.MASK_FORMER, MODEL.SEM_SEG_HEAD extras, SOLVER and INPUT extras."""
    if "MASK_FORMER" in cfg.MODEL:
        return cfg
    mf = cfg.MODEL.MASK_FORMER = CN()
    # Loss weights of the set criterion, and of the "no object" class in the class loss.
    mf.CLASS_WEIGHT = 2.0
    mf.MASK_WEIGHT = 5.0  # sigmoid BCE on sampled points
    mf.DICE_WEIGHT = 5.0
    mf.NO_OBJECT_WEIGHT = 0.1
    # Losses on every decoder layer's prediction (deep supervision), not only the last one.
    mf.DEEP_SUPERVISION = True
    # Transformer decoder: registered name, width, heads, FFN width, dropout, pre-norm.
    mf.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"
    mf.HIDDEN_DIM = 256
    mf.NUM_OBJECT_QUERIES = 100
    mf.NHEADS = 8
    mf.DIM_FEEDFORWARD = 2048
    mf.DROPOUT = 0.0
    mf.PRE_NORM = False
    # Number of predictions: decoder layers + 1 (the prediction from the learnable queries alone).
    # "StandardTransformerDecoder" (MaskFormer's / ZegFormer's): decoder layers = predictions.
    mf.DEC_LAYERS = 10
    # StandardTransformerDecoder: DETR encoder layers over its input map before decoding.
    mf.ENC_LAYERS = 0
    # What the transformer decoder attends to (Mask2Former's key): "multi_scale_pixel_decoder" (the
    # pixel decoder's 3 levels, MultiScaleMaskedTransformerDecoder), or one map for
    # StandardTransformerDecoder: "transformer_encoder" (the pixel decoder's coarsest output),
    # "pixel_embedding" (the mask features) or a backbone feature name ("res5" in MaskFormer's configs).
    mf.TRANSFORMER_IN_FEATURE = "multi_scale_pixel_decoder"
    # Project the pixel decoder's features to HIDDEN_DIM even when the widths already agree.
    mf.ENFORCE_INPUT_PROJ = False
    # Images are padded to a multiple of this (0: the backbone's size_divisibility).
    mf.SIZE_DIVISIBILITY = 32
    # Points per mask for the matcher's costs and the mask losses; importance sampling of the
    # criterion's points (PointRend): OVERSAMPLE_RATIO x candidates, IMPORTANCE_SAMPLE_RATIO of
    # them taken at the most uncertain ones.
    mf.TRAIN_NUM_POINTS = 112 * 112
    mf.OVERSAMPLE_RATIO = 3.0
    mf.IMPORTANCE_SAMPLE_RATIO = 0.75
    # Query classification: "embedding" (cosine with class-name embeddings over a temperature,
    # MODEL.ZERO_SHOT.LOGIT_SCALE; learnable no-object; classes can be added at test time) or
    # "linear" (closed set, one weight per training class).
    mf.CLASSIFIER = "embedding"
    # Set criterion: "point_sampled" (Mask2Former: BCE + dice on importance-sampled points) or
    # "full_mask" (MaskFormer / ZegFormer: sigmoid focal + dice on whole masks, matched on the same).
    mf.CRITERION = "point_sampled"

    mf.TEST = CN()
    # Which inference outputs the model returns (each is scored by the matching evaluator).
    mf.TEST.SEMANTIC_ON = True
    mf.TEST.INSTANCE_ON = True
    mf.TEST.PANOPTIC_ON = True
    # Panoptic: drop queries whose class score is below this; drop segments that keep less than
    # this share of their mask after overlaps are resolved.
    mf.TEST.OBJECT_MASK_THRESHOLD = 0.8
    mf.TEST.OVERLAP_THRESHOLD = 0.8
    # Instance: detections kept per image (top-k over queries x classes); 0 = number of queries.
    mf.TEST.DETECTIONS_PER_IMAGE = 100

    ssh = cfg.MODEL.SEM_SEG_HEAD
    # Registered pixel decoder: "MSDeformAttnPixelDecoder" (multi-scale deformable attention
    # encoder + FPN) or "FPNPixelDecoder" (plain FPN, the cheap option).
    ssh.PIXEL_DECODER_NAME = "MSDeformAttnPixelDecoder"
    ssh.MASK_DIM = 256  # width of the per-pixel mask features
    ssh.TRANSFORMER_ENC_LAYERS = 6  # deformable encoder layers
    # Backbone features the deformable encoder attends over (the lowest resolutions).
    ssh.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    ssh.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4
    ssh.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8
    ssh.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD = 1024

    # Optimiser extras (zsi_d2.engine.optimizer): "SGD" or "ADAMW"; learning-rate factor of the
    # backbone; weight decay of embeddings (queries, level embeddings).
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    # SOLVER.LR_SCHEDULER_NAME "WarmupPolyLR": lr x (1 - iter / MAX_ITER) ** POLY_LR_POWER.
    cfg.SOLVER.POLY_LR_POWER = 0.9
    # Dataset mapper of the training loader: "" (detectron2's DatasetMapper, the R-CNN family),
    # "mask_former_panoptic", "mask_former_instance" or "mask_former_semantic".
    cfg.INPUT.DATASET_MAPPER_NAME = ""
    # Training augmentations of those mappers: "shortest_edge" (detectron2's DatasetMapper recipe),
    # "lsj" (large-scale jitter, Mask2Former's COCO recipe) or "resize_then_crop" (MaskFormer's semantic one).
    cfg.INPUT.AUGMENTATION = "shortest_edge"
    # "lsj": images resized to a random MIN_SCALE..MAX_SCALE share of an IMAGE_SIZE square, then cropped /
    # padded to that square (Mask2Former's keys and defaults).
    cfg.INPUT.IMAGE_SIZE = 1024
    cfg.INPUT.MIN_SCALE = 0.1
    cfg.INPUT.MAX_SCALE = 2.0
    # "resize_then_crop": crops are redrawn (up to 10 times) while one category fills more than this share.
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # "resize_then_crop": SSD-style colour jitter (brightness, contrast, saturation, hue).
    cfg.INPUT.COLOR_AUG_SSD = False
    return cfg
