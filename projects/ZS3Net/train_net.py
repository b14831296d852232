#!/usr/bin/env python
"""ZS3Net (and ZS5Net, its self-training) on zsi_d2: zsi_d2's train_net command with this project's keys.

    python projects/ZS3Net/train_net.py --config-file projects/ZS3Net/configs/zs_shapes/zs3net.yaml
    python projects/ZS3Net/train_net.py --config-file projects/ZS3Net/configs/zs_shapes/zs3net_st.yaml

Run from the repository root (configs name its files relative to it), like detectron2's projects.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the project's package, beside this file

import zsi_d2  # noqa: E402,F401  (first: makes detectron2 importable, registers datasets and models)
from zsi_d2.engine import GenerativeTrainer, ZeroShotTrainer, train_command  # noqa: E402

from zs3net import add_zs3net_config  # noqa: E402


add_config = add_zs3net_config  # this project's keys, for tools that build its configs (tools/benchmark_step.py)

class Trainer(ZeroShotTrainer):
    """zsi_d2's trainer (stage 1: configs/semantic/zs_shapes/deeplab_seen.yaml)."""


class Stage2Trainer(GenerativeTrainer):
    """ZS3Net's second stage: a generator step then a classifier step per iteration on cached pixel features."""


def main(args):
    return train_command.main(args, Trainer, Stage2Trainer, add_zs3net_config, loggers=("zs3net",))


def invoke_main(argv=None):
    train_command.invoke_main(argv, trainer=Trainer, stage2_trainer=Stage2Trainer, add_config=add_zs3net_config,
                              loggers=("zs3net",))


if __name__ == "__main__":
    invoke_main()
