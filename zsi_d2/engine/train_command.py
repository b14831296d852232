"""train_net.py's command, written once: the repository's train_net.py and every project's under
projects/ call it with their own Trainer classes and config keys (detectron2's projects copy
detectron2's tools/train_net.py; a zsi_d2 project copies nothing).

    invoke_main(argv, trainer=Trainer, stage2_trainer=Stage2Trainer, add_config=add_my_config)

Known mistakes surface in `build_config`, before a config dump or a process spawns, and end in one
line on stderr with exit status 2 (exit_on_input_error).
"""
import os
from typing import Callable, Optional, Sequence, Type

from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import get_zsi_d2_cfg
from ..data import import_register_modules
from ..data.catalog import require_registered
from ..errors import InputFileNotFoundError, exit_on_input_error
from .checkpoint import ZeroShotCheckpointer
from .device import check_device
from .generative_trainer import GenerativeTrainer
from .launch import launch
from .trainer import ZeroShotTrainer, trainer_class_for
from .weights import check_weights

__all__ = ["EPILOG", "build_config", "main", "invoke_main", "project_of", "load_project_train_net"]

EPILOG = """
Zero-shot datasets: DATASETS.TRAIN holds seen classes only; each DATASETS.TEST entry is evaluated
in the mode its metadata names: GZSI (seen + unseen classes scored together; seen/unseen/HM) or
ZSI (unseen classes only). Built in: zs_shapes_{train,val,val_zsi} and the COCO splits
(datasets/README.md). Your own datasets: a module that registers them, named in
DATASETS.REGISTER_MODULES "['my_datasets.py']" (README, "Your own dataset").
Splits (seen / unseen class lists) live in zsi_d2/data/splits.py.
Leakage: training sets are audited for unseen labels before training (python -m zsi_d2.data.audit
NAME does the same); DATASETS.CHECK_LEAKAGE False skips that, loudly.
Weights: MODEL.WEIGHTS is a local file (never a URL). --eval-only loads every parameter from it or
stops; a starting checkpoint trained on unseen classes is refused unless
MODEL.ZERO_SHOT.ALLOW_UNSEEN_IN_WEIGHTS True.
Seen bias: MODEL.ZERO_SHOT.CALIBRATION.DATASETS "('zs_shapes_calib',)" chooses a calibrated-stacking
gamma on held-out seen-only images before testing (or set CALIBRATION.GAMMA yourself).
"""

AddConfig = Optional[Callable]


def project_of(config_path: str) -> Optional[str]:
    """The project folder (projects/<Name>, holding a train_net.py) a config file lies in, or None."""
    parts = os.path.abspath(config_path).split(os.sep)
    for i in range(len(parts) - 2, 0, -1):
        if parts[i - 1] == "projects":
            folder = os.sep.join(parts[: i + 1])
            return folder if os.path.isfile(os.path.join(folder, "train_net.py")) else None
    return None


def load_project_train_net(folder: str):
    """A project's train_net.py as a module named after the project (every project's file is called
    train_net.py: importing two by that name would return the first). It exposes `Trainer` and
    `add_config` (the project's keys)."""
    import importlib.util
    import sys

    name = f"{os.path.basename(os.path.normpath(folder)).lower()}_train_net"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(folder, "train_net.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def build_config(args, add_config: AddConfig = None):
    """The merged, frozen config (zsi_d2's keys, then `add_config`'s: a project's); its registration
    modules imported and its inputs checked."""
    if not os.path.isfile(args.config_file):
        raise InputFileNotFoundError(f"--config-file '{args.config_file}' does not exist (configs/ holds the shipped ones)")
    cfg = get_zsi_d2_cfg()
    if add_config is not None:
        add_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    import_register_modules(cfg.DATASETS.REGISTER_MODULES)
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST) + list(cfg.MODEL.ZERO_SHOT.CALIBRATION.DATASETS):
        require_registered(name)
    check_device(cfg.MODEL.DEVICE)
    resuming = args.resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    if not resuming:
        check_weights(cfg.MODEL.WEIGHTS, eval_only=args.eval_only)
    return cfg


def main(args, trainer: Type[ZeroShotTrainer] = ZeroShotTrainer,
         stage2_trainer: Type[GenerativeTrainer] = GenerativeTrainer, add_config: AddConfig = None,
         loggers: Sequence[str] = ()):
    """One process's work: evaluate (--eval-only) or train with `trainer`, or with `stage2_trainer`
    when the meta-architecture is a generative second stage. `loggers`: a project's own logger names,
    set up beside detectron2's and zsi_d2's."""
    cfg = build_config(args, add_config)
    default_setup(cfg, args)
    for name in ("zsi_d2", *loggers):
        setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name=name)
    if args.eval_only:
        model = trainer.build_model(cfg)
        checkpointer = ZeroShotCheckpointer.from_config(cfg, model, cfg.OUTPUT_DIR, purpose="eval")
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res

    chosen = stage2_trainer if trainer_class_for(cfg) is GenerativeTrainer else trainer
    runner = chosen(cfg)
    runner.resume_or_load(resume=args.resume)
    return runner.train()


def invoke_main(argv: Optional[Sequence[str]] = None, *, trainer: Type[ZeroShotTrainer] = ZeroShotTrainer,
                stage2_trainer: Type[GenerativeTrainer] = GenerativeTrainer, add_config: AddConfig = None,
                loggers: Sequence[str] = (), epilog: str = EPILOG):
    """The command line: parse, check the config (one line and exit 2 on a known mistake), launch."""
    args = default_argument_parser(epilog=epilog).parse_args(argv)
    print("Command Line Args:", args)
    with exit_on_input_error():
        build_config(args, add_config)  # known mistakes surface here, before a config dump or a process spawns
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args, trainer, stage2_trainer, add_config, tuple(loggers)))
