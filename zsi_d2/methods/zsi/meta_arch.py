"""ZSI Faster R-CNN (MASK_ON False) / Mask R-CNN (MASK_ON True), with Sync-bg."""
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY

from ...errors import InputValueError
from ...modeling.meta_arch import ZeroShotRCNN
from .ba_rpn import BackgroundAwareRPNHead

__all__ = ["ZSIRCNN"]


@META_ARCH_REGISTRY.register()
class ZSIRCNN(ZeroShotRCNN):
    """ZeroShotRCNN + Sync-bg: BA-RPN's learned background vector is the background embedding of
    the zero-shot detector and of the Semantic Mask Head, in training and at test. The heads read it
    from BA-RPN at every use (wired once here, nothing is stored per forward pass), with gradient,
    so the heads' losses train BA-RPN's background too (ZSI, Algorithm 1).

    The wiring is a bound method of this model's own BA-RPN head, which copy.deepcopy and pickling
    rebind to the copy's head. (torch.nn.DataParallel's replicas would keep the original's: use
    DistributedDataParallel, as detectron2 does.)
    """

    @configurable
    def __init__(self, *, sync_bg: bool, **kwargs):
        super().__init__(**kwargs)
        self.sync_bg = sync_bg
        if not sync_bg:
            return
        rpn_head = getattr(self.proposal_generator, "rpn_head", None)
        if not isinstance(rpn_head, BackgroundAwareRPNHead):
            raise InputValueError(
                "MODEL.ZSI.SYNC_BG needs BA-RPN's background vector: set MODEL.RPN.HEAD_NAME "
                "'BackgroundAwareRPNHead', or MODEL.ZSI.SYNC_BG False."
            )
        for bank in self.background_receivers():
            bank.sync_background_from(rpn_head.background_vector)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["sync_bg"] = cfg.MODEL.ZSI.SYNC_BG
        return ret

    def background_receivers(self):
        """The class-embedding banks whose background Sync-bg replaces."""
        receivers = [self.roi_heads.box_predictor.cls_score.classes]
        mask_classes = getattr(getattr(self.roi_heads, "mask_head", None), "classes", None)
        if mask_classes is not None:
            receivers.append(mask_classes)
        return receivers
