"""An exported file as a predictor: `ExportedPredictor(path)(bgr_image)` -> outputs, the counterpart of
zsi_d2.engine.ZeroShotPredictor for demo.py's `--backend onnxruntime|torchscript`.

An export has a fixed input size, so the predictor resizes every image to it and brings the outputs
back to the image's own size: the outputs are in the image's coordinates, as ZeroShotPredictor's are,
so that demo.py draws and writes COCO JSON for both backends alike. The rule:

1. the BGR image is put in the file's channel order (its "input_format" metadata, the config's
   INPUT.FORMAT; files written before it was recorded: "BGR") and resized to `input_size`
   (bilinear, as detectron2's ResizeShortestEdge resizes);
2. the exported model runs: its outputs equal the eager model's `model([{"image": resized}])`;
3. if the image's size differs from `input_size`, the outputs are resized to it as detectron2's
   postprocessing resizes: `sem_seg` bilinearly (probabilities), the panoptic id map by nearest
   neighbour (a segment left without pixels is dropped from segments_info), instances by scaling
   their boxes (then clipped) and resizing their masks by nearest neighbour.

So at the export size (step 3 skipped) the outputs are exactly eager mode's on that image. At
another size they are eager mode's on the resized image, resized back; they are close to, not
equal to, ZeroShotPredictor's, which resizes the shorter edge only and resizes inside the model
(e.g. mask logits before the sigmoid).
"""
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from detectron2.data import transforms as T
from detectron2.structures import Boxes, Instances

from ..modeling.class_set import ClassSet
from ..modeling.vocabulary import class_set_metadata
from .exported import load_exported

__all__ = ["ExportedPredictor", "exported_class_set", "resize_outputs"]

# output key of a model -> the task demo.py calls it (zsi_d2.utils.visualizer.OUTPUT_KEYS, inverted)
_TASKS = {"instances": "instance", "panoptic_seg": "panoptic", "sem_seg": "semantic"}


def exported_class_set(meta: Dict) -> ClassSet:
    """The ClassSet an exported file scores, from its metadata (class names and label spaces)."""
    return ClassSet(tuple(meta["class_names"]), tuple(meta["dataset_classes"]), unseen=tuple(meta.get("unseen", ())),
                    thing_classes=tuple(meta.get("thing_classes", ())), source="export")


def resize_outputs(outputs: Dict, size: Tuple[int, int]) -> Dict:
    """A model's outputs at one size, resized to `size` (h, w) (the module docstring's step 3)."""
    h, w = size
    out = dict(outputs)
    if "sem_seg" in out:
        out["sem_seg"] = F.interpolate(out["sem_seg"][None], size=(h, w), mode="bilinear", align_corners=False)[0]
    if "panoptic_seg" in out:
        seg, segments_info = out["panoptic_seg"]
        seg = F.interpolate(seg[None, None].float(), size=(h, w), mode="nearest")[0, 0].to(seg.dtype)
        present = set(seg.unique().tolist())
        out["panoptic_seg"] = (seg, [s for s in segments_info if s["id"] in present])
    if "instances" in out:
        old = out["instances"]
        fields = dict(old.get_fields())
        if "pred_boxes" in fields:
            boxes = Boxes(fields["pred_boxes"].tensor.clone())
            boxes.scale(w / old.image_size[1], h / old.image_size[0])
            boxes.clip((h, w))
            fields["pred_boxes"] = boxes
        if "pred_masks" in fields and len(old):
            masks = fields["pred_masks"]
            fields["pred_masks"] = F.interpolate(masks[:, None].float(), size=(h, w), mode="nearest")[:, 0].to(
                masks.dtype)
        elif "pred_masks" in fields:
            fields["pred_masks"] = fields["pred_masks"].new_zeros((0, h, w))
        out["instances"] = Instances((h, w), **fields)
    return out


class ExportedPredictor:
    """`predictor(bgr_image)` -> the output dict for one BGR HxWx3 uint8 image, at its size (see the
    module docstring for the resizing). `path`: a file written by zsi_d2's export (ONNX, run by
    onnxruntime, or TorchScript); `threads`: onnxruntime's intra-op threads (TorchScript: torch's).

    `metadata` (detectron2 Metadata of the classes the file scores, built as ZeroShotPredictor's),
    `class_set`, `tasks` (the views the file outputs: "instance", "panoptic", "semantic"; fixed at
    export), `input_format` and `exported` (the loaded ExportedModel)."""

    def __init__(self, path: str, threads: Optional[int] = None):
        self.path = path
        self.exported = load_exported(path, threads=threads)
        self.format = self.exported.format
        meta = self.exported.meta
        self.input_format = meta.get("input_format", "BGR")
        self.input_size = self.exported.input_size
        self.class_set = exported_class_set(meta)
        self.metadata = class_set_metadata(self.class_set)
        keys = self.exported.outputs_schema.schemas[0].keys  # ListSchema of one image's DictSchema
        self.tasks = tuple(_TASKS[k] for k in keys if k in _TASKS)

    def __call__(self, original_image: np.ndarray) -> Dict:
        image = original_image[:, :, ::-1] if self.input_format == "RGB" else original_image
        height, width = image.shape[:2]
        if (height, width) != self.input_size:
            image = T.ResizeTransform(height, width, *self.input_size).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        outputs = self.exported(tensor)
        return outputs if (height, width) == self.input_size else resize_outputs(outputs, (height, width))
