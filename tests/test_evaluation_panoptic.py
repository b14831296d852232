"""In-house PQ: hand-built cases with known answers, the real COCO panoptic sample, the evaluator."""
import json
import math
import os
import sys

import numpy as np
import pytest

import zsi_d2  # noqa: F401  (compat layer before detectron2)

sys.path.insert(0, os.path.dirname(__file__))
from evaluation_fixtures import (  # noqa: E402
    COCO_PANOPTIC_SAMPLE,
    SHARED_PANOPTIC_MISSING,
    has_coco_panoptic_sample,
    write_panoptic_png,
)

import torch  # noqa: E402
from detectron2.data import MetadataCatalog  # noqa: E402

from zsi_d2.evaluation import (  # noqa: E402
    PQStat,
    ZeroShotPanopticEvaluator,
    evaluate_panoptic,
    pq_compute,
    pq_from_segments,
    summarize_panoptic,
)
from zsi_d2.utils.panoptic_ids import id2rgb, read_panoptic_png as load_panoptic_png, rgb2id  # noqa: E402
from zsi_d2.evaluation.pq import overlaps  # noqa: E402

CATS = [
    {"id": 1, "name": "apple", "isthing": 1},
    {"id": 2, "name": "grass", "isthing": 0},
    {"id": 3, "name": "pear", "isthing": 1},
]


def seg(i, c, crowd=0):
    return {"id": i, "category_id": c, "iscrowd": crowd}


def stats(gt, gts, pred, preds, **kw):
    s = pq_from_segments(np.array(gt), gts, np.array(pred), preds, CATS, **kw)
    return {c: (v.tp, v.fp, v.fn, round(v.iou, 9)) for c, v in s.pq_per_cat.items() if (v.tp, v.fp, v.fn) != (0, 0, 0)}


def test_rgb_id_roundtrip():
    ids = np.array([[0, 1, 255], [256, 65536, 256 ** 3 - 1]])
    assert (rgb2id(id2rgb(ids)) == ids).all()
    assert rgb2id(np.array([[[1, 2, 3]]]))[0, 0] == 1 + 2 * 256 + 3 * 256 ** 2


def test_perfect_match():
    gt = [[1, 1, 2, 2], [1, 1, 2, 2], [0, 3, 3, 3]]
    gts = [seg(1, 1), seg(2, 2), seg(3, 1)]
    # Same partition, different ids in the prediction.
    pred = [[7, 7, 8, 8], [7, 7, 8, 8], [0, 9, 9, 9]]
    preds = [seg(7, 1), seg(8, 2), seg(9, 1)]
    assert stats(gt, gts, pred, preds) == {1: (2, 0, 0, 2.0), 2: (1, 0, 0, 1.0)}
    res = summarize_panoptic(pq_from_segments(np.array(gt), gts, np.array(pred), preds), CATS, ["apple"], ["grass"])
    assert res["PQ/seen"] == res["PQ/unseen"] == res["PQ/hm"] == 100.0
    assert math.isnan(res["PQ/pear"])  # never in GT nor predicted


def test_iou_exactly_half_is_not_a_match():
    gt = [[1, 1, 1, 1]]
    pred = [[5, 5, 6, 6]]  # segment 5 covers 2 of the 4 GT pixels: IoU = 2 / 4 = 0.5
    assert stats(gt, [seg(1, 1)], pred, [seg(5, 1), seg(6, 2)]) == {1: (0, 1, 1, 0), 2: (0, 1, 0, 0)}
    pred = [[5, 5, 5, 6]]  # IoU = 3 / 4
    assert stats(gt, [seg(1, 1)], pred, [seg(5, 1), seg(6, 2)]) == {1: (1, 0, 0, 0.75), 2: (0, 1, 0, 0)}


def test_void_pixels_leave_the_union():
    # The prediction covers the GT segment plus 3 VOID pixels: IoU = 1 / (4 + 1 - 1 - 3) = 1.
    assert stats([[0, 0, 0, 1]], [seg(1, 1)], [[5, 5, 5, 5]], [seg(5, 1)]) == {1: (1, 0, 0, 1.0)}


def test_prediction_mostly_on_void_is_not_a_false_positive():
    gt = [[0, 0, 0, 1]]
    # 3 of 3 pixels on VOID: ignored. The GT apple is missed (FN).
    assert stats(gt, [seg(1, 1)], [[7, 7, 7, 0]], [seg(7, 3)]) == {1: (0, 0, 1, 0)}
    # Exactly half on VOID is not "more than half": a false positive.
    assert stats([[0, 1, 1, 1]], [seg(1, 1)], [[7, 7, 0, 0]], [seg(7, 3)]) == {1: (0, 0, 1, 0), 3: (0, 1, 0, 0)}


def test_crowd_regions():
    gt = [[1, 1, 2, 2, 2]]
    gts = [seg(1, 1, crowd=1), seg(2, 1)]
    # A prediction on the crowd region of its own class is neither matched nor a FP;
    # an unmatched crowd region is never a FN.
    assert stats(gt, gts, [[5, 5, 6, 6, 6]], [seg(5, 1), seg(6, 1)]) == {1: (1, 0, 0, 1.0)}
    assert stats(gt, gts, [[0, 0, 0, 0, 0]], []) == {1: (0, 0, 1, 0)}
    # On a crowd region of another class it is a false positive.
    assert stats(gt, gts, [[5, 5, 6, 6, 6]], [seg(5, 3), seg(6, 1)]) == {1: (1, 0, 0, 1.0), 3: (0, 1, 0, 0)}
    # A crowd segment is never matched, even when predicted perfectly.
    assert stats([[1, 1]], [seg(1, 1, crowd=1)], [[5, 5]], [seg(5, 1)]) == {}


def test_prediction_sanity_checks():
    with pytest.raises(ValueError, match="not in its segments_info"):
        pq_from_segments(np.array([[1]]), [seg(1, 1)], np.array([[5]]), [])
    with pytest.raises(ValueError, match="not in the predicted map"):
        pq_from_segments(np.array([[1]]), [seg(1, 1)], np.array([[0]]), [seg(5, 1)])
    with pytest.raises(ValueError, match="unknown category_id 42"):
        pq_from_segments(np.array([[1]]), [seg(1, 1)], np.array([[5]]), [seg(5, 42)], CATS)


# A 1x10 image, apple (thing, seen) and grass (stuff, unseen):
#   GT:   a1 = pixels 0-3 (apple), a2 = pixels 4-5 (apple), b1 = pixels 6-9 (grass)
#   pred: p1 = pixels 0-2 apple; pixels 4-5 VOID; p2 = pixels 3 and 6-9 grass (5 px)
# apple: p1/a1 IoU 3/4 -> TP; a2 missed -> FN.  PQ = .75/(1 + .5) = .5, SQ = .75, RQ = 2/3
# grass: p2/b1 IoU 4/(5 + 4 - 4) = 4/5 -> TP.    PQ = SQ = .8, RQ = 1
# HM(PQ) = 2 * .5 * .8 / (.5 + .8) = 8/13
TWO_GT = [[1, 1, 1, 1, 2, 2, 3, 3, 3, 3]]
TWO_GT_SEGS = [seg(1, 1), seg(2, 1), seg(3, 2)]
TWO_PRED = [[5, 5, 5, 6, 0, 0, 6, 6, 6, 6]]
TWO_PRED_SEGS = [seg(5, 1), seg(6, 2)]


def test_two_class_example_by_hand():
    stat = pq_from_segments(np.array(TWO_GT), TWO_GT_SEGS, np.array(TWO_PRED), TWO_PRED_SEGS, CATS)
    res = summarize_panoptic(stat, CATS, ["apple", "pear"], ["grass"], "gzsi")
    assert res["PQ/apple"] == pytest.approx(50.0)
    assert res["SQ/apple"] == pytest.approx(75.0)
    assert res["RQ/apple"] == pytest.approx(200 / 3)
    assert res["PQ/grass"] == pytest.approx(80.0)
    assert res["RQ/grass"] == pytest.approx(100.0)
    assert res["PQ/seen"] == pytest.approx(50.0)  # pear: nan, excluded
    assert res["PQ/unseen"] == pytest.approx(80.0)
    assert res["PQ/hm"] == pytest.approx(800 / 13)
    assert res["SQ/hm"] == pytest.approx(2 * 75 * 80 / (75 + 80))
    assert res["RQ/hm"] == pytest.approx(2 * (200 / 3) * 100 / (200 / 3 + 100))
    assert res["PQ_th/seen"] == pytest.approx(50.0) and math.isnan(res["PQ_th/unseen"])
    assert res["PQ_st/unseen"] == pytest.approx(80.0) and math.isnan(res["PQ_st/seen"])
    assert math.isnan(res["PQ_th/hm"])


def test_two_class_example_zsi():
    keep = [2]  # grass
    stat = pq_from_segments(
        np.array(TWO_GT), TWO_GT_SEGS, np.array(TWO_PRED), TWO_PRED_SEGS, CATS, keep_category_ids=keep
    )
    # apple GT is dropped (no FN), the apple prediction is removed; grass unchanged (IoU 4/5).
    assert {c: (v.tp, v.fp, v.fn) for c, v in stat.pq_per_cat.items() if v.tp + v.fp + v.fn} == {2: (1, 0, 0)}
    res = summarize_panoptic(stat, CATS, ["apple", "pear"], ["grass"], "zsi")
    assert res["PQ/unseen"] == pytest.approx(80.0)
    assert not any(k.endswith(("/seen", "/hm")) for k in res)
    assert "PQ/apple" not in res and "PQ/grass" in res
    # An unseen-class prediction on a (dropped) seen object is still a false positive.
    stat = pq_from_segments(np.array([[1, 1, 3, 3]]), [seg(1, 1), seg(3, 2)], np.array([[5, 5, 6, 6]]),
                            [seg(5, 2), seg(6, 2)], CATS, keep_category_ids=keep)
    assert (stat[2].tp, stat[2].fp, stat[2].fn) == (1, 1, 0)


def _write_dataset(folder, gt_maps, gt_segs, pred_maps, pred_segs):
    """COCO panoptic files for the maps: gt.json + gt/, pred.json + pred/ (the default folder)."""
    os.makedirs(folder / "gt")
    os.makedirs(folder / "pred")
    images, gt_anns, pred_anns = [], [], []
    for i, (g, gs, p, ps) in enumerate(zip(gt_maps, gt_segs, pred_maps, pred_segs)):
        fn = f"{i:04d}.png"
        write_panoptic_png(folder / "gt" / fn, np.array(g))
        write_panoptic_png(folder / "pred" / fn, np.array(p))
        images.append({"id": i, "file_name": f"{i:04d}.jpg", "height": len(g), "width": len(g[0])})
        gt_anns.append({"image_id": i, "file_name": fn, "segments_info": gs})
        pred_anns.append({"image_id": i, "file_name": fn, "segments_info": ps})
    gt = {"images": images, "annotations": gt_anns, "categories": CATS}
    with open(folder / "gt.json", "w") as f:
        json.dump(gt, f)
    with open(folder / "pred.json", "w") as f:
        json.dump({"annotations": pred_anns}, f)
    return gt


def test_pq_compute_from_files(tmp_path):
    _write_dataset(tmp_path, [TWO_GT, TWO_GT], [TWO_GT_SEGS] * 2, [TWO_PRED, TWO_GT], [TWO_PRED_SEGS, TWO_GT_SEGS])
    res = evaluate_panoptic(str(tmp_path / "gt.json"), str(tmp_path / "gt"), str(tmp_path / "pred.json"), None,
                            ["apple"], ["grass"])
    # apple: TP .75 + 1 + 1, FN 1 -> PQ = 2.75 / 3.5; grass: TP .8 + 1 -> PQ = 1.8 / 2
    assert res["PQ/apple"] == pytest.approx(100 * 2.75 / 3.5)
    assert res["PQ/grass"] == pytest.approx(90.0)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        pq_compute(
            str(tmp_path / "gt.json"), str(tmp_path / "gt"), str(tmp_path / "pred.json"), str(tmp_path / "nowhere")
        )
    # panopticapi's multi-process path: the same sums, five images split over two processes.
    five = tmp_path / "five"
    _write_dataset(five, [TWO_GT] * 5, [TWO_GT_SEGS] * 5, [TWO_PRED, TWO_GT, TWO_PRED, TWO_GT, TWO_PRED],
                   [TWO_PRED_SEGS, TWO_GT_SEGS, TWO_PRED_SEGS, TWO_GT_SEGS, TWO_PRED_SEGS])
    args = (str(five / "gt.json"), str(five / "gt"), str(five / "pred.json"), None)
    one, two = pq_compute(*args), pq_compute(*args, num_workers=2)
    assert {c: vars(v) for c, v in one.pq_per_cat.items()} == {c: vars(v) for c, v in two.pq_per_cat.items()}
    assert one[1].tp == 7 and one[1].fn == 3  # apple: 1 TP + 1 FN per TWO_PRED image, 2 TP per TWO_GT


def test_overlaps_give_intersections_and_both_areas():
    gt = np.array([[1, 1, 2], [0, 2, 2]])
    pred = np.array([[5, 0, 5], [5, 5, 7]])
    pairs, gt_area, pred_area = overlaps(gt, pred)
    assert pairs == {(0, 5): 1, (1, 0): 1, (1, 5): 1, (2, 5): 2, (2, 7): 1}
    assert gt_area == {0: 1, 1: 2, 2: 3} and pred_area == {0: 1, 5: 4, 7: 1}


def test_the_metric_imports_neither_detectron2_nor_torch():
    """pq.py and the id codec are the pure metric: usable on result files without a model stack."""
    import ast
    import zsi_d2.evaluation.pq as pq_module
    import zsi_d2.utils.panoptic_ids as ids_module

    for module in (pq_module, ids_module):
        tree = ast.parse(open(module.__file__).read())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [n for n in names if n.split(".")[0] in ("detectron2", "torch")], module.__name__


requires_sample = pytest.mark.skipif(not has_coco_panoptic_sample(), reason=SHARED_PANOPTIC_MISSING)


@requires_sample
def test_coco_sample_gt_against_itself():
    gt_json = os.path.join(COCO_PANOPTIC_SAMPLE, "panoptic_examples.json")
    folder = os.path.join(COCO_PANOPTIC_SAMPLE, "panoptic_examples")
    with open(gt_json) as f:
        gt = json.load(f)
    stat = pq_compute(gt, folder, gt, folder)
    # Two images with crowd regions (person, horse): crowd is neither TP, FP nor FN.
    res = summarize_panoptic(stat, gt["categories"], ["person", "truck", "gravel"], ["horse", "tree-merged"])
    for key in ("PQ/seen", "PQ/unseen", "PQ/hm", "SQ/hm", "RQ/hm", "PQ_th/hm", "PQ_st/hm"):
        assert res[key] == pytest.approx(100.0)
    assert stat[1].tp == 26 and stat[1].fn == 0 and stat[1].fp == 0  # 28 person segments, 2 crowd


@requires_sample
def test_coco_sample_perturbed_by_hand(tmp_path):
    gt_json = os.path.join(COCO_PANOPTIC_SAMPLE, "panoptic_examples.json")
    folder = os.path.join(COCO_PANOPTIC_SAMPLE, "panoptic_examples")
    with open(gt_json) as f:
        gt = json.load(f)
    ann = next(a for a in gt["annotations"] if a["image_id"] == 142238)
    ids = load_panoptic_png(os.path.join(folder, ann["file_name"]))
    pred = ids.copy()
    segs = {s["id"]: dict(s) for s in ann["segments_info"]}
    # (a) person 3937500 is not predicted at all (its pixels become VOID): person FN.
    pred[ids == 3937500] = 0
    del segs[3937500]
    # (b) the sports ball 16757838 is predicted as a truck: sports-ball FN, truck FP.
    segs[16757838]["category_id"] = 8
    # (c) person 4917453 (477 px) is swallowed by the tree 2330219 (130762 px): person FN, and
    #     the tree's IoU drops to 130762 / (130762 + 477).
    pred[ids == 4917453] = 2330219
    del segs[4917453]
    # (d) a "horse" predicted exactly on the GT VOID pixels: ignored, not a FP.
    pred[ids == 0] = 999
    segs[999] = {"id": 999, "category_id": 19, "iscrowd": 0}
    os.makedirs(tmp_path / "pred")
    write_panoptic_png(tmp_path / "pred" / ann["file_name"], pred)
    other = next(a for a in gt["annotations"] if a["image_id"] != 142238)
    other_ids = load_panoptic_png(os.path.join(folder, other["file_name"]))
    write_panoptic_png(tmp_path / "pred" / other["file_name"], other_ids)
    pred_json = {"annotations": [dict(ann, segments_info=list(segs.values())), other]}

    stat = pq_compute(gt, folder, pred_json, str(tmp_path / "pred"))
    seen = ["person", "truck", "gravel", "sky-other-merged"]
    unseen = ["horse", "sports ball", "tree-merged", "grass-merged"]
    res = summarize_panoptic(stat, gt["categories"], seen, unseen)

    # By hand. GT: 26 non-crowd persons (13 + 13), 2 trucks, 11 non-crowd horses, 1 sports ball,
    # 1 gravel, and one tree, sky and grass in each image.
    tree_iou = 130762 / (130762 + 477)
    expected = {
        "person": 24 / (24 + 0.5 * 2),  # 24 TP (IoU 1), 2 FN
        "truck": 2 / (2 + 0.5 * 1),  # 2 TP, 1 FP (the ball)
        "horse": 1.0,  # 11 TP, the VOID horse ignored
        "sports ball": 0.0,  # 1 FN
        "gravel": 1.0,
        "tree-merged": (1 + tree_iou) / 2,  # 2 TP
        "sky-other-merged": 1.0,
        "grass-merged": 1.0,
    }
    for name, pq in expected.items():
        assert res[f"PQ/{name}"] == pytest.approx(100 * pq, abs=1e-9), name
    assert res["SQ/tree-merged"] == pytest.approx(100 * (1 + tree_iou) / 2)
    assert res["RQ/person"] == pytest.approx(100 * 24 / 25) and res["SQ/person"] == pytest.approx(100.0)
    s = sum(expected[n] for n in seen) / 4 * 100
    u = sum(expected[n] for n in unseen) / 4 * 100
    assert res["PQ/seen"] == pytest.approx(s)
    assert res["PQ/unseen"] == pytest.approx(u)
    assert res["PQ/hm"] == pytest.approx(2 * s * u / (s + u))
    th_u = (expected["horse"] + expected["sports ball"]) / 2 * 100
    assert res["PQ_th/unseen"] == pytest.approx(th_u)
    assert res["PQ_st/seen"] == pytest.approx(100.0)
    # Classes never seen in GT or prediction are nan, not 0.
    assert math.isnan(res["PQ/bicycle"])


def _register(name, gt_json, gt_root, mode):
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(
        panoptic_json=gt_json, panoptic_root=gt_root,
        thing_classes=["pear", "apple"], stuff_classes=["pear", "apple", "grass"],
        # detectron2's COCO panoptic convention: one contiguous space for things and stuff.
        thing_dataset_id_to_contiguous_id={3: 0, 1: 1},
        stuff_dataset_id_to_contiguous_id={3: 0, 1: 1, 2: 2},
        label_divisor=1000,
        seen_classes=("apple", "pear"), unseen_classes=("grass",), zero_shot_mode=mode,
    )


# Image 1's prediction: the GT with apple a2 (pixels 4-5) left unlabelled (VOID).
VOIDED_PRED = [[1, 1, 1, 1, 0, 0, 3, 3, 3, 3]]
VOIDED_SEGS = [seg(1, 1), seg(3, 2)]


@pytest.mark.parametrize("mode", ["gzsi", "zsi"])
def test_evaluator_matches_files(tmp_path, mode):
    gt = _write_dataset(tmp_path, [TWO_GT, TWO_GT], [TWO_GT_SEGS] * 2, [TWO_PRED, VOIDED_PRED],
                        [TWO_PRED_SEGS, VOIDED_SEGS])
    name = f"_zsi_test_panoptic_{mode}"
    _register(name, str(tmp_path / "gt.json"), str(tmp_path / "gt"), mode)
    ev = ZeroShotPanopticEvaluator(name, output_dir=str(tmp_path / "out"))
    ev.reset()
    # Image 0: contiguous ids + isthing (apple = thing 1, grass = stuff 2).
    ev.process([{"image_id": 0, "file_name": "a/0000.jpg"}],
               [{"panoptic_seg": (torch.tensor(TWO_PRED, dtype=torch.int32),
                                  [{"id": 5, "category_id": 1, "isthing": True},
                                   {"id": 6, "category_id": 2, "isthing": False}])}])
    # Image 1: segments_info None -> category * label_divisor + instance, -1 = VOID (apple a2).
    labels = np.full_like(np.array(TWO_GT), -1)
    labels[np.array(TWO_GT) == 1] = 1 * 1000 + 0
    labels[np.array(TWO_GT) == 3] = 2 * 1000
    ev.process([{"image_id": 1, "file_name": "a/0001.jpg"}], [{"panoptic_seg": (torch.from_numpy(labels), None)}])
    res = ev.evaluate()["panoptic_seg"]
    # By hand. apple: image 0 TP (IoU .75) + FN, image 1 TP (IoU 1) + FN (a2 is VOID):
    # PQ = 1.75 / (2 + 1). grass: TP .8 and TP 1 -> PQ .9. zsi: apple is not scored.
    assert res["PQ/unseen"] == pytest.approx(90.0)
    if mode == "gzsi":
        assert res["PQ/seen"] == res["PQ/apple"] == pytest.approx(100 * 1.75 / 3)
        assert res["RQ/apple"] == pytest.approx(100 * 2 / 3) and res["SQ/apple"] == pytest.approx(87.5)
    expected = evaluate_panoptic(gt, str(tmp_path / "gt"), str(tmp_path / "pred.json"), None,
                                 ["apple", "pear"], ["grass"], mode)
    assert list(res) == list(expected)
    for k, v in expected.items():
        assert (math.isnan(v) and math.isnan(res[k])) or res[k] == pytest.approx(v), k
    # The saved predictions can be re-scored from files and give the same numbers.
    saved = evaluate_panoptic(gt, str(tmp_path / "gt"), str(tmp_path / "out" / "predictions.json"), None,
                              ["apple", "pear"], ["grass"], mode)
    assert saved["PQ/unseen"] == pytest.approx(res["PQ/unseen"])


def test_pqstat_sums():
    a, b = PQStat(), PQStat()
    a[1].tp, a[1].iou = 1, 0.8
    b[1].fn, b[2].fp = 1, 1
    a += b
    assert (a[1].tp, a[1].fn, a[2].fp) == (1, 1, 1)
