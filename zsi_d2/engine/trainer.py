"""The trainer train_net.py uses: detectron2's DefaultTrainer with zero-shot evaluation, class-set
switching, a leakage check, a checkpointer that loads only what fits, and exact resumption.

Why a library class: the second stage of a generative method (GenerativeTrainer) is the same
trainer with another step, and a project under projects/ reuses both without copying train_net.py.
"""
import logging
import os
import weakref

from detectron2.data import DatasetMapper, build_detection_test_loader
from detectron2.engine import DefaultTrainer
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils import comm

from ..compat import replace_trainer_data_iterator
from ..data.audit import check_training_sets
from ..data.mappers import NameUnreadableFiles, build_dataset_mapper
from .checkpoint import ZeroShotCheckpointer
from .lr_scheduler import build_lr_scheduler
from .optimizer import build_optimizer
from .resume import RNGState, build_resumable_train_loader, restart_loader
from .zero_shot_test import zero_shot_test

__all__ = ["ZeroShotTrainer", "trainer_class_for"]

logger = logging.getLogger("zsi_d2")


class ZeroShotTrainer(DefaultTrainer):
    """DefaultTrainer with zero-shot evaluators, class-set switching, a leakage check, a checkpointer
    that loads only what fits, and exact resumption (data order and random generators)."""

    def checkpointables(self) -> dict:
        """What every checkpoint holds beside the model and the trainer's iteration; extended by subclasses."""
        sampler = getattr(self.data_loader, "resumable_sampler", None)
        extra = {"data_sampler": sampler} if sampler is not None else {}
        # detectron2 0.6's trainer state lacks the optimizer (momentum, current lr): saved here.
        return {"optimizer": self.optimizer, "rng": RNGState(), **extra}

    def build_hooks(self):
        # Called by DefaultTrainer.__init__ right after it builds its checkpointer and before the
        # PeriodicCheckpointer hook takes it: replace it here so the hooks save with ours.
        self.checkpointer = ZeroShotCheckpointer.from_config(
            self.cfg, self.model, self.cfg.OUTPUT_DIR, purpose="train", trainer=weakref.proxy(self),
            **self.checkpointables(),
        )
        return super().build_hooks()

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        if self.start_iter > 0:  # continue with the first image the saved run had not trained on
            restarted = restart_loader(self.data_loader, self.start_iter * self.cfg.SOLVER.IMS_PER_BATCH)
            replace_trainer_data_iterator(self, restarted)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)  # detectron2's, plus CLIP_TYPE "full_model" and AdamW

    @classmethod
    def build_train_step(cls, cfg, model):
        """One training iteration on a given batch (forward, backward, every optimiser's step), without
        the trainer's loader and hooks: what tools/benchmark_step.py times. A trainer whose run_step
        is not detectron2's (CaGNet's three optimisers) returns its own."""
        optimizer = cls.build_optimizer(cfg, model)

        def train_step(batch):
            losses = model(batch)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()

        return train_step

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)  # detectron2's, plus "WarmupPolyLR"

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        from ..evaluation import build_zero_shot_evaluator

        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_zero_shot_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_train_loader(cls, cfg):
        check_training_sets(cfg)
        # detectron2's DatasetMapper, or the INPUT.DATASET_MAPPER_NAME one (mask classification)
        return build_resumable_train_loader(cfg, NameUnreadableFiles(build_dataset_mapper(cfg, is_train=True)))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """detectron2's test loader and mapper; an unreadable image is one line naming it."""
        return build_detection_test_loader(cfg, dataset_name, mapper=NameUnreadableFiles(DatasetMapper(cfg, False)))

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        from ..evaluation import format_zero_shot_table

        results = zero_shot_test(super().test, cfg, model, evaluators)
        if comm.is_main_process():
            for name, res in results.items():
                logger.info(f"Zero-shot results on {name}:\n{format_zero_shot_table(res)}")
        return results


def trainer_class_for(cfg):
    """GenerativeTrainer for a meta-architecture trained as a generative second stage (one that
    declares `generative_stage = True`, e.g. PADing), ZeroShotTrainer otherwise."""
    from .generative_trainer import GenerativeTrainer

    arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    return GenerativeTrainer if getattr(arch, "generative_stage", False) else ZeroShotTrainer
