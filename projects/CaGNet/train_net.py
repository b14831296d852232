#!/usr/bin/env python
"""CaGNet on zsi_d2: zsi_d2's train_net command with this project's keys and trainer.

    python projects/CaGNet/train_net.py --config-file projects/CaGNet/configs/zs_shapes/cagnet_train.yaml
    python projects/CaGNet/train_net.py --config-file projects/CaGNet/configs/zs_shapes/cagnet.yaml

Run from the repository root (configs name its files relative to it), like detectron2's projects.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the project's package, beside this file

import zsi_d2  # noqa: E402,F401  (first: makes detectron2 importable, registers datasets and models)
from zsi_d2.engine import train_command  # noqa: E402

from cagnet import CaGNetTrainer, add_cagnet_config  # noqa: E402


add_config = add_cagnet_config  # this project's keys, for tools that build its configs (tools/benchmark_step.py)

class Trainer(CaGNetTrainer):
    """Every CaGNet phase (train, finetune, self_training) trains with three optimisers per iteration."""


def main(args):
    return train_command.main(args, Trainer, Trainer, add_cagnet_config, loggers=("cagnet",))


def invoke_main(argv=None):
    train_command.invoke_main(argv, trainer=Trainer, stage2_trainer=Trainer, add_config=add_cagnet_config,
                              loggers=("cagnet",))


if __name__ == "__main__":
    invoke_main()
