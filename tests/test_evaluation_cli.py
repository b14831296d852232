"""`python -m zsi_d2.evaluation` on small generated files (in-process main(argv) + one subprocess)."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import zsi_d2  # noqa: F401  (compat layer before detectron2)

sys.path.insert(0, os.path.dirname(__file__))
from evaluation_fixtures import INSTANCE_UNSEEN, make_instance_dataset, write_json, write_panoptic_png  # noqa: E402

from zsi_d2.evaluation.__main__ import main  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def instance_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_instance")
    gt, results = make_instance_dataset(seed=2)
    return write_json(d / "gt.json", gt), write_json(d / "results.json", results), d


def _table_after(printed, title):
    """The rows (lists of cell strings) of the pipe table printed under the line `title`."""
    lines = printed.splitlines()
    start = lines.index(title) + 1
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows[0], rows[2:], lines[start + len(rows)] if start + len(rows) < len(lines) else ""


def test_instance_cli_json(instance_files, capsys):
    gt, res, d = instance_files
    out_json = str(d / "out" / "numbers.json")
    assert main(["instance", "--gt", gt, "--predictions", res, "--unseen", ",".join(INSTANCE_UNSEEN),
                 "--json", out_json, "--per-class"]) == 0
    printed = capsys.readouterr().out
    assert "bbox:" in printed and "segm:" in printed and "AP50" in printed and "HM" in printed
    with open(out_json) as f:
        numbers = json.load(f)
    # --per-class: one row per class with GT, its group, and the json's numbers to 2 decimals.
    for task in ("bbox", "segm"):
        header, rows, after = _table_after(printed, f"{task} per class:")
        assert header == ["class", "group", "AP40", "AP50", "AP60", "Recall@100"]
        assert [r[:2] for r in rows] == [["cat", "seen"], ["dog", "seen"], ["bird", "unseen"], ["fish", "unseen"]]
        for row in rows:
            assert row[2:] == [f"{numbers[task][f'{m}/{row[0]}']:.2f}" for m in header[2:]], row
        assert after == "(1 class(es) without ground truth or predictions omitted)"  # frog
    assert set(numbers) == {"bbox", "segm"}
    bbox = numbers["bbox"]
    assert {"AP40/seen", "AP50/unseen", "AP60/hm", "Recall@100/hm", "AP50/bird"} <= set(bbox)
    assert bbox["AP50/frog"] is None  # frog has no GT: nan, written as null
    # With --unseen, seen = all other GT categories (cat, dog, frog).
    s = np.mean([bbox["AP50/cat"], bbox["AP50/dog"]])
    u = np.mean([bbox["AP50/bird"], bbox["AP50/fish"]])
    assert bbox["AP50/seen"] == pytest.approx(s) and bbox["AP50/unseen"] == pytest.approx(u)


def test_instance_cli_zsi_and_options(instance_files, capsys):
    gt, res, d = instance_files
    out_json = str(d / "zsi.json")
    assert main(["instance", "--gt", gt, "--predictions", res, "--unseen", "bird", "--mode", "zsi",
                 "--tasks", "bbox", "--iou-thresholds", "0.5,0.75", "--json", out_json]) == 0
    with open(out_json) as f:
        bbox = json.load(f)["bbox"]
    assert set(bbox) == {"AP50/unseen", "AP75/unseen", "Recall@100/unseen", "AP50/bird", "AP75/bird", "Recall@100/bird"}
    assert bbox["AP50/unseen"] == bbox["AP50/bird"]


def test_instance_cli_split(tmp_path, capsys):
    # A GT using a few COCO names: the registered split's other classes are skipped.
    gt, results = make_instance_dataset(seed=3)
    rename = {"cat": "cat", "dog": "person", "bird": "bus", "fish": "car", "frog": "toaster"}
    for c in gt["categories"]:
        c["name"] = rename[c["name"]]
    out_json = str(tmp_path / "o.json")
    assert main(["instance", "--gt", write_json(tmp_path / "gt.json", gt),
                 "--predictions", write_json(tmp_path / "r.json", results),
                 "--split", "coco_48_17", "--json", out_json]) == 0
    with open(out_json) as f:
        bbox = json.load(f)["bbox"]
    # coco_48_17: person, car, toaster seen; cat, bus unseen.
    assert bbox["AP50/unseen"] == pytest.approx(np.mean([bbox["AP50/cat"], bbox["AP50/bus"]]))
    assert bbox["AP50/seen"] == pytest.approx(np.mean([bbox["AP50/person"], bbox["AP50/car"]]))


def test_unknown_unseen_name_lists_valid_names(instance_files, capsys):
    gt, res, _ = instance_files
    assert main(["instance", "--gt", gt, "--predictions", res, "--unseen", "bird,unicorn"]) == 2
    err = capsys.readouterr().err
    assert "unicorn" in err and "Valid names" in err and "'cat'" in err and "'fish'" in err


def test_unknown_split_and_bad_category(instance_files, tmp_path, capsys):
    gt, res, _ = instance_files
    assert main(["instance", "--gt", gt, "--predictions", res, "--split", "no_such_split"]) == 2
    assert "no_such_split" in capsys.readouterr().err
    with open(res) as f:
        bad = json.load(f)
    bad[0]["category_id"] = 4242
    bad_json = write_json(tmp_path / "bad.json", bad)
    assert main(["instance", "--gt", gt, "--predictions", bad_json, "--unseen", "bird"]) == 2
    assert "4242" in capsys.readouterr().err


def test_missing_files_are_named(instance_files, tmp_path, capsys):
    gt, res, _ = instance_files
    missing = str(tmp_path / "nope.json")
    assert main(["instance", "--gt", missing, "--predictions", res, "--unseen", "bird"]) == 2
    assert missing in capsys.readouterr().err
    assert main(["instance", "--gt", gt, "--predictions", missing, "--unseen", "bird"]) == 2
    assert missing in capsys.readouterr().err
    assert main(["semantic", "--gt", str(tmp_path / "gtdir"), "--predictions", str(tmp_path), "--categories",
                 missing, "--unseen", "a"]) == 2
    assert str(tmp_path / "gtdir") in capsys.readouterr().err


def test_panoptic_cli_default_pred_folder(tmp_path, capsys):
    cats = [{"id": 1, "name": "apple", "isthing": 1}, {"id": 2, "name": "grass", "isthing": 0}]
    gt_map = np.array([[1, 1, 1, 1, 2, 2, 3, 3, 3, 3]])
    pred_map = np.array([[5, 5, 5, 6, 0, 0, 6, 6, 6, 6]])
    os.makedirs(tmp_path / "gt")
    os.makedirs(tmp_path / "pred")
    write_panoptic_png(tmp_path / "gt" / "x.png", gt_map)
    write_panoptic_png(tmp_path / "pred" / "x.png", pred_map)
    write_json(tmp_path / "gt.json", {
        "images": [{"id": 7, "file_name": "x.jpg", "height": 1, "width": 10}], "categories": cats,
        "annotations": [{"image_id": 7, "file_name": "x.png", "segments_info": [
            {"id": 1, "category_id": 1, "iscrowd": 0}, {"id": 2, "category_id": 1, "iscrowd": 0},
            {"id": 3, "category_id": 2, "iscrowd": 0}]}],
    })
    pred_json = write_json(tmp_path / "pred.json", {"annotations": [{
        "image_id": 7, "file_name": "x.png",
        "segments_info": [{"id": 5, "category_id": 1}, {"id": 6, "category_id": 2}],
    }]})
    out_json = str(tmp_path / "pq.json")
    assert main(["panoptic", "--gt", str(tmp_path / "gt.json"), "--gt-folder", str(tmp_path / "gt"),
                 "--predictions", pred_json, "--unseen", "grass", "--json", out_json]) == 0
    assert "PQ_th" in capsys.readouterr().out
    with open(out_json) as f:
        pq = json.load(f)["panoptic_seg"]
    # apple: IoU .75 TP + 1 FN -> PQ 50; grass: IoU 4/5 -> PQ 80 (see test_evaluation_panoptic).
    assert pq["PQ/seen"] == pytest.approx(50.0)
    assert pq["PQ/unseen"] == pytest.approx(80.0)
    assert pq["PQ/hm"] == pytest.approx(800 / 13)
    assert pq["PQ_st/seen"] is None
    # Missing prediction folder is reported with its path.
    assert main(["panoptic", "--gt", str(tmp_path / "gt.json"), "--gt-folder", str(tmp_path / "gt"),
                 "--predictions", pred_json, "--pred-folder", str(tmp_path / "zzz"), "--unseen", "grass"]) == 2
    assert str(tmp_path / "zzz") in capsys.readouterr().err


def _semantic_files(tmp_path):
    # Non-contiguous label values, as another framework may use: 10=a, 20=b, 30=c.
    cats = [{"id": 10, "name": "a"}, {"id": 20, "name": "b"}, {"id": 30, "name": "c"}]
    gt = np.array([[10, 10, 20, 20], [30, 30, 255, 30]], dtype=np.uint8)
    pred = np.array([[10, 20, 20, 20], [30, 10, 10, 255]], dtype=np.uint8)
    for sub, arr in (("gt", gt), ("pred", pred)):
        os.makedirs(tmp_path / sub)
        Image.fromarray(arr).save(tmp_path / sub / "img1.png")
    return write_json(tmp_path / "cats.json", cats)


def test_semantic_cli(tmp_path, capsys):
    cats = _semantic_files(tmp_path)
    out_json = str(tmp_path / "sem.json")
    assert main(["semantic", "--gt", str(tmp_path / "gt"), "--predictions", str(tmp_path / "pred"),
                 "--categories", cats, "--unseen", "c", "--json", out_json]) == 0
    with open(out_json) as f:
        sem = json.load(f)["sem_seg"]
    # Valid pixels (gt, pred): (a,a) (a,b) (b,b) (b,b) (c,c) (c,a) (c,none)
    # a: TP1 FN1 FP1 -> 1/3; b: TP2 FP1 -> 2/3; c: TP1 FN2 -> 1/3; pAcc 4/7
    assert sem["IoU/a"] == pytest.approx(100 / 3)
    assert sem["IoU/b"] == pytest.approx(200 / 3)
    assert sem["IoU/c"] == pytest.approx(100 / 3)
    assert sem["mIoU/seen"] == pytest.approx(50.0)
    assert sem["mIoU/hm"] == pytest.approx(2 * 50 * (100 / 3) / (50 + 100 / 3))
    assert sem["pAcc"] == pytest.approx(400 / 7)


def test_semantic_cli_errors(tmp_path, capsys):
    cats = _semantic_files(tmp_path)
    os.remove(tmp_path / "pred" / "img1.png")
    assert main(["semantic", "--gt", str(tmp_path / "gt"), "--predictions", str(tmp_path / "pred"),
                 "--categories", cats, "--unseen", "c"]) == 2
    assert str(tmp_path / "pred" / "img1.png") in capsys.readouterr().err
    Image.fromarray(np.full((2, 4), 99, dtype=np.uint8)).save(tmp_path / "pred" / "img1.png")
    assert main(["semantic", "--gt", str(tmp_path / "gt"), "--predictions", str(tmp_path / "pred"),
                 "--categories", cats, "--unseen", "c"]) == 2
    assert "[99]" in capsys.readouterr().err


def test_python_dash_m(instance_files):
    gt, res, d = instance_files
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-m", "zsi_d2.evaluation", "instance", "--gt", gt, "--predictions", res,
         "--unseen", "bird,fish", "--tasks", "bbox"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "AP50" in proc.stdout and "Recall@100" in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if "AP50" in line)
    seen, unseen, hm = [float(x) for x in row.strip("|").split("|")[1:]]
    assert hm == pytest.approx(2 * seen * unseen / (seen + unseen), abs=0.01)
    assert not math.isnan(hm)
