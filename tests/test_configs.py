"""Every shipped config builds its model and runs one forward pass on a tiny input (CPU)."""
import glob
import os

import pytest
import torch

from detectron2.modeling import build_model

from conftest import REPO_ROOT, tiny_cfg

CONFIGS = sorted(
    os.path.relpath(p, REPO_ROOT)
    for p in glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.yaml"), recursive=True)
    if not os.path.basename(p).startswith("Base-")
)


def test_there_are_configs():
    assert CONFIGS, "no configs found"


@pytest.mark.parametrize("config", CONFIGS)
def test_config_builds_and_runs_forward(config):
    # Dataset names are swapped for the tiny zs_shapes preset: only the architecture is under test.
    cfg = tiny_cfg("MODEL.DEVICE", "cpu", "MODEL.ZERO_SHOT.EMBEDDING.DIM", "0",
                   "MODEL.ZERO_SHOT.EMBEDDING.PATH", "", config=config)
    cfg.MODEL.WEIGHTS = ""
    for key in ("EFFICIENTNET",):
        if key in cfg.MODEL:
            cfg.MODEL[key].WEIGHTS = ""
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model([{"image": torch.randint(0, 255, (3, 64, 80), dtype=torch.uint8).float(), "height": 64, "width": 80}])
    assert len(out) == 1 and "instances" in out[0]
    instances = out[0]["instances"]
    assert instances.image_size == (64, 80)
    assert instances.has("pred_masks") == cfg.MODEL.MASK_ON


@pytest.mark.parametrize("config", CONFIGS)
def test_config_names_registered_datasets(config):
    from detectron2.data import DatasetCatalog

    from zsi_d2.config import get_zsi_d2_cfg

    cfg = get_zsi_d2_cfg()
    cfg.merge_from_file(os.path.join(REPO_ROOT, config))
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    assert names and set(names) <= set(DatasetCatalog.list()), f"unregistered: {set(names) - set(DatasetCatalog.list())}"


@pytest.mark.parametrize("split, lr, warmup", [("48_17", 0.01, 500), ("65_15", 0.0075, 7000)])
def test_coco_zsi_configs_follow_the_reference_schedule(split, lr, warmup):
    """The reference ZSI configs per split (../shared/reference, section 2, and the issue's review)."""
    from zsi_d2.config import get_zsi_d2_cfg

    for name in ("zsi_mask_rcnn_R_101_FPN_1x", "zsd_faster_rcnn_R_101_FPN_1x", "zsi_mask_rcnn_R_101_FPN_1x_reference_protocol"):
        cfg = get_zsi_d2_cfg()
        cfg.merge_from_file(os.path.join(REPO_ROOT, f"configs/zsi/coco_{split}/{name}.yaml"))
        assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.IMS_PER_BATCH) == (lr, warmup, 8)
        assert abs(cfg.SOLVER.WARMUP_FACTOR - 1 / 3) < 1e-9
        clip = cfg.SOLVER.CLIP_GRADIENTS
        assert (clip.ENABLED, clip.CLIP_TYPE, clip.CLIP_VALUE, clip.NORM_TYPE) == (True, "full_model", 35.0, 2.0)
        assert cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN == 2000 and cfg.MODEL.ZSI.GZSI_PER_GROUP_NMS
        expected = "seen_projection" if name.endswith("reference_protocol") else "direct"
        assert cfg.MODEL.ZSI.UNSEEN_SCORING == expected


def test_each_coco_split_names_its_own_word_vector_file():
    from zsi_d2.config import get_zsi_d2_cfg

    paths = {}
    for split in ("48_17", "65_15"):
        cfg = get_zsi_d2_cfg()
        cfg.merge_from_file(os.path.join(REPO_ROOT, f"configs/zsi/coco_{split}/zsi_mask_rcnn_R_101_FPN_1x.yaml"))
        assert cfg.MODEL.ZERO_SHOT.EMBEDDING.SOURCE == "word_vectors" and cfg.MODEL.ZERO_SHOT.EMBEDDING.DIM == 300
        paths[split] = cfg.MODEL.ZERO_SHOT.EMBEDDING.PATH
    assert paths == {s: f"datasets/embeddings/word_w2v_withbg_{s}.txt" for s in paths}
