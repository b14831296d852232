from .defaults import add_zsi_d2_config  # noqa: F401


def get_zsi_d2_cfg():
    """detectron2's default config plus the keys of zsi_d2 and of every method it ships."""
    from detectron2.config import get_cfg

    from ..methods.pading.config import add_pading_config
    from ..methods.zegformer.config import add_zegformer_config
    from ..methods.zsi.config import add_zsi_config
    from ..modeling.mask_former.config import add_mask_former_config
    from ..modeling.semantic.config import add_semantic_config

    cfg = get_cfg()
    add_zsi_d2_config(cfg)
    add_zsi_config(cfg)
    add_mask_former_config(cfg)
    add_pading_config(cfg)
    add_zegformer_config(cfg)
    add_semantic_config(cfg)
    return cfg


def command_config(config_file: str, opts=(), weights: str = None):
    """The frozen config of a command that runs a trained model (demo.py, the tools): `config_file`
    merged with `opts` (KEY VALUE ...), MODEL.WEIGHTS = `weights`; the modules of
    DATASETS.REGISTER_MODULES imported and every dataset it names registered; the device checked.
    A missing file or an unknown dataset is a one-line input error."""
    import os

    from ..data import import_register_modules
    from ..data.catalog import require_registered
    from ..engine.device import check_device
    from ..errors import InputFileNotFoundError

    if not os.path.isfile(config_file):
        raise InputFileNotFoundError(f"--config-file {config_file} does not exist (configs/ holds the shipped ones)")
    if weights is not None and not os.path.isfile(weights):
        raise InputFileNotFoundError(f"--weights {weights} does not exist: train first (train_net.py writes "
                                     "OUTPUT_DIR/model_final.pth)")
    cfg = get_zsi_d2_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if weights is not None:
        cfg.MODEL.WEIGHTS = weights
    cfg.freeze()
    import_register_modules(cfg.DATASETS.REGISTER_MODULES)
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        require_registered(name)
    check_device(cfg.MODEL.DEVICE)
    return cfg
