"""TorchScript export of ZeroShotMaskFormer (zsi_d2.modeling.mask_former.export, tools/export_model.py).

A trace records one execution; a value read into Python (`.item()`, a branch) stays the example's
forever. So every check here traces on one input and compares with eager mode on a *different*
one: the vectorised panoptic rule against the loop rule (random, hand-built and oracle queries),
then the whole model (semantic, panoptic, instances) traced on image A and run on image B, also
after torch.jit.save / load, and the command-line tool.
"""
import importlib.util
import os
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model

from conftest import REPO_ROOT
from test_mask_former_inference import _cls, _ground_truth_panoptic, _masks
from test_mask_former_model import VAL, tiny_mask_former_cfg
from zsi_d2.modeling import use_class_set
from zsi_d2.modeling.mask_former.export import EXTRA_FILE, TracedMaskFormer, trace_mask_former
from zsi_d2.modeling.mask_former.inference import (
    panoptic_inference, panoptic_inference_tensors, panoptic_segments_info,
)

torch.set_num_threads(1)
# Random weights, seed 2, these thresholds: on images A and B the kept queries differ, both have
# thing and stuff segments, and queries that open a segment on B have other classes on A (so a
# frozen class or keep mask shows). Re-pick if the model changes (test_example_is_not_trivial).
SEED, IMAGE_A, IMAGE_B = 2, 22, 11
EXPORT_OPTS = ("MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.5", "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "0.3")


# ---- the vectorised panoptic rule ------------------------------------------------------------
def _tensor_rule(mask_cls, mask_pred, is_thing, *thresholds):
    seg, segment_ids, classes, isthing = panoptic_inference_tensors(mask_cls, mask_pred, is_thing, *thresholds)
    return seg, panoptic_segments_info(segment_ids, classes, isthing)


def _assert_same_panoptic(a, b):
    """Same map and same segments_info: the tensor rule keeps the loop rule's ids and order."""
    assert a[0].dtype == b[0].dtype == torch.int32
    assert torch.equal(a[0], b[0])
    assert a[1] == b[1]


def _random_case(g, num_queries, num_classes, h, w):
    """Few classes (stuff queries share classes: merging), blob-like masks of varied size, some exact
    ties (saturated masks, repeated class rows)."""
    mask_cls = torch.randn(num_queries, num_classes + 1, generator=g) * 3
    dup = torch.randint(0, num_queries, (num_queries // 3,), generator=g)
    if len(dup) > 1:
        mask_cls[dup[1:]] = mask_cls[dup[0]].clone()  # equal scores: argmax ties break in query order
    coarse = torch.randn(num_queries, 1, max(h // 4, 1), max(w // 4, 1), generator=g)
    mask_pred = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[:, 0] * 8
    mask_pred += torch.randn(num_queries, 1, 1, generator=g) * 4
    saturate = torch.rand(num_queries, generator=g) < 0.3
    mask_pred[saturate] = mask_pred[saturate].sign() * 30.0
    is_thing = torch.rand(num_classes, generator=g) < 0.5
    return mask_cls, mask_pred, is_thing


def test_panoptic_tensors_equal_the_loop_rule_on_random_queries():
    g = torch.Generator().manual_seed(0)
    merged = opened = 0
    for i in range(150):
        q, k = int(torch.randint(1, 16, (1,), generator=g)), int(torch.randint(1, 5, (1,), generator=g))
        mask_cls, mask_pred, is_thing = _random_case(g, q, k, 9 + i % 7, 11 + i % 5)
        thresholds = (float(torch.rand(1, generator=g)) * 0.8, [0.0, 0.3, 0.8, 1.0][i % 4])
        loop = panoptic_inference(mask_cls, mask_pred, is_thing, *thresholds)
        _assert_same_panoptic(_tensor_rule(mask_cls, mask_pred, is_thing, *thresholds), loop)
        # How often stuff merging ran (a stuff segment drawn from several queries' pixels), so the
        # comparison is not vacuous there.
        scores, labels = F.softmax(mask_cls, -1).max(-1)
        keep = (labels != k) & (scores > thresholds[0])
        winner = torch.where(keep[:, None, None], scores[:, None, None] * mask_pred.sigmoid(), -1.0).argmax(0)
        opened += len(loop[1])
        merged += any(len(winner[loop[0] == s["id"]].unique()) > 1 for s in loop[1] if not s["isthing"])
    assert opened > 150 and merged > 10


def test_panoptic_tensors_equal_the_loop_rule_on_hand_built_queries():
    is_thing = torch.tensor([True, True, False])
    binary = np.zeros((5, 8, 8), bool)
    binary[0, 0:4, 0:4] = True  # thing 0, best score
    binary[1, 4:8, 5:8] = True  # thing 1
    binary[2, :, 0:4] = True  # stuff 2, left: wins rows 4-7 = 16 of 32 pixels (ratio 0.5 exactly)
    binary[3, :, 4:8] = True  # stuff 2, right: wins 20 of 32; merged into query 2's segment
    binary[4, 7:, :] = True  # "no object"
    mask_cls = _cls([(0, 0.95), (1, 0.9), (2, 0.85), (2, 0.85), "none"], 3)
    for thresholds in [(0.8, 0.8), (0.8, 0.3), (0.0, 0.0), (0.9, 0.5), (0.99, 0.5), (0.8, 0.5), (0.8, 0.5 + 1e-12)]:
        ours = _tensor_rule(mask_cls, _masks(binary), is_thing, *thresholds)
        _assert_same_panoptic(ours, panoptic_inference(mask_cls, _masks(binary), is_thing, *thresholds))
        if thresholds == (0.8, 0.3):  # the case is what it says: 2 things and 1 stuff from 2 queries
            assert [s["category_id"] for s in ours[1]] == [0, 1, 2] and (ours[0] == 3).sum() == 36
        if thresholds == (0.8, 0.5 + 1e-12):  # query 2 is just below: the ratio is exact (float64)
            assert (ours[0] == 3).sum() == 20
    nothing = (_cls(["none", "none"], 2), torch.zeros(2, 3, 5), [True, False])
    _assert_same_panoptic(_tensor_rule(*nothing), panoptic_inference(*nothing))
    with pytest.raises(ValueError, match="one entry per class"):
        panoptic_inference_tensors(_cls(["none"], 2), torch.zeros(1, 3, 5), [True, False, True])


def test_panoptic_tensors_reproduce_the_oracle():
    """Queries copying a ground-truth panoptic map (stuff split into two queries, shuffled, with
    "no object" queries): same segments as the loop rule, and the ground truth as segment sets."""
    gt, segments = _ground_truth_panoptic()
    num_classes, is_thing = 5, torch.tensor([True, True, False, False, False])
    queries = []
    for sid, (c, _) in segments.items():
        if sid == 10:
            queries += [(c, (gt == 10) & (np.arange(16) < 8)), (c, (gt == 10) & (np.arange(16) >= 8))]
        else:
            queries.append((c, gt == sid))
    rng = np.random.default_rng(1)
    queries = [queries[i] for i in rng.permutation(len(queries))]
    mask_cls = torch.zeros(len(queries) + 3, num_classes + 1)
    for q, (c, _) in enumerate(queries):
        mask_cls[q, c] = 15.0
    mask_cls[len(queries):, -1] = 15.0
    mask_pred = _masks(np.concatenate([np.stack([m for _, m in queries]), rng.random((3, 12, 16)) > 0.5]))
    ours = _tensor_rule(mask_cls, mask_pred, is_thing)
    _assert_same_panoptic(ours, panoptic_inference(mask_cls, mask_pred, is_thing))
    seg = ours[0].numpy()
    expected = {(c, thing, (gt == sid).tobytes()) for sid, (c, thing) in segments.items()}
    assert _segment_set(seg, ours[1]) == expected


def test_panoptic_tensors_trace_to_a_graph_that_generalises():
    """Traced on one case, run on others with other kept queries, overlaps and merges."""
    g = torch.Generator().manual_seed(1)
    cases = [_random_case(g, 12, 3, 10, 12) for _ in range(30)]
    is_thing = torch.tensor([True, False, False])  # fixed per model, as the class set is
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # is_thing becomes a constant: intended
        traced = torch.jit.trace(lambda c, m: panoptic_inference_tensors(c, m, is_thing, 0.4, 0.5), cases[0][:2],
                                 check_trace=False)
    outcomes = set()
    for mask_cls, mask_pred, _ in cases:
        seg, segment_ids, classes, isthing = traced(mask_cls, mask_pred)
        ours = (seg, panoptic_segments_info(segment_ids, classes, isthing))
        loop = panoptic_inference(mask_cls, mask_pred, is_thing, 0.4, 0.5)
        _assert_same_panoptic(ours, loop)
        outcomes.add(tuple((s["category_id"], s["isthing"]) for s in loop[1]))
    assert len(outcomes) > 10  # the cases really differ


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
