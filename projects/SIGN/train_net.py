#!/usr/bin/env python
"""SIGN on zsi_d2: zsi_d2's train_net command with this project's keys and CaGNet's trainer.

    python projects/SIGN/train_net.py --config-file projects/SIGN/configs/zs_shapes/sign_train.yaml
    python projects/SIGN/train_net.py --config-file projects/SIGN/configs/zs_shapes/sign.yaml

Run from the repository root (configs name its files relative to it), like detectron2's projects.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the project's package, beside this file

import zsi_d2  # noqa: E402,F401  (first: makes detectron2 importable, registers datasets and models)
from zsi_d2.engine import train_command  # noqa: E402

from sign import add_sign_config  # noqa: E402  (adds projects/CaGNet to the path)
from cagnet import CaGNetTrainer  # noqa: E402


add_config = add_sign_config  # this project's keys, for tools that build its configs (tools/benchmark_step.py)

class Trainer(CaGNetTrainer):
    """SIGN's phases are CaGNet's (train, finetune, self_training), three optimisers per iteration."""


def main(args):
    return train_command.main(args, Trainer, Trainer, add_sign_config, loggers=("sign", "cagnet"))


def invoke_main(argv=None):
    train_command.invoke_main(argv, trainer=Trainer, stage2_trainer=Trainer, add_config=add_sign_config,
                              loggers=("sign", "cagnet"))


if __name__ == "__main__":
    invoke_main()
