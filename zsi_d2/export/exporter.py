"""Tracing a zsi_d2 model into TorchScript or ONNX, the way detectron2 exports its own models:
`TracingAdapter` around the family's inference (`families.py`), traced on one fixed-size image.

The graph is valid for that input size only (a trace turns shapes into constants): fixed-size
export, for every family. The class set is the model's active one at export time (the config's
test set, a dataset's, or any vocabulary set with zsi_d2.set_vocabulary), frozen into the graph's
classifier; the file's metadata names it. ONNX uses PyTorch's TorchScript-based exporter
(`dynamo=False`, opset 17), which is what a detectron2 `TracingAdapter` is written for.
"""
import contextlib
import json
import logging
import warnings
from typing import Dict, Optional

import torch

from detectron2.export import TracingAdapter

from ..errors import InputValueError
from .exported import _JIT_DEPRECATED, FORMATS, METADATA_KEY, OnnxModel, TorchScriptModel
from .families import family_of
from .schema import schema_to_json

__all__ = ["export_model", "quantize_onnx", "OPSET"]

logger = logging.getLogger(__name__)

OPSET = 17


def _class_metadata(model) -> Dict:
    class_set = model.class_set
    meta = {"class_names": list(class_set.names),  # the model's active classes (local order)
            "dataset_classes": list(class_set.dataset_classes)}  # what sem_seg channels / category ids index
    for key in ("thing_classes", "unseen"):
        if hasattr(class_set, key):
            meta[key] = list(getattr(class_set, key))
    return meta


def export_model(model, image: torch.Tensor, fmt: str, path: str, meta: Optional[Dict] = None):
    """Trace `model` (eval mode, its current class set) on one (3, H, W) image into `path` as `fmt`
    ("onnx" or "torchscript"); returns the loaded export (an ExportedModel; ONNX needs onnx and
    onnxruntime). `meta` joins the file's metadata; its "input_format" (the config's INPUT.FORMAT,
    the channel order the image is in) defaults to the model's `input_format` where it has one
    (R-CNN); tools/export_model.py passes the config's. Whether the graph generalises is the caller's check: compare with eager mode on
    another image (tools/export_model.py does)."""
    if fmt not in FORMATS:
        raise InputValueError(f"export format {fmt!r} is not one of {list(FORMATS)}")
    if model.training:
        raise InputValueError("export_model: call model.eval() first (a training forward returns losses)")
    family = family_of(model)
    # eval(): a new module is in training mode, and torch.onnx.export restores the adapter's mode
    # afterwards, which would put the model back in training mode.
    adapter = TracingAdapter(model, [{"image": image}], family.inference).eval()
    meta = dict(meta or {})
    if "input_format" not in meta and getattr(model, "input_format", None):
        meta["input_format"] = model.input_format  # GeneralizedRCNN keeps cfg.INPUT.FORMAT; others: pass it in meta
    meta.update({"family": family.name, "format": fmt, "input_size": list(image.shape[-2:]),
                 "input_dtype": str(image.dtype).replace("torch.", ""), **_class_metadata(model)})
    with warnings.catch_warnings(), torch.no_grad(), _mha_fastpath(False):
        # TracerWarnings here are shapes and the class set turned into constants: what a fixed-size
        # export means. Whether the trace generalises is checked on another image.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=_JIT_DEPRECATED, category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        if fmt == "torchscript":
            module = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
            meta["outputs_schema"] = schema_to_json(adapter.outputs_schema)
            exported = TorchScriptModel(module, meta)
            exported.save(path)
            return exported
        torch.onnx.export(adapter, adapter.flattened_inputs, path, opset_version=OPSET, dynamo=False,
                          input_names=["image"], do_constant_folding=True)
    meta["outputs_schema"] = schema_to_json(adapter.outputs_schema)
    _write_onnx_metadata(path, meta)
    return OnnxModel(path)


@contextlib.contextmanager
def _mha_fastpath(enabled: bool):
    """nn.MultiheadAttention's eval fast path (CLIP's transformer) is one fused op that ONNX lacks:
    traced without it, the graph has the plain attention, with the same values."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def _write_onnx_metadata(path: str, meta: Dict):
    try:
        import onnx
    except ImportError:
        raise InputValueError("ONNX export needs the onnx package: pip install onnx onnxruntime") from None
    proto = onnx.load(path)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.save(proto, path)


def quantize_onnx(path: str, output: str):
    """onnxruntime's dynamic int8 quantisation of an exported ONNX file (weights int8, activations
    quantised on the fly), its metadata kept and marked; returns the loaded quantised model."""
    import onnx

    from .exported import require_onnxruntime

    require_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    meta = json.loads({p.key: p.value for p in onnx.load(path).metadata_props}[METADATA_KEY])
    quantize_dynamic(path, output, weight_type=QuantType.QInt8)
    meta["quantization"] = "dynamic int8 (onnxruntime.quantization.quantize_dynamic, QInt8 weights)"
    _write_onnx_metadata(output, meta)
    return OnnxModel(output)
