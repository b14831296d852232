"""ZS3Net (Bucher et al., NeurIPS 2019) on zsi_d2: the pixel-level generative second stage of
zsi_d2 (PixelGenerativeSegmentor: GMMN, per-class MMD, the last classifier re-trained on real seen
and generated unseen pixel features) plus ZS5Net, its self-training, here.
"""
import logging
from typing import Dict

import torch

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY

from zsi_d2.data.audit import check_unlabelled_pool
from zsi_d2.engine.checkpoint import read_checkpoint
from zsi_d2.errors import CheckpointMismatchError, InputValueError
from zsi_d2.modeling.generative import FeatureBank
from zsi_d2.modeling.semantic import LinearPixelClassifier, PixelGenerativeSegmentor

from .pseudo_labels import compute_pseudo_label_bank

__all__ = ["ZS3Net"]

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class ZS3Net(PixelGenerativeSegmentor):
    """PixelGenerativeSegmentor with ZS5Net's optional self-training (MODEL.ZS3NET.SELF_TRAINING)."""

    stage2_config_keys = ("PIXEL_GENERATIVE", "ZS3NET")

    @configurable
    def __init__(self, *, self_training: bool = False, self_training_datasets=(), top_percent: float = 25.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.self_training = self_training
        self.self_training_datasets = tuple(self_training_datasets)
        self.top_percent = top_percent

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        st = cfg.MODEL.ZS3NET.SELF_TRAINING
        if not 0 < st.TOP_PERCENT <= 100:
            raise InputValueError(f"MODEL.ZS3NET.SELF_TRAINING.TOP_PERCENT must be in (0, 100], got {st.TOP_PERCENT}")
        ret.update(self_training=st.ENABLED, self_training_datasets=st.DATASETS, top_percent=st.TOP_PERCENT)
        return ret

    # ---- self-training: checks before anything loads --------------------------------------------
    def check_starting_weights(self, cfg):
        super().check_starting_weights(cfg)
        if not self.self_training:
            return
        classifier = read_checkpoint(cfg.MODEL.WEIGHTS)["model"].get("classifier.conv.weight")
        if classifier is None or classifier.shape[0] != len(self.stage2_class_set.names):
            raise CheckpointMismatchError(
                f"Self-training pseudo-labels with a trained ZS3Net, but MODEL.WEIGHTS='{cfg.MODEL.WEIGHTS}' has no "
                f"classifier over the {len(self.stage2_class_set.names)} seen + unseen classes: set MODEL.WEIGHTS to "
                "the model_final.pth of projects/ZS3Net/configs/zs_shapes/zs3net.yaml")
        self.check_self_training_datasets(cfg)

    def check_self_training_datasets(self, cfg):
        """Registered, no label the method could read, and no image of a test set."""
        check_unlabelled_pool(self.self_training_datasets, cfg.DATASETS.TEST, "MODEL.ZS3NET.SELF_TRAINING.DATASETS")

    # ---- the bank: the training images' seen pixels + the pseudo-labelled unseen ones -----------
    def build_feature_bank(self, cfg):
        bank = super().build_feature_bank(cfg)
        if not self.self_training:
            return bank
        from zsi_d2.data.mappers import NameUnreadableFiles, build_dataset_mapper
        from zsi_d2.engine.feature_bank_cache import load_or_compute_bank

        g = cfg.MODEL.PIXEL_GENERATIVE
        teacher = self.teacher_classifier(cfg.MODEL.WEIGHTS)
        mapper = NameUnreadableFiles(build_dataset_mapper(cfg, is_train=True))
        unseen = self.stage2_class_set.group_indices[1]
        pseudo = load_or_compute_bank(
            cfg, self, cfg.MODEL.WEIGHTS,
            lambda dicts: compute_pseudo_label_bank(self, teacher, dicts, mapper, unseen, self.top_percent,
                                                    g.PIXELS_PER_CLASS, g.BANK_IMAGES_PER_FORWARD,
                                                    cfg.DATALOADER.NUM_WORKERS),
            what=f"pseudo_top{self.top_percent:g}", folder=g.FEATURE_CACHE_DIR, stage2_keys=self.stage2_config_keys,
            datasets=self.self_training_datasets, class_set=self.stage2_class_set)
        logger.info(f"Self-training (transductive): {len(pseudo)} unlabelled images beside {len(bank)} training images")
        return FeatureBank.concat([bank, pseudo], self.stage2_class_set.names)

    def teacher_classifier(self, weights: str) -> LinearPixelClassifier:
        """The trained ZS3Net's classifier (from `weights`), which pseudo-labels; this model's own starts
        from random filters (adapt_starting_checkpoint), as ZS3Net re-trains it."""
        teacher = LinearPixelClassifier(self.classifier.conv.in_channels, self.stage2_class_set.names)
        state = read_checkpoint(weights)["model"]
        teacher.load_state_dict({k[len("classifier."):]: v for k, v in state.items() if k.startswith("classifier.")})
        teacher.set_class_set(self.stage2_class_set)
        return teacher.to(self.device).eval()

    def generator_losses(self, real: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The generator imitates the real *seen* features only; pseudo-labelled unseen ones train the classifier."""
        seen = ~torch.isin(labels, self._unseen)
        return super().generator_losses(real[seen], labels[seen])
