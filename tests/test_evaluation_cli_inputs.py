"""`python -m zsi_d2.evaluation` on bad input: one line on stderr naming the file or option, exit 2;
and the inputs that used to give a silent number (empty results, nan groups, IoU 50)."""
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

import zsi_d2  # noqa: F401  (compat layer before detectron2)

sys.path.insert(0, os.path.dirname(__file__))
from evaluation_fixtures import INSTANCE_UNSEEN, make_instance_dataset, write_json, write_panoptic_png  # noqa: E402

from zsi_d2.data.splits import get_split  # noqa: E402
from zsi_d2.evaluation.__main__ import main  # noqa: E402
from zsi_d2.evaluation.instance import check_iou_thresholds  # noqa: E402
from zsi_d2.utils.panoptic_ids import read_panoptic_png as load_panoptic_png  # noqa: E402

PROG = "python -m zsi_d2.evaluation"
UNSEEN = ",".join(INSTANCE_UNSEEN)


def error_line(capsys, task):
    """The CLI's one error line; every other stderr line is a timestamped log line, none a traceback."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith(f"{PROG} {task}: error: ")]
    assert len(errors) == 1, err
    assert all(line.startswith("[") for line in lines if line not in errors), err
    return errors[0]


def usage_error(capsys, argv):
    """argparse's error for a bad option value: exit 2 and one line too."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{PROG} {argv[0]}: error: "), err
    return err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_inputs")
    gt, results = make_instance_dataset(seed=2)
    zsi_gt = dict(gt, annotations=[a for a in gt["annotations"] if a["category_id"] in (11, 12)])  # bird, fish
    (d / "not_json.json").write_text("this is not json")
    return {
        "gt": write_json(d / "gt.json", gt), "results": write_json(d / "results.json", results),
        "empty": write_json(d / "empty.json", []), "zsi_gt": write_json(d / "zsi_gt.json", zsi_gt),
        "not_json": str(d / "not_json.json"), "dir": str(d),
    }


# ---- empty predictions ----------------------------------------------------------------------
@pytest.mark.parametrize("task", ["instance", "confusion"])
def test_empty_predictions_are_refused_unless_allowed(files, capsys, task):
    argv = [task, "--gt", files["gt"], "--predictions", files["empty"], "--unseen", UNSEEN]
    assert main(argv) == 2
    line = error_line(capsys, task)
    assert files["empty"] in line and "holds no detection" in line and "--allow-empty" in line
    assert main(argv + ["--allow-empty"]) == 0
    captured = capsys.readouterr()
    assert f"WARNING: {files['empty']} holds no detection (--allow-empty)" in captured.err
    if task == "instance":
        assert "|    AP50    |  0.00  |   0.00   | 0.00 |" in captured.out


# ---- IoU thresholds and other option values -------------------------------------------------
@pytest.mark.parametrize("value, message", [
    ("50", "IoU threshold 50 is outside (0, 1]: thresholds are fractions, e.g. 0.5"),
    ("0.5,0", "IoU threshold 0 is outside (0, 1]"),
    ("1.5", "IoU threshold 1.5 is outside (0, 1]"),
    ("0.555", "IoU threshold 0.555 has more than two decimals, so its key AP56 would misname it"),
    ("0.5,0.50", "repeat a value"),
    ("0.5,abc", "could not convert string to float: 'abc'"),
])
def test_iou_thresholds_outside_0_1_are_an_error(files, capsys, value, message):
    err = usage_error(capsys, ["instance", "--gt", files["gt"], "--predictions", files["results"],
                               "--unseen", UNSEEN, "--iou-thresholds", value])
    assert f"argument --iou-thresholds: {value!r}: " in err and message in err


def test_iou_threshold_one_is_allowed_and_the_library_refuses_50():
    assert check_iou_thresholds(["1", "0.05"]) == [1.0, 0.05]
    with pytest.raises(ValueError, match=r"outside \(0, 1\]"):
        check_iou_thresholds([50])


@pytest.mark.parametrize("argv, message", [
    (["instance", "--max-dets", "0"], "argument --max-dets: '0' is not a whole number of at least 1"),
    (["instance", "--tasks", "box"], "argument --tasks: 'box': give bbox, segm or bbox,segm"),
    (["confusion", "--iou", "50"], "argument --iou: '50' is not an IoU in (0, 1], e.g. 0.5"),
    (["instance"], "one of the arguments --unseen --split is required"),
])
def test_bad_option_values_name_the_option(files, capsys, argv, message):
    err = usage_error(capsys, argv[:1] + ["--gt", files["gt"], "--predictions", files["results"]]
                      + (["--unseen", UNSEEN] if len(argv) > 1 else []) + argv[1:])
    assert message in err and "--help" in err


# ---- files in the wrong place or of the wrong kind --------------------------------------------
def test_swapped_gt_and_predictions_say_so(files, capsys):
    assert main(["instance", "--gt", files["results"], "--predictions", files["gt"], "--unseen", UNSEEN]) == 2
    line = error_line(capsys, "instance")
    assert f"GT json (--gt) {files['results']} holds a list" in line and "swapped" in line
    # A ground truth given as predictions (here: both): its annotations have no score.
    assert main(["instance", "--gt", files["gt"], "--predictions", files["gt"], "--unseen", UNSEEN]) == 2
    line = error_line(capsys, "instance")
    assert f"Predictions json (--predictions) {files['gt']}: " in line
    assert "lack one of ['image_id', 'category_id', 'score']" in line and "swapped" in line


def test_non_json_files_are_named(files, capsys):
    bad = files["not_json"]
    assert main(["instance", "--gt", bad, "--predictions", files["results"], "--unseen", UNSEEN]) == 2
    assert f"GT json (--gt) {bad} is not valid json" in error_line(capsys, "instance")
    assert main(["instance", "--gt", files["gt"], "--predictions", bad, "--unseen", UNSEEN]) == 2
    assert f"Predictions json (--predictions) {bad} is not valid json" in error_line(capsys, "instance")
    png = os.path.join(files["dir"], "image.png")
    Image.fromarray(np.full((4, 4), 200, np.uint8)).save(png)
    assert main(["confusion", "--gt", png, "--predictions", files["results"], "--unseen", UNSEEN]) == 2
    assert f"GT json (--gt) {png} is not valid json" in error_line(capsys, "confusion")
    assert main(["instance", "--gt", files["dir"], "--predictions", files["results"], "--unseen", UNSEEN]) == 2
    assert f"GT json (--gt) {files['dir']} is a folder, not a json file" in error_line(capsys, "instance")


def test_gt_that_is_not_an_instances_json(files, tmp_path, capsys):
    panoptic = write_json(tmp_path / "panoptic.json", {"images": [], "categories": [], "annotations": [
        {"image_id": 1, "file_name": "1.png", "segments_info": []}]})
    assert main(["instance", "--gt", panoptic, "--predictions", files["results"], "--unseen", UNSEEN]) == 2
    assert f"{panoptic} is a COCO panoptic json, not an instances one" in error_line(capsys, "instance")
    no_anns = write_json(tmp_path / "no_anns.json", {"images": [], "categories": [], "annotations": []})
    assert main(["instance", "--gt", no_anns, "--predictions", files["results"], "--unseen", UNSEEN]) == 2
    assert f"{no_anns} has no annotations" in error_line(capsys, "instance")
    dict_results = write_json(tmp_path / "dict.json", {"results": []})
    assert main(["instance", "--gt", files["gt"], "--predictions", dict_results, "--unseen", UNSEEN]) == 2
    assert f"{dict_results} must hold a COCO results list" in error_line(capsys, "instance")


def test_box_only_results_with_segm_task(files, tmp_path, capsys):
    with open(files["results"]) as f:
        boxes = [{k: v for k, v in r.items() if k != "segmentation"} for r in json.load(f)]
    path = write_json(tmp_path / "boxes.json", boxes)
    assert main(["instance", "--gt", files["gt"], "--predictions", path, "--unseen", UNSEEN, "--tasks", "segm"]) == 2
    line = error_line(capsys, "instance")
    assert f"{path}: {len(boxes)} of {len(boxes)} result(s) have no 'segmentation' field" in line


def _panoptic_files(tmp_path):
    os.makedirs(tmp_path / "gt")
    os.makedirs(tmp_path / "pred")
    ids = np.array([[1, 1, 2, 2]])
    write_panoptic_png(tmp_path / "gt" / "x.png", ids)
    write_panoptic_png(tmp_path / "pred" / "x.png", ids)
    segments = [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 2}]
    gt = write_json(tmp_path / "gt.json", {
        "images": [{"id": 7, "file_name": "x.jpg"}], "annotations": [
            {"image_id": 7, "file_name": "x.png", "segments_info": segments}],
        "categories": [{"id": 1, "name": "apple", "isthing": 1}, {"id": 2, "name": "grass", "isthing": 0}]})
    return gt, str(tmp_path / "gt")


def test_panoptic_bad_gt_and_predictions(files, tmp_path, capsys):
    gt, gt_folder = _panoptic_files(tmp_path)

    def run(gt_json, pred_json):
        code = main(["panoptic", "--gt", gt_json, "--gt-folder", gt_folder, "--predictions", pred_json,
                     "--pred-folder", str(tmp_path / "pred"), "--unseen", "grass"])
        return code, error_line(capsys, "panoptic") if code else None

    pred_list = write_json(tmp_path / "pred_list.json", [{"image_id": 7, "file_name": "x.png", "segments_info": []}])
    code, line = run(pred_list, gt)  # swapped
    assert code == 2 and f"GT panoptic json (--gt) {pred_list} holds a list" in line and "swapped" in line
    code, line = run(files["gt"], gt)  # an instances json as panoptic GT
    assert code == 2 and f"{files['gt']}: " in line and "lack one of ['image_id', 'file_name', 'segments_info']" \
        in line and "use the instance task" in line
    code, line = run(gt, files["not_json"])
    assert code == 2 and f"{files['not_json']} is not valid json" in line
    empty = write_json(tmp_path / "empty.json", {"annotations": []})
    code, line = run(gt, empty)
    assert code == 2 and f"{empty} holds no annotations: no image has a prediction" in line
    other = write_json(tmp_path / "other.json", {"annotations": [{"image_id": 8, "file_name": "x.png",
                                                                  "segments_info": []}]})
    code, line = run(gt, other)
    assert code == 2 and f"{other} has no prediction for 1 of 1 GT image(s) (e.g. image id 7)" in line
    assert run(gt, gt) == (0, None)  # the GT scored against itself is fine
    capsys.readouterr()


# ---- nan groups are explained --------------------------------------------------------------
def test_gzsi_on_a_zsi_only_gt_says_why_seen_and_hm_are_nan(files, capsys, tmp_path):
    out_json = str(tmp_path / "o.json")
    assert main(["instance", "--gt", files["zsi_gt"], "--predictions", files["results"], "--unseen", UNSEEN,
                 "--tasks", "bbox", "--json", out_json]) == 0
    captured = capsys.readouterr()
    assert (f"WARNING: bbox: seen and HM are nan: none of the 3 seen class(es) has ground truth in "
            f"{files['zsi_gt']} (a ZSI test set holds unseen classes only: score it with --mode zsi)") in captured.err
    with open(out_json) as f:
        bbox = json.load(f)["bbox"]
    assert bbox["AP50/seen"] is None and bbox["AP50/hm"] is None and bbox["AP50/unseen"] > 0
    # In zsi mode nothing is nan, and nothing is said.
    assert main(["instance", "--gt", files["zsi_gt"], "--predictions", files["results"], "--unseen", UNSEEN,
                 "--tasks", "bbox", "--mode", "zsi"]) == 0
    assert "nan" not in capsys.readouterr().err


def test_unseen_classes_without_gt_are_explained_too(files, capsys, tmp_path):
    with open(files["gt"]) as f:
        gt = json.load(f)
    seen_only = write_json(tmp_path / "seen_only.json", dict(gt, annotations=[
        a for a in gt["annotations"] if a["category_id"] not in (11, 12)]))
    assert main(["instance", "--gt", seen_only, "--predictions", files["results"], "--unseen", UNSEEN,
                 "--tasks", "bbox", "--mode", "zsi"]) == 0
    err = capsys.readouterr().err
    assert f"WARNING: bbox: unseen is nan: none of the 2 unseen class(es) has ground truth in {seen_only}" in err


# ---- semantic: the label space from the registered dataset ---------------------------------
@pytest.fixture(scope="module")
def zs_shapes_val():
    """The tiny zs_shapes val set (generated on first use) and its semantic label folder."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    DatasetCatalog.get("zs_shapes_tiny_val")
    return MetadataCatalog.get("zs_shapes_tiny_val_panoptic")  # same files; names the panoptic json too


def _label_of(meta, name):
    """The semantic label value of class `name`, read from the GT files themselves: the value
    under the panoptic segments the panoptic json's categories call `name` (not from metadata)."""
    with open(meta.panoptic_json) as f:
        pan = json.load(f)
    cat_id = next(c["id"] for c in pan["categories"] if c["name"] == name)
    values = set()
    for ann in pan["annotations"]:
        seg_ids = [s["id"] for s in ann["segments_info"] if s["category_id"] == cat_id]
        if seg_ids:
            ids = load_panoptic_png(os.path.join(meta.panoptic_root, ann["file_name"]))
            sem = np.array(Image.open(os.path.join(meta.sem_seg_root, ann["file_name"])))
            values |= set(np.unique(sem[np.isin(ids, seg_ids)]).tolist())
    assert len(values) == 1, (name, values)
    return values.pop()


def test_semantic_zs_shapes_needs_no_categories_file(zs_shapes_val, tmp_path, capsys):
    """--split zs_shapes finds the label space in the registered zs_shapes metadata. Prediction:
    the GT with every pixel of one unseen class called one seen class."""
    meta, split = zs_shapes_val, get_split("zs_shapes")
    unseen_name, seen_name = split.unseen[0], split.seen[0]
    circle, square = _label_of(meta, unseen_name), _label_of(meta, seen_name)
    pred_dir = tmp_path / "pred"
    os.makedirs(pred_dir)
    n_circle = n_square = n_valid = 0
    present = set()
    for name in sorted(os.listdir(meta.sem_seg_root)):
        gt = np.array(Image.open(os.path.join(meta.sem_seg_root, name)))
        n_circle += int((gt == circle).sum())
        n_square += int((gt == square).sum())
        n_valid += int((gt != 255).sum())
        present |= set(np.unique(gt).tolist()) - {255}
        Image.fromarray(np.where(gt == circle, square, gt).astype(np.uint8)).save(pred_dir / name)
    assert n_circle > 0 and n_square > 0
    out_json = str(tmp_path / "sem.json")
    assert main(["semantic", "--gt", meta.sem_seg_root, "--predictions", str(pred_dir), "--split", "zs_shapes",
                 "--json", out_json]) == 0
    captured = capsys.readouterr()
    assert (f"Zero-shot semantic evaluation (gzsi): {len(split.seen)} seen, {len(split.unseen)} unseen "
            "classes") in captured.out
    with open(out_json) as f:
        sem = json.load(f)["sem_seg"]
    assert sem[f"IoU/{unseen_name}"] == 0.0
    assert sem[f"IoU/{seen_name}"] == pytest.approx(100 * n_square / (n_square + n_circle))
    assert sem["pAcc"] == pytest.approx(100 * (n_valid - n_circle) / n_valid)
    perfect = [k for k, v in sem.items() if k.startswith("IoU/") and v == pytest.approx(100.0)]
    assert len(perfect) == len(present) - 2  # every other class present in the GT is exact
    other_unseen = [n for n in split.unseen[1:] if sem[f"IoU/{n}"] is not None]
    assert sem["mIoU/unseen"] == pytest.approx(100 * len(other_unseen) / (len(other_unseen) + 1))

    # --dataset: the same label space, and the dataset's own mode (zsi for *_val_zsi).
    assert main(["semantic", "--gt", meta.sem_seg_root, "--predictions", str(pred_dir),
                 "--dataset", "zs_shapes_tiny_val_zsi", "--json", out_json]) == 0
    assert "Zero-shot semantic evaluation (zsi)" in capsys.readouterr().out
    with open(out_json) as f:
        zsi = json.load(f)["sem_seg"]
    assert zsi["mIoU/unseen"] == pytest.approx(sem["mIoU/unseen"]) and f"IoU/{seen_name}" not in zsi


def test_semantic_label_space_errors(zs_shapes_val, tmp_path, capsys):
    root = zs_shapes_val.sem_seg_root
    assert main(["semantic", "--gt", root, "--predictions", root, "--dataset", "zs_shapes_tiny_vall"]) == 2
    line = error_line(capsys, "semantic")
    assert "--dataset 'zs_shapes_tiny_vall' is not registered. Close names: zs_shapes_tiny_val," in line
    assert "--register my_datasets.py for the audit and evaluation CLIs" in line
    assert main(["semantic", "--gt", root, "--predictions", root, "--unseen", "red circle"]) == 2
    assert "pass --categories FILE" in error_line(capsys, "semantic")
    assert main(["semantic", "--gt", root, "--predictions", root, "--split", "coco_48_17"]) == 2
    assert "No registered dataset of split 'coco_48_17' has a semantic label space" in error_line(capsys, "semantic")
    assert main(["semantic", "--gt", root, "--predictions", root, "--dataset", "zs_shapes_tiny_train"]) == 2
    line = error_line(capsys, "semantic")
    assert "zero_shot_mode='train'" in line and "pass --mode gzsi or --mode zsi" in line
    assert main(["semantic", "--gt", root, "--predictions", root, "--dataset", "zs_shapes_tiny_train",
                 "--register", str(tmp_path / "nope.py")]) == 2
    assert f"'{tmp_path / 'nope.py'}' (DATASETS.REGISTER_MODULES / --register) does not exist" in error_line(
        capsys, "semantic")
    gt_file = os.path.join(root, sorted(os.listdir(root))[0])
    assert main(["semantic", "--gt", gt_file, "--predictions", root, "--split", "zs_shapes"]) == 2
    assert f"GT label folder (--gt) {gt_file} is a file, not a folder" in error_line(capsys, "semantic")
    cats = write_json(tmp_path / "cats.json", {"a": 1})
    assert main(["semantic", "--gt", root, "--predictions", root, "--categories", cats, "--unseen", "a"]) == 2
    assert f"Categories json (--categories) {cats} must be a json list" in error_line(capsys, "semantic")


REGISTER_MODULE = '''
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from zsi_d2.data import ZeroShotSplit, register_split, set_zero_shot_metadata

register_split(ZeroShotSplit("_cli_abc", seen=("a", "b"), unseen=("c",), stuff=("a", "b", "c")))
DatasetCatalog.register("_cli_abc_val", lambda: [])
MetadataCatalog.get("_cli_abc_val").set(stuff_classes=["a", "b", "c"], ignore_label=255,
                                        sem_seg_root=os.path.join(os.path.dirname(__file__), "gt"))
set_zero_shot_metadata("_cli_abc_val", "_cli_abc", "gzsi", tasks=("semantic",))
'''


def test_semantic_custom_dataset_through_register(tmp_path, capsys):
    """--register imports the user's module; --dataset then gives labels, groups and mode."""
    module = tmp_path / "my_abc_datasets.py"
    module.write_text(REGISTER_MODULE)
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 2]], dtype=np.uint8)  # the semantic tests' hand example
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 2]], dtype=np.uint8)
    for sub, arr in (("gt", gt), ("pred", pred)):
        os.makedirs(tmp_path / sub)
        Image.fromarray(arr).save(tmp_path / sub / "x.png")
    out_json = str(tmp_path / "o.json")
    assert main(["semantic", "--gt", str(tmp_path / "gt"), "--predictions", str(tmp_path / "pred"),
                 "--dataset", "_cli_abc_val", "--register", str(module), "--json", out_json]) == 0
    assert "Zero-shot semantic evaluation (gzsi): 2 seen, 1 unseen classes" in capsys.readouterr().out
    with open(out_json) as f:
        sem = json.load(f)["sem_seg"]
    # a: 1/3, b: 2/3 (seen 1/2); c: 2/3; hIoU 4/7; pAcc 5/7
    assert sem["IoU/a"] == pytest.approx(100 / 3) and sem["IoU/c"] == pytest.approx(200 / 3)
    assert sem["mIoU/hm"] == pytest.approx(400 / 7) and sem["pAcc"] == pytest.approx(500 / 7)
