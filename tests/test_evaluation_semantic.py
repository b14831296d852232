"""Zero-shot semantic metrics against a hand-computed example, and the detectron2 evaluator."""
import json
import math

import numpy as np
import pytest
from PIL import Image

import zsi_d2  # noqa: F401  (compat layer before detectron2)

import torch  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402

from zsi_d2.evaluation import ZeroShotSemanticEvaluator, confusion_matrix, semantic_metrics  # noqa: E402
from zsi_d2.evaluation.metrics import format_zero_shot_table  # noqa: E402

CLASSES = ["a", "b", "c", "d"]
SEEN, UNSEEN = ("a", "b"), ("c", "d")
# 255 = ignore. Class d is never in the GT nor predicted: IoU nan, excluded from every mean.
GT = np.array([[0, 0, 1, 1], [2, 2, 255, 2]])
PRED = np.array([[0, 1, 1, 1], [2, 0, 0, 2]])
# (gt, pred) pairs of the 7 valid pixels: (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (2,2)
#   a: TP 1, FN 1, FP 1 -> IoU 1/3      b: TP 2, FP 1 -> 2/3      c: TP 2, FN 1 -> 2/3
#   mIoU = (1/3 + 2/3 + 2/3) / 3 = 5/9; seen = 1/2; unseen = 2/3; hIoU = 2(1/2)(2/3)/(7/6) = 4/7
#   pAcc = 5/7
BY_HAND_GZSI = {
    "mIoU/seen": 50.0, "mIoU/unseen": 200 / 3, "mIoU/hm": 400 / 7, "mIoU": 500 / 9, "pAcc": 500 / 7,
    "IoU/a": 100 / 3, "IoU/b": 200 / 3, "IoU/c": 200 / 3, "IoU/d": float("nan"),
}


def assert_by_hand(res, expected):
    """Every key, in order, equal to the hand-computed value (nan where nothing can be scored)."""
    assert list(res) == list(expected)
    for key, value in expected.items():
        assert (math.isnan(value) and math.isnan(res[key])) or res[key] == pytest.approx(value), key


def test_confusion_matrix_by_hand():
    conf = confusion_matrix(GT, PRED, 4)
    expected = np.zeros((4, 5), dtype=np.int64)
    expected[0, 0] = expected[0, 1] = 1
    expected[1, 1] = 2
    expected[2, 0], expected[2, 2] = 1, 2
    assert (conf == expected).all()
    # A predicted ignore value means "no prediction": last column, a miss of the GT class.
    conf = confusion_matrix(np.array([[0, 1]]), np.array([[255, 1]]), 2)
    assert conf.tolist() == [[0, 0, 1], [0, 1, 0]]
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([[7]]), np.array([[0]]), 4)


def test_metrics_by_hand():
    res = semantic_metrics(confusion_matrix(GT, PRED, 4), CLASSES, SEEN, UNSEEN, "gzsi")
    assert_by_hand(res, BY_HAND_GZSI)
    table = format_zero_shot_table({"sem_seg": res})
    assert "mIoU" in table and "57.14" in table and "71.43" in table


def test_metrics_zsi_by_hand():
    # zsi: GT pixels of seen classes are ignored. Left: (2,2) (2,0) (2,2).
    # c: TP 2, FN 1 (predicted as seen class a) -> IoU 2/3; pAcc = 2/3.
    res = semantic_metrics(confusion_matrix(GT, PRED, 4), CLASSES, SEEN, UNSEEN, "zsi")
    third = 200 / 3
    assert_by_hand(res, {"mIoU/unseen": third, "mIoU": third, "pAcc": third, "IoU/c": third, "IoU/d": float("nan")})


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="Valid names"):
        semantic_metrics(np.zeros((4, 4)), CLASSES, ("a", "zebra"), UNSEEN)


def _register(tmp_path, name, mode):
    gt_file = str(tmp_path / "gt.png")
    Image.fromarray(GT.astype(np.uint8)).save(gt_file)
    for catalog in (DatasetCatalog, MetadataCatalog):
        if name in catalog.list():
            catalog.remove(name)
    DatasetCatalog.register(name, lambda: [{"file_name": "img.jpg", "sem_seg_file_name": gt_file}])
    MetadataCatalog.get(name).set(
        stuff_classes=CLASSES, ignore_label=255, seen_classes=SEEN, unseen_classes=UNSEEN, zero_shot_mode=mode,
    )


def _scores(pred, num_classes=4):
    """C×H×W scores whose argmax is `pred`, with class c (unseen) always the runner-up."""
    scores = torch.zeros((num_classes,) + pred.shape)
    scores[2] = 0.5
    scores.scatter_(0, torch.from_numpy(pred)[None], 1.0)
    return scores


def test_evaluator_gzsi(tmp_path):
    _register(tmp_path, "_zsi_test_sem_gzsi", "gzsi")
    ev = ZeroShotSemanticEvaluator("_zsi_test_sem_gzsi", output_dir=str(tmp_path / "out"), distributed=False)
    ev.reset()
    # GT looked up by file_name in the DatasetCatalog, like detectron2's SemSegEvaluator.
    ev.process([{"file_name": "img.jpg"}], [{"sem_seg": _scores(PRED)}])
    res = ev.evaluate()["sem_seg"]
    assert_by_hand(res, BY_HAND_GZSI)
    with open(tmp_path / "out" / "sem_seg_confusion.json") as f:
        saved = json.load(f)
    assert saved == {"classes": CLASSES, "confusion": confusion_matrix(GT, PRED, 4).tolist()}


def test_a_seen_only_held_out_set_is_scored_like_gzsi(tmp_path):
    """zero_shot_mode "train" (a held-out seen-only set such as zs_shapes_calib, for choosing a model
    without unseen labels): scored as GZSI; an unknown mode is refused in one line."""
    _register(tmp_path, "_zsi_test_sem_heldout", "train")
    ev = ZeroShotSemanticEvaluator("_zsi_test_sem_heldout", output_dir=str(tmp_path / "out"), distributed=False)
    ev.reset()
    ev.process([{"file_name": "img.jpg"}], [{"sem_seg": _scores(PRED)}])
    assert_by_hand(ev.evaluate()["sem_seg"], BY_HAND_GZSI)
    _register(tmp_path, "_zsi_test_sem_bogus", "closed_set")
    with pytest.raises(ValueError, match="closed_set"):
        ZeroShotSemanticEvaluator("_zsi_test_sem_bogus", output_dir=str(tmp_path / "out"), distributed=False)


def test_evaluator_zsi_restricts_argmax_to_unseen(tmp_path):
    _register(tmp_path, "_zsi_test_sem_zsi", "zsi")
    ev = ZeroShotSemanticEvaluator("_zsi_test_sem_zsi", distributed=False)
    ev.reset()
    ev.process([{"file_name": "img.jpg"}], [{"sem_seg": _scores(PRED)}])
    res = ev.evaluate()["sem_seg"]
    # Among unseen classes c wins everywhere, so all 3 unseen GT pixels are right.
    nan = float("nan")
    assert_by_hand(res, {"mIoU/unseen": 100.0, "mIoU": 100.0, "pAcc": 100.0, "IoU/c": 100.0, "IoU/d": nan})


def test_evaluator_checks_channels(tmp_path):
    _register(tmp_path, "_zsi_test_sem_ch", "gzsi")
    ev = ZeroShotSemanticEvaluator("_zsi_test_sem_ch", distributed=False)
    ev.reset()
    with pytest.raises(ValueError, match="3 channels but .* 4 stuff_classes"):
        ev.process([{"file_name": "img.jpg"}], [{"sem_seg": torch.zeros(3, 2, 4)}])
