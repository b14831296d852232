"""Import user modules that register datasets, so `train_net.py` and the CLIs find custom datasets.

Why: a dataset registered in the user's own script is unknown to any other process. Naming the
module in the config (DATASETS.REGISTER_MODULES) or on the command line (`--register`) makes
`train_net.py`, its worker processes and `python -m zsi_d2.data.audit` import it first.
"""
import importlib
import importlib.util
import logging
import os
import sys

__all__ = ["import_register_modules"]

logger = logging.getLogger(__name__)


def import_register_modules(modules):
    """Import each dotted module name or `.py` path once (a second call is a no-op)."""
    for name in modules:
        if name.endswith(".py"):
            path = os.path.abspath(name)
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"Dataset registration module '{name}' (DATASETS.REGISTER_MODULES / --register) does not "
                    "exist: give the path of a .py file or a dotted module name on PYTHONPATH."
                )
            key = "zsi_d2_user_" + os.path.splitext(os.path.basename(path))[0]
            if key in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(key, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[key] = module
            spec.loader.exec_module(module)
        else:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as e:
                if not e.name or not (name == e.name or name.startswith(e.name + ".")):
                    raise  # a module the user's module imports is missing: its own error says which
                raise ModuleNotFoundError(
                    f"Dataset registration module '{name}' (DATASETS.REGISTER_MODULES / --register) cannot be "
                    "imported: put its folder on PYTHONPATH, or give the path of the .py file instead."
                ) from None
        logger.info(f"Imported dataset registration module '{name}'")
