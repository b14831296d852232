"""SIGN's config keys (MODEL.SIGN) beyond CaGNet's (MODEL.CAGNET, which SIGN's code builds on)."""
from detectron2.config import CfgNode as CN

__all__ = ["add_sign_config"]


def add_sign_config(cfg):
    """Add MODEL.CAGNET and MODEL.SIGN (only keys with defaults). Safe to call twice."""
    from cagnet import add_cagnet_config

    add_cagnet_config(cfg)
    if "SIGN" in cfg.MODEL:
        return cfg
    s = cfg.MODEL.SIGN = CN()
    # Positions spread over [0, POSITION_LENGTH - 1] whatever the feature map's size (the released 512).
    s.POSITION_LENGTH = 512
    # Annealed self-training: each pseudo-labelled pixel's loss weighs softmax over the image's pixels of
    # TEMPERATURE x its confidence, over the maximum. The released configs (which hold T) are not public:
    # 5 is this project's choice.
    s.TEMPERATURE = 5.0
    return cfg
