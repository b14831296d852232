"""ZS3Net's config keys beyond zsi_d2's (the second stage's are zsi_d2's MODEL.PIXEL_GENERATIVE)."""
from detectron2.config import CfgNode as CN

__all__ = ["add_zs3net_config"]


def add_zs3net_config(cfg):
    """Add MODEL.ZS3NET (only keys with defaults). Safe to call twice."""
    if "ZS3NET" in cfg.MODEL:
        return cfg
    st = cfg.MODEL.ZS3NET = CN()
    st.SELF_TRAINING = CN()
    # ZS5Net, ZS3Net's self-training (transductive: it reads unlabelled images that may show unseen
    # objects): a trained ZS3Net (MODEL.WEIGHTS) labels the pixels of these images it predicts as an
    # unseen class; the classifier is re-trained with those real pseudo-labelled features beside the
    # generated ones. The images must carry no label the method could read and share none with DATASETS.TEST.
    st.SELF_TRAINING.ENABLED = False
    st.SELF_TRAINING.DATASETS = ("zs_shapes_unlabelled",)
    # Per image and unseen class, the most confident TOP_PERCENT % of the pixels predicted as that
    # class become its pseudo-labels (ZS3Net's released pseudo-label folders: "top_by_image_25.0").
    st.SELF_TRAINING.TOP_PERCENT = 25.0
    return cfg
