"""SIGN (Cheng, Liu, Shen et al., "SIGN: Spatial-information Incorporated Generative Network for
Generalized Zero-shot Semantic Segmentation", ICCV 2021) on zsi_d2: CaGNet (projects/CaGNet, which
SIGN's released code is built on) with

- a spatial branch before the contextual module: a 2-D sine / cosine positional encoding (positions
  normalised to a fixed length) concatenated with sigmoid(features), the dilated stack (1, 2, 5)
  with its own selector, added back to the features (`h + branch`, the released `network_type` 1).
  The contextual module then reads position-aware features, so its Gaussian latent (KL to N(0, 1)),
  which conditions the generator, carries where a pixel is as well as what surrounds it;
- annealed self-training: every unlabelled pixel takes its highest unseen class, weighted by an
  annealed softmax of its confidence over the image (`annealed_weights`); the classification losses
  are sum(w * CE) / sum(w).
"""
import torch

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY

from cagnet import CaGNet
from cagnet.modules import ContextualModule

from .positional import annealed_weights, cached_positional_encoding

__all__ = ["SIGN"]


@META_ARCH_REGISTRY.register()
class SIGN(CaGNet):
    """CaGNet with SIGN's spatial branch and annealed self-training (module docstring)."""

    @configurable
    def __init__(self, *, spatial: ContextualModule, position_length: int = 512, temperature: float = 5.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.spatial = spatial
        self.position_length = position_length
        self.temperature = temperature
        self.freeze_segmenter()  # again: the spatial branch is part of the segmenter side

    @classmethod
    def from_config(cls, cfg):
        from zsi_d2.modeling.semantic import pixel_feature_dim

        ret = super().from_config(cfg)
        c, dim = cfg.MODEL.CAGNET, pixel_feature_dim(cfg)
        # The released SIGN's top-p is every class: each unlabelled pixel takes its highest unseen class.
        ret.update(spatial=ContextualModule(dim, c.CONTEXT_HIDDEN, c.CONTEXT_DILATIONS, c.SELECTOR, in_dim=2 * dim,
                                            latent_heads=False),
                   position_length=cfg.MODEL.SIGN.POSITION_LENGTH, temperature=cfg.MODEL.SIGN.TEMPERATURE,
                   top_p=len(ret["class_set"].names))
        return ret

    def segmenter_parts(self):
        spatial = (self.spatial,) if hasattr(self, "spatial") else ()  # not yet set inside CaGNet's __init__
        return (self.backbone, self.head, *spatial, self.contextual)

    def context_input(self, h: torch.Tensor) -> torch.Tensor:
        """h + the spatial branch over [sigmoid(h) ; positional encoding]."""
        code = cached_positional_encoding(h.shape[1], h.shape[2], h.shape[3], self.position_length).to(h)
        return h + self.spatial.aggregate(torch.cat([torch.sigmoid(h), code.expand(len(h), -1, -1, -1)], dim=1))

    def pseudo_label_weights(self, logits, labels, pseudo):
        """The annealed weights of the pseudo-labelled pixels (the softmax probability of their class)."""
        confidence = logits.softmax(dim=1).gather(1, labels.clamp_max(logits.shape[1] - 1)[:, None])[:, 0]
        labelled = (labels != self.ignore_value) & ~pseudo
        return annealed_weights(confidence, pseudo, labelled, self.temperature)
