"""The label-confusion table: which class each GT object is given, checked on hand-built cases."""
import json

import numpy as np
import pytest
from pycocotools import mask as mask_util

import zsi_d2  # noqa: F401  (compat layer before detectron2)
from zsi_d2.evaluation.__main__ import main
from zsi_d2.evaluation.instance import load_coco_gt
from zsi_d2.evaluation.label_confusion import MISSED, instance_label_confusion, summarize_label_confusion


def _rle(x0, y0, x1, y1, size=32):
    m = np.zeros((size, size), np.uint8, order="F")
    m[y0:y1, x0:x1] = 1
    rle = mask_util.encode(m)
    rle["counts"] = rle["counts"].decode()
    return rle


def _ann(i, image_id, cat, box, **extra):
    x0, y0, x1, y1 = box
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": [x0, y0, x1 - x0, y1 - y0],
            "area": (x1 - x0) * (y1 - y0), "segmentation": _rle(*box), "iscrowd": 0, **extra}


def _det(image_id, cat, box, score):
    x0, y0, x1, y1 = box
    return {"image_id": image_id, "category_id": cat, "bbox": [x0, y0, x1 - x0, y1 - y0],
            "segmentation": _rle(*box), "score": score}


@pytest.fixture()
def gt_file(tmp_path):
    gt = {
        "images": [{"id": 1, "width": 32, "height": 32, "file_name": "1.png"},
                   {"id": 2, "width": 32, "height": 32, "file_name": "2.png"}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            _ann(1, 1, 2, (0, 0, 10, 10)),    # an unseen dog ...
            _ann(2, 1, 1, (20, 20, 30, 30)),  # ... a seen cat ...
            _ann(3, 2, 2, (0, 0, 10, 10)),    # ... a dog no detection overlaps enough ...
            _ann(4, 2, 1, (20, 0, 30, 10), iscrowd=1),  # ... and a crowd region, not counted
        ],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return str(path)


RESULTS = [
    _det(1, 1, (0, 0, 10, 10), 0.9),    # the dog called a cat, most confidently
    _det(1, 2, (0, 0, 10, 10), 0.5),    # the dog as a dog, ranked second: not its label
    _det(1, 1, (20, 20, 30, 30), 0.8),  # the cat as a cat
    _det(2, 2, (0, 0, 10, 3), 0.95),    # IoU 0.3 with the second dog: too little
    _det(2, 1, (20, 0, 30, 10), 0.9),   # on the crowd only
]


def test_highest_scoring_overlapping_detection_labels_each_object(gt_file):
    table = instance_label_confusion(load_coco_gt(gt_file), RESULTS)
    assert table == {"cat": {"cat": 1}, "dog": {"cat": 1, MISSED: 1}}
    summary = summarize_label_confusion(table, seen=["cat"], unseen=["dog"])
    assert summary == {"seen/correct": 100.0, "seen/as_unseen": 0.0, "seen/missed": 0.0,
                       "unseen/correct": 0.0, "unseen/as_seen": 50.0, "unseen/missed": 50.0}
    # A lower threshold lets the thin box label the second dog.
    assert instance_label_confusion(load_coco_gt(gt_file), RESULTS, "bbox", 0.25)["dog"] == {"cat": 1, "dog": 1}


def test_results_with_unknown_class_or_missing_masks_are_refused(gt_file):
    coco = load_coco_gt(gt_file)
    with pytest.raises(ValueError, match="category ids \\[7\\]"):
        instance_label_confusion(coco, [{**RESULTS[0], "category_id": 7}])
    boxes_only = [{k: v for k, v in r.items() if k != "segmentation"} for r in RESULTS]
    with pytest.raises(ValueError, match="iou_type='bbox'"):
        instance_label_confusion(coco, boxes_only)
    assert instance_label_confusion(coco, boxes_only, "bbox")["cat"] == {"cat": 1}


def test_confusion_cli_prints_summary_and_writes_json_and_png(gt_file, tmp_path, capsys):
    results = tmp_path / "results.json"
    results.write_text(json.dumps(RESULTS))
    out_json, out_png = tmp_path / "c.json", tmp_path / "c.png"
    assert main(["confusion", "--gt", gt_file, "--predictions", str(results), "--unseen", "dog",
                 "--json", str(out_json), "--png", str(out_png)]) == 0
    printed = capsys.readouterr().out
    assert "unseen/as_seen" in printed and "dog (2): cat 50%, missed 50%" in printed
    assert json.loads(out_json.read_text())["summary"]["unseen/as_seen"] == 50.0
    assert out_png.stat().st_size > 1000
    assert main(["confusion", "--gt", gt_file, "--predictions", str(results), "--unseen", "horse"]) == 2
    assert "horse" in capsys.readouterr().err
