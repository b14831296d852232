"""Mask/Faster R-CNN over a switchable set of class names."""
from typing import Optional

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import Instances

from ..class_set import ClassSet, ZeroShotMetaArch, apply_class_set, default_class_set, inference_class_set

__all__ = ["ZeroShotRCNN"]


@META_ARCH_REGISTRY.register()
class ZeroShotRCNN(ZeroShotMetaArch, GeneralizedRCNN):
    """GeneralizedRCNN that trains on the seen classes and predicts the class set it is given (in eval
    mode by default the config's test set, seen + unseen: `ZeroShotMetaArch`).

    Ground-truth labels (dataset contiguous ids) are mapped into the active class set before the
    heads see them; predictions are mapped back, so evaluators and visualisers need no changes.
    """

    class_kind = "thing"  # instances only: the dataset's thing_classes

    @configurable
    def __init__(self, *, class_set: ClassSet, inference_class_set: Optional[ClassSet] = None, **kwargs):
        super().__init__(**kwargs)
        self.init_class_sets(class_set, inference_class_set)
        apply_class_set(self, class_set)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["class_set"] = default_class_set(cfg, cls.class_kind)
        ret["inference_class_set"] = inference_class_set(cfg, cls.class_kind)
        return ret

    def forward(self, batched_inputs):
        if self.training:
            batched_inputs = [self._to_local_labels(x) for x in batched_inputs]
        return super().forward(batched_inputs)

    def _to_local_labels(self, x):
        if "instances" not in x:
            return x
        instances = x["instances"][:]  # new Instances: the caller's dict stays untouched
        instances.gt_classes = self.class_set.to_local(instances.gt_classes)
        return {**x, "instances": instances}

    def inference(self, batched_inputs, detected_instances=None, do_postprocess=True):
        results = super().inference(batched_inputs, detected_instances, do_postprocess)
        for r in results:
            instances = r["instances"] if isinstance(r, dict) else r
            if isinstance(instances, Instances) and instances.has("pred_classes"):
                instances.pred_classes = self.class_set.to_dataset(instances.pred_classes)
        return results
