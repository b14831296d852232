"""train_net.py end to end on zs_shapes (tiny): train, evaluate, a run killed and resumed ends with
the same weights, 2 CPU processes over gloo score like one, and known mistakes end in one line."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import torch

from conftest import BASELINE_CONFIG, REPO_ROOT, TINY_OPTS, run_in_process

TINY = TINY_OPTS
CONFIG = BASELINE_CONFIG


def _command(args, config=CONFIG):
    return [sys.executable, os.path.join(REPO_ROOT, "train_net.py"), "--config-file", config, *args]


def _run_subprocess(args, timeout=420, config=CONFIG):
    """train_net.py as its own process: for several processes (launch spawns them) and kill/resume."""
    proc = subprocess.run(_command(args, config), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"train_net failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout + proc.stderr


def _train_net():
    sys.path.insert(0, REPO_ROOT)
    try:
        import train_net
    finally:
        sys.path.pop(0)
    return train_net


def _invoke(args, config=CONFIG):
    """train_net.py's top level (argument parsing, the one-line error handler, launch) in this process."""
    return run_in_process(_train_net().invoke_main, ["--config-file", config, *args])


def _run(args, config=CONFIG):
    status, out, err = _invoke(args, config)
    assert status == 0, f"train_net failed (exit {status}):\n{out[-3000:]}\n{err[-5000:]}"
    return out + err


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


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


def test_two_cpu_processes_over_gloo_train_and_score_like_one(tmp_path):
    """Two processes train, then score their model; one process scores the same weights again. If
    results were not gathered across processes, rank 0 would score half the images."""
    log = _run_subprocess(["--num-gpus", "2", *TINY, "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(tmp_path / "train")])
    assert "Rank of current process: 0. World size: 2" in log
    rank1_log = (tmp_path / "train" / "log.txt.rank1").read_text()  # detectron2 logs other ranks to files
    assert "Rank of current process: 1. World size: 2" in rank1_log
    _run(["--eval-only", *TINY, "MODEL.WEIGHTS", str(tmp_path / "train" / "model_final.pth"),
          "OUTPUT_DIR", str(tmp_path / "eval")])
    two = json.loads((tmp_path / "train" / "zero_shot_results.json").read_text())
    one = json.loads((tmp_path / "eval" / "zero_shot_results.json").read_text())
    assert two == one


def test_a_killed_run_resumes_to_the_same_weights(trained, tmp_path):
    """Killed (SIGKILL) after its first checkpoint, resumed with --resume: the final weights equal
    those of the uninterrupted 12-iteration run, bit for bit (data order and generators restored)."""
    out, _ = trained
    args = [*TINY, "SOLVER.MAX_ITER", "12", "SOLVER.CHECKPOINT_PERIOD", "4", "OUTPUT_DIR", str(tmp_path)]
    proc = subprocess.Popen(_command(args), cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last, deadline = tmp_path / "last_checkpoint", time.time() + 300
    while not (last.is_file() and last.read_text().strip()) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "model_final.pth").exists(), "the run finished before it could be killed"
    log = _run(["--resume", *args])
    resumed_from = int(log.split("Starting training from iteration ")[1].split()[0])
    assert 0 < resumed_from < 12
    final, reference = _weights(tmp_path / "model_final.pth"), _weights(out / "model_final.pth")
    differing = [k for k in reference if not torch.equal(final[k], reference[k])]
    assert not differing, f"{len(differing)} of {len(reference)} tensors differ, e.g. {differing[:3]}"


def test_periodic_checkpoints_are_written_by_the_zero_shot_checkpointer():
    """DefaultTrainer hands its checkpointer to the PeriodicCheckpointer hook while building the
    hooks; replacing it afterwards would leave the hook saving with detectron2's."""
    from detectron2.engine import hooks

    from conftest import tiny_cfg
    from zsi_d2.engine import ZeroShotCheckpointer

    train_net = _train_net()
    cfg = tiny_cfg("MODEL.EFFICIENTNET.WEIGHTS", "", "SOLVER.MAX_ITER", "1", "DATASETS.CHECK_LEAKAGE", "False")
    trainer = train_net.Trainer(cfg)
    periodic = [h for h in trainer._hooks if isinstance(h, hooks.PeriodicCheckpointer)]
    assert periodic and periodic[0].checkpointer is trainer.checkpointer
    assert isinstance(trainer.checkpointer, ZeroShotCheckpointer) and trainer.checkpointer.purpose == "train"
    assert {"optimizer", "rng", "data_sampler", "trainer"} <= set(trainer.checkpointer.checkpointables)


def _fails_in_one_line(args, expected, config=CONFIG):
    if "OUTPUT_DIR" not in args:  # errors met after default_setup would write into the repository's output/
        args = [*args, "OUTPUT_DIR", tempfile.mkdtemp(prefix="train_net_error_")]
    status, out, err = _invoke(args, config)
    assert status == 2, f"exit {status}:\n{err[-3000:]}"
    last = err.strip().splitlines()[-1]
    assert last.startswith("ERROR: ") and expected in last, last
    assert "Traceback" not in out + err
    return last


@pytest.mark.parametrize("args, expected", [
    (["--eval-only", *TINY], "--eval-only needs MODEL.WEIGHTS"),
    ([*TINY, "DATASETS.TEST", "('zs_shapes_tiny_vall',)"],
     "Dataset 'zs_shapes_tiny_vall' is not registered. Close names: zs_shapes_tiny_val"),
    ([*TINY, "MODEL.WEIGHTS", "https://example.org/model_final.pkl"], "is a URL"),
    ([*TINY, "MODEL.WEIGHTS", "no/such/model.pth"], "MODEL.WEIGHTS='no/such/model.pth' does not exist"),
    ([*TINY, "DATASETS.REGISTER_MODULES", "['no_such_datasets.py']"], "no_such_datasets.py"),
    ([*TINY, "MODEL.ZERO_SHOT.CALIBRATION.DATASETS", "('zs_shapes_tiny_calibb',)"],
     "Dataset 'zs_shapes_tiny_calibb' is not registered"),
])
def test_known_mistakes_end_in_one_line_before_any_work(args, expected):
    _fails_in_one_line(args, expected)


def test_a_missing_config_file_is_one_line():
    """`python train_net.py` itself: the one-line handler is wired at its top level (exit status 2)."""
    proc = subprocess.run(_command(TINY, "no/such/config.yaml"), cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, f"exit {proc.returncode}:\n{proc.stderr[-3000:]}"
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "ERROR: --config-file 'no/such/config.yaml' does not exist (configs/ holds the shipped ones)", last
    assert "Traceback" not in proc.stderr + proc.stdout


def test_evaluating_a_checkpoint_of_another_model_is_one_line(trained):
    """The baseline's checkpoint under the ZSI config: BA-RPN and the mask head would be random."""
    out, _ = trained
    zsi = os.path.join(REPO_ROOT, "configs/zsi/zs_shapes/zsi_mask_rcnn.yaml")
    last = _fails_in_one_line(["--eval-only", *TINY, "MODEL.WEIGHTS", str(out / "model_final.pth")],
                              "does not fit this config", config=zsi)
    assert "meta_architecture=ZeroShotRCNN" in last and "config.yaml" in last


def test_eval_only_chooses_the_calibration_gamma_on_held_out_images_only(trained, tmp_path):
    out, _ = trained
    weights = ["MODEL.WEIGHTS", str(out / "model_final.pth")]
    log = _run(["--eval-only", *TINY, *weights, "MODEL.ZERO_SHOT.CALIBRATION.DATASETS", "('zs_shapes_tiny_calib',)",
                "MODEL.ZERO_SHOT.CALIBRATION.MATCH_IOU", "0.05", "OUTPUT_DIR", str(tmp_path)])
    chosen = json.loads((tmp_path / "calibration.json").read_text())
    from zsi_d2.modeling.calibration import choose_gamma

    shares = {float(g): v for g, v in chosen["shares"].items()}
    assert chosen["datasets"] == ["zs_shapes_tiny_calib"] and chosen["gamma"] == choose_gamma(shares, chosen["target_rate"])
    assert f"chose gamma {chosen['gamma']:.2f}" in log
    assert (tmp_path / "zero_shot_results.json").is_file()
    last = _fails_in_one_line(["--eval-only", *TINY, *weights, "MODEL.ZERO_SHOT.CALIBRATION.DATASETS",
                               "('zs_shapes_tiny_val',)", "OUTPUT_DIR", str(tmp_path / "leak")],
                              "Calibration dataset 'zs_shapes_tiny_val' holds unseen-class labels")
    assert "seen classes only" in last


def test_help_explains_the_zero_shot_options():
    status, out, _ = _invoke(["--help"])
    assert status == 0
    for phrase in ("GZSI", "ZSI", "DATASETS.CHECK_LEAKAGE", "DATASETS.REGISTER_MODULES", "zsi_d2/data/splits.py",
                   "ALLOW_UNSEEN_IN_WEIGHTS"):
        assert phrase in out


def _visualize_predictions():
    """tools/visualize_predictions.py as a module."""
    sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
    try:
        import visualize_predictions
    finally:
        sys.path.pop(0)
    return visualize_predictions


def test_visualize_predictions_writes_a_picture(trained, tmp_path):
    import cv2

    visualize_predictions = _visualize_predictions()
    out, _ = trained
    png = tmp_path / "pred.png"
    visualize_predictions.main([
        "--config-file", CONFIG, "--weights", str(out / "model_final.pth"), "--dataset", "zs_shapes_tiny_val",
        "--num", "3", "--score-thresh", "0.0", "--output", str(png), *TINY,
    ])
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 3 * 128 and image.shape[1] > 2 * 128  # 3 rows, GT | prediction


def test_visualize_predictions_refuses_a_checkpoint_that_does_not_fit(trained, tmp_path):
    """Drawing a random model's predictions would be as misleading as scoring them."""
    from zsi_d2.errors import CheckpointMismatchError

    visualize_predictions = _visualize_predictions()
    out, _ = trained
    zsi = os.path.join(REPO_ROOT, "configs/zsi/zs_shapes/zsi_mask_rcnn.yaml")
    with pytest.raises(CheckpointMismatchError, match="does not fit this config"):
        visualize_predictions.main([
            "--config-file", zsi, "--weights", str(out / "model_final.pth"), "--dataset", "zs_shapes_tiny_val",
            "--output", str(tmp_path / "pred.png"), *TINY,
        ])
