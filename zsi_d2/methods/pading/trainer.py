"""PADing's stage-2 step: a detectron2 SimpleTrainer subclass whose run_step takes two optimiser
steps per iteration (generator, then classifier), on the cached real query embeddings.

detectron2's DefaultTrainer builds, schedules and checkpoints one optimiser: here that is the
generator's (PADing.optimizer_param_groups), as in PADing's code; the classifier's SGD is built
here with a constant learning rate. Nothing of detectron2's engine is copied: `wrap_trainer`
replaces DefaultTrainer's SimpleTrainer with this one when the model is PADing.
"""
import logging
import time

import torch

from detectron2.engine import SimpleTrainer

from ...engine.checkpoint import ZeroShotCheckpointer
from ...errors import CheckpointMismatchError, InputValueError
from ...modeling.class_set import apply_class_set, training_class_names
from .feature_bank import load_or_compute_query_bank

__all__ = ["PADingStage2Trainer", "wrap_trainer", "check_stage1_checkpoint"]

logger = logging.getLogger(__name__)

_SEGMENTER = ("backbone.", "pixel_decoder.", "transformer_decoder.", "classifier.")


def check_stage1_checkpoint(cfg, model):
    """Stage 2 needs a stage-1 checkpoint of this architecture and class set: refuse anything else
    in one line (training would otherwise freeze a randomly initialised segmenter)."""
    path = cfg.MODEL.WEIGHTS
    fix = "set MODEL.WEIGHTS to the model_final.pth of stage 1 (configs/pading/zs_shapes/pading_stage1.yaml)"
    if not path:
        raise InputValueError(f"PADing stage 2 needs a stage-1 checkpoint: MODEL.WEIGHTS is empty; {fix}")
    checkpoint = ZeroShotCheckpointer(model, purpose="train")._load_file(path)
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in checkpoint["model"].items()}
    expected = {k: v for k, v in model.state_dict().items() if k.startswith(_SEGMENTER)}
    missing = [k for k in expected if k not in state]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or wrong:
        example = (missing or wrong)[0]
        raise CheckpointMismatchError(
            f"MODEL.WEIGHTS='{path}' is not a stage-1 checkpoint of this architecture ({len(missing)} segmenter "
            f"parameters missing, {len(wrong)} of other shapes, e.g. {example}); {fix} with the same MODEL settings")
    trained = (checkpoint.get("zsi_d2") or {}).get("trained_classes")
    expected_classes = list(training_class_names(cfg))
    if trained is not None and list(trained) != expected_classes:
        raise CheckpointMismatchError(
            f"MODEL.WEIGHTS='{path}' was trained on classes {trained}, not this config's seen classes "
            f"{expected_classes}; {fix} on the same DATASETS.TRAIN")


class PADingStage2Trainer(SimpleTrainer):
    """run_step: generator step (MMD + structure losses; the scheduled optimiser), then classifier
    step (CE on real + fake unseen query embeddings; SGD)."""

    def __init__(self, cfg, model, generator_optimizer):
        super().__init__(model, data_loader=[], optimizer=generator_optimizer)
        p = cfg.MODEL.PADING
        self.cfg = cfg
        self.classifier_optimizer = torch.optim.SGD(
            model.classifier_parameters(), lr=p.CLASSIFIER_LR, momentum=p.CLASSIFIER_MOMENTUM,
            weight_decay=p.CLASSIFIER_WEIGHT_DECAY)
        self.images_per_batch = p.IMAGES_PER_BATCH
        self.bank = None

    def _prepare(self):
        """Once the stage-1 weights are loaded: the query bank, then the seen + unseen class set."""
        self.bank = load_or_compute_query_bank(self.cfg, self.model, self.cfg.MODEL.WEIGHTS)
        class_set = self.model.stage2_class_set
        self.labels = self.bank.relabel(class_set)
        apply_class_set(self.model, class_set)
        self.generator = torch.Generator().manual_seed(self.cfg.SEED if self.cfg.SEED >= 0 else 0)
        logger.info(f"PADing stage 2: classifier over {len(class_set.names)} classes "
                    f"({len(class_set.unseen)} unseen, named only), {len(self.bank)} images of query embeddings")

    def run_step(self):
        assert self.model.training, "[PADingStage2Trainer] model was changed to eval mode!"
        start = time.perf_counter()
        if self.bank is None:
            self._prepare()
        index = torch.randint(len(self.bank), (self.images_per_batch,), generator=self.generator)
        queries, labels = self.bank.queries[index].flatten(0, 1), self.labels[index].flatten()
        device = self.model.device
        queries, labels = queries.to(device), labels.to(device)
        matched = labels < len(self.model.stage2_class_set.names)
        data_time = time.perf_counter() - start

        generator_losses = self.model.generator_losses(queries[matched], labels[matched])
        self.optimizer.zero_grad()
        sum(generator_losses.values()).backward()
        self.optimizer.step()

        self.classifier_optimizer.zero_grad()  # also drops what the generator step's CE left on it
        classifier_losses = self.model.classifier_losses(queries, labels)
        sum(classifier_losses.values()).backward()
        self.classifier_optimizer.step()
        self._write_metrics({**generator_losses, **classifier_losses}, data_time)


def wrap_trainer(cfg, trainer):
    """DefaultTrainer's SimpleTrainer, or PADing's stage-2 trainer when the model is PADing."""
    from .meta_arch import PADing

    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    if not isinstance(model, PADing):
        return trainer
    check_stage1_checkpoint(cfg, model)
    return PADingStage2Trainer(cfg, trainer.model, trainer.optimizer)
