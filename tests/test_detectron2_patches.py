"""Every private detectron2 / fvcore API zsi_d2 still relies on, for detectron2 0.6 (the version
tools/install_detectron2.sh installs), each with a check that fails when it stops working or stops
being needed: the failure message says what to change. The importability patches (the `_C`
stand-in, numpy aliases, caffe2-free `detectron2.export`) live in zsi_d2/compat.py and are tested
by the whole suite importing detectron2 through zsi_d2."""
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
    """zsi_d2/engine/launch.py (CPU workers only) sets comm._LOCAL_PROCESS_GROUP, as detectron2 0.6's
    own _distributed_worker does; later detectron2 has a public create_local_process_group."""
    assert hasattr(comm, "_LOCAL_PROCESS_GROUP"), "comm._LOCAL_PROCESS_GROUP is gone: update engine/launch.py"
    assert not hasattr(comm, "create_local_process_group"), (
        "detectron2 now has comm.create_local_process_group: use it in engine/launch.py")
    assert hasattr(importlib.import_module("detectron2.engine.launch"), "_find_free_port"), (
        "detectron2.engine.launch._find_free_port is gone: pick a free port in engine/launch.py itself")


def test_create_ddp_model_still_needs_the_cpu_wrapper():
    """engine/launch.py wraps create_ddp_model in CPU workers because it passes device_ids, which DDP
    refuses for CPU modules."""
    source = inspect.getsource(defaults.create_ddp_model)
    assert "device_ids" in source, "create_ddp_model no longer passes device_ids: drop _let_ddp_wrap_cpu_modules"


def test_trainer_iterator_attribute_resumption_replaces():
    """ZeroShotTrainer.resume_or_load replaces SimpleTrainer._data_loader_iter to continue the data
    stream where the saved run stopped (0.6 creates it eagerly in __init__)."""
    assert "self._data_loader_iter = iter(data_loader)" in inspect.getsource(train_loop.SimpleTrainer.__init__), (
        "SimpleTrainer no longer builds _data_loader_iter in __init__: update ZeroShotTrainer.resume_or_load")


def test_checkpointer_load_file_is_the_extension_point():
    """ZeroShotCheckpointer overrides fvcore's Checkpointer._load_file, the hook fvcore documents for
    subclasses (detectron2's DetectionCheckpointer overrides it too)."""
    assert "_load_file" in vars(Checkpointer), "fvcore's Checkpointer._load_file is gone: update engine/checkpoint.py"
