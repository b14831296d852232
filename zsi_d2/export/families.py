"""How each zsi_d2 model family is exported: what runs inside the traced graph and what finishes
its outputs outside it (Python structures a graph cannot return).

Every family's contract is the same: one (3, H, W) image in, at the size the graph was traced
for; out, the eager model's output for `model([{"image": image}])` (detectron2's format, at the
input's size). The split between graph and Python follows detectron2's own export
(tools/deploy/export_model.py):

- mask classification (ZeroShotMaskFormer: the core, PADing, ZegFormer): the whole inference is in
  the graph (backbone, pixel decoder, transformer decoder, classifier, and the semantic / panoptic /
  instance rules, which are written to trace); outside, the panoptic per-query tensors become
  `segments_info` and `Instances.image_size` a tuple.
- R-CNN (ZeroShotRCNN: the projection baseline, ZSI with BA-RPN, Sync-bg and the semantic mask
  head): the detector up to its per-box 28x28 masks is in the graph (`do_postprocess=False`);
  outside, detectron2's `detector_postprocess` pastes the masks into the image, exactly as
  GeneralizedRCNN does in eager mode.
- pixel-level semantic segmentors (ZeroShotSemanticSegmentor: SPNet, ZS3Net, CaGNet, SIGN): the
  whole inference is in the graph.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List

import torch

from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Instances

from ..errors import InputValueError

__all__ = ["Family", "family_of", "family_named", "FAMILIES"]


@dataclass(frozen=True)
class Family:
    name: str
    inference: Callable  # (model, batched_inputs) -> [outputs]: what the graph computes
    finish: Callable  # (one image's rebuilt graph outputs, input size) -> the eager model's output


def _mask_classification_inference(model, batched_inputs: List[Dict]) -> List[Dict]:
    """ZeroShotMaskFormer.inference, its panoptic output as per-query tensors."""
    images = model.preprocess_image(batched_inputs)
    return model.inference(model.predict(images.tensor), batched_inputs, images, panoptic_as_tensors=True)


def _mask_classification_finish(result: Dict, size) -> Dict:
    from ..modeling.mask_former.inference import panoptic_segments_info

    result = dict(result)
    if "panoptic_seg" in result:
        seg, per_query = result["panoptic_seg"]
        result["panoptic_seg"] = (seg, panoptic_segments_info(per_query["segment_ids"], per_query["category_ids"],
                                                              per_query["isthing"]))
    if "instances" in result:
        result["instances"] = Instances(tuple(size), **result["instances"].get_fields())
    return result


def _rcnn_inference(model, batched_inputs: List[Dict]) -> List[Dict]:
    """The detector's boxes, scores, classes and per-box masks (not yet pasted into the image)."""
    return [{"instances": r} for r in model.inference(batched_inputs, do_postprocess=False)]


def _rcnn_finish(result: Dict, size) -> Dict:
    instances = result["instances"]
    instances = Instances(tuple(size), **instances.get_fields())
    return {"instances": detector_postprocess(instances, size[0], size[1])}


def _whole_inference(model, batched_inputs: List[Dict]) -> List[Dict]:
    return model(batched_inputs)


def _as_is(result: Dict, size) -> Dict:
    return dict(result)


FAMILIES = {
    "mask_classification": Family("mask_classification", _mask_classification_inference, _mask_classification_finish),
    "rcnn": Family("rcnn", _rcnn_inference, _rcnn_finish),
    "semantic": Family("semantic", _whole_inference, _as_is),
}


def family_of(model: torch.nn.Module) -> Family:
    from ..modeling.mask_former.meta_arch import ZeroShotMaskFormer
    from ..modeling.meta_arch.zero_shot_rcnn import ZeroShotRCNN
    from ..modeling.semantic.meta_arch import ZeroShotSemanticSegmentor

    for kind, name in ((ZeroShotMaskFormer, "mask_classification"), (ZeroShotRCNN, "rcnn"),
                       (ZeroShotSemanticSegmentor, "semantic")):
        if isinstance(model, kind):
            return FAMILIES[name]
    raise InputValueError(f"{type(model).__name__} is not a zsi_d2 model family that exports (mask classification, "
                          "R-CNN, pixel-level semantic); export a model built from a zsi_d2 config")


def family_named(name: str, source: str = "the exported file") -> Family:
    if name not in FAMILIES:
        raise InputValueError(f"{source}: unknown model family {name!r}; export the model again (tools/export_model.py)")
    return FAMILIES[name]
