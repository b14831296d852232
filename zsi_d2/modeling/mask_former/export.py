"""TorchScript export of ZeroShotMaskFormer's inference, the way detectron2 exports its own models.

detectron2's recipe (tools/deploy/export_model.py): wrap the model in `TracingAdapter` with an
`inference_func`, `torch.jit.trace` it on one fixed-size input, save the TorchScript file, and
rebuild rich outputs from its flat tuple with the adapter's `outputs_schema`. ZeroShotMaskFormer is
pure PyTorch (no compiled deformable-attention op, unlike Mask2Former), so the whole inference
traces: backbone, pixel decoder, transformer decoder, classifier for the class set active at
export time, and the semantic / instance / panoptic rules at the input's resolution.

Inside the trace (`export_inference`): `ZeroShotMaskFormer.inference` itself, the same rules as
eager mode (they trace: see `inference.py`), with the panoptic output as per-query tensors
(`panoptic_as_tensors`) because `segments_info` is a list of dicts. Outside the trace
(`TracedMaskFormer.__call__`): the flat tuple becomes detectron2's outputs again, `segments_info`
is built by `panoptic_segments_info` as the eager model builds it, and `Instances.image_size`
becomes a tuple.

The graph is valid for the traced input size only (shapes become constants); `TracedMaskFormer`
refuses other sizes. The saved file carries the outputs' layout and the class names as JSON
(`EXTRA_FILE`), so it can be used without this module (C++ / plain `torch.jit.load`).
"""
import dataclasses
import json
import warnings
from typing import Dict, List, Optional

import torch

from detectron2.export import TracingAdapter
from detectron2.export import flatten as _flatten
from detectron2.structures import Instances

from ...errors import InputValueError
from .inference import panoptic_segments_info

__all__ = ["export_inference", "trace_mask_former", "TracedMaskFormer", "EXTRA_FILE"]

EXTRA_FILE = "zsi_d2_export.json"  # torch.jit extra file: outputs schema, input size, class names
_JIT_DEPRECATED = r"`torch\.jit\.\w+` is deprecated"  # today's torch: TorchScript still works, warns each call
_SCHEMAS = ("ListSchema", "TupleSchema", "IdentitySchema", "DictSchema", "InstancesSchema", "TensorWrapSchema")


def export_inference(model, batched_inputs: List[Dict]) -> List[Dict]:
    """`TracingAdapter`'s inference_func: `model(batched_inputs)` in eval, panoptic as tensors.

    Outputs per image: "sem_seg", "instances" as eager; "panoptic_seg" = (panoptic_seg (H, W) int32,
    {"segment_ids" (Q,) int32, "category_ids" (Q,) dataset ids, "isthing" (Q,) bool}).
    """
    images = model.preprocess_image(batched_inputs)
    return model.inference(model.predict(images.tensor), batched_inputs, images, panoptic_as_tensors=True)


def _schema_to_json(schema) -> Dict:
    out = {"type": type(schema).__name__}
    for field in dataclasses.fields(schema):
        value = getattr(schema, field.name)
        out[field.name] = [_schema_to_json(s) for s in value] if field.name == "schemas" else value
    return out


def _schema_from_json(data: Dict):
    """Only detectron2's own schema classes and structures (a file is data, not code to run)."""
    if data["type"] not in _SCHEMAS:
        raise InputValueError(f"{EXTRA_FILE}: unknown schema type {data['type']!r}; export the model again "
                              "(tools/export_model.py)")
    if data["type"] == "TensorWrapSchema" and not data["class_name"].startswith("detectron2.structures."):
        raise InputValueError(f"{EXTRA_FILE}: unexpected output structure {data['class_name']!r}; export the model "
                              "again (tools/export_model.py)")
    kwargs = {k: ([_schema_from_json(s) for s in v] if k == "schemas" else v) for k, v in data.items() if k != "type"}
    return getattr(_flatten, data["type"])(**kwargs)


def _to_detectron2(result: Dict) -> Dict:
    """One image's rebuilt trace outputs -> the eager model's format."""
    result = dict(result)
    if "panoptic_seg" in result:
        seg, per_query = result["panoptic_seg"]
        result["panoptic_seg"] = (seg, panoptic_segments_info(per_query["segment_ids"], per_query["category_ids"],
                                                              per_query["isthing"]))
    if "instances" in result:
        inst = result["instances"]
        size = inst.image_size
        result["instances"] = Instances(tuple(int(s) for s in (size.tolist() if torch.is_tensor(size) else size)),
                                        **inst.get_fields())
    return result


class TracedMaskFormer:
    """A traced (or loaded) ZeroShotMaskFormer: `traced(image)` -> one image's eager-format outputs.

    `image`: (3, H, W) tensor as the model's input ("image" of a dataset dict), H x W = `input_size`.
    `module` is the TorchScript module (flat tuple of tensors in, out: see `meta["outputs_schema"]`).
    """

    def __init__(self, module, meta: Dict):
        self.module = module
        self.meta = meta
        self.outputs_schema = _schema_from_json(meta["outputs_schema"])
        self.input_size = tuple(meta["input_size"])

    def __call__(self, image: torch.Tensor) -> Dict:
        if tuple(image.shape[-2:]) != self.input_size:
            raise InputValueError(f"This model was traced for {self.input_size[0]}x{self.input_size[1]} images; got "
                                  f"{tuple(image.shape[-2:])}. Resize or pad to that size (a trace fixes the shapes).")
        with torch.no_grad():
            flat = self.module(image)
        return _to_detectron2(self.outputs_schema(flat)[0])

    def save(self, path: str):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_JIT_DEPRECATED, category=FutureWarning)
            torch.jit.save(self.module, path, _extra_files={EXTRA_FILE: json.dumps(self.meta)})

    @classmethod
    def load(cls, path: str, map_location=None) -> "TracedMaskFormer":
        extra = {EXTRA_FILE: ""}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_JIT_DEPRECATED, category=FutureWarning)
            module = torch.jit.load(path, map_location=map_location, _extra_files=extra)
        if not extra[EXTRA_FILE]:
            raise InputValueError(f"{path} has no {EXTRA_FILE}: not written by TracedMaskFormer.save; export it with "
                                  "tools/export_model.py, or load it with torch.jit.load")
        return cls(module, json.loads(extra[EXTRA_FILE]))


def trace_mask_former(model, image: torch.Tensor, meta: Optional[Dict] = None) -> TracedMaskFormer:
    """Trace `model` (eval mode, its current class set) on one (3, H, W) image; H x W is then fixed.

    detectron2's TracerWarnings are silenced: the ones this model raises are shapes and the class
    set turned into constants, which is what a fixed-size export means. Whether the trace
    generalises is checked by comparing with eager mode on another image (tests, tools/export_model.py).
    """
    if model.training:
        raise ValueError("trace_mask_former: call model.eval() first (training returns losses)")
    adapter = TracingAdapter(model, [{"image": image}], export_inference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=_JIT_DEPRECATED, category=FutureWarning)
        module = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
    class_set = model.class_set
    meta = dict(meta or {})
    meta.update({
        "outputs_schema": _schema_to_json(adapter.outputs_schema),
        "input_size": list(image.shape[-2:]),
        "class_names": list(class_set.names),  # the model's active classes (local order)
        "dataset_classes": list(class_set.dataset_classes),  # sem_seg channels / panoptic category_id
        "thing_classes": list(class_set.thing_classes),  # instance pred_classes
    })
    return TracedMaskFormer(module, meta)
