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
3. when caffe2 is not installed (today's torch has none), makes `import detectron2.export` give
   the package without its caffe2 half: `TracingAdapter`, `scripting_with_instances`,
   `dump_torchscript_IR` (the TorchScript export, pure PyTorch); the caffe2 API's names
   (`Caffe2Tracer`, `export_caffe2_model`, ...) import but raise an ImportError saying why when used. detectron2 0.6's
   `detectron2/export/__init__.py` imports its caffe2 API first and so fails as a whole; later
   detectron2 releases guard that import the same way.

With a real detectron2 (built from source, with `_C`) step 2 does nothing.

Below `apply()`, every other use of detectron2's private API (for detectron2 0.6), each applied
only by the entry point that needs it, never on import; `tests/test_detectron2_patches.py` checks
each one and fails when it stops working or stops being needed. (fvcore's `Checkpointer._load_file`,
overridden in zsi_d2/engine/checkpoint.py, is the hook fvcore documents for subclasses.)
"""
import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings

import numpy as np

__all__ = ["apply", "HAS_COMPILED_OPS", "find_free_port", "set_local_process_group", "let_ddp_wrap_cpu_modules",
           "replace_trainer_data_iterator", "next_trainer_batch"]

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


_EXPORT_PACKAGE = "detectron2.export"
_CAFFE2_EXPORT_NAMES = ("add_export_config", "export_caffe2_model", "Caffe2Model", "export_onnx_model", "Caffe2Tracer")


def _caffe2_export_stand_in(name):
    """Stand-in for one caffe2 name of `detectron2.export`: importable, explains itself when used
    (as the `_C` stand-in's ops do)."""

    def _missing(*args, **kwargs):
        raise ImportError(
            f"detectron2.export.{name} needs caffe2, which is not installed (today's torch ships none); "
            "zsi_d2.compat loaded detectron2.export without its caffe2 API. TorchScript export "
            "(TracingAdapter + torch.jit.trace) works: see tools/export_model.py."
        )

    _missing.__name__ = _missing.__qualname__ = name
    return _missing


class _Caffe2FreeExportLoader(importlib.abc.Loader):
    """Executes `detectron2.export` as 0.6's `__init__` minus `from .api import *` (caffe2)."""

    def create_module(self, spec):
        return None  # default module creation: __path__ = the real package folder

    def exec_module(self, module):
        from detectron2.export.flatten import TracingAdapter
        from detectron2.export.torchscript import dump_torchscript_IR, scripting_with_instances

        module.TracingAdapter = TracingAdapter
        module.scripting_with_instances = scripting_with_instances
        module.dump_torchscript_IR = dump_torchscript_IR
        for name in _CAFFE2_EXPORT_NAMES:
            setattr(module, name, _caffe2_export_stand_in(name))
        module.__all__ = ["TracingAdapter", "scripting_with_instances", "dump_torchscript_IR"]


class _Caffe2FreeExportFinder(importlib.abc.MetaPathFinder):
    """Finds the real `detectron2.export` folder and gives it the caffe2-free loader."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _EXPORT_PACKAGE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None:
            return None
        spec.loader = _Caffe2FreeExportLoader()
        return spec


def _make_export_importable():
    """Only where caffe2 is absent; with caffe2 the real `detectron2.export` loads unchanged."""
    if importlib.util.find_spec("caffe2") is not None or _EXPORT_PACKAGE in sys.modules:
        return
    if not any(isinstance(f, _Caffe2FreeExportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Caffe2FreeExportFinder())


def apply():
    """Idempotent; safe to call before or after detectron2 is imported."""
    # fvcore calls torch.jit.script at import; today's torch warns about it on every command, in
    # two lines that would stand before any one-line error a CLI prints.
    warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)
    _restore_numpy_aliases()
    if HAS_COMPILED_OPS is None:
        _install_compiled_ops_stand_in()
    _make_export_importable()


# ---- detectron2 0.6's private API, used at run time (see the module docstring) ----------------
def find_free_port() -> int:
    """A free local TCP port for a one-machine process group (detectron2's launcher's own helper)."""
    from detectron2.engine.launch import _find_free_port

    return _find_free_port()


def set_local_process_group(group) -> None:
    """What detectron2 0.6's `_distributed_worker` does for its GPU workers (later releases have a
    public `comm.create_local_process_group`): used by zsi_d2's CPU launcher."""
    from detectron2.utils import comm

    comm._LOCAL_PROCESS_GROUP = group


def let_ddp_wrap_cpu_modules() -> None:
    """detectron2's create_ddp_model passes device_ids=[local_rank]; DDP refuses that for CPU
    modules, which need device_ids=None. Wrap it so CPU modules get None (CPU launcher workers)."""
    import detectron2.engine.defaults as defaults

    original = defaults.create_ddp_model
    if getattr(original, "_zsi_d2_cpu_aware", False):
        return

    @functools.wraps(original)
    def create_ddp_model(model, **kwargs):
        if next(model.parameters()).device.type == "cpu":
            kwargs.setdefault("device_ids", None)
        return original(model, **kwargs)

    create_ddp_model._zsi_d2_cpu_aware = True
    defaults.create_ddp_model = create_ddp_model


def replace_trainer_data_iterator(trainer, iterator) -> None:
    """Make a DefaultTrainer's inner SimpleTrainer draw its next batches from `iterator` (0.6 builds
    `_data_loader_iter` eagerly in `__init__`, before a checkpoint says where the data stream was)."""
    trainer._trainer._data_loader_iter = iterator


def next_trainer_batch(trainer):
    """The next batch of a DefaultTrainer's data stream (its SimpleTrainer's iterator, private in 0.6),
    for a trainer whose `run_step` is its own (several optimisers per iteration, e.g. CaGNet's)."""
    return next(trainer._trainer._data_loader_iter)
