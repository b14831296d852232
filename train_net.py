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
import zsi_d2  # noqa: F401  (first: makes detectron2 importable, registers datasets and models)

from zsi_d2.engine import GenerativeTrainer, ZeroShotTrainer, train_command


class Trainer(ZeroShotTrainer):
    """detectron2's DefaultTrainer with zero-shot evaluators, class-set switching, a leakage check, a
    checkpointer that loads only what fits, and exact resumption (zsi_d2.engine.ZeroShotTrainer).
    Override its public build_* hooks here to change a part."""


class Stage2Trainer(GenerativeTrainer):
    """The second stage of a generative method (PADing): a generator step and a classifier step per
    iteration on the frozen stage-1 model's cached features (zsi_d2.engine.GenerativeTrainer)."""


def build_config(args):
    """The merged, frozen config; its registration modules imported and its inputs checked."""
    return train_command.build_config(args)


def main(args):
    return train_command.main(args, Trainer, Stage2Trainer)


def invoke_main(argv=None):
    """The command (zsi_d2.engine.train_command): a known input mistake ends in one line, exit 2."""
    train_command.invoke_main(argv, trainer=Trainer, stage2_trainer=Stage2Trainer)


if __name__ == "__main__":
    invoke_main()
