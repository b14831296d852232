"""Standard ROI heads with a projection box predictor and a class-agnostic mask head."""
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads

from ...errors import InputValueError
from ..class_set import ZeroShotModule, default_class_set
from .projection_box_predictor import ProjectionBoxPredictor

__all__ = ["ZeroShotROIHeads"]


@ROI_HEADS_REGISTRY.register()
class ZeroShotROIHeads(StandardROIHeads, ZeroShotModule):
    """StandardROIHeads whose class count follows the active class set, not ROI_HEADS.NUM_CLASSES.

    Subclasses swap the box predictor through `box_predictor_cls`.
    """

    box_predictor_cls = ProjectionBoxPredictor

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        mask_head = ret.get("mask_head")
        class_specific = cfg.MODEL.MASK_ON and not cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK
        if class_specific and not isinstance(mask_head, ZeroShotModule):
            raise InputValueError(
                "Zero-shot mask prediction with a standard mask head needs class-agnostic masks: set "
                "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK True (unseen classes have no mask channel)."
            )
        ret["num_classes"] = len(default_class_set(cfg).names)
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictor"] = cls.box_predictor_cls(cfg, ret["box_head"].output_shape)
        return ret

    def set_class_names(self, names):
        # Used when sampling proposals: label `num_classes` means background.
        self.num_classes = len(names)
