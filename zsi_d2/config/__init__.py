from .defaults import add_zsi_d2_config  # noqa: F401


def get_zsi_d2_cfg():
    """detectron2's default config plus the keys of zsi_d2 and of every method it ships."""
    from detectron2.config import get_cfg

    from ..methods.pading.config import add_pading_config
    from ..methods.zegformer.config import add_zegformer_config
    from ..methods.zsi.config import add_zsi_config
    from ..modeling.mask_former.config import add_mask_former_config

    cfg = get_cfg()
    add_zsi_d2_config(cfg)
    add_zsi_config(cfg)
    add_mask_former_config(cfg)
    add_pading_config(cfg)
    add_zegformer_config(cfg)
    return cfg
