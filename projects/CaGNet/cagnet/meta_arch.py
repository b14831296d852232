"""CaGNet (Gu et al., ACM MM 2020) on zsi_d2: zsi_d2's DeepLab-style segmenter (backbone + DeepLabV3+
head) with CaGNet's contextual module between the head and the classifier, a generator of pixel
features from [class embedding ; contextual latent] and a discriminator whose classification path
is the segmenter's classifier over seen + unseen classes.

One model, three phases (MODEL.CAGNET.PHASE, the reference's schedules), trained by CaGNetTrainer
with three optimisers (segmenter side, discriminator = classifier, generator); every loss reaches
only its own side (`side_parameters`):
- step 1 (real images): the discriminator classifies real features (CE) and tells real from
  generated (the L1 "lsgan"); the segmenter side learns the CE through the classifier plus the KL of
  the contextual latent (phases train, self_training); the generator, given each labelled seen
  pixel's class embedding and contextual latent, imitates that pixel's feature (MMD per class) and
  fools the discriminator;
- step 2 (finetune, no image): a class per pixel drawn with unseen classes UNSEEN_RATE + 1 times as
  likely, features generated from its embedding and random latents, the classifier's CE on them.
At test the contextual latent is its mean and the classifier scores seen + unseen classes.
"""
import contextlib
import logging
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList
from detectron2.utils.events import get_event_storage

from zsi_d2.errors import InputValueError
from zsi_d2.modeling.class_set import ClassSet, dataset_class_set
from zsi_d2.modeling.generative import class_conditional_mmd
from zsi_d2.modeling.semantic import ZeroShotSemanticSegmentor, at_most_per_class, labels_at, pixel_feature_dim

from .modules import ContextualGenerator, ContextualModule, TrunkPixelClassifier, gan_l1_loss, masked_kl
from .pseudo_labels import top_p_pseudo_labels

__all__ = ["CaGNet", "PHASES"]

logger = logging.getLogger(__name__)

PHASES = ("train", "finetune", "self_training")
SIDES = ("segmenter", "discriminator", "generator")


def _rows(maps: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> (N * h * w, C), pixels in (N, h, w) order."""
    return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])


def _weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights=None) -> torch.Tensor:
    """The mean cross entropy, or sum(w * CE) / sum(w) with per-pixel weights (SIGN's)."""
    if weights is None:
        return F.cross_entropy(logits, labels)
    return (F.cross_entropy(logits, labels, reduction="none") * weights).sum() / weights.sum().clamp_min(1e-6)


@contextlib.contextmanager
def _in_eval(*modules: nn.Module):
    """The modules in eval mode (and no gradients) within the block, their modes restored after.
    The meta-architecture's own eval() would also switch its class set to the test set's."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


@META_ARCH_REGISTRY.register()
class CaGNet(ZeroShotSemanticSegmentor):
    """CaGNet's segmenter, contextual module, generator and discriminator (module docstring)."""

    @configurable
    def __init__(self, *, contextual: ContextualModule, generator: ContextualGenerator, real_fake: nn.Module,
                 seen_class_set: ClassSet, class_embeddings: torch.Tensor, phase: str, loss_weights: Dict[str, float],
                 mmd_sigmas, mmd_pixels_per_class: int, step_iters=(100, 100), unseen_rate: float = 9.0,
                 top_p: int = 1, train_selector: bool = True, **kwargs):
        super().__init__(**kwargs)
        if phase not in PHASES:
            raise InputValueError(f"MODEL.CAGNET.PHASE '{phase}' is not one of {list(PHASES)}")
        self.contextual, self.generator, self.real_fake = contextual, generator, real_fake
        self.seen_class_set = seen_class_set
        self.phase = phase
        self.loss_weights = dict(loss_weights)
        self.mmd_sigmas = tuple(mmd_sigmas)
        self.mmd_pixels_per_class = mmd_pixels_per_class
        self.step_iters = tuple(step_iters)
        self.top_p = top_p
        names = self.class_set.names
        self.register_buffer("class_embeddings", class_embeddings, persistent=False)
        self.register_buffer("_unseen", self.class_set.group_indices[1], persistent=False)
        self.register_buffer("_seen_to_local", torch.tensor([names.index(n) for n in seen_class_set.names]),
                             persistent=False)
        prior = torch.ones(len(names))
        prior[self._unseen] += unseen_rate
        self.register_buffer("_step2_prior", prior / prior.sum(), persistent=False)
        if not len(self._unseen):
            raise InputValueError(
                f"CaGNet generates features of unseen classes, but the class set of {names[:3]}... has none: "
                "DATASETS.TRAIN[0] must be a zero-shot training set whose metadata lists unseen_classes")
        if not train_selector:  # the released code's selector: its starting weights, never trained
            self.contextual.selector.requires_grad_(False)
        self.freeze_segmenter()

    @property
    def frozen(self):
        """finetune: the segmenter side (backbone, head, contextual module) is frozen, as released."""
        return self.segmenter_parts() if self.phase == "finetune" else ()

    def freeze_segmenter(self):
        for part in self.frozen:
            part.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg):
        from zsi_d2.embeddings import unit_class_embeddings

        ret = super().from_config(cfg)
        c = cfg.MODEL.CAGNET
        everything = cls.all_classes(cfg)
        embeddings = unit_class_embeddings(cfg, everything.names)
        dim = pixel_feature_dim(cfg)
        ret.update(
            contextual=ContextualModule(dim, c.CONTEXT_HIDDEN, c.CONTEXT_DILATIONS, c.SELECTOR),
            generator=ContextualGenerator(embeddings.shape[1], dim, c.GENERATOR_HIDDEN, c.GENERATOR_DROPOUT),
            real_fake=nn.Conv2d(c.DISCRIMINATOR_HIDDEN, 1, kernel_size=1),
            # Trained over seen + unseen classes (the reference's classifier has a column per class);
            # the targets are seen labels (or self-training's pseudo-labels), checked by seen_class_set.
            seen_class_set=ret["class_set"], class_set=everything, class_embeddings=embeddings, phase=c.PHASE,
            loss_weights={k: c[k] for k in ("KL_WEIGHT", "SEGMENTER_CLASS_WEIGHT", "REAL_CLASS_WEIGHT",
                                            "FAKE_CLASS_WEIGHT", "TRANSFER_CLASS_WEIGHT", "MMD_WEIGHT", "GAN_WEIGHT",
                                            "GENERATOR_CLASS_WEIGHT", "GENERATOR_TRANSFER_CLASS_WEIGHT")},
            mmd_sigmas=c.MMD_SIGMAS, mmd_pixels_per_class=c.MMD_PIXELS_PER_CLASS,
            step_iters=(c.STEP1_ITERS, c.STEP2_ITERS), unseen_rate=c.UNSEEN_RATE, top_p=c.SELF_TRAINING.TOP_P,
            train_selector=c.TRAIN_SELECTOR)
        return ret

    @classmethod
    def all_classes(cls, cfg) -> ClassSet:
        """The seen + unseen classes of the training set's split."""
        return dataset_class_set(cfg.DATASETS.TRAIN[0], cls.class_kind, mode="gzsi")

    @classmethod
    def build_classifier(cls, cfg, feature_dim: int):
        c = cfg.MODEL.CAGNET
        return TrunkPixelClassifier(feature_dim, cls.all_classes(cfg).names, c.DISCRIMINATOR_HIDDEN,
                                    c.DISCRIMINATOR_DROPOUT, cfg.MODEL.ZERO_SHOT.CALIBRATION.GAMMA)

    def adapt_starting_checkpoint(self, checkpoint: dict):
        """Called before a starting checkpoint loads (not when resuming or evaluating). A stage-1
        DeepLab (the train phase's start, as the reference starts from a trained DeepLab) gives the
        backbone and head; its closed seen-class classifier is left out (the discriminator's class
        path starts from random filters)."""
        state = checkpoint["model"]
        if any(k.split("module.", 1)[-1].startswith("contextual.") for k in state):
            return  # a CaGNet checkpoint: everything loads
        dropped = [k for k in state if k.split("module.", 1)[-1].startswith("classifier.")]
        for k in dropped:
            del state[k]
        if dropped:
            logger.info(f"CaGNet starts from a segmenter checkpoint: backbone and head loaded; its classifier "
                        f"({', '.join(dropped)}) is not: the discriminator's class path starts from random filters")

    # ---- what CaGNetTrainer needs -----------------------------------------------------------
    def segmenter_parts(self):
        """The segmenter side: backbone and head first (their batch norm is frozen with them), then the
        modules between the head and the classifier (trained at CONTEXTUAL_LR_FACTOR x the rate)."""
        return (self.backbone, self.head, self.contextual)

    def side_parameters(self) -> Dict[str, List[nn.Parameter]]:
        """The trainable parameters of each side, each with its own optimiser."""
        parts = {"segmenter": self.segmenter_parts(),
                 "discriminator": (self.classifier, self.real_fake), "generator": (self.generator,)}
        return {side: [p for m in modules for p in m.parameters() if p.requires_grad] for side, modules in parts.items()}

    def optimizer_param_groups(self, cfg):
        """The segmenter side (detectron2's scheduled optimiser, SOLVER.*): the contextual module at
        CONTEXTUAL_LR_FACTOR times the base rate, as released (5x). Empty when it is frozen."""
        base, factor = cfg.SOLVER.BASE_LR, cfg.MODEL.CAGNET.CONTEXTUAL_LR_FACTOR
        trainable = lambda module: [p for p in module.parameters() if p.requires_grad]  # noqa: E731
        context = [p for m in self.segmenter_parts()[2:] for p in trainable(m)]
        return [{"params": trainable(self.backbone) + trainable(self.head), "lr": base},
                {"params": context, "lr": base * factor}]

    def step_kind(self, iteration: int) -> str:
        """"step1" or "step2" at `iteration`: finetune alternates STEP1_ITERS and STEP2_ITERS."""
        if self.phase != "finetune":
            return "step1"
        return "step1" if iteration % sum(self.step_iters) < self.step_iters[0] else "step2"

    def train(self, mode: bool = True):
        result = super().train(mode)
        for part in self.frozen[:2]:  # backbone and head: batch norm statistics frozen too
            part.train(False)
        return result

    def forward(self, batched_inputs):
        if self.training:
            raise InputValueError("CaGNet trains with three optimisers: run projects/CaGNet/train_net.py "
                                  "(CaGNetTrainer), not a plain detectron2 trainer")
        return super().forward(batched_inputs)

    def context_input(self, h: torch.Tensor) -> torch.Tensor:
        """What the contextual module reads: the head's features (SIGN adds its spatial branch's)."""
        return h

    def contextual_features(self, images: torch.Tensor):
        """(N, 3, H, W) -> (refined features, z, mu, logvar) of the contextual module."""
        return self.contextual(self.context_input(self.head(self.backbone(images))))

    def pixel_features(self, images: torch.Tensor) -> torch.Tensor:
        """The refined features sigmoid(h + h * sigmoid(z)) (z = mu at test)."""
        return self.contextual_features(images)[0]

    def prepare_targets(self, batched_inputs, images):
        """(N, H_pad, W_pad) labels local to the seen + unseen class set. They are converted with the
        seen class set (an unseen label is the leakage guard's error), then placed in the seen +
        unseen order; an images-only record (self-training's pool) is all unlabelled."""
        pooled = self.phase == "self_training"
        if not all("sem_seg" in x for x in batched_inputs) and not pooled:
            raise InputValueError("CaGNet trains on label maps: the training set's records need 'sem_seg_file_name' "
                                  "(detectron2's semantic convention), e.g. a *_panoptic view")
        maps = [x["sem_seg"] if "sem_seg" in x else torch.full(x["image"].shape[-2:], self.ignore_value)
                for x in batched_inputs]
        targets = ImageList.from_tensors([m.to(self.device) for m in maps], self.size_divisibility,
                                         pad_value=self.ignore_value).tensor.long()
        labelled = targets != self.ignore_value
        targets[labelled] = self._seen_to_local[self.seen_class_set.to_local(targets[labelled])]
        return targets

    # ---- the two steps ----------------------------------------------------------------------
    def _discriminate(self, rows: torch.Tensor):
        """(n, D) pixel features -> (n, K) class logits, (n,) real probability."""
        trunk = self.classifier.trunk(rows[:, :, None, None])
        return self.classifier.score_trunk(trunk)[:, :, 0, 0], torch.sigmoid(self.real_fake(trunk))[:, 0, 0, 0]

    def pseudo_label(self, images, targets_small: torch.Tensor):
        """Self-training: the current model (eval mode, z = mu) labels the unlabelled pixels ->
        (labels (N, h, w), per-pixel loss weights or None: CaGNet weighs every pixel alike)."""
        with _in_eval(*self.segmenter_parts(), self.classifier):
            logits = self.classifier(self.pixel_features(images.tensor))
        stride = images.tensor.shape[-1] / logits.shape[-1]
        inside = torch.zeros_like(targets_small, dtype=torch.bool)
        for i, (h, w) in enumerate(images.image_sizes):
            inside[i, : -(-h // int(stride)), : -(-w // int(stride))] = True
        labels = top_p_pseudo_labels(logits, targets_small, self._unseen, self.top_p, self.ignore_value, inside)
        unlabelled = (targets_small == self.ignore_value) & inside
        share = float((labels[unlabelled] != self.ignore_value).float().mean()) if unlabelled.any() else 0.0
        get_event_storage().put_scalar("cagnet/pseudo_labelled", share)  # of the unlabelled pixels
        return labels, self.pseudo_label_weights(logits, labels, labels != targets_small)

    def pseudo_label_weights(self, logits, labels, pseudo):
        """Per-pixel weights of the classification losses under self-training (None: all 1)."""
        return None

    def step1_losses(self, batched_inputs) -> Dict[str, Dict[str, torch.Tensor]]:
        """Real images -> {side: {loss name: loss}} (module docstring); a side with no term is empty."""
        w = self.loss_weights
        images = self.preprocess_image(batched_inputs)
        targets = self.prepare_targets(batched_inputs, images)
        refined, z, mu, logvar = self.contextual_features(images.tensor)
        small = labels_at(targets, refined.shape[-2:])
        weights = None
        if self.phase == "self_training":
            small, weights = self.pseudo_label(images, small)
        valid = small != self.ignore_value
        losses = {side: {} for side in SIDES}
        if not valid.any():
            return losses
        flat = valid.flatten()
        real, labels, latent = _rows(refined)[flat], small[valid], _rows(z)[flat].detach()
        weights = None if weights is None else weights[valid]
        ce = lambda logits: _weighted_cross_entropy(logits, labels, weights)  # noqa: E731
        seen = ~torch.isin(labels, self._unseen)  # self-training's unseen pseudo-labels are not generated
        real_logits, real_prob = self._discriminate(real.detach())
        d = losses["discriminator"]
        d["loss_d_real_class"] = w["REAL_CLASS_WEIGHT"] * ce(real_logits)
        d["loss_d_real"] = gan_l1_loss(real_prob, True)
        if not self.frozen:
            seg_logits, _ = self._discriminate(real)
            losses["segmenter"] = {"loss_kl": w["KL_WEIGHT"] * masked_kl(mu, logvar, valid),
                                   "loss_segmenter_class": w["SEGMENTER_CLASS_WEIGHT"] * ce(seg_logits)}
        if seen.any():
            fake_labels = labels[seen]
            fake = self.generator(self.class_embeddings[fake_labels], latent[seen])
            fake_logits, fake_prob = self._discriminate(fake.detach())
            d["loss_d_fake"] = gan_l1_loss(fake_prob, False)
            if w["FAKE_CLASS_WEIGHT"]:
                d["loss_d_fake_class"] = w["FAKE_CLASS_WEIGHT"] * F.cross_entropy(fake_logits, fake_labels)
            g_logits, g_prob = self._discriminate(fake)
            keep = at_most_per_class(fake_labels, self.mmd_pixels_per_class)
            g = losses["generator"]
            g["loss_g_gan"] = w["GAN_WEIGHT"] * gan_l1_loss(g_prob, True)
            g["loss_mmd"] = w["MMD_WEIGHT"] * class_conditional_mmd(fake[keep], real[seen][keep].detach(),
                                                                    fake_labels[keep], fake_labels[keep], self.mmd_sigmas)
            if w["GENERATOR_CLASS_WEIGHT"]:
                g["loss_g_class"] = w["GENERATOR_CLASS_WEIGHT"] * F.cross_entropy(g_logits, fake_labels)
        return losses

    def step2_losses(self, num_pixels: int) -> Dict[str, Dict[str, torch.Tensor]]:
        """`num_pixels` classes drawn from the step-2 prior, features generated from their embeddings
        and random latents -> the classifier's CE (and the generator's, if weighted)."""
        w = self.loss_weights
        labels = torch.multinomial(self._step2_prior, num_pixels, replacement=True)
        fake = self.generator(self.class_embeddings[labels],
                              torch.randn(num_pixels, self.generator.feature_dim, device=self.device))
        losses = {side: {} for side in SIDES}
        logits, _ = self._discriminate(fake.detach())
        losses["discriminator"]["loss_d_transfer_class"] = w["TRANSFER_CLASS_WEIGHT"] * F.cross_entropy(logits, labels)
        if w["GENERATOR_TRANSFER_CLASS_WEIGHT"]:
            g_logits, _ = self._discriminate(fake)
            losses["generator"]["loss_g_transfer_class"] = (w["GENERATOR_TRANSFER_CLASS_WEIGHT"]
                                                            * F.cross_entropy(g_logits, labels))
        return losses
