#!/usr/bin/env python
"""Train and evaluate zsi_d2 models: detectron2's train_net with zero-shot class sets.

    python train_net.py --config-file configs/zs_shapes/projection_mask_rcnn.yaml
    python train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS path/to/model.pth
    python train_net.py --config-file CONFIG --num-gpus 2   # on a CPU-only machine: 2 processes

Each test dataset is evaluated with the class set its metadata asks for (seen + unseen for GZSI,
unseen only for ZSI); evaluators follow the dataset's metadata; the training set is audited for
unseen labels before training starts.
"""
import logging
import os
import weakref

import zsi_d2  # noqa: F401  (first: makes detectron2 importable, registers datasets and models)

from detectron2.data import DatasetMapper, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.data import import_register_modules
from zsi_d2.data.audit import check_training_sets
from zsi_d2.engine import ZeroShotCheckpointer, check_weights, launch, zero_shot_test
from zsi_d2.evaluation import build_zero_shot_evaluator, format_zero_shot_table

logger = logging.getLogger("zsi_d2")


class Trainer(DefaultTrainer):
    """DefaultTrainer with zero-shot evaluators, class-set switching, a leakage check and a
    checkpointer that loads closed-set detectron2 checkpoints safely."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.checkpointer = ZeroShotCheckpointer(self._trainer.model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_zero_shot_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_train_loader(cls, cfg):
        check_training_sets(cfg)
        return build_detection_train_loader(cfg, mapper=DatasetMapper(cfg, is_train=True))

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        results = zero_shot_test(super().test, cfg, model, evaluators)
        if comm.is_main_process():
            for name, res in results.items():
                logger.info(f"Zero-shot results on {name}:\n{format_zero_shot_table(res)}")
        return results


def setup(args):
    cfg = get_zsi_d2_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    import_register_modules(cfg.DATASETS.REGISTER_MODULES)
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="zsi_d2")
    return cfg


def main(args):
    cfg = setup(args)
    if not args.resume:
        check_weights(cfg.MODEL.WEIGHTS)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        ZeroShotCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def invoke_main():
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()
