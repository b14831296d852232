"""The second stage of a generative zero-shot method: two optimiser steps per iteration on the cached
features of a frozen model.

Why one trainer: ZS3Net, CaGNet, SIGN and PADing all alternate a generator step (the generator
learns to imitate real seen features) and a classifier step (real seen + generated unseen
features), with their own optimisers. detectron2's DefaultTrainer builds, schedules and
checkpoints one optimiser: here that is the generator side's (the model's
`optimizer_param_groups`), as in PADing's code; the classifier's SGD, built by
`build_classifier_optimizer` with a constant learning rate, and the feature sampler's position are
checkpointed beside it, so a killed run resumes to the weights of an uninterrupted one.

Everything is set up before training (`resume_or_load`: the starting checkpoint is checked, the
feature bank computed or read, the seen + unseen class set applied), and `run_step` overrides
DefaultTrainer's public `run_step`. With several processes (detectron2's `launch`) each process
takes its share of every batch and both steps average their gradients over the processes before
stepping, so the processes stay identical, as under DistributedDataParallel.

The model (PADing; zsi_d2.modeling.semantic.PixelGenerativeSegmentor with pixel features) provides:
- `stage2_solver(cfg)` (a classmethod): the classifier's SGD settings and the images per step;
- `stage2_class_set`: the seen + unseen ClassSet the classifier is trained over;
- `check_starting_weights(cfg)`: refuses a starting checkpoint it cannot use, in one line;
- `build_feature_bank(cfg)`: a FeatureBank of the training images (cached; computed once);
- `generator_parameters()`, `classifier_parameters()`, `optimizer_param_groups(cfg)`;
- `generator_losses(features, labels)` and `classifier_losses(features, labels)` (a
  GenerativeCriterion's), labels local to stage2_class_set, len(names) = no object.
"""
import hashlib
import logging
import time
from typing import Dict, List

import torch
import torch.distributed as dist

from detectron2.engine import SimpleTrainer
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils import comm

from ..data.audit import check_training_sets
from ..errors import InputValueError
from ..modeling.class_set import apply_class_set
from ..modeling.generative import IGNORE, EpochSampler
from ..utils.model import unwrap
from .trainer import ZeroShotTrainer

__all__ = ["GenerativeTrainer", "any_process", "average_gradients", "check_processes_agree"]

logger = logging.getLogger(__name__)


def average_gradients(parameters: List[torch.nn.Parameter]):
    """Average the gradients of `parameters` over all processes (a parameter without a gradient
    counts as zero), in one all_reduce; nothing to do in one process."""
    world = comm.get_world_size()
    if world == 1 or not parameters:
        return
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in parameters])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in parameters:
        p.grad.copy_(flat[offset: offset + p.numel()].view_as(p.grad))
        offset += p.numel()


def check_processes_agree(parameters: List[torch.nn.Parameter], what: str):
    """Every process must end with the same trained weights (gradients are averaged before each
    step); a difference means they trained apart, and is an error rather than a silent result."""
    if comm.get_world_size() == 1:
        return
    weights = torch.cat([p.detach().reshape(-1).cpu() for p in parameters])
    digests = comm.all_gather(hashlib.sha1(weights.numpy().tobytes()).hexdigest())
    if len(set(digests)) > 1:
        raise RuntimeError(f"{what}: the {len(digests)} processes ended with different weights")
    logger.info(f"{what}: the {len(digests)} processes hold identical weights")


def any_process(flag: bool) -> bool:
    """Whether `flag` holds on any process (all take part)."""
    if comm.get_world_size() == 1:
        return flag
    count = torch.tensor([int(flag)])
    dist.all_reduce(count)
    return bool(count.item())


class GenerativeTrainer(ZeroShotTrainer):
    """ZeroShotTrainer whose iteration is a generator step then a classifier step (module docstring)."""

    @property
    def unwrapped_model(self):
        return unwrap(self.model)

    # ---- public build hooks (override in a project with other config keys) --------------------
    @classmethod
    def build_train_loader(cls, cfg):
        """No image loader: the features come from the bank. The training sets are still audited."""
        check_training_sets(cfg)
        return []

    @classmethod
    def stage2_solver(cls, cfg) -> Dict:
        """The meta-architecture's second-stage settings (its `stage2_solver(cfg)`): classifier_lr,
        classifier_momentum, classifier_weight_decay, images_per_batch and the key naming the latter."""
        return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE).stage2_solver(cfg)

    @classmethod
    def build_classifier_optimizer(cls, cfg, model) -> torch.optim.Optimizer:
        s = cls.stage2_solver(cfg)
        return torch.optim.SGD(model.classifier_parameters(), lr=s["classifier_lr"], momentum=s["classifier_momentum"],
                               weight_decay=s["classifier_weight_decay"])

    @classmethod
    def images_per_batch(cls, cfg) -> int:
        """Images' features per iteration, all processes together."""
        return cls.stage2_solver(cfg)["images_per_batch"]

    # ---- set-up, before training ------------------------------------------------------------
    def build_hooks(self):
        model = self.unwrapped_model
        self.classifier_optimizer = self.build_classifier_optimizer(self.cfg, model)
        self.feature_sampler = EpochSampler(self.cfg.SEED if self.cfg.SEED >= 0 else 0)
        self.generator_side = model.generator_parameters()
        self.classifier_side = model.classifier_parameters()
        return super().build_hooks()

    def checkpointables(self) -> dict:
        state = super().checkpointables()
        state.pop("data_sampler", None)
        return {**state, "classifier_optimizer": self.classifier_optimizer, "feature_sampler": self.feature_sampler}

    def resume_or_load(self, resume=True):
        model = self.unwrapped_model
        batch = self.images_per_batch(self.cfg)
        if batch < comm.get_world_size():
            key = self.stage2_solver(self.cfg)["images_per_batch_key"]
            raise InputValueError(f"{key}={batch} must be at least the number of processes "
                                  f"({comm.get_world_size()}): each process takes at least one image per step")
        if not (resume and self.checkpointer.has_checkpoint()):
            model.check_starting_weights(self.cfg)
        super().resume_or_load(resume=resume)
        self.bank = model.build_feature_bank(self.cfg)
        class_set = model.stage2_class_set
        self.bank_labels = self.bank.relabel(class_set)
        apply_class_set(model, class_set)
        logger.info(f"Generative stage 2: classifier over {len(class_set.names)} classes ({len(class_set.unseen)} "
                    f"unseen, named only), features of {len(self.bank)} images, {batch} per step")

    # ---- the iteration ------------------------------------------------------------------------
    def run_step(self):
        model = self.unwrapped_model
        assert model.training, "[GenerativeTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        index = self.feature_sampler.next_batch(len(self.bank), self.images_per_batch(self.cfg))
        features = self.bank.features[index].flatten(0, 1).to(model.device)
        labels = self.bank_labels[index].flatten().to(model.device)
        keep = labels != IGNORE
        features, labels = features[keep], labels[keep]
        matched = labels < len(model.stage2_class_set.names)
        data_time = time.perf_counter() - start
        losses = self.generator_step(features[matched], labels[matched])
        losses.update(self.classifier_step(features, labels))
        SimpleTrainer.write_metrics(losses, data_time)

    def generator_step(self, real: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """One step of the generator side on matched real features of seen classes."""
        losses = self.unwrapped_model.generator_losses(real, labels)
        self._step(self.optimizer, self.generator_side, losses)
        return losses

    def classifier_step(self, features: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """One step of the classifier on real features (+ the generated unseen ones the model adds).
        Its gradients are zeroed first: the generator step's class loss also reached the classifier."""
        losses = self.unwrapped_model.classifier_losses(features, labels)
        self._step(self.classifier_optimizer, self.classifier_side, losses)
        return losses

    def after_train(self):
        self.check_processes_agree()
        super().after_train()

    def check_processes_agree(self):
        check_processes_agree(self.generator_side + self.classifier_side, "Generative stage 2")

    @staticmethod
    def _step(optimizer, parameters, losses):
        optimizer.zero_grad()
        if losses:
            sum(losses.values()).backward()
        if any_process(bool(losses)):
            average_gradients(parameters)
            optimizer.step()
