"""The second stage of the pixel-level generative methods (ZS3Net, CaGNet, SIGN), written once:
PixelGenerativeSegmentor.

Stage 1 is ZeroShotSemanticSegmentor with the linear classifier, trained on the seen classes
(configs/semantic/zs_shapes/deeplab_seen.yaml). Stage 2 freezes its backbone and head, caches
their pixel features of the training images (`compute_pixel_bank`: per image, PIXELS_PER_CLASS
pixels of each labelled class at the feature resolution, the label map resized by nearest
neighbour, as ZS3Net samples them), and zsi_d2.engine.GenerativeTrainer alternates a generator step
(fakes of the seen classes matched to the real ones by MMD) and a classifier step: the last layer,
a free 1x1 convolution over seen + unseen classes, re-trained on the real seen pixel features and
generated features of the unseen classes. A project (projects/ZS3Net, CaGNet, SIGN) chooses the
generator (`build_generator`) and its losses; everything else is here.

No unseen label is used: ZS3Net's code places generated features at the ground-truth positions of
unseen objects in its training images; zs_shapes' training images hold none (the leakage audit
refuses them), so the unseen classes of each classifier step are drawn at random, as CaGNet's step
2 and PADing do.
"""
import logging
import time
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch.utils.data import SequentialSampler

from detectron2.config import configurable
from detectron2.data import build_detection_test_loader
from detectron2.modeling import META_ARCH_REGISTRY

from ...errors import CheckpointMismatchError, InputValueError
from ..class_set import ClassSet, dataset_class_set, training_class_names
from ..generative import IGNORE, FeatureBank, GenerativeCriterion, GenerativeStage, build_generator
from .meta_arch import ZeroShotSemanticSegmentor
from .pixel_classifier import LinearPixelClassifier, classify_rows

__all__ = ["PixelGenerativeSegmentor", "at_most_per_class", "compute_pixel_bank", "frozen_pixel_batches", "sample_pixels", "stack_rows"]

logger = logging.getLogger(__name__)


def at_most_per_class(labels: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of a random subset of `labels` with at most `k` of each class."""
    order = torch.randperm(len(labels), device=labels.device)
    shuffled = labels[order]
    sorted_labels, by_class = torch.sort(shuffled, stable=True)
    first = torch.searchsorted(sorted_labels, sorted_labels, right=False)
    rank = torch.arange(len(labels), device=labels.device) - first
    return order[by_class[rank < k]]


def labels_at(targets: torch.Tensor, size) -> torch.Tensor:
    """(N, H, W) label maps -> (N, h, w) at a feature map's size (nearest: a label is never blended)."""
    return F.interpolate(targets[:, None].float(), size=size, mode="nearest")[:, 0].long()


def sample_pixels(features: torch.Tensor, labels: torch.Tensor, per_class: int, ignore_value: int):
    """(D, h, w) features and (h, w) local labels -> `per_class` rows of each labelled class, drawn with
    replacement: (n, D) features, (n,) labels."""
    rows, labs = [], []
    flat_features, flat_labels = features.flatten(1).t(), labels.flatten()
    for c in torch.unique(flat_labels[flat_labels != ignore_value]).tolist():
        where = torch.nonzero(flat_labels == c).flatten()
        pick = where[torch.randint(len(where), (per_class,))]
        rows.append(flat_features[pick])
        labs.append(torch.full((per_class,), c, dtype=torch.long))
    if not rows:
        return features.new_zeros((0, features.shape[0])), torch.zeros(0, dtype=torch.long)
    return torch.cat(rows), torch.cat(labs)


def frozen_pixel_batches(model, dicts, mapper, batch_size: int = 8, num_workers: int = 0, what: str = "pixel"):
    """Yields (batch, images, pixel features) over `dicts`, in order, `batch_size` images per forward
    (padded together, as in training), the model in eval mode without gradients (restored after);
    a progress line every 200 images. Every image or an error: a bank never silently misses one."""
    from ...engine.feature_bank_cache import batches_of

    loader = build_detection_test_loader(dicts, mapper=mapper, sampler=SequentialSampler(dicts), num_workers=num_workers)
    was_training = model.training
    model.eval()
    start, done = time.perf_counter(), 0
    try:
        with torch.no_grad():
            for batch in batches_of(loader, batch_size):
                done += len(batch)
                images = model.preprocess_image(batch)
                yield batch, images, model.pixel_features(images.tensor)
                if done % 200 < len(batch) or done == len(dicts):
                    logger.info(f"Stage-2 {what} bank: {done}/{len(dicts)} images ({time.perf_counter() - start:.0f} s)")
    finally:
        model.train(was_training)
    if done != len(dicts):
        raise RuntimeError(f"Stage-2 {what} bank: the loader gave {done} of {len(dicts)} images")


def stack_rows(features: List[torch.Tensor], labels: List[torch.Tensor], dim: int):
    """Per-image (n_i, D) rows and (n_i,) labels -> (N, P, D) features and (N, P) labels, padded with
    IGNORE to the longest image."""
    longest = max((len(x) for x in labels), default=0)
    bank_features = torch.zeros((len(features), longest, dim))
    bank_labels = torch.full((len(labels), longest), IGNORE, dtype=torch.long)
    for i, (rows, labs) in enumerate(zip(features, labels)):
        bank_features[i, : len(rows)] = rows
        bank_labels[i, : len(labs)] = labs
    return bank_features, bank_labels


def compute_pixel_bank(model, dicts, mapper, per_class: int, batch_size: int = 8, num_workers: int = 0) -> FeatureBank:
    """The frozen model's pixel features of the training images `dicts` (one augmentation draw of
    `mapper`), `per_class` pixels of each labelled class per image; labels local to the model's class
    set (the training set's seen classes), images padded with IGNORE rows to the longest."""
    features, labels, dim = [], [], 0
    for batch, images, pixel in frozen_pixel_batches(model, dicts, mapper, batch_size, num_workers):
        targets = model.prepare_targets(batch, images)
        small = labels_at(targets, pixel.shape[-2:])
        dim = pixel.shape[1]
        for f, t in zip(pixel, small):
            rows, labs = sample_pixels(f.cpu(), t.cpu(), per_class, model.ignore_value)
            features.append(rows)
            labels.append(labs)
    bank_features, bank_labels = stack_rows(features, labels, dim)
    if not (bank_labels != IGNORE).any():
        raise InputValueError("No labelled pixel in the training images of DATASETS.TRAIN: nothing to imitate")
    return FeatureBank(bank_features, bank_labels, model.class_set.names)


@META_ARCH_REGISTRY.register()
class PixelGenerativeSegmentor(GenerativeStage, ZeroShotSemanticSegmentor):
    """ZeroShotSemanticSegmentor whose backbone and head are frozen and whose last layer is re-trained
    over seen + unseen classes on real and generated pixel features (module docstring)."""

    @configurable
    def __init__(self, *, generative_criterion: GenerativeCriterion, stage2_class_set: ClassSet,
                 class_embeddings: torch.Tensor, pixels_per_class: int = 128, **kwargs):
        super().__init__(**kwargs)
        self.pixels_per_class = pixels_per_class
        self.init_generative_stage(generative_criterion, stage2_class_set, class_embeddings,
                                   (self.backbone, self.head), type(self).__name__)

    @classmethod
    def stage2_class_set_of(cls, cfg) -> ClassSet:
        return dataset_class_set(cfg.DATASETS.TRAIN[0], cls.class_kind, mode="gzsi")

    @classmethod
    def from_config(cls, cfg):
        from ...embeddings import unit_class_embeddings

        ret = super().from_config(cfg)
        g = cfg.MODEL.PIXEL_GENERATIVE
        stage2 = cls.stage2_class_set_of(cfg)
        embeddings = unit_class_embeddings(cfg, stage2.names)
        criterion = GenerativeCriterion(
            cls.build_generator(cfg, embeddings.shape[1], ret["classifier"].conv.in_channels),
            loss_weights={"mmd": g.MMD_WEIGHT, "generator_class": g.GENERATOR_CLASS_WEIGHT},
            mmd_sigmas=g.MMD_SIGMAS, num_choose=g.NUM_CHOOSE or len(stage2.unseen),
            samples_per_class=g.GENERATED_PER_CLASS, unseen_class_weight=g.UNSEEN_CLASS_WEIGHT,
            no_object_weight=None, mmd_per_class=g.MMD_PER_CLASS)
        ret.update(generative_criterion=criterion, stage2_class_set=stage2, class_embeddings=embeddings,
                   pixels_per_class=g.PIXELS_PER_CLASS)
        return ret

    @classmethod
    def build_classifier(cls, cfg, feature_dim: int):
        """A free 1x1 convolution over every class of the stage-2 set, seen and unseen."""
        return LinearPixelClassifier(feature_dim, cls.stage2_class_set_of(cfg).names,
                                     cfg.MODEL.ZERO_SHOT.CALIBRATION.GAMMA)

    @classmethod
    def build_generator(cls, cfg, embed_dim: int, feature_dim: int) -> torch.nn.Module:
        """(n, E) class embeddings -> (n, D) pixel features; a project overrides it (CaGNet, SIGN)."""
        g = cfg.MODEL.PIXEL_GENERATIVE
        return build_generator(g.GENERATOR, embed_dim=embed_dim, feature_dim=feature_dim, noise_dim=g.GMMN_NOISE_DIM,
                               hidden_dim=g.GMMN_HIDDEN_DIM, dropout=g.GMMN_DROPOUT, noise_distribution=g.GMMN_NOISE)

    # ---- what GenerativeTrainer needs ---------------------------------------------------------
    stage2_config_node = "PIXEL_GENERATIVE"  # its classifier SGD and images per step (GenerativeStage.stage2_solver)

    def check_starting_weights(self, cfg):
        """A stage-1 checkpoint of this backbone and head, trained on this config's seen classes."""
        from ...engine.checkpoint import read_checkpoint

        fix = "set MODEL.WEIGHTS to the model_final.pth of stage 1 (configs/semantic/zs_shapes/deeplab_seen.yaml)"
        if not cfg.MODEL.WEIGHTS:
            raise InputValueError(f"{type(self).__name__} needs a stage-1 checkpoint: MODEL.WEIGHTS is empty; {fix}")
        checkpoint = read_checkpoint(cfg.MODEL.WEIGHTS)
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in checkpoint["model"].items()}
        frozen = {k: v for k, v in self.state_dict().items() if k.startswith(("backbone.", "head."))}
        missing = [k for k in frozen if k not in state]
        wrong = [k for k in frozen if k in state and tuple(state[k].shape) != tuple(frozen[k].shape)]
        if missing or wrong:
            raise CheckpointMismatchError(
                f"MODEL.WEIGHTS='{cfg.MODEL.WEIGHTS}' is not a stage-1 checkpoint of this backbone and head "
                f"({len(missing)} parameters missing, {len(wrong)} of other shapes, e.g. {(missing or wrong)[0]}); {fix} "
                "with the same MODEL settings")
        trained = (checkpoint.get("zsi_d2") or {}).get("trained_classes")
        if trained is not None and list(trained) != list(training_class_names(cfg)):
            raise CheckpointMismatchError(
                f"MODEL.WEIGHTS='{cfg.MODEL.WEIGHTS}' was trained on classes {list(trained)}, not this config's seen "
                f"classes {list(training_class_names(cfg))}; {fix} on the same DATASETS.TRAIN")

    def adapt_starting_checkpoint(self, checkpoint: dict):
        """Called before a starting checkpoint loads (not when resuming or evaluating): stage 1's
        classifier is left out, so the re-trained one starts from random filters, as ZS3Net re-initialises it."""
        state = checkpoint["model"]
        dropped = [k for k in state if k.split("module.", 1)[-1].startswith("classifier.")]
        for k in dropped:
            del state[k]
        if dropped:
            logger.info(f"Stage 2 starts its classifier over {len(self.stage2_class_set.names)} classes from random "
                        f"filters; stage 1's ({', '.join(dropped)}) is not loaded")

    def build_feature_bank(self, cfg):
        """The frozen backbone and head's pixel features of the training images (cached)."""
        from ...data.mappers import NameUnreadableFiles, build_dataset_mapper
        from ...engine.feature_bank_cache import load_or_compute_bank

        g = cfg.MODEL.PIXEL_GENERATIVE
        mapper = NameUnreadableFiles(build_dataset_mapper(cfg, is_train=True))
        return load_or_compute_bank(
            cfg, self, cfg.MODEL.WEIGHTS,
            lambda dicts: compute_pixel_bank(self, dicts, mapper, g.PIXELS_PER_CLASS, g.BANK_IMAGES_PER_FORWARD,
                                             cfg.DATALOADER.NUM_WORKERS),
            what="pixel", folder=g.FEATURE_CACHE_DIR, stage2_keys=self.stage2_config_keys)

    stage2_config_keys = ("PIXEL_GENERATIVE",)  # MODEL keys the bank does not depend on (a project adds its own)

    def _rows(self, rows: torch.Tensor) -> torch.Tensor:
        return classify_rows(self.classifier, rows)

    def generator_losses(self, real: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Real pixel features (n, D) of seen classes, `labels` local in the stage-2 class set: at most
        `pixels_per_class` of each class (ZS3Net matches 128 pixels of a class per generator step)."""
        keep = at_most_per_class(labels, self.pixels_per_class)
        return self.generative_criterion.generator_losses(real[keep], labels[keep], self.class_embeddings, self._rows,
                                                          self._unseen)

    def classifier_losses(self, features: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Real pixel features (m, D) with labels + generated unseen ones -> the classifier's CE."""
        return self.generative_criterion.classifier_losses(features, labels, self.class_embeddings, self._rows,
                                                           self._unseen)
