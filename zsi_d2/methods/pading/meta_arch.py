"""PADing (He et al., CVPR 2023), stage 2: a frozen stage-1 segmenter, a feature generator trained to
imitate its query embeddings, and the query classifier re-trained on real seen + fake unseen ones.

At test time PADing is the stage-1 model with the re-trained classifier (the generator is not
used), so inference is ZeroShotMaskFormer's. Training is two steps per iteration
(zsi_d2.methods.pading.trainer): `generator_losses` (generator, disentangler, relation net; Adam)
then `classifier_losses` (query classifier only; SGD).

Deviations from the reference code, and why:
- The classifier stays the name-embedding classifier of stage 1 (projection + cosine with the
  class names, learnable no-object), re-trained with seen + unseen names active, instead of a
  new linear layer over a fixed class list: new class names can still be scored at test time.
- The real query embeddings are computed once by the frozen segmenter and cached
  (feature_bank.py) instead of re-running the segmenter on every stage-2 batch; the data, the
  matching and the features are the same, one augmentation draw per image.
"""
from typing import Dict, List

import torch
import torch.nn.functional as F

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY

from ...modeling.class_set import ClassSet, dataset_class_set
from ...modeling.generative import FeatureDisentangler, RelationNet, build_generator, mmd_loss, relationship_alignment_loss
from ...modeling.mask_former import ZeroShotMaskFormer

__all__ = ["PADing"]


@META_ARCH_REGISTRY.register()
class PADing(ZeroShotMaskFormer):
    """ZeroShotMaskFormer + PADing's stage-2 parts; the segmenter is frozen."""

    @configurable
    def __init__(self, *, generator, disentangler=None, relation_net=None, stage2_class_set: ClassSet,
                 loss_weights: Dict[str, float], mmd_sigmas, alignment_tau: float, num_choose: int,
                 unseen_class_weight: float, no_object_weight: float, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.disentangler = disentangler
        self.relation_net = relation_net
        self.stage2_class_set = stage2_class_set
        self.loss_weights = dict(loss_weights)
        self.mmd_sigmas = tuple(mmd_sigmas)
        self.alignment_tau = alignment_tau
        self.num_choose = num_choose
        self.unseen_class_weight = unseen_class_weight
        self.no_object_weight = no_object_weight
        for part in (self.backbone, self.pixel_decoder, self.transformer_decoder):
            part.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        p = cfg.MODEL.PADING
        embed_dim = ret["classifier"].classifier.embedding_dim
        feature_dim = cfg.MODEL.MASK_FORMER.HIDDEN_DIM
        if p.GENERATOR == "primitive":
            generator = build_generator(
                "primitive", embed_dim=embed_dim, feature_dim=feature_dim, num_primitives=p.NUM_PRIMITIVES,
                num_layers=p.GENERATOR_LAYERS, nheads=p.GENERATOR_HEADS, dim_feedforward=p.GENERATOR_DIM_FEEDFORWARD,
                dropout=p.GENERATOR_DROPOUT, noise_std=p.GENERATOR_NOISE_STD)
            class_side_dim = feature_dim  # alignment compares with the generator's projected embeddings
        else:
            generator = build_generator(
                p.GENERATOR, embed_dim=embed_dim, feature_dim=feature_dim, noise_dim=p.GMMN_NOISE_DIM,
                hidden_dim=p.GMMN_HIDDEN_DIM, dropout=p.GMMN_DROPOUT)
            class_side_dim = embed_dim
        structure = p.STRUCTURE_WEIGHT
        ret.update(
            generator=generator,
            disentangler=FeatureDisentangler(feature_dim, dropout=p.DISENTANGLE_DROPOUT, tau=p.ALIGNMENT_TAU)
            if p.DISENTANGLE else None,
            relation_net=RelationNet(feature_dim, class_side_dim) if p.RELATION_WEIGHT > 0 else None,
            stage2_class_set=dataset_class_set(cfg.DATASETS.TRAIN[0], cls.class_kind, mode="gzsi"),
            loss_weights={
                "mmd": p.MMD_WEIGHT, "generator_class": p.GENERATOR_CLASS_WEIGHT,
                "alignment": structure * p.ALIGNMENT_WEIGHT, "relation": structure * p.RELATION_WEIGHT * 0.2,
                "reconstruction": structure * p.RECONSTRUCTION_WEIGHT if p.DISENTANGLE else 0.0,
                "unrelated": structure * p.ALIGNMENT_WEIGHT * p.UNRELATED_WEIGHT if p.DISENTANGLE else 0.0,
            },
            mmd_sigmas=p.MMD_SIGMAS, alignment_tau=p.ALIGNMENT_TAU, num_choose=p.NUM_CHOOSE,
            unseen_class_weight=p.UNSEEN_CLASS_WEIGHT, no_object_weight=cfg.MODEL.MASK_FORMER.NO_OBJECT_WEIGHT,
        )
        return ret

    # ---- parameters of each step ------------------------------------------------------------
    def generator_parameters(self) -> List[torch.nn.Parameter]:
        parts = [self.generator, self.disentangler, self.relation_net]
        return [p for part in parts if part is not None for p in part.parameters() if p.requires_grad]

    def classifier_parameters(self) -> List[torch.nn.Parameter]:
        return [p for p in self.classifier.parameters() if p.requires_grad]

    def optimizer_param_groups(self, cfg):
        """The optimiser detectron2's trainer builds (and schedules, checkpoints) is the generator's."""
        return [{"params": self.generator_parameters(), "lr": cfg.SOLVER.BASE_LR, "weight_decay": cfg.SOLVER.WEIGHT_DECAY}]

    # ---- stage-2 losses on query embeddings ---------------------------------------------------
    def _class_embeddings(self, class_set: ClassSet) -> torch.Tensor:
        bank = self.classifier.classifier.classes
        return bank.embeddings[bank.index_of(class_set.names)]

    def _class_side(self, embeddings: torch.Tensor) -> torch.Tensor:
        project = getattr(self.generator, "project_embeddings", None)
        return project(embeddings) if project is not None else embeddings

    def generator_losses(self, real: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Real matched query embeddings (n, C) of seen classes, `labels` (n,) local in the stage-2
        class set -> the generator step's weighted losses."""
        class_set = self.stage2_class_set
        w = self.loss_weights
        embeddings = self._class_embeddings(class_set)
        seen, unseen = [t.to(real.device) for t in class_set.group_indices()]
        fake_seen = self.generator(embeddings[labels])
        losses = {"loss_mmd": w["mmd"] * mmd_loss(fake_seen, real, self.mmd_sigmas)}
        if w["generator_class"]:
            position = torch.full((len(class_set.names),), -1, dtype=torch.long, device=real.device)
            position[seen] = torch.arange(len(seen), device=real.device)
            seen_logits = self.classifier(fake_seen)[:, seen]
            losses["loss_generator_ce"] = w["generator_class"] * F.cross_entropy(seen_logits, position[labels])
        if not (w["alignment"] or w["relation"] or w["reconstruction"] or w["unrelated"]) or not len(unseen):
            return losses
        fake_unseen = self.generator(embeddings[unseen])
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
        side = self._class_side(embeddings)
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

    def classifier_losses(self, queries: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Every real query embedding (m, C) with its label (local in the stage-2 class set; K = no
        object) + fake embeddings of `num_choose` random unseen classes -> the classifier's CE."""
        class_set = self.stage2_class_set
        num_classes = len(class_set.names)
        _, unseen = [t.to(queries.device) for t in class_set.group_indices()]
        if len(unseen) and self.num_choose:
            chosen = unseen[torch.randperm(len(unseen), device=queries.device)[: self.num_choose]]
            with torch.no_grad():
                fake = self.generator(self._class_embeddings(class_set)[chosen])
            queries, labels = torch.cat([queries, fake]), torch.cat([labels, chosen])
        weight = torch.ones(num_classes + 1, device=queries.device)
        weight[unseen] = self.unseen_class_weight
        weight[-1] = self.no_object_weight
        return {"loss_classifier_ce": F.cross_entropy(self.classifier(queries), labels, weight=weight)}
