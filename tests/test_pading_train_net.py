"""PADing through train_net.py as a user runs it, on tiny zs_shapes: stage 1 and stage 2 under
detectron2's `launch` with 2 CPU processes (gloo; the bank computed once, the processes ending
with identical weights), and a SIGKILLed stage 2 resumed with --resume ending with the weights of
an uninterrupted run, bit for bit."""
import os
import signal
import subprocess
import time

import pytest
import torch

from conftest import REPO_ROOT, TINY_MASK_FORMER_OPTS
from test_train_net import _command, _run, _run_subprocess, _weights  # the same helpers as train_net's tests

STAGE1 = os.path.join(REPO_ROOT, "configs/pading/zs_shapes/pading_stage1.yaml")
STAGE2 = os.path.join(REPO_ROOT, "configs/pading/zs_shapes/pading_stage2.yaml")
TINY = [*TINY_MASK_FORMER_OPTS, "DATASETS.TEST", "()", "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256",
        "SOLVER.IMS_PER_BATCH", "2"]
TINY_STAGE2 = ["MODEL.PADING.NUM_PRIMITIVES", "16", "MODEL.PADING.GENERATOR_DIM_FEEDFORWARD", "64",
               "MODEL.PADING.GENERATOR_HEADS", "4", "MODEL.PADING.IMAGES_PER_BATCH", "4"]


@pytest.fixture(scope="module")
def stage1_two_processes(tmp_path_factory):
    """Stage 1 (the linear core) trained 2 iterations by 2 processes over gloo."""
    out = tmp_path_factory.mktemp("stage1")
    log = _run_subprocess(["--num-gpus", "2", *TINY, "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(out)], config=STAGE1)
    assert "World size: 2" in log and (out / "model_final.pth").is_file()
    return out / "model_final.pth"


def _stage2_args(stage1, out, *more):
    return [*TINY, *TINY_STAGE2, "MODEL.WEIGHTS", str(stage1), "OUTPUT_DIR", str(out),
            "MODEL.PADING.FEATURE_CACHE_DIR", str(out.parent / "bank"), *more]


def test_stage2_runs_under_two_processes(stage1_two_processes, tmp_path):
    out = tmp_path / "stage2"
    log = _run_subprocess(["--num-gpus", "2", *_stage2_args(stage1_two_processes, out, "SOLVER.MAX_ITER", "6")], config=STAGE2)
    assert (out / "model_final.pth").is_file()
    rank1 = (out / "log.txt.rank1").read_text()
    assert "World size: 2" in rank1
    # The bank is computed once, by the first process; the second reads the file.
    assert "Stage-2 query bank: 48 images" in log and "saved to" in log  # every image, by rank 0
    assert "saved to" not in rank1 and "read from" in rank1
    assert "the 2 processes hold identical weights" in log


def test_a_killed_stage2_resumes_to_the_same_weights(stage1_two_processes, tmp_path):
    """Killed (SIGKILL) after its first checkpoint and resumed with --resume, stage 2 ends with the
    weights of an uninterrupted run, bit for bit: the classifier's SGD state and the feature
    sampler's position are in the checkpoint, beside the generator's Adam and the random generators."""
    more = ["SOLVER.MAX_ITER", "150", "SOLVER.CHECKPOINT_PERIOD", "25", "SOLVER.STEPS", "(100,)"]
    reference = tmp_path / "uninterrupted"
    _run(_stage2_args(stage1_two_processes, reference, *more), config=STAGE2)
    out = tmp_path / "killed"
    args = _stage2_args(stage1_two_processes, out, *more)
    proc = subprocess.Popen(_command(args, STAGE2), cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last, deadline = out / "last_checkpoint", time.time() + 300
    while not (last.is_file() and last.read_text().strip()) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model_final.pth").exists(), "the run finished before it could be killed"
    log = _run(["--resume", *args], config=STAGE2)
    resumed_from = int(log.split("Starting training from iteration ")[1].split()[0])
    assert 0 < resumed_from < 150
    final, expected = _weights(out / "model_final.pth"), _weights(reference / "model_final.pth")
    differing = [k for k in expected if not torch.equal(final[k], expected[k])]
    assert not differing, f"{len(differing)} of {len(expected)} tensors differ, e.g. {differing[:3]}"
