"""ZSI's config keys. Each component is an ablation away:

- BA-RPN:  MODEL.RPN.HEAD_NAME "BackgroundAwareRPNHead"  (or detectron2's "StandardRPNHead")
- SMH:     MODEL.ROI_MASK_HEAD.NAME "SemanticMaskHead"   (or "MaskRCNNConvUpsampleHead", class-agnostic)
- Sync-bg: MODEL.ZSI.SYNC_BG
- reconstruction losses: MODEL.ZSI.BOX_RECONSTRUCTION_WEIGHT / MASK_RECONSTRUCTION_WEIGHT (0 = off)
- embedding source: MODEL.ZERO_SHOT.EMBEDDING.* (shared with every method)
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_zsi_config"]


def add_zsi_config(cfg):
    """Add ZSI's keys (only keys with defaults). Safe to call twice."""
    if "ZSI" in cfg.MODEL:
        return cfg
    cfg.MODEL.ZSI = CN()
    # BA-RPN's learned background vector is the background embedding of the zero-shot detector and
    # of the Semantic Mask Head, read from BA-RPN at every use (needs the BA-RPN head).
    cfg.MODEL.ZSI.SYNC_BG = True
    # Weight of the encoder-decoder reconstruction loss (MSE) in the zero-shot detector; 0 = off.
    cfg.MODEL.ZSI.BOX_RECONSTRUCTION_WEIGHT = 0.5
    # Weight of the Semantic Mask Head's reconstruction loss (MSE); 0 = off.
    cfg.MODEL.ZSI.MASK_RECONSTRUCTION_WEIGHT = 0.5
    # GZSI inference: NMS and top-k run separately within seen and within unseen classes, as in
    # the reference code, so unseen detections are not crowded out by seen ones.
    cfg.MODEL.ZSI.GZSI_PER_GROUP_NMS = False
    # Test-time class scores of the zero-shot detector: "direct" (cosine with every active class,
    # softmax over them, the paper's Fig. 3) or "seen_projection" (the reference code: softmax over
    # seen + background, then each class scored as p · V_seen · v_class, ConSE-style).
    cfg.MODEL.ZSI.UNSEEN_SCORING = "direct"
    # Semantic Mask Head encoder/decoder: "linear" (1x1 maps, applied as composed convs) or
    # "conv3x3" (the reference code's 3x3 conv + ReLU + 3x3 conv, and a 3x3 decoder pair).
    cfg.MODEL.ZSI.SMH_ENCODER = "linear"
    return cfg
