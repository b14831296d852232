"""detectron2's output schemas (TracingAdapter.outputs_schema) as JSON, so an exported file carries
how its flat tuple of tensors becomes detectron2 outputs again, and can be read without pickle."""
import dataclasses
from typing import Dict

from detectron2.export import flatten as _flatten

from ..errors import InputValueError

__all__ = ["schema_to_json", "schema_from_json"]

_SCHEMAS = ("ListSchema", "TupleSchema", "IdentitySchema", "DictSchema", "InstancesSchema", "TensorWrapSchema")


def schema_to_json(schema) -> Dict:
    out = {"type": type(schema).__name__}
    for field in dataclasses.fields(schema):
        value = getattr(schema, field.name)
        out[field.name] = [schema_to_json(s) for s in value] if field.name == "schemas" else value
    return out


def schema_from_json(data: Dict, source: str = "the exported file"):
    """Only detectron2's own schema classes and structures (a file is data, not code to run)."""
    if data["type"] not in _SCHEMAS:
        raise InputValueError(f"{source}: unknown output schema type {data['type']!r}; export the model again "
                              "(tools/export_model.py)")
    if data["type"] == "TensorWrapSchema" and not data["class_name"].startswith("detectron2.structures."):
        raise InputValueError(f"{source}: unexpected output structure {data['class_name']!r}; export the model "
                              "again (tools/export_model.py)")
    kwargs = {k: ([schema_from_json(s, source) for s in v] if k == "schemas" else v)
              for k, v in data.items() if k != "type"}
    return getattr(_flatten, data["type"])(**kwargs)
