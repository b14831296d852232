"""Make detectron2 0.6 importable on today's torch/numpy when it was built without `_C`.

Why: no detectron2 wheel exists on the package registry, so zsi_d2 installs the `pb1-detectron2`
sdist (detectron2 0.6) with its C++/CUDA extension disabled (tools/install_detectron2.sh). That
build lacks the compiled module `detectron2._C`, which `detectron2.layers` imports eagerly, and
detectron2 0.6 still uses numpy aliases (`np.int`, `np.float`, `np.bool`) removed in numpy 1.24.

`apply()` runs once when zsi_d2 is imported and:
1. restores the removed numpy aliases (to the builtins they always meant), if missing;
2. when `detectron2._C` cannot be imported, installs a stand-in module whose ops raise a clear
   error naming the op. Only rotated boxes, deformable convolution and the fast COCOeval need it;
   zsi_d2 uses none of them (its evaluators run pycocotools' COCOeval).

With a real detectron2 (built from source, with `_C`) step 2 does nothing.
"""
import importlib
import sys
import types
import warnings

import numpy as np

__all__ = ["apply", "HAS_COMPILED_OPS"]

HAS_COMPILED_OPS = None  # set by apply(): True when a real detectron2._C is present

_NUMPY_ALIASES = {"int": int, "float": float, "bool": bool, "object": object, "str": str}


class _MissingCompiledOps(types.ModuleType):
    """Stand-in for `detectron2._C`: any op lookup returns a function that explains itself.

    The build-information queries used by detectron2's environment report answer truthfully.
    """

    __file__ = "<zsi_d2 stand-in for detectron2._C>"

    @staticmethod
    def get_compiler_version():
        return "none: built without the C++/CUDA extension (zsi_d2.compat stand-in)"

    @staticmethod
    def get_cuda_version():
        return "none: built without the C++/CUDA extension (zsi_d2.compat stand-in)"

    @staticmethod
    def has_cuda():
        return False

    def __getattr__(self, op_name):
        if op_name.startswith("__"):
            raise AttributeError(op_name)

        def _missing(*args, **kwargs):
            raise NotImplementedError(
                f"detectron2._C.{op_name} is not available: this detectron2 was installed without "
                "its C++/CUDA extension (tools/install_detectron2.sh). Rotated boxes, deformable "
                "convolution and the fast COCOeval need it. Install upstream detectron2 from "
                "source to use them (see README, 'Installing upstream detectron2')."
            )

        _missing.__name__ = op_name
        return _missing


def _restore_numpy_aliases():
    for name, value in _NUMPY_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, value)


def _install_compiled_ops_stand_in():
    global HAS_COMPILED_OPS
    try:
        importlib.import_module("detectron2._C")
        HAS_COMPILED_OPS = True
        return
    except ImportError:
        HAS_COMPILED_OPS = False
    import detectron2

    stand_in = _MissingCompiledOps("detectron2._C")
    sys.modules["detectron2._C"] = stand_in
    detectron2._C = stand_in


def apply():
    """Idempotent; safe to call before or after detectron2 is imported."""
    # fvcore calls torch.jit.script at import; today's torch warns about it on every command, in
    # two lines that would stand before any one-line error a CLI prints.
    warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)
    _restore_numpy_aliases()
    if HAS_COMPILED_OPS is None:
        _install_compiled_ops_stand_in()
