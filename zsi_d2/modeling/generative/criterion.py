"""The two steps of a generative zero-shot method's second stage, written once.

Why: ZS3Net, CaGNet, SIGN and PADing share one recipe. A generator learns to turn a class embedding
into features that look like the frozen model's real features of that class (MMD to the real ones
of the same seen classes, plus method-specific terms); then the classifier is re-trained on real
seen features and generated unseen ones, so unseen classes get a decision region of their own.
This module holds the generator side (generator, and PADing's disentangler and relation net) and
computes both steps' losses; the model passes its classifier and class embeddings in per call
(built in the model's `from_config`, as Mask2Former passes its SetCriterion), and the trainer
(zsi_d2.engine.generative_trainer) takes the optimiser steps.

Features are rows: (n, D) with labels (n,) local to the class set the classifier scores now
(seen + unseen). For PADing a row is a query embedding and a label `num_classes` means "no object";
for a pixel-level method a row is a pixel feature (sample the labelled pixels of the bank's images)
and the classifier is the 1x1 convolution applied to rows; with `no_object_weight=None` the
classifier has no no-object column and every label is a class.
"""
from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .alignment import relationship_alignment_loss
from .mmd import class_conditional_mmd, mmd_loss

__all__ = ["GenerativeCriterion"]

LOSS_WEIGHT_KEYS = ("mmd", "generator_class", "alignment", "relation", "reconstruction", "unrelated")


class GenerativeCriterion(nn.Module):
    """Generator-side modules and the losses of the generator step and the classifier step.

    Args:
        generator: (n, E) class embeddings -> (n, D) features (zsi_d2.modeling.generative).
        disentangler, relation_net: PADing's (None: off).
        loss_weights: weight of each of LOSS_WEIGHT_KEYS (0: off).
        num_choose: unseen classes drawn (at random) per classifier step ...
        samples_per_class: ... and features generated for each (PADing 1; pixel-level methods many).
        unseen_class_weight: CE weight of the unseen classes in the classifier step.
        no_object_weight: CE weight of the no-object column (None: the classifier has none).
        mmd_per_class: the MMD of each seen class's fakes to its own real features, averaged over
            the classes (ZS3Net's form), instead of one MMD over the whole batch (PADing's).
    """

    def __init__(self, generator: nn.Module, *, disentangler: Optional[nn.Module] = None,
                 relation_net: Optional[nn.Module] = None, loss_weights: Dict[str, float],
                 mmd_sigmas: Sequence[float], alignment_tau: float = 0.1, num_choose: int = 5,
                 unseen_class_weight: float = 1.0, no_object_weight: Optional[float] = 0.1,
                 samples_per_class: int = 1, mmd_per_class: bool = False):
        super().__init__()
        unknown = set(loss_weights) - set(LOSS_WEIGHT_KEYS)
        if unknown:
            raise ValueError(f"unknown loss weights {sorted(unknown)}; known: {list(LOSS_WEIGHT_KEYS)}")
        self.generator = generator
        self.disentangler = disentangler
        self.relation_net = relation_net
        self.loss_weights = {k: float(loss_weights.get(k, 0.0)) for k in LOSS_WEIGHT_KEYS}
        self.mmd_sigmas = tuple(mmd_sigmas)
        self.alignment_tau = alignment_tau
        self.num_choose = num_choose
        self.unseen_class_weight = unseen_class_weight
        self.no_object_weight = no_object_weight
        self.samples_per_class = samples_per_class
        self.mmd_per_class = mmd_per_class

    def _class_side(self, embeddings: torch.Tensor) -> torch.Tensor:
        """What the alignment losses compare features with: the primitive generator's projected
        (trainable) embeddings, as PADing; the embeddings themselves for other generators."""
        project = getattr(self.generator, "project_embeddings", None)
        return project(embeddings) if project is not None else embeddings

    def generator_losses(self, real: torch.Tensor, labels: torch.Tensor, class_embeddings: torch.Tensor,
                         classifier: Callable[[torch.Tensor], torch.Tensor],
                         unseen: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Real features (n, D) of seen classes `labels` (n,) -> the generator step's weighted losses
        ({} when n = 0: nothing to imitate).

        class_embeddings (K, E): the class set's embeddings; classifier: rows -> logits over the K
        classes (+ no object); unseen (u,): the unseen classes' indices. The generator's class loss
        is the classifier's CE on the fake seen features over every column, as PADing's code
        (`new_fc(fake)`): fakes are pushed to their class and off every other, no object included.
        """
        if real.shape[0] == 0:
            return {}
        w = self.loss_weights
        fake_seen = self.generator(class_embeddings[labels])
        mmd = (class_conditional_mmd(fake_seen, real, labels, labels, self.mmd_sigmas) if self.mmd_per_class
               else mmd_loss(fake_seen, real, self.mmd_sigmas))
        losses = {"loss_mmd": w["mmd"] * mmd}
        if w["generator_class"]:
            losses["loss_generator_ce"] = w["generator_class"] * F.cross_entropy(classifier(fake_seen), labels)
        if not (w["alignment"] or w["relation"] or w["reconstruction"] or w["unrelated"]) or not len(unseen):
            return losses
        fake_unseen = self.generator(class_embeddings[unseen])
        if self.disentangler is not None:
            parts_s, parts_u = self.disentangler(fake_seen), self.disentangler(fake_unseen)
            rel_s, rel_u = parts_s[0], parts_u[0]
            dis_s = self.disentangler.losses(fake_seen, parts_s)
            dis_u = self.disentangler.losses(fake_unseen, parts_u)
            losses["loss_reconstruction"] = w["reconstruction"] * (dis_s["loss_reconstruction"] +
                                                                   dis_u["loss_reconstruction"]) / 2
            losses["loss_unrelated"] = w["unrelated"] * (dis_s["loss_unrelated"] + dis_u["loss_unrelated"]) / 2
        else:
            rel_s, rel_u = fake_seen, fake_unseen
        side = self._class_side(class_embeddings)
        side_s, side_u = side[labels], side[unseen]
        if w["alignment"]:
            tau = self.alignment_tau
            losses["loss_alignment"] = w["alignment"] * (
                relationship_alignment_loss(rel_s, side_s, tau) + relationship_alignment_loss(rel_u, side_u, tau)
                + relationship_alignment_loss(rel_s, side_s, tau, rel_u, side_u)) / 3
        if self.relation_net is not None and w["relation"]:
            to_unseen = torch.arange(len(unseen), device=real.device)
            losses["loss_relation"] = w["relation"] * (
                F.cross_entropy(self.relation_net(rel_s, side), labels)
                + F.cross_entropy(self.relation_net(rel_u, side_u), to_unseen)) / 2
        return losses

    def classifier_losses(self, features: torch.Tensor, labels: torch.Tensor, class_embeddings: torch.Tensor,
                          classifier: Callable[[torch.Tensor], torch.Tensor],
                          unseen: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Real features (m, D) with labels (m,) (K = no object) + generated features of
        `num_choose` random unseen classes, `samples_per_class` each (detached: this step trains the classifier only) -> the
        classifier's weighted CE (unseen classes `unseen_class_weight`, no object `no_object_weight`)."""
        num_classes = class_embeddings.shape[0]
        if len(unseen) and self.num_choose:
            chosen = unseen[torch.randperm(len(unseen), device=features.device)[: self.num_choose]]
            chosen = chosen.repeat_interleave(self.samples_per_class)
            with torch.no_grad():
                fake = self.generator(class_embeddings[chosen])
            features, labels = torch.cat([features, fake]), torch.cat([labels, chosen])
        if features.shape[0] == 0:
            return {}
        weight = torch.ones(num_classes + (self.no_object_weight is not None), device=features.device)
        weight[unseen] = self.unseen_class_weight
        if self.no_object_weight is not None:
            weight[-1] = self.no_object_weight
        return {"loss_classifier_ce": F.cross_entropy(classifier(features), labels, weight=weight)}
