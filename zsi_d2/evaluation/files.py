"""The evaluators' files: reading inputs so that every failure names the file, writing results as
strict JSON.

Why: `json.load` reports "Expecting value: line 1 column 1" without saying of which file, and
a folder or a PNG given where a json belongs fails further down with an unrelated error.
"""
import json
import os

from detectron2.utils.file_io import PathManager

from ..errors import InputFileNotFoundError, InputValueError

__all__ = ["read_json", "write_results_json"]


def read_json(path: str, what: str = "json file"):
    """json.load of a path; a missing path, a folder or a non-json file is an error naming it."""
    path = PathManager.get_local_path(path)
    if os.path.isdir(path):
        raise InputFileNotFoundError(f"{what} {path} is a folder, not a json file: give the json file in it")
    if not os.path.isfile(path):
        raise InputFileNotFoundError(f"{what} not found: {path}; check the path")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputValueError(f"{what} {path} is not valid json ({e}): give a json file") from None


def write_results_json(results, path: str) -> str:
    """Nested results as strict JSON (NaN, e.g. a class with no ground truth, becomes null); the
    folder is created. Returns the path."""
    from .metrics import nan_to_none

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(nan_to_none(results), f, indent=2)
    return path
