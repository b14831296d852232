"""projects/SIGN: the positional encoding (a hand case; one code for one relative place at two map
sizes), the annealed self-training weights by hand, the spatial branch in CaGNet's phases, and the
phases end to end through its train_net.py on zs_shapes tiny."""
import glob
import math
import os
import sys

import pytest
import torch

from detectron2.modeling import build_model

from conftest import PIXEL_TINY_OPTS as TINY
from conftest import CAGNET_TINY_OPTS, REPO_ROOT, project_train_net, run_in_process
from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.errors import InputValueError
from zsi_d2.modeling.semantic import labels_at

PROJECT = os.path.join(REPO_ROOT, "projects", "SIGN")
sys.path.insert(0, PROJECT)
from sign import add_sign_config, annealed_weights, positional_encoding_2d  # noqa: E402

sys.path.remove(PROJECT)
sign_train_net = project_train_net("SIGN")

CONFIGS = os.path.join(PROJECT, "configs", "zs_shapes")
TEST = ["DATASETS.TEST", "('zs_shapes_tiny_val_panoptic',)"]
SMALL = CAGNET_TINY_OPTS


def _cfg(config="sign_train.yaml", *opts):
    cfg = get_zsi_d2_cfg()
    add_sign_config(cfg)
    cfg.merge_from_file(os.path.join(CONFIGS, config))
    cfg.merge_from_list([*TINY, *TEST, *SMALL, *opts])
    return cfg


def test_positional_encoding_by_hand():
    code = positional_encoding_2d(8, 3, 5, length=512)
    assert code.shape == (8, 3, 5)
    # column 0 / row 0 sit at position 0: sin 0 = 0, cos 0 = 1; the last column at 511
    assert torch.equal(code[0:4:2, :, 0], torch.zeros(2, 3)) and torch.equal(code[1:4:2, :, 0], torch.ones(2, 3))
    assert code[0, 1, 4].item() == pytest.approx(math.sin(511.0))  # channel 0: frequency 1
    assert code[2, 0, 4].item() == pytest.approx(math.sin(511.0 * 10000 ** (-2 / 4)), abs=1e-5)
    assert code[4, 2, 3].item() == pytest.approx(math.sin(511.0), abs=1e-5)  # channel 4: the row (the last)
    assert torch.equal(code[:4, 0], code[:4, 2]) and torch.equal(code[4:, :, 0], code[4:, :, 4])  # one axis each
    with pytest.raises(InputValueError, match="multiple of 4 channels"):
        positional_encoding_2d(6, 3, 5)


def test_positional_encoding_is_the_same_at_two_map_sizes():
    """The same relative place in a 9 x 9 and a 17 x 17 map (every second pixel of the larger) gets the same code."""
    small, large = positional_encoding_2d(16, 9, 9), positional_encoding_2d(16, 17, 17)
    torch.testing.assert_close(small, large[:, ::2, ::2])
    assert not torch.allclose(small, large[:, :9, :9])


def test_annealed_weights_by_hand():
    confidence = torch.tensor([[[0.9, 0.5, 0.7, 0.2]]])
    pseudo = torch.tensor([[[True, True, False, False]]])
    labelled = torch.tensor([[[False, False, True, False]]])
    w = annealed_weights(confidence, pseudo, labelled, temperature=1.0)
    # softmax over the 4 pixels of (0.9, 0.5, 0, 0), divided by its maximum: exp(p - 0.9); labelled: 1
    expected = [math.exp(0.0), math.exp(0.5 - 0.9), 1.0, math.exp(0.0 - 0.9)]
    torch.testing.assert_close(w, torch.tensor([[expected]]))
    hot = annealed_weights(confidence, pseudo, labelled, temperature=10.0)  # a higher temperature sharpens
    assert hot[0, 0, 1] < w[0, 0, 1] and hot[0, 0, 0] == 1.0


def test_spatial_branch_is_on_the_segmenter_side_and_frozen_when_finetuning():
    model = build_model(_cfg()).train()
    assert type(model).__name__ == "SIGN" and model.spatial in model.segmenter_parts()
    assert any(p is q for q in model.side_parameters()["segmenter"] for p in model.spatial.parameters())
    finetune = build_model(_cfg("sign.yaml")).train()
    assert not any(p.requires_grad for p in finetune.spatial.parameters())
    assert finetune.top_p == len(finetune.class_set.names)  # SIGN: the highest unseen class at every pixel


@pytest.mark.parametrize("config", sorted(os.path.relpath(p, CONFIGS) for p in glob.glob(
    os.path.join(PROJECT, "configs", "**", "*.yaml"), recursive=True)))
def test_configs_build_and_run_forward(config):
    model = build_model(_cfg(config, "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu")).eval()
    with torch.no_grad():
        out = model([{"image": torch.randint(0, 255, (3, 64, 80)).float(), "height": 64, "width": 80}])
    assert type(model).__name__ == "SIGN" and out[0]["sem_seg"].shape == (22, 64, 80)


def _run(config, out, *opts):
    status, log, err = run_in_process(sign_train_net.invoke_main, [
        "--config-file", os.path.join(CONFIGS, config), *TINY, *TEST, *SMALL, "OUTPUT_DIR", str(out), *opts])
    return status, log + err


def test_phases_end_to_end(tmp_path, pixel_stage1):
    status, log = _run("sign_train.yaml", tmp_path / "train", "SOLVER.MAX_ITER", "2", "MODEL.WEIGHTS", str(pixel_stage1))
    assert status == 0, log[-3000:]
    status, log = _run("sign.yaml", tmp_path / "ft", "MODEL.WEIGHTS", str(tmp_path / "train" / "model_final.pth"),
                       "SOLVER.MAX_ITER", "4", "MODEL.CAGNET.STEP1_ITERS", "2", "MODEL.CAGNET.STEP2_ITERS", "2")
    assert status == 0, log[-3000:]
    status, log = _run("sign_st.yaml", tmp_path / "st", "MODEL.WEIGHTS", str(tmp_path / "ft" / "model_final.pth"),
                       "SOLVER.MAX_ITER", "2", "MODEL.CAGNET.SELF_TRAINING.DATASETS", "('zs_shapes_tiny_unlabelled',)")
    assert status == 0, log[-3000:]
    assert "Self-training (transductive)" in log and (tmp_path / "st" / "zero_shot_results.json").is_file()


def test_self_training_labels_every_unlabelled_pixel_with_annealed_weights():
    """SIGN's self-training (phase self_training): every unlabelled pixel inside the image takes its
    highest unseen class; labelled pixels keep their label and weigh 1, pseudo-labelled ones at most 1."""
    from detectron2.data import DatasetCatalog
    from detectron2.utils.events import EventStorage

    from zsi_d2.data.mappers import build_dataset_mapper

    cfg = _cfg("sign_st.yaml", "MODEL.CAGNET.SELF_TRAINING.DATASETS", "('zs_shapes_tiny_unlabelled',)")
    model = build_model(cfg).train()
    mapper = build_dataset_mapper(cfg, is_train=True)
    batch = [mapper(d) for d in DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[:1]]
    batch.append(mapper(DatasetCatalog.get("zs_shapes_tiny_unlabelled")[0]))  # no label map: all unlabelled
    images = model.preprocess_image(batch)
    targets = model.prepare_targets(batch, images)
    small = labels_at(targets, (images.tensor.shape[-2] // 4, images.tensor.shape[-1] // 4))
    with EventStorage():
        labels, weights = model.pseudo_label(images, small)
    unseen = set(model._unseen.tolist())
    assert (labels[1] != 255).all() and set(labels[1].unique().tolist()) <= unseen  # the pool image: all pseudo
    labelled = small != 255
    assert torch.equal(labels[labelled], small[labelled]) and (weights[labelled] == 1).all()
    assert (weights[1] <= 1).all() and weights[1].max() == 1 and weights[1].min() < 1
