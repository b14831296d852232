"""train_net.py end to end on zs_shapes (tiny): train, evaluate, resume from the checkpoint,
and the same with 2 CPU processes over gloo."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

TINY = [
    "DATASETS.TRAIN", "('zs_shapes_tiny_train',)",
    "DATASETS.TEST", "('zs_shapes_tiny_val', 'zs_shapes_tiny_val_zsi')",
    "MODEL.ZERO_SHOT.EMBEDDING.SOURCE", "attributes",
    "DATALOADER.NUM_WORKERS", "0",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.WARMUP_ITERS", "2",
    "SOLVER.STEPS", "()",
]
CONFIG = os.path.join(REPO_ROOT, "configs/zs_shapes/projection_mask_rcnn.yaml")


def _run(args, timeout=420):
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "train_net.py"), "--config-file", CONFIG, *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, f"train_net failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train_net")
    log = _run([*TINY, "SOLVER.MAX_ITER", "12", "OUTPUT_DIR", str(out)])
    return out, log


def test_train_then_evaluate_reports_seen_unseen_hm(trained):
    out, log = trained
    assert (out / "model_final.pth").is_file()
    results = json.loads((out / "zero_shot_results.json").read_text())
    gzsi, zsi = results["zs_shapes_tiny_val"], results["zs_shapes_tiny_val_zsi"]
    for key in ("AP50/seen", "AP50/unseen", "AP50/hm", "Recall@100/seen", "Recall@100/unseen", "Recall@100/hm"):
        assert key in gzsi["segm"] and key in gzsi["bbox"]
    assert "AP50/unseen" in zsi["segm"] and "AP50/seen" not in zsi["segm"]
    assert "Class set for 'zs_shapes_tiny_val_zsi' (zsi)" in log
    assert "no unseen label: OK" in log  # the leakage audit ran before training


def test_eval_only_reproduces_the_numbers(trained, tmp_path):
    out, _ = trained
    _run(["--eval-only", *TINY, "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(tmp_path)])
    again = json.loads((tmp_path / "zero_shot_results.json").read_text())
    first = json.loads((out / "zero_shot_results.json").read_text())
    assert again == first


def test_two_cpu_processes_over_gloo(tmp_path):
    log = _run(["--num-gpus", "2", *TINY, "SOLVER.MAX_ITER", "4", "OUTPUT_DIR", str(tmp_path)])
    assert "Rank of current process: 0. World size: 2" in log
    rank1_log = (tmp_path / "log.txt.rank1").read_text()  # detectron2 logs other ranks to files
    assert "Rank of current process: 1. World size: 2" in rank1_log
    assert (tmp_path / "zero_shot_results.json").is_file()


def test_visualize_predictions_writes_a_picture(trained, tmp_path):
    import cv2

    sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
    try:
        import visualize_predictions
    finally:
        sys.path.pop(0)
    out, _ = trained
    png = tmp_path / "pred.png"
    visualize_predictions.main([
        "--config-file", CONFIG, "--weights", str(out / "model_final.pth"), "--dataset", "zs_shapes_tiny_val",
        "--num", "3", "--score-thresh", "0.0", "--output", str(png), *TINY,
    ])
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 3 * 128 and image.shape[1] > 2 * 128  # 3 rows, GT | prediction
