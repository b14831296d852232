"""ZegFormer's config keys. The rest of a ZegFormer config is the mask-classification core's
(MODEL.MASK_FORMER: TRANSFORMER_DECODER_NAME "StandardTransformerDecoder", TRANSFORMER_IN_FEATURE,
CRITERION "full_mask"; MODEL.ZERO_SHOT: the text embeddings and LOGIT_SCALE = 1 / temperature)."""
from detectron2.config import CfgNode as CN

__all__ = ["add_zegformer_config"]


def add_zegformer_config(cfg):
    """Add MODEL.ZEGFORMER (only keys with defaults). Safe to call twice."""
    if "ZEGFORMER" in cfg.MODEL:
        return cfg
    z = cfg.MODEL.ZEGFORMER = CN()
    # Subtracted from the seen classes' channels of the semantic output (ZegFormer's
    # GZERO_CALIBRATE: 0.1 in its COCO-Stuff GZSS evaluation config, 0 elsewhere).
    z.GZERO_CALIBRATE = 0.0
    return cfg
