"""ZegFormer's config keys. A ZegFormer config is the mask-classification core's (MODEL.MASK_FORMER:
TRANSFORMER_DECODER_NAME "StandardTransformerDecoder", TRANSFORMER_IN_FEATURE, CRITERION
"full_mask"; MODEL.ZERO_SHOT: the text embeddings, their prompt ensemble and LOGIT_SCALE =
1 / temperature) plus the CLIP image branch's keys under ZegFormer's own names
(zsi_d2.modeling.clip_image_branch: MODEL.SEM_SEG_HEAD.CLIP_CLASSIFICATION / CLIP_WEIGHTS /
CLIP_PRETRAINED, MODEL.CLIP_CLS_STYLE, MODEL.MASK_FORMER.ENSEMBLING / ENSEMBLING_ALL_CLS /
GZERO_CALIBRATE), so ZegFormer's YAML keys read here."""
from ...modeling.clip_image_branch import add_clip_image_branch_config

__all__ = ["add_zegformer_config"]


def add_zegformer_config(cfg):
    """Add ZegFormer's keys (the image branch's; only keys with defaults). Safe to call twice."""
    return add_clip_image_branch_config(cfg)
