"""PADing (He et al., CVPR 2023), stage 2: a frozen stage-1 segmenter, a feature generator trained to
imitate its query embeddings, and the query classifier re-trained on real seen + fake unseen ones.

At test time PADing is the stage-1 model with the re-trained classifier (the generator is not
used), so inference is ZeroShotMaskFormer's. Training is two steps per iteration, taken by
zsi_d2.engine.GenerativeTrainer on the cached real query embeddings (`build_feature_bank`):
`generator_losses` (generator, disentangler, relation net; Adam, SOLVER.*) then
`classifier_losses` (the classifier only; SGD, MODEL.PADING.CLASSIFIER_*). Both losses are the
shared GenerativeCriterion's, built in `from_config` and passed in.

The classifier (MODEL.PADING.CLASSIFIER):
- "reference" (default; PADing's code): a free linear layer over every class + no object. A
  stage-1 checkpoint of the linear core (MODEL.MASK_FORMER.CLASSIFIER "linear") becomes its start
  when loaded (`adapt_starting_checkpoint`): seen rows and no object copied, unseen rows zero, as
  PADing's tools/preprocess_pretrained_weight.py. Unseen rows are learnt from generated features.
- "free_prototypes": the name-embedding head of an embedding stage 1, each class's prototype a
  free parameter starting at its name embedding (the starting function is stage 1's; names outside
  the training config can still be scored by their embeddings).
- "shared_projection": that head re-trained as it is (projection and no object move, the unseen
  prototypes stay fixed text vectors): zsi_d2's earlier stage 2, kept as an ablation.
"""
import logging
from typing import Dict

import torch

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY

from ...embeddings import unit_class_embeddings
from ...errors import InputValueError
from ...modeling.class_set import ClassSet, dataset_class_set
from ...modeling.generative import FeatureDisentangler, GenerativeCriterion, GenerativeStage, RelationNet, build_generator
from ...modeling.mask_former import ZeroShotMaskFormer
from ...modeling.mask_former.query_classifier import (
    FreePrototypeQueryClassifier,
    LinearQueryClassifier,
    build_query_classifier,
    expand_linear_state,
)

__all__ = ["PADing", "CLASSIFIERS", "STAGE1_CLASSIFIER"]

logger = logging.getLogger(__name__)

# MODEL.PADING.CLASSIFIER -> the MODEL.MASK_FORMER.CLASSIFIER of the stage 1 it starts from.
STAGE1_CLASSIFIER = {"reference": "linear", "free_prototypes": "embedding", "shared_projection": "embedding"}
CLASSIFIERS = tuple(STAGE1_CLASSIFIER)
_LINEAR = "classifier.linear."


def build_stage2_classifier(cfg, class_set: ClassSet):
    """The query classifier MODEL.PADING.CLASSIFIER names, over `class_set` (seen + unseen)."""
    kind, stage1 = cfg.MODEL.PADING.CLASSIFIER, cfg.MODEL.MASK_FORMER.CLASSIFIER
    if kind not in STAGE1_CLASSIFIER:
        raise InputValueError(f"MODEL.PADING.CLASSIFIER '{kind}' is not one of {list(CLASSIFIERS)}")
    if STAGE1_CLASSIFIER[kind] != stage1:
        raise InputValueError(
            f"MODEL.PADING.CLASSIFIER '{kind}' re-trains a stage 1 whose MODEL.MASK_FORMER.CLASSIFIER is "
            f"'{STAGE1_CLASSIFIER[kind]}', but this config's is '{stage1}': set MODEL.MASK_FORMER.CLASSIFIER "
            f"'{STAGE1_CLASSIFIER[kind]}' (and train stage 1 with it), or choose a PADING.CLASSIFIER among "
            f"{[k for k, v in STAGE1_CLASSIFIER.items() if v == stage1]}")
    gamma = cfg.MODEL.ZERO_SHOT.CALIBRATION.GAMMA
    if kind == "reference":
        return LinearQueryClassifier(cfg.MODEL.MASK_FORMER.HIDDEN_DIM, class_set.names, gamma)
    head = build_query_classifier(cfg)  # the embedding head of stage 1 (same parameter names)
    if kind == "free_prototypes":
        return FreePrototypeQueryClassifier(head.classifier, class_set.names, gamma)
    return head


@META_ARCH_REGISTRY.register()
class PADing(GenerativeStage, ZeroShotMaskFormer):
    """ZeroShotMaskFormer + PADing's stage-2 parts; the segmenter is frozen."""

    @configurable
    def __init__(self, *, generative_criterion: GenerativeCriterion, stage2_class_set: ClassSet,
                 class_embeddings: torch.Tensor, **kwargs):
        super().__init__(**kwargs)
        # class_embeddings: unit name embeddings of stage2_class_set.names, the generator's input (any classifier kind).
        self.init_generative_stage(generative_criterion, stage2_class_set, class_embeddings,
                                   (self.backbone, self.pixel_decoder, self.transformer_decoder), "PADing stage 2")

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        p = cfg.MODEL.PADING
        stage2 = dataset_class_set(cfg.DATASETS.TRAIN[0], cls.class_kind, mode="gzsi")
        embeddings = unit_class_embeddings(cfg, stage2.names)
        embed_dim, feature_dim = embeddings.shape[1], cfg.MODEL.MASK_FORMER.HIDDEN_DIM
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
        criterion = GenerativeCriterion(
            generator,
            disentangler=FeatureDisentangler(feature_dim, dropout=p.DISENTANGLE_DROPOUT, tau=p.ALIGNMENT_TAU)
            if p.DISENTANGLE else None,
            relation_net=RelationNet(feature_dim, class_side_dim) if p.RELATION_WEIGHT > 0 else None,
            loss_weights={
                "mmd": p.MMD_WEIGHT, "generator_class": p.GENERATOR_CLASS_WEIGHT,
                "alignment": structure * p.ALIGNMENT_WEIGHT, "relation": structure * p.RELATION_WEIGHT * 0.2,
                "reconstruction": structure * p.RECONSTRUCTION_WEIGHT if p.DISENTANGLE else 0.0,
                "unrelated": structure * p.ALIGNMENT_WEIGHT * p.UNRELATED_WEIGHT if p.DISENTANGLE else 0.0,
            },
            mmd_sigmas=p.MMD_SIGMAS, alignment_tau=p.ALIGNMENT_TAU, num_choose=p.NUM_CHOOSE,
            unseen_class_weight=p.UNSEEN_CLASS_WEIGHT, no_object_weight=cfg.MODEL.MASK_FORMER.NO_OBJECT_WEIGHT,
        )
        ret.update(classifier=build_stage2_classifier(cfg, stage2), generative_criterion=criterion,
                   stage2_class_set=stage2, class_embeddings=embeddings)
        return ret

    # ---- what GenerativeTrainer needs ---------------------------------------------------------
    stage2_config_node = "PADING"  # its classifier SGD and images per step (GenerativeStage.stage2_solver)

    def check_starting_weights(self, cfg):
        """A stage-1 checkpoint of this architecture, class set and classifier kind, or one line."""
        from .checks import check_stage1_checkpoint

        check_stage1_checkpoint(cfg, self)

    def build_feature_bank(self, cfg):
        """The frozen segmenter's matched query embeddings of the training images (cached)."""
        from .feature_bank import load_or_compute_query_bank

        return load_or_compute_query_bank(cfg, self, cfg.MODEL.WEIGHTS)

    def generator_losses(self, real: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Matched real query embeddings (n, C) of seen classes, `labels` local in the stage-2 class set."""
        return self.generative_criterion.generator_losses(real, labels, self.class_embeddings, self.classifier,
                                                          self._unseen)

    def classifier_losses(self, queries: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Every real query embedding (m, C) with its label (K = no object) + generated unseen ones."""
        return self.generative_criterion.classifier_losses(queries, labels, self.class_embeddings, self.classifier,
                                                           self._unseen)

    # ---- a stage-1 checkpoint as stage 2's start ----------------------------------------------
    def adapt_starting_checkpoint(self, checkpoint: dict):
        """Called by ZeroShotCheckpointer before it loads a starting checkpoint (not when resuming
        or evaluating): a linear stage-1 classifier over the seen classes becomes the reference
        classifier's rows over every class (seen rows and no object copied, unseen rows zero)."""
        if not isinstance(self.classifier, LinearQueryClassifier):
            return
        state = checkpoint["model"]
        prefix = "module." if any(k.startswith("module.") for k in state) else ""
        weight_key, bias_key = f"{prefix}{_LINEAR}weight", f"{prefix}{_LINEAR}bias"
        trained = (checkpoint.get("zsi_d2") or {}).get("trained_classes")
        if weight_key not in state or trained is None:
            return  # check_stage1_checkpoint names what is missing
        if tuple(state[weight_key].shape) == tuple(self.classifier.linear.weight.shape) and \
                list(trained) == list(self.classifier.trained_names):
            return  # already over every class
        if state[weight_key].shape[0] != len(trained) + 1:
            return
        state[weight_key], state[bias_key] = expand_linear_state(
            state[weight_key], state[bias_key], trained, self.classifier.trained_names)
        logger.info(f"Stage-1 linear classifier ({len(trained)} seen classes + no object) expanded to "
                    f"{len(self.classifier.trained_names)} classes + no object: seen rows and no object copied, "
                    f"{len(self.classifier.trained_names) - len(trained)} unseen rows zero")
