"""Import user modules that register datasets, so `train_net.py` and the CLIs find custom datasets.

Why: a dataset registered in the user's own script is unknown to any other process. Naming the
module in the config (DATASETS.REGISTER_MODULES) or on the command line (`--register`) makes
`train_net.py`, its worker processes and `python -m zsi_d2.data.audit` import it first.
"""
import hashlib
import importlib
import importlib.util
import logging
import os
import sys

from ..errors import InputError, InputFileNotFoundError

__all__ = ["import_register_modules", "RegisterModuleNotFoundError"]

logger = logging.getLogger(__name__)


class RegisterModuleNotFoundError(InputError, ModuleNotFoundError):
    """A dotted registration module that cannot be imported (train_net.py prints it as one line)."""


def _module_key(path):
    """sys.modules key of a .py file: its stem plus a hash of its path, so that two files with the
    same name in different folders are both imported."""
    digest = hashlib.sha1(path.encode()).hexdigest()[:8]
    stem = os.path.splitext(os.path.basename(path))[0]
    return f"zsi_d2_user_{stem}_{digest}"


def _import_file(name):
    path = os.path.abspath(name)
    if not os.path.isfile(path):
        raise InputFileNotFoundError(
            f"Dataset registration module '{name}' (DATASETS.REGISTER_MODULES / --register) does not exist "
            f"(looked for {path}, relative paths start at the current folder): give the path of a .py file "
            "or a dotted module name on PYTHONPATH."
        )
    key = _module_key(path)
    if key in sys.modules:
        return False
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[key]  # a failed import is not "done": the next call runs it again
        raise
    return True


def _import_dotted(name):
    if name in sys.modules:
        return False
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        if not e.name or not (name == e.name or name.startswith(e.name + ".")):
            raise  # a module the user's module imports is missing: its own error says which
        raise RegisterModuleNotFoundError(
            f"Dataset registration module '{name}' (DATASETS.REGISTER_MODULES / --register) cannot be "
            "imported: put its folder on PYTHONPATH, or give the path of the .py file instead."
        ) from None
    return True


def import_register_modules(modules):
    """Import each dotted module name or `.py` path once (a second call is a no-op)."""
    if isinstance(modules, str):
        modules = [modules]  # DATASETS.REGISTER_MODULES "my_datasets.py" (a string, not a list)
    for name in modules:
        imported = _import_file(name) if name.endswith(".py") else _import_dotted(name)
        if imported:
            logger.info(f"Imported dataset registration module '{name}'")
