"""ZeroShotInstanceEvaluator / evaluate_instance_results against pycocotools, class by class."""
import contextlib
import copy
import io
import math
import os
import sys

import numpy as np
import pytest

import zsi_d2  # noqa: F401  (compat layer before detectron2)

sys.path.insert(0, os.path.dirname(__file__))
from evaluation_fixtures import (  # noqa: E402
    INSTANCE_CATEGORIES,
    INSTANCE_SEEN,
    INSTANCE_UNSEEN,
    make_instance_dataset,
    write_json,
)

import torch  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

from detectron2.data import MetadataCatalog  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402

from zsi_d2.evaluation import ZeroShotInstanceEvaluator, evaluate_instance_results, harmonic_mean  # noqa: E402

NAMES = {c["id"]: c["name"] for c in INSTANCE_CATEGORIES}


def _coco(gt):
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


THRESHOLDS = (0.4, 0.5, 0.6)


def _reference(gt, results, iou_type, max_dets=100):
    """Independent pycocotools run, one category at a time, at COCO's default area ranges.

    Returns {(threshold, category id): AP}, {category id: recall at IoU 0.5}, in percent, read
    from COCOeval's own arrays (area "all", the given maxDets).
    """
    ap, recall = {}, {}
    for cat_id in sorted({a["category_id"] for a in gt["annotations"]}):
        coco = _coco(gt)
        dts = copy.deepcopy(results)  # loadRes writes into the results
        if iou_type == "segm":
            for d in dts:
                d.pop("bbox")
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(coco, coco.loadRes(dts), iou_type)
            ev.params.catIds = [cat_id]
            ev.params.iouThrs = np.array(THRESHOLDS)
            ev.params.maxDets = [max_dets]
            ev.evaluate()
            ev.accumulate()
        for t_index, t in enumerate(THRESHOLDS):
            p = ev.eval["precision"][t_index, :, 0, 0, 0]
            ap[t, cat_id] = float(np.mean(p[p > -1])) * 100
        recall[cat_id] = float(ev.eval["recall"][THRESHOLDS.index(0.5), 0, 0, 0]) * 100
    return ap, recall


def _assert_equal_to_reference(out, gt, results, iou_type, max_dets=100):
    ap, recall = _reference(gt, results, iou_type, max_dets)
    assert len(recall) == 4  # every class with GT (frog has none)
    for (t, cat_id), value in ap.items():
        assert out[f"AP{round(t * 100)}/{NAMES[cat_id]}"] == pytest.approx(value, abs=1e-9), (t, NAMES[cat_id])
    for cat_id, value in recall.items():
        assert out[f"Recall@{max_dets}/{NAMES[cat_id]}"] == pytest.approx(value, abs=1e-9), NAMES[cat_id]
    return ap


@pytest.fixture(scope="module")
def dataset():
    return make_instance_dataset(seed=0)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_matches_pycocotools_at_every_threshold_and_class(dataset, iou_type):
    gt, results = dataset
    out = evaluate_instance_results(_coco(gt), results, INSTANCE_SEEN, INSTANCE_UNSEEN, "gzsi", THRESHOLDS,
                                    iou_type=iou_type)
    ap = _assert_equal_to_reference(out, gt, results, iou_type)
    # The comparison can tell the thresholds apart: each gives a different AP for some class.
    for a, b in ((0.4, 0.5), (0.5, 0.6)):
        assert any(ap[a, c] != pytest.approx(ap[b, c]) for c in {c for _, c in ap}), (a, b)
    # The generated set is non-trivial: neither perfect nor empty.
    assert 0 < out["AP50/seen"] < 100 and 0 < out["AP50/unseen"] < 100


def test_max_dets_cut_off_matches_pycocotools(dataset):
    """With maxDets=1 only the best detection per image and class counts (duplicates, second
    objects of a class): the numbers drop, exactly as pycocotools' own."""
    gt, results = dataset
    one = evaluate_instance_results(_coco(gt), results, INSTANCE_SEEN, INSTANCE_UNSEEN, "gzsi", THRESHOLDS, 1)
    _assert_equal_to_reference(one, gt, results, "bbox", max_dets=1)
    full = evaluate_instance_results(_coco(gt), results, INSTANCE_SEEN, INSTANCE_UNSEEN, "gzsi", THRESHOLDS, 100)
    assert one["Recall@1/seen"] < full["Recall@100/seen"] and one["AP50/unseen"] < full["AP50/unseen"]


def test_summary_keys_and_means(dataset):
    gt, results = dataset
    out = evaluate_instance_results(_coco(gt), results, INSTANCE_SEEN, INSTANCE_UNSEEN, "gzsi")
    for metric in ("AP40", "AP50", "AP60", "Recall@100"):
        for group in ("seen", "unseen", "hm"):
            assert f"{metric}/{group}" in out
        # "frog" has no GT: nan per class and left out of the seen mean.
        assert math.isnan(out[f"{metric}/frog"])
        seen = np.mean([out[f"{metric}/{n}"] for n in ("cat", "dog")])
        unseen = np.mean([out[f"{metric}/{n}"] for n in INSTANCE_UNSEEN])
        assert out[f"{metric}/seen"] == pytest.approx(seen)
        assert out[f"{metric}/unseen"] == pytest.approx(unseen)
        assert out[f"{metric}/hm"] == pytest.approx(2 * seen * unseen / (seen + unseen))


def test_zsi_mode_reports_unseen_only(dataset):
    gt, results = dataset
    coco = _coco(gt)
    gz = evaluate_instance_results(coco, results, INSTANCE_SEEN, INSTANCE_UNSEEN, "gzsi")
    zs = evaluate_instance_results(coco, results, INSTANCE_SEEN, INSTANCE_UNSEEN, "zsi")
    assert not any(k.endswith(("/seen", "/hm")) for k in zs)
    assert "AP50/cat" not in zs and "AP50/bird" in zs
    # COCO matching is per category, so restricting GT and results to the unseen categories
    # leaves the unseen per-class numbers unchanged.
    for key in ("AP50/unseen", "AP40/bird", "Recall@100/fish"):
        assert zs[key] == pytest.approx(gz[key])


def test_perfect_predictions_give_100():
    gt, _ = make_instance_dataset(seed=1)
    perfect = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
         "segmentation": a["segmentation"], "score": 1.0}
        for a in gt["annotations"] if not a["iscrowd"]
    ]
    for iou_type in ("bbox", "segm"):
        out = evaluate_instance_results(_coco(gt), perfect, INSTANCE_SEEN, INSTANCE_UNSEEN, iou_type=iou_type)
        for metric in ("AP40", "AP50", "AP60", "Recall@100"):
            assert out[f"{metric}/hm"] == pytest.approx(100.0)


def test_no_predictions_give_zero(dataset):
    gt, _ = dataset
    out = evaluate_instance_results(_coco(gt), [], INSTANCE_SEEN, INSTANCE_UNSEEN)
    assert out["AP50/seen"] == 0 and out["AP50/unseen"] == 0 and out["AP50/hm"] == 0


def test_unknown_category_id_is_a_clear_error(dataset):
    gt, results = dataset
    bad = copy.deepcopy(results[:3])
    bad[0]["category_id"] = 999
    with pytest.raises(ValueError, match=r"unknown category id\(s\) \[999\].*valid category ids.*\[3, 7, 11, 12, 20\]"):
        evaluate_instance_results(_coco(gt), bad, INSTANCE_SEEN, INSTANCE_UNSEEN)
    with pytest.raises(ValueError, match="not categories of the ground truth"):
        evaluate_instance_results(_coco(gt), results, ("cat", "unicorn"), INSTANCE_UNSEEN)


def test_harmonic_mean_edge_cases():
    assert harmonic_mean(0, 0) == 0
    assert harmonic_mean(50, 50) == 50
    assert harmonic_mean(60, 0) == 0
    assert math.isnan(harmonic_mean(float("nan"), 10))


def _register(name, json_file, thing_names, mode):
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    by_name = {c["name"]: c["id"] for c in INSTANCE_CATEGORIES}
    MetadataCatalog.get(name).set(
        json_file=json_file,
        thing_classes=list(thing_names),
        thing_dataset_id_to_contiguous_id={by_name[n]: i for i, n in enumerate(thing_names)},
        seen_classes=INSTANCE_SEEN,
        unseen_classes=INSTANCE_UNSEEN,
        zero_shot_mode=mode,
    )


@pytest.mark.parametrize("mode", ["gzsi", "zsi"])
def test_evaluator_end_to_end(tmp_path, dataset, mode):
    gt, results = dataset
    json_file = write_json(tmp_path / "gt.json", gt)
    # Contiguous order deliberately differs from the dataset-id order.
    thing_names = ["fish", "cat", "frog", "bird", "dog"]
    name = f"_zsi_test_instances_{mode}"
    _register(name, json_file, thing_names, mode)
    contiguous = {c["id"]: thing_names.index(c["name"]) for c in INSTANCE_CATEGORIES}

    evaluator = ZeroShotInstanceEvaluator(name, output_dir=str(tmp_path / "out"), distributed=False)
    evaluator.reset()
    h, w = gt["images"][0]["height"], gt["images"][0]["width"]
    from pycocotools import mask as mask_util

    for img in gt["images"]:
        mine = [r for r in results if r["image_id"] == img["id"]]
        inst = Instances((h, w))
        boxes = np.array([r["bbox"] for r in mine], dtype=np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        inst.pred_boxes = Boxes(torch.from_numpy(boxes))
        inst.scores = torch.tensor([r["score"] for r in mine], dtype=torch.float32)
        inst.pred_classes = torch.tensor([contiguous[r["category_id"]] for r in mine], dtype=torch.int64)
        masks = [mask_util.decode(r["segmentation"]).astype(bool) for r in mine]
        inst.pred_masks = torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, h, w), dtype=torch.bool)
        evaluator.process([{"image_id": img["id"]}], [{"instances": inst}])
    out = evaluator.evaluate()
    assert set(out) == {"bbox", "segm"}
    assert os.path.isfile(tmp_path / "out" / "coco_instances_results.json")
    for task in ("bbox", "segm"):
        # Box corners go through float32 and back, so compare loosely to the direct evaluation.
        expected = evaluate_instance_results(_coco(gt), results, INSTANCE_SEEN, INSTANCE_UNSEEN, mode, iou_type=task)
        assert list(out[task]) == list(expected)
        for key, value in expected.items():
            if math.isnan(value):
                assert math.isnan(out[task][key])
            else:
                assert out[task][key] == pytest.approx(value, abs=1e-3), key
