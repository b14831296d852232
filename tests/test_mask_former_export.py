"""TorchScript export of ZeroShotMaskFormer (zsi_d2.modeling.mask_former.export, tools/export_model.py).

A trace records one execution; a value read into Python (`.item()`, a branch) stays the example's
forever. So every check here traces on one input and compares with eager mode on a *different*
one: the whole model (semantic, panoptic, instances) traced on image A and run on image B, also
after torch.jit.save / load, and the command-line tool. The rules alone (panoptic against
Mask2Former's loop, traced and not) are tested in test_mask_former_inference.py.
"""
import importlib.util
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model

from conftest import REPO_ROOT
from test_mask_former_model import VAL, tiny_mask_former_cfg
from zsi_d2.modeling import use_class_set
from zsi_d2.modeling.mask_former.export import EXTRA_FILE, TracedMaskFormer, trace_mask_former

torch.set_num_threads(1)
# Random weights, seed 2, these thresholds: on images A and B the kept queries differ, both have
# thing and stuff segments, and queries that open a segment on B have other classes on A (so a
# frozen class or keep mask shows). Re-pick if the model changes (test_example_is_not_trivial).
SEED, IMAGE_A, IMAGE_B = 2, 22, 11
EXPORT_OPTS = ("MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.5", "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "0.3")


# ---- the whole model --------------------------------------------------------------------------
def _segment_set(seg, info):
    """Segments as sets of pixels with class and isthing (ids may differ between two outputs)."""
    seg = np.asarray(seg)
    return {(s["category_id"], s["isthing"], (seg == s["id"]).tobytes()) for s in info}


def _assert_same_outputs(ours, eager):
    assert set(ours) == set(eager) == {"sem_seg", "panoptic_seg", "instances"}
    torch.testing.assert_close(ours["sem_seg"], eager["sem_seg"], rtol=1e-5, atol=1e-6)
    (seg, info), (eager_seg, eager_info) = ours["panoptic_seg"], eager["panoptic_seg"]
    assert seg.shape == eager_seg.shape and seg.dtype == eager_seg.dtype
    assert ((seg == 0) == (eager_seg == 0)).all()
    assert _segment_set(seg.numpy(), info) == _segment_set(eager_seg.numpy(), eager_info)
    a, b = ours["instances"], eager["instances"]
    assert a.image_size == b.image_size and len(a) == len(b)
    assert torch.equal(a.pred_classes, b.pred_classes)
    torch.testing.assert_close(a.scores, b.scores, rtol=1e-5, atol=1e-6)
    assert torch.equal(a.pred_masks, b.pred_masks)
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor)


@pytest.fixture(scope="module")
def exported():
    torch.manual_seed(SEED)
    cfg = tiny_mask_former_cfg(*EXPORT_OPTS)
    model = build_model(cfg).eval()
    mapper = DatasetMapper(cfg, is_train=False)
    dicts = DatasetCatalog.get(VAL)
    images = [mapper(dicts[i])["image"] for i in (IMAGE_A, IMAGE_B)]
    assert all(im.shape == (3, 128, 128) for im in images)
    with use_class_set(model, VAL):
        with torch.no_grad():
            eager = [model([{"image": im}])[0] for im in images]
            keeps = []
            for im in images:
                logits = model.predict(model.preprocess_image([{"image": im}]).tensor)["pred_logits"][0]
                scores, labels = F.softmax(logits, -1).max(-1)
                keeps.append((labels != logits.shape[-1] - 1) & (scores > model.object_mask_threshold))
        traced = trace_mask_former(model, images[0])
        yield cfg, model, images, eager, keeps, traced


def test_example_is_not_trivial(exported):
    """What the trace could freeze does differ between A and B (else the next tests prove nothing)."""
    _, _, _, eager, keeps, _ = exported
    assert not torch.equal(keeps[0], keeps[1])
    for out in eager:
        info = out["panoptic_seg"][1]
        assert len(info) >= 2 and {s["isthing"] for s in info} == {True, False}
        assert len(out["instances"]) > 0
    assert _segment_set(*eager[0]["panoptic_seg"]) != _segment_set(*eager[1]["panoptic_seg"])
    assert not torch.equal(eager[0]["instances"].pred_masks, eager[1]["instances"].pred_masks)
    assert not torch.equal(eager[0]["instances"].pred_classes, eager[1]["instances"].pred_classes)


def test_traced_model_equals_eager_on_the_traced_and_another_image(exported):
    _, _, images, eager, _, traced = exported
    for image, expected in zip(images, eager):
        _assert_same_outputs(traced(image), expected)


def test_saved_torchscript_equals_eager_after_load(exported, tmp_path):
    _, model, images, eager, _, traced = exported
    path = str(tmp_path / "model.ts")
    traced.save(path)
    loaded = TracedMaskFormer.load(path)
    assert isinstance(loaded.module, torch.jit.ScriptModule)
    assert loaded.meta["input_size"] == [128, 128]
    assert tuple(loaded.meta["dataset_classes"]) == model.class_set.dataset_classes
    for image, expected in zip(images, eager):
        _assert_same_outputs(loaded(image), expected)
    # The flat outputs alone (no zsi_d2): as many tensors as the saved schema describes.
    flat = torch.jit.load(path)(images[1])
    assert all(isinstance(t, torch.Tensor) for t in flat) and len(flat) == len(torch.jit.load(path)(images[0]))
    with pytest.raises(ValueError, match="traced for 128x128"):
        loaded(torch.zeros(3, 96, 128, dtype=torch.uint8))
    torch.jit.save(torch.jit.load(path), str(tmp_path / "plain.ts"))
    with pytest.raises(ValueError, match=EXTRA_FILE):
        TracedMaskFormer.load(str(tmp_path / "plain.ts"))


def test_detectron2_export_imports_without_caffe2():
    if importlib.util.find_spec("caffe2") is not None:
        pytest.skip("caffe2 is installed: detectron2.export loads unchanged")
    import detectron2.export
    from detectron2.export import (  # noqa: F401
        Caffe2Tracer, TracingAdapter, dump_torchscript_IR, scripting_with_instances,
    )

    from detectron2.export.flatten import TracingAdapter as real

    assert TracingAdapter is real
    with pytest.raises(ImportError, match="needs caffe2"):
        Caffe2Tracer(None, None, None)
    assert "TracingAdapter" in detectron2.export.__all__


def test_export_cli(exported, tmp_path, capsys):
    cfg, model, _, _, _, _ = exported
    config = tmp_path / "config.yaml"
    config.write_text(cfg.dump())
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model")
    sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
    try:
        import export_model
    finally:
        sys.path.pop(0)
    out = str(tmp_path / "model.ts")
    result = export_model.main(["--config-file", str(config), "--weights", str(tmp_path / "model.pth"),
                                "--dataset", VAL, "--output", out])
    assert result["max_abs_diff"] == 0.0 and result["panoptic_equal"] and result["instances_equal"]
    assert "max |eager - traced|" in capsys.readouterr().out
    assert TracedMaskFormer.load(out).input_size == (128, 128)
