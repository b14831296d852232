"""tools/evaluate_exported.py: an exported file scored on a registered dataset by zsi_d2's evaluators
gives eager mode's numbers (same evaluator, same images); other sizes are refused in one line."""
import math

import pytest
import torch

from detectron2.evaluation import inference_on_dataset

from conftest import import_tool
from test_export import _build
from zsi_d2.engine import ZeroShotTrainer
from zsi_d2.errors import InputError
from zsi_d2.evaluation import build_zero_shot_evaluator
from zsi_d2.export import export_model
from zsi_d2.modeling import use_class_set

DATASET = "zs_shapes_tiny_val_panoptic"


def _flat(results):
    return import_tool("evaluate_exported").flatten(results)


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    """The tiny core (test_export's random weights), exported to both formats, and eager's metrics."""
    tool = import_tool("evaluate_exported")
    tmp = tmp_path_factory.mktemp("evaluate_exported")
    cfg, model, _, images = _build("core")
    paths = {fmt: str(tmp / f"core.{fmt}") for fmt in ("onnx", "torchscript")}
    eval_cfg = tool.evaluation_cfg("mask_classification", True, DATASET)
    with use_class_set(model, DATASET), torch.no_grad():
        for fmt, path in paths.items():
            export_model(model, images[0], fmt, path, meta={"input_format": cfg.INPUT.FORMAT})
        eager = inference_on_dataset(model, ZeroShotTrainer.build_test_loader(cfg, DATASET),
                                     build_zero_shot_evaluator(eval_cfg, DATASET, str(tmp / "eager")))
    return tool, paths, eager, tmp


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_metrics_equal_eager(core, fmt):
    tool, paths, eager, tmp = core
    results = tool.main(["--exported", paths[fmt], "--dataset", DATASET, "--output", str(tmp / fmt)])
    assert set(results) == set(eager) and {"panoptic_seg", "segm", "sem_seg"} <= set(results)
    ours, theirs = _flat(results), _flat(eager)
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(ours[key]), key
        else:
            assert ours[key] == pytest.approx(value, abs=1e-6), key
    assert (tmp / fmt / "metrics.json").is_file()


def test_images_of_another_size_are_refused_in_one_line(core):
    tool, paths, _, _ = core
    from zsi_d2.export import load_exported

    model = tool.ExportedAsModel(load_exported(paths["onnx"]))
    with pytest.raises(InputError, match="is 96x128; the exported model takes 128x128 images only") as info:
        model([{"image": torch.zeros(3, 96, 128, dtype=torch.uint8), "file_name": "x.png"}])
    assert "\n" not in str(info.value)
    exported = load_exported(paths["onnx"])
    tool.check_classes(exported, DATASET)  # traced under that dataset's class set
    exported.class_names = exported.class_names[::-1]  # as after set_vocabulary: other classes
    with pytest.raises(InputError, match=f"label space is not {DATASET}'s classes"):
        tool.check_classes(exported, DATASET)


def test_eager_flag_evaluates_the_checkpoint_alike(core):
    """--eager: the config + weights scored by the same evaluators through the trainer's test loader."""
    from detectron2.checkpoint import DetectionCheckpointer

    tool, paths, eager, tmp = core
    cfg, model, _, _ = _build("core")  # the same seed: the weights the files were traced from
    (tmp / "config.yaml").write_text(cfg.dump())
    DetectionCheckpointer(model, save_dir=str(tmp)).save("model")
    results = tool.main(["--exported", paths["onnx"], "--dataset", DATASET, "--eager",
                         "--config-file", str(tmp / "config.yaml"), "--weights", str(tmp / "model.pth")])
    assert tool.flatten(results["eager"]).keys() == _flat(eager).keys()
    assert results["exported_minus_eager"] and all(abs(d) <= 1e-6 for d in results["exported_minus_eager"].values()
                                                   if d == d)
