#!/usr/bin/env python
"""Train and evaluate zsi_d2 models: detectron2's train_net with zero-shot class sets.

    python train_net.py --config-file configs/zs_shapes/projection_mask_rcnn.yaml
    python train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS path/to/model.pth
    python train_net.py --config-file CONFIG --num-gpus 2   # on a CPU-only machine: 2 processes

Each test dataset is evaluated with the class set its metadata asks for (seen + unseen for GZSI,
unseen only for ZSI); evaluators follow the dataset's metadata; the training set is audited for
unseen labels before training starts; checkpoints load only what fits (zsi_d2.engine.checkpoint).
A known input mistake ends in one line on stderr and exit status 2.
"""
import logging
import os

import zsi_d2  # noqa: F401  (first: makes detectron2 importable, registers datasets and models)

from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.data import import_register_modules
from zsi_d2.data.catalog import require_registered
from zsi_d2.engine import (GenerativeTrainer, ZeroShotCheckpointer, ZeroShotTrainer, check_device, check_weights,
                           launch, trainer_class_for)
from zsi_d2.errors import InputFileNotFoundError, exit_on_input_error

logger = logging.getLogger("zsi_d2")

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


class Trainer(ZeroShotTrainer):
    """detectron2's DefaultTrainer with zero-shot evaluators, class-set switching, a leakage check, a
    checkpointer that loads only what fits, and exact resumption (zsi_d2.engine.ZeroShotTrainer).
    Override its public build_* hooks here to change a part."""


class Stage2Trainer(GenerativeTrainer):
    """The second stage of a generative method (PADing): a generator step and a classifier step per
    iteration on the frozen stage-1 model's cached features (zsi_d2.engine.GenerativeTrainer)."""


def build_config(args):
    """The merged, frozen config; its registration modules imported and its inputs checked."""
    if not os.path.isfile(args.config_file):
        raise InputFileNotFoundError(f"--config-file '{args.config_file}' does not exist (configs/ holds the shipped ones)")
    cfg = get_zsi_d2_cfg()
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


def main(args):
    cfg = build_config(args)
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="zsi_d2")
    if args.eval_only:
        model = Trainer.build_model(cfg)
        checkpointer = ZeroShotCheckpointer.from_config(cfg, model, cfg.OUTPUT_DIR, purpose="eval")
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res

    trainer = (Stage2Trainer if trainer_class_for(cfg) is GenerativeTrainer else Trainer)(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def invoke_main(argv=None):
    args = default_argument_parser(epilog=EPILOG).parse_args(argv)
    print("Command Line Args:", args)
    with exit_on_input_error():
        build_config(args)  # known mistakes surface here, before a config dump or a process spawns
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))


if __name__ == "__main__":
    invoke_main()
