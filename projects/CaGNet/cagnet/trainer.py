"""CaGNetTrainer: zsi_d2's trainer with CaGNet's three optimisers per iteration.

Why its own run_step: CaGNet trains a segmenter side (SGD, detectron2's scheduled and checkpointed
optimiser), a discriminator that is also the classifier (Adam) and a generator (Adam), each on its
own losses of one forward. Each side's gradients are taken from its own losses only
(torch.autograd.grad), then every side steps, so no loss reaches a module its side does not train
(the reference zeroes the segmenter's gradients of the discriminator loss by hand). With several
processes each side's gradients are averaged over them before its step, as GenerativeTrainer does.
"""
import logging
import time
from typing import Dict

import torch

from detectron2.engine import SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from zsi_d2.compat import next_trainer_batch
from zsi_d2.data.audit import check_training_sets, check_unlabelled_pool
from zsi_d2.data.mappers import NameUnreadableFiles, build_dataset_mapper
from zsi_d2.engine import ZeroShotTrainer
from zsi_d2.engine.checkpoint import read_checkpoint
from zsi_d2.engine.generative_trainer import any_process, average_gradients, check_processes_agree
from zsi_d2.engine.resume import build_resumable_train_loader
from zsi_d2.errors import CheckpointMismatchError, InputValueError
from zsi_d2.utils.model import unwrap

__all__ = ["CaGNetTrainer", "decay_factor", "step_sides"]

logger = logging.getLogger(__name__)


def decay_factor(iteration: int, start: int, step: int, gamma: float) -> float:
    """The reference's discriminator / generator schedule: 1 before `start`, then gamma ** ((it - start) // step + 1)."""
    if step <= 0 or iteration < start:
        return 1.0
    return gamma ** ((iteration - start) // step + 1)


class CaGNetTrainer(ZeroShotTrainer):
    """ZeroShotTrainer whose iteration is CaGNet's step 1 or step 2 (module docstring)."""

    @classmethod
    def build_train_loader(cls, cfg):
        """self_training: DATASETS.TRAIN plus the images-only pool (checked: no labels, no test image)."""
        if cfg.MODEL.CAGNET.PHASE != "self_training":
            return super().build_train_loader(cfg)
        check_training_sets(cfg)
        pool = tuple(cfg.MODEL.CAGNET.SELF_TRAINING.DATASETS)
        check_unlabelled_pool(pool, cfg.DATASETS.TEST, "MODEL.CAGNET.SELF_TRAINING.DATASETS")
        pooled = cfg.clone()
        pooled.defrost()
        pooled.DATASETS.TRAIN = tuple(cfg.DATASETS.TRAIN) + pool
        pooled.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
        pooled.freeze()
        logger.info(f"Self-training (transductive): DATASETS.TRAIN with the unlabelled images of {list(pool)}")
        return build_resumable_train_loader(pooled, NameUnreadableFiles(build_dataset_mapper(cfg, is_train=True)))

    @classmethod
    def build_side_optimizers(cls, cfg, model) -> Dict[str, torch.optim.Optimizer]:
        """Adam for the discriminator (= classifier) and the generator, as released."""
        c, sides = cfg.MODEL.CAGNET, model.side_parameters()
        return {"discriminator": torch.optim.Adam(sides["discriminator"], lr=c.DISCRIMINATOR_LR,
                                                  weight_decay=c.DISCRIMINATOR_WEIGHT_DECAY),
                "generator": torch.optim.Adam(sides["generator"], lr=c.GENERATOR_LR)}

    def build_hooks(self):
        model, c = unwrap(self.model), self.cfg.MODEL.CAGNET
        self.sides = model.side_parameters()
        self.side_optimizers = self.build_side_optimizers(self.cfg, model)
        self.side_optimizers["segmenter"] = self.optimizer
        self.side_schedulers = {
            side: torch.optim.lr_scheduler.LambdaLR(
                self.side_optimizers[side], lambda it: decay_factor(it, c.DECAY_START, c.DECAY_STEP, c.DECAY_GAMMA))
            for side in ("discriminator", "generator")}
        self._step2_pixels = None
        return super().build_hooks()

    def checkpointables(self) -> dict:
        state = super().checkpointables()
        for side in ("discriminator", "generator"):
            state[f"{side}_optimizer"] = self.side_optimizers[side]
            state[f"{side}_scheduler"] = self.side_schedulers[side]
        return state

    def resume_or_load(self, resume=True):
        if not (resume and self.checkpointer.has_checkpoint()):
            self.check_starting_weights(self.cfg)
        super().resume_or_load(resume=resume)

    @staticmethod
    def check_starting_weights(cfg):
        """finetune and self_training continue a whole CaGNet (contextual module, generator, discriminator)."""
        phase = cfg.MODEL.CAGNET.PHASE
        if phase == "train":
            return
        before = "train" if phase == "finetune" else "finetune"
        fix = f"set MODEL.WEIGHTS to the model_final.pth of a CaGNet run with MODEL.CAGNET.PHASE '{before}'"
        if not cfg.MODEL.WEIGHTS:
            raise InputValueError(f"CaGNet's '{phase}' phase continues a trained CaGNet: MODEL.WEIGHTS is empty; {fix}")
        state = read_checkpoint(cfg.MODEL.WEIGHTS)["model"]
        parts = ("contextual.", "generator.", "real_fake.", "classifier.trunk.")
        missing = [p.rstrip(".") for p in parts if not any(k.split("module.", 1)[-1].startswith(p) for k in state)]
        if missing:
            raise CheckpointMismatchError(f"MODEL.WEIGHTS='{cfg.MODEL.WEIGHTS}' is not a CaGNet checkpoint (no "
                                          f"{', '.join(missing)}); {fix}")

    def after_train(self):
        check_processes_agree([p for params in self.sides.values() for p in params], "CaGNet")
        super().after_train()

    # ---- the iteration ------------------------------------------------------------------------
    def run_step(self):
        model = unwrap(self.model)
        assert model.training, "[CaGNetTrainer] model was changed to eval mode!"
        start, kind = time.perf_counter(), model.step_kind(self.iter)
        if kind == "step1" or self._step2_pixels is None:  # step 2 reads no image, only the last batch's size
            data = next_trainer_batch(self)
            self._step2_pixels = self._pixels_of(model, data)
        data_time = time.perf_counter() - start
        losses = model.step1_losses(data) if kind == "step1" else model.step2_losses(self._step2_pixels)
        step_sides(self.sides, self.side_optimizers, losses)
        for scheduler in self.side_schedulers.values():
            scheduler.step()
        flat = {name: value for side in losses.values() for name, value in side.items()}
        SimpleTrainer.write_metrics(flat, data_time)
        if comm.is_main_process():
            storage = get_event_storage()
            if len(flat) == 1:  # detectron2 records a lone loss as total_loss only: keep its name
                storage.put_scalars(**{k: v.item() for k, v in flat.items()})
            storage.put_scalars(cagnet_step=1 if kind == "step1" else 2,
                                **{f"lr_{side}": self.side_optimizers[side].param_groups[0]["lr"]
                                   for side in ("discriminator", "generator")})

    @staticmethod
    def _pixels_of(model, data) -> int:
        """Pixels of one step-2 batch: those of the last step-1 batch's feature maps (as released)."""
        images = model.preprocess_image(data)
        stride = model.head.common_stride
        return len(data) * (-(-images.tensor.shape[-2] // stride)) * (-(-images.tensor.shape[-1] // stride))

    @classmethod
    def build_train_step(cls, cfg, model):
        """Step 1 (real images, every side of the phase steps: the costly step) on a given batch."""
        sides = model.side_parameters()
        optimizers = {**cls.build_side_optimizers(cfg, model), "segmenter": cls.build_optimizer(cfg, model)}

        def train_step(batch):
            step_sides(sides, optimizers, model.step1_losses(batch))

        return train_step


def step_sides(sides: Dict[str, list], optimizers: Dict[str, torch.optim.Optimizer],
               losses: Dict[str, Dict[str, torch.Tensor]]):
    """Each side's gradients from its own losses, then every side with a loss (on any process) steps,
    its gradients averaged over the processes."""
    grads = {}
    for side, params in sides.items():
        terms = losses.get(side) or {}
        if terms and params:
            grads[side] = torch.autograd.grad(sum(terms.values()), params, retain_graph=True, allow_unused=True)
    for side, params in sides.items():
        optimizer = optimizers[side]
        optimizer.zero_grad()
        if not params:  # the frozen segmenter: a no-op step keeps detectron2's scheduler hook in order
            optimizer.step()
            continue
        if not any_process(side in grads):
            continue
        for p, g in zip(params, grads.get(side, [None] * len(params))):
            p.grad = torch.zeros_like(p) if g is None else g
        average_gradients(params)
        optimizer.step()
