"""Exported zsi_d2 models at run time: `model(image)` -> the eager model's outputs (detectron2's format).

A file holds one graph (TorchScript or ONNX) of a traced model and, as JSON metadata, everything
needed to use it without the config or this package's model code: the family (what finishes the
outputs outside the graph), the flat outputs' schema, the input size it was traced for, the class
names it scores and the label spaces its ids index. `load_exported(path)` picks the format by the
file's contents; onnxruntime is needed for ONNX files only (`pip install onnxruntime`).
"""
import abc
import json
import os
import warnings
from typing import Dict, Optional

import numpy as np
import torch

from ..errors import InputFileNotFoundError, InputValueError
from .families import family_named
from .schema import schema_from_json

__all__ = ["ExportedModel", "TorchScriptModel", "OnnxModel", "load_exported", "METADATA_KEY", "FORMATS",
           "OPTIMIZATION_LEVELS", "DEFAULT_OPTIMIZATION", "require_onnxruntime"]

METADATA_KEY = "zsi_d2_export"  # TorchScript extra file name / ONNX metadata_props key
FORMATS = ("onnx", "torchscript")
_JIT_DEPRECATED = r"`torch\.jit\.\w+` is deprecated"  # today's torch: TorchScript still works, warns each call


def require_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise InputValueError("onnxruntime is not installed: pip install onnxruntime (or use the TorchScript "
                              "export / --backend pytorch)") from None
    return onnxruntime


class ExportedModel(abc.ABC):
    """`exported(image)`: image a (3, H, W) tensor as a model's "image" input (uint8 or float, the
    config's INPUT.FORMAT), H x W = `input_size`; returns the eager model's output for it."""

    format = None

    def __init__(self, meta: Dict, source: str = "the exported file"):
        self.meta = meta
        self.family = family_named(meta["family"], source)
        self.outputs_schema = schema_from_json(meta["outputs_schema"], source)
        self.input_size = tuple(meta["input_size"])
        self.class_names = list(meta["class_names"])

    @abc.abstractmethod
    def run(self, image: torch.Tensor):
        """The graph's flat outputs for one image (TorchScriptModel: the module; OnnxModel: onnxruntime)."""

    def __call__(self, image: torch.Tensor) -> Dict:
        if tuple(image.shape[-2:]) != self.input_size:
            raise InputValueError(f"This model was exported for {self.input_size[0]}x{self.input_size[1]} images; got "
                                  f"{tuple(image.shape[-2:])[0]}x{tuple(image.shape[-2:])[1]}. Resize to that size "
                                  "(an export fixes the shapes) or export again with --size")
        flat = self.run(image)
        return self.family.finish(self.outputs_schema(flat)[0], self.input_size)


class TorchScriptModel(ExportedModel):
    format = "torchscript"

    def __init__(self, module, meta: Dict, source: str = "the exported file"):
        super().__init__(meta, source)
        self.module = module

    def run(self, image):
        with torch.no_grad():
            return self.module(image)

    def save(self, path: str):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_JIT_DEPRECATED, category=FutureWarning)
            torch.jit.save(self.module, path, _extra_files={METADATA_KEY: json.dumps(self.meta)})

    @classmethod
    def load(cls, path: str) -> "TorchScriptModel":
        extra = {METADATA_KEY: ""}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_JIT_DEPRECATED, category=FutureWarning)
            module = torch.jit.load(path, map_location="cpu", _extra_files=extra)
        if not extra[METADATA_KEY]:
            raise InputValueError(f"{path} has no {METADATA_KEY} metadata: not written by zsi_d2's export; export it "
                                  "with tools/export_model.py, or load it with torch.jit.load")
        return cls(module, json.loads(extra[METADATA_KEY]), path)


# onnxruntime's graph optimisation levels. "all" (the default) adds layout changes (NCHWc convolutions)
# to "extended": measured on the trained zs_shapes core and projection R-CNN at 1 thread, 0.86x and
# 0.83x of "extended"'s time per image, with eager's discrete outputs and accuracy (docs/deployment.md);
# its floats stray a little further (ZegFormer's semantic sums, up to 3.4: 1.2e-4 against 2.8e-5).
DEFAULT_OPTIMIZATION = "all"
OPTIMIZATION_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                       "all": "ORT_ENABLE_ALL"}


class OnnxModel(ExportedModel):
    """An ONNX file run by onnxruntime on the CPU. `threads`: intra-op threads (None: onnxruntime's
    default, one per core); `optimization`: a key of OPTIMIZATION_LEVELS."""

    format = "onnx"

    def __init__(self, path: str, threads: Optional[int] = None, optimization: str = DEFAULT_OPTIMIZATION):
        ort = require_onnxruntime()
        if optimization not in OPTIMIZATION_LEVELS:
            raise InputValueError(f"onnxruntime optimisation level {optimization!r} is not one of "
                                  f"{list(OPTIMIZATION_LEVELS)}")
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[optimization])
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: its warnings are about unused initialisers
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if not meta:
            raise InputValueError(f"{path} has no {METADATA_KEY} metadata: not written by zsi_d2's export; export it "
                                  "with tools/export_model.py")
        super().__init__(json.loads(meta), path)
        self.path = path
        self._input = self.session.get_inputs()[0]

    def run(self, image):
        dtype = np.uint8 if "uint8" in self._input.type else np.float32
        array = image.detach().cpu().numpy().astype(dtype, copy=False)
        return [torch.from_numpy(x) for x in self.session.run(None, {self._input.name: array})]


def load_exported(path: str, threads: Optional[int] = None, optimization: str = DEFAULT_OPTIMIZATION) -> ExportedModel:
    """An exported file, ONNX (run by onnxruntime at `optimization`, `threads` intra-op threads) or
    TorchScript (run with torch's own thread setting), by its contents."""
    if not os.path.isfile(path):
        raise InputFileNotFoundError(f"exported model '{path}' not found: write it with tools/export_model.py")
    with open(path, "rb") as f:
        zip_file = f.read(4) == b"PK\x03\x04"  # TorchScript files are zip archives; ONNX is a protobuf
    if zip_file:
        return TorchScriptModel.load(path)
    return OnnxModel(path, threads, optimization)
