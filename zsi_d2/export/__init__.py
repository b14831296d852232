"""Export of every zsi_d2 model family to TorchScript and ONNX, and the exported models at run time.

    from zsi_d2.export import export_model, load_exported
    export_model(model.eval(), image, "onnx", "model.onnx")   # traced on one (3, H, W) image
    outputs = load_exported("model.onnx")(image)               # the eager model's outputs, via onnxruntime
    outputs = ExportedPredictor("model.onnx")(bgr_image)       # any image size, outputs at its size (demo.py)
"""
from .compare import compare_outputs  # noqa: F401
from .exported import FORMATS, METADATA_KEY, ExportedModel, OnnxModel, TorchScriptModel, load_exported  # noqa: F401
from .exporter import OPSET, export_model, quantize_onnx  # noqa: F401
from .families import FAMILIES, family_of  # noqa: F401
from .predictor import ExportedPredictor  # noqa: F401
