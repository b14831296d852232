"""Every private detectron2 / fvcore API zsi_d2 still relies on, for detectron2 0.6 (the version
tools/install_detectron2.sh installs), each with a check that fails when it stops working or stops
being needed: the failure message says what to change. All live in zsi_d2/compat.py: the
importability patches (the `_C` stand-in, numpy aliases, caffe2-free `detectron2.export`), applied
on import and tested by the whole suite importing detectron2 through zsi_d2, and the run-time uses
of private API, applied only by the entry points that need them."""
import importlib
import inspect

import detectron2
from detectron2.engine import defaults, train_loop
from detectron2.utils import comm
from fvcore.common.checkpoint import Checkpointer

import zsi_d2  # noqa: F401


def test_detectron2_version_these_patches_are_for():
    assert detectron2.__version__ == "0.6", (
        f"detectron2 {detectron2.__version__}: re-check every patch listed in this file against it")


def test_cpu_launcher_sets_the_local_process_group_as_detectron2_does():
    """compat.set_local_process_group (the CPU launcher's workers only) sets comm._LOCAL_PROCESS_GROUP, as detectron2 0.6's
    own _distributed_worker does; later detectron2 has a public create_local_process_group."""
    assert hasattr(comm, "_LOCAL_PROCESS_GROUP"), "comm._LOCAL_PROCESS_GROUP is gone: update compat.set_local_process_group"
    assert not hasattr(comm, "create_local_process_group"), (
        "detectron2 now has comm.create_local_process_group: use it in compat.set_local_process_group")
    assert hasattr(importlib.import_module("detectron2.engine.launch"), "_find_free_port"), (
        "detectron2.engine.launch._find_free_port is gone: pick a free port in compat.find_free_port itself")


def test_create_ddp_model_still_needs_the_cpu_wrapper():
    """compat.let_ddp_wrap_cpu_modules wraps create_ddp_model in the CPU launcher's workers because it passes device_ids, which DDP
    refuses for CPU modules."""
    source = inspect.getsource(defaults.create_ddp_model)
    assert "device_ids" in source, "create_ddp_model no longer passes device_ids: drop compat.let_ddp_wrap_cpu_modules"


def test_trainer_iterator_attribute_resumption_replaces():
    """ZeroShotTrainer.resume_or_load (through compat.replace_trainer_data_iterator) replaces
    DefaultTrainer._trainer's SimpleTrainer._data_loader_iter to continue the data
    stream where the saved run stopped (0.6 creates it eagerly in __init__)."""
    assert "self._data_loader_iter = iter(data_loader)" in inspect.getsource(train_loop.SimpleTrainer.__init__), (
        "SimpleTrainer no longer builds _data_loader_iter in __init__: update compat.replace_trainer_data_iterator")
    assert "self._trainer = " in inspect.getsource(defaults.DefaultTrainer.__init__), (
        "DefaultTrainer no longer keeps its SimpleTrainer in _trainer: update compat.replace_trainer_data_iterator")


def test_import_applies_only_the_importability_patches():
    """`import zsi_d2` leaves detectron2's create_ddp_model and comm's local group as they are: the
    run-time patches are the CPU launcher's, applied in its workers."""
    import subprocess
    import sys

    code = ("import zsi_d2, detectron2.engine.defaults as d; from detectron2.utils import comm; "
            "print(getattr(d.create_ddp_model, '_zsi_d2_cpu_aware', False), comm._LOCAL_PROCESS_GROUP)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["False", "None"], out.stdout + out.stderr[-2000:]


def test_checkpointer_load_file_is_the_extension_point():
    """ZeroShotCheckpointer overrides fvcore's Checkpointer._load_file, the hook fvcore documents for
    subclasses (detectron2's DetectionCheckpointer overrides it too)."""
    assert "_load_file" in vars(Checkpointer), "fvcore's Checkpointer._load_file is gone: update engine/checkpoint.py"
