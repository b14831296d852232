"""projects/ZS3Net: a project built on zsi_d2 as a user adds one (its own config keys, meta-architecture
and train_net.py calling zsi_d2's command), and ZS5Net's self-training: pseudo-labels from images only."""
import glob
import os
import sys

import pytest
import torch

from detectron2.modeling import build_model

from conftest import PIXEL_TINY_OPTS as TINY
from conftest import REPO_ROOT, run_in_process
from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.errors import CheckpointMismatchError, InputError, LeakageError
from zsi_d2.modeling.generative import IGNORE

PROJECT = os.path.join(REPO_ROOT, "projects", "ZS3Net")
sys.path.insert(0, PROJECT)
import train_net as zs3net_train_net  # noqa: E402  (projects/ZS3Net/train_net.py)
from zs3net import add_zs3net_config, select_pseudo_labels  # noqa: E402

sys.path.remove(PROJECT)
ZS3NET = os.path.join(PROJECT, "configs/zs_shapes/zs3net.yaml")
ZS3NET_ST = os.path.join(PROJECT, "configs/zs_shapes/zs3net_st.yaml")
TEST = ["DATASETS.TEST", "('zs_shapes_tiny_val_panoptic',)"]
POOL = ["MODEL.ZS3NET.SELF_TRAINING.DATASETS", "('zs_shapes_tiny_unlabelled',)"]


def _run(config, *opts):
    status, out, err = run_in_process(zs3net_train_net.invoke_main, ["--config-file", config, *TINY, *TEST, *opts])
    return status, out + err


def test_pseudo_labels_are_the_most_confident_pixels_of_each_unseen_class():
    probs = torch.tensor([  # 3 classes (class 2 unseen), 1 x 5 pixels
        [[0.8, 0.1, 0.1, 0.2, 0.1]],
        [[0.1, 0.1, 0.2, 0.2, 0.1]],
        [[0.1, 0.8, 0.7, 0.6, 0.8]],
    ])
    labels = select_pseudo_labels(probs, torch.tensor([2]), top_percent=50.0)
    # 4 pixels predict class 2; the most confident half (0.8, 0.8) keep it; seen pixels are never labelled
    assert labels.tolist() == [[IGNORE, 2, IGNORE, IGNORE, 2]]
    assert (select_pseudo_labels(probs, torch.tensor([2]), 100.0) == 2).sum() == 4


def test_project_configs_build_and_run_forward():
    """Every shipped config (zs_shapes and the GPU ones, on the tiny preset's classes) builds and runs one forward."""
    configs = glob.glob(os.path.join(PROJECT, "configs", "**", "*.yaml"), recursive=True)
    assert ZS3NET in configs and len(configs) > 2
    for config in configs:
        cfg = get_zsi_d2_cfg()
        add_zs3net_config(cfg)
        cfg.merge_from_file(config)
        cfg.merge_from_list([*TINY, *TEST, "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"])
        model = build_model(cfg).eval()
        with torch.no_grad():
            out = model([{"image": torch.randint(0, 255, (3, 64, 80)).float(), "height": 64, "width": 80}])
        assert type(model).__name__ == "ZS3Net" and out[0]["sem_seg"].shape[1:] == (64, 80)


@pytest.fixture(scope="module")
def zs3net(pixel_stage2):
    """A trained ZS3Net: the pixel second stage's checkpoint (ZS3Net is that stage with GMMN)."""
    return pixel_stage2[0] / "model_final.pth"


def test_self_training_adds_pseudo_labelled_unlabelled_images(zs3net, tmp_path):
    """A teacher made to predict the first unseen class everywhere: the pool's images join the bank
    with that class's top pixels, and stage 2 trains and is scored (the run is marked transductive)."""
    state = torch.load(zs3net, map_location="cpu", weights_only=False)
    cfg = get_zsi_d2_cfg()
    add_zs3net_config(cfg)
    cfg.merge_from_file(ZS3NET)
    cfg.merge_from_list([*TINY, *TEST])
    model = build_model(cfg)
    first_unseen = model.stage2_class_set.group_indices[1][0]
    state["model"]["classifier.conv.bias"][first_unseen] = 50.0
    torch.save(state, tmp_path / "teacher.pth")
    status, log = _run(ZS3NET_ST, *POOL, "MODEL.WEIGHTS", str(tmp_path / "teacher.pth"), "SOLVER.MAX_ITER", "3",
                       "OUTPUT_DIR", str(tmp_path / "st"))
    assert status == 0, log[-3000:]
    assert "Self-training (transductive): 24 unlabelled images beside 48 training images" in log
    name = model.stage2_class_set.names[first_unseen]
    counts = log.split("Self-training pseudo-labels on 24 unlabelled images (rows per unseen class): ")[1].split("\n")[0]
    assert f"'{name}': {24 * 16}" in counts  # 16 rows (PIXELS_PER_CLASS) of it in each of the 24 images
    assert (tmp_path / "st" / "zero_shot_results.json").is_file()


def test_self_training_reads_images_only_and_needs_a_trained_zs3net(pixel_stage1, zs3net, tmp_path):
    status, log = _run(ZS3NET_ST, "MODEL.ZS3NET.SELF_TRAINING.DATASETS", "('zs_shapes_tiny_val_panoptic',)",
                       "MODEL.WEIGHTS", str(zs3net), "OUTPUT_DIR", str(tmp_path / "a"))
    assert status == 2 and "ERROR: Self-training dataset 'zs_shapes_tiny_val_panoptic' carries labels" in log
    status, log = _run(ZS3NET_ST, *POOL, "MODEL.WEIGHTS", str(pixel_stage1), "OUTPUT_DIR", str(tmp_path / "b"))
    assert status == 2 and "has no classifier over the 22 seen + unseen classes" in log
    assert issubclass(LeakageError, InputError) and issubclass(CheckpointMismatchError, InputError)
