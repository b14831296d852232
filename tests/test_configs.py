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
