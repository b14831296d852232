"""ZSI Faster R-CNN (MASK_ON False) / Mask R-CNN (MASK_ON True), with Sync-bg."""
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY

from ...modeling.meta_arch import ZeroShotRCNN
from .ba_rpn import BackgroundAwareRPNHead

__all__ = ["ZSIRCNN"]


@META_ARCH_REGISTRY.register()
class ZSIRCNN(ZeroShotRCNN):
    """ZeroShotRCNN + Sync-bg: every forward pass (training and test), BA-RPN's learned background
    vector becomes the background embedding of the zero-shot detector and of the Semantic Mask
    Head. It is handed over as a tensor, not copied, so the heads' losses train BA-RPN's
    background too (ZSI, Algorithm 1).
    """

    @configurable
    def __init__(self, *, sync_bg: bool, gzsi_per_group_nms: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.sync_bg = sync_bg
        self.gzsi_per_group_nms = gzsi_per_group_nms
        if sync_bg and not isinstance(getattr(self.proposal_generator, "rpn_head", None), BackgroundAwareRPNHead):
            raise ValueError(
                "MODEL.ZSI.SYNC_BG needs BA-RPN's background vector: set MODEL.RPN.HEAD_NAME "
                "'BackgroundAwareRPNHead', or MODEL.ZSI.SYNC_BG False."
            )

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["sync_bg"] = cfg.MODEL.ZSI.SYNC_BG
        ret["gzsi_per_group_nms"] = cfg.MODEL.ZSI.GZSI_PER_GROUP_NMS
        return ret

    def background_receivers(self):
        """The class-embedding banks whose background Sync-bg overwrites."""
        receivers = [self.roi_heads.box_predictor.cls_score.classes]
        mask_classes = getattr(getattr(self.roi_heads, "mask_head", None), "classes", None)
        if mask_classes is not None:
            receivers.append(mask_classes)
        return receivers

    def synchronize_background(self):
        background = self.proposal_generator.rpn_head.background_vector()
        for bank in self.background_receivers():
            bank.synced_background = background
        return background

    def forward(self, batched_inputs):
        if self.sync_bg and self.training:
            self.synchronize_background()
        return super().forward(batched_inputs)

    def inference(self, batched_inputs, detected_instances=None, do_postprocess=True):
        if self.sync_bg:
            self.synchronize_background()
        per_group = self.gzsi_per_group_nms and self.class_set.mode == "gzsi"
        self.roi_heads.box_predictor.nms_groups = self.class_set.group_indices() if per_group else None
        return super().inference(batched_inputs, detected_instances, do_postprocess)
