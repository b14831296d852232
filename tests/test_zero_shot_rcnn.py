"""The projection baseline as a detectron2 model: losses, gradients, class sets, checkpoints."""
import copy

import pytest
import torch

from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from conftest import assert_checkpoint_round_trip, assert_class_set_follows_dataset, tiny_cfg


@pytest.fixture(scope="module")
def cfg():
    c = tiny_cfg("MODEL.EFFICIENTNET.WEIGHTS", "")
    c.freeze()
    return c


@pytest.fixture(scope="module")
def batch(cfg):
    dicts = DatasetCatalog.get("zs_shapes_tiny_train")[:2]
    mapper = DatasetMapper(cfg, is_train=True)
    return [mapper(copy.deepcopy(d)) for d in dicts]


def test_training_losses_and_gradients(cfg, batch):
    torch.manual_seed(0)
    model = build_model(cfg).train()
    with EventStorage():
        losses = model(batch)
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"}
    sum(losses.values()).backward()
    classifier = model.roi_heads.box_predictor.cls_score
    assert classifier.project.weight.grad.abs().sum() > 0
    assert classifier.classes.background.grad.abs().sum() > 0
    seen = MetadataCatalog.get("zs_shapes_tiny_train").seen_classes
    assert set(classifier.active_names) == {c for c in seen if c in MetadataCatalog.get("zs_shapes_tiny_train").thing_classes}


def test_test_time_class_set_follows_the_dataset(cfg, batch):
    assert_class_set_follows_dataset(cfg, batch)


def test_checkpoint_round_trip_gives_identical_outputs(cfg, batch, tmp_path):
    assert_checkpoint_round_trip(cfg, batch, tmp_path)


def test_class_specific_box_regression_is_refused(cfg):
    bad = cfg.clone()
    bad.defrost()
    bad.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = False
    with pytest.raises(ValueError, match="CLS_AGNOSTIC_BBOX_REG"):
        build_model(bad)


def test_class_specific_masks_are_refused(cfg):
    bad = cfg.clone()
    bad.defrost()
    bad.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK = False
    with pytest.raises(ValueError, match="CLS_AGNOSTIC_MASK"):
        build_model(bad)
