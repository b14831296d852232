"""What a generative second stage's meta-architecture tells zsi_d2.engine.GenerativeTrainer about its
parameters, written once for PADing and the pixel-level methods."""
from typing import List

import torch

__all__ = ["GenerativeStage"]


class GenerativeStage:
    """Mixin (first in the bases) of a meta-architecture with a `generative_criterion` (the generator
    side) and a `classifier` re-trained in the second stage."""

    generative_stage = True  # train_net.py trains it with zsi_d2.engine.GenerativeTrainer
    stage2_config_node = ""  # the MODEL.<node> holding CLASSIFIER_LR, CLASSIFIER_MOMENTUM, ... IMAGES_PER_BATCH

    @classmethod
    def stage2_solver(cls, cfg) -> dict:
        """The classifier's SGD settings and the images per step (GenerativeTrainer reads them)."""
        node = cfg.MODEL[cls.stage2_config_node]
        return {"classifier_lr": node.CLASSIFIER_LR, "classifier_momentum": node.CLASSIFIER_MOMENTUM,
                "classifier_weight_decay": node.CLASSIFIER_WEIGHT_DECAY, "images_per_batch": node.IMAGES_PER_BATCH,
                "images_per_batch_key": f"MODEL.{cls.stage2_config_node}.IMAGES_PER_BATCH"}

    def generator_parameters(self) -> List[torch.nn.Parameter]:
        return [p for p in self.generative_criterion.parameters() if p.requires_grad]

    def classifier_parameters(self) -> List[torch.nn.Parameter]:
        return [p for p in self.classifier.parameters() if p.requires_grad]

    def optimizer_param_groups(self, cfg):
        """The optimiser detectron2's trainer builds (and schedules, checkpoints) is the generator's."""
        return [{"params": self.generator_parameters(), "lr": cfg.SOLVER.BASE_LR, "weight_decay": cfg.SOLVER.WEIGHT_DECAY}]
