"""What a generative second stage's meta-architecture tells zsi_d2.engine.GenerativeTrainer about its
parameters, written once for PADing and the pixel-level methods."""
from typing import Iterable, List

import torch
from torch import nn

from ...errors import InputValueError

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

    def init_generative_stage(self, generative_criterion: nn.Module, stage2_class_set, class_embeddings: torch.Tensor,
                              frozen: Iterable[nn.Module], what: str):
        """Call in __init__ after the segmenter is built: keeps the generator side, the seen + unseen
        class set and its unit name embeddings (the generator's input), freezes the segmenter's parts
        `frozen`, and refuses a class set without unseen classes (`what` names the stage in the message)."""
        self.generative_criterion = generative_criterion
        self.stage2_class_set = stage2_class_set
        self.register_buffer("class_embeddings", class_embeddings, persistent=False)
        self.register_buffer("_unseen", stage2_class_set.group_indices[1], persistent=False)
        for part in frozen:
            part.requires_grad_(False)
        if not len(stage2_class_set.unseen):
            raise InputValueError(
                f"{what} generates features of unseen classes, but the class set of "
                f"{stage2_class_set.names[:3]}... has none: DATASETS.TRAIN[0] must be a zero-shot training set "
                "whose metadata lists unseen_classes (e.g. zs_shapes_train_panoptic)")

    def generator_parameters(self) -> List[torch.nn.Parameter]:
        return [p for p in self.generative_criterion.parameters() if p.requires_grad]

    def classifier_parameters(self) -> List[torch.nn.Parameter]:
        return [p for p in self.classifier.parameters() if p.requires_grad]

    def optimizer_param_groups(self, cfg):
        """The optimiser detectron2's trainer builds (and schedules, checkpoints) is the generator's."""
        return [{"params": self.generator_parameters(), "lr": cfg.SOLVER.BASE_LR, "weight_decay": cfg.SOLVER.WEIGHT_DECAY}]
