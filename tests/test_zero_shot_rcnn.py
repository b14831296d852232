"""The projection baseline as a detectron2 model: losses, gradients, class sets, checkpoints."""
import copy

import pytest
import torch
import torch.nn.functional as F

from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from zsi_d2.modeling import use_class_set

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
    meta = MetadataCatalog.get("zs_shapes_tiny_train")
    # In order: column i of the class scores is the i-th name.
    assert classifier.active_names == tuple(c for c in meta.seen_classes if c in meta.thing_classes)


@pytest.mark.parametrize("dataset", ["zs_shapes_tiny_train", "zs_shapes_tiny_val", "zs_shapes_tiny_val_zsi"])
def test_score_columns_follow_the_dataset_class_order(cfg, dataset):
    """Column i of the class scores is the i-th class the dataset asks for (seen in training,
    every thing in GZSI, unseen in ZSI, in the split's order), and maps back to that class's id."""
    meta = MetadataCatalog.get(dataset)
    asked = {"train": meta.seen_classes, "gzsi": meta.thing_classes, "zsi": meta.unseen_classes}
    expected = tuple(c for c in asked[meta.zero_shot_mode] if c in meta.thing_classes)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    classifier = model.roi_heads.box_predictor.cls_score
    with use_class_set(model, dataset):
        assert classifier.active_names == expected
        assert model.class_set.names == expected
        dataset_ids = model.class_set.to_dataset(torch.arange(len(expected)))
        assert [meta.thing_classes[i] for i in dataset_ids.tolist()] == list(expected)
        features = torch.randn(5, classifier.project.in_features)
        with torch.no_grad():
            logits = classifier(features)
            semantic = F.normalize(classifier.project(features), dim=1)
        assert logits.shape == (5, len(expected) + 1)  # background last
        for column, name in enumerate(expected):
            vector = classifier.classes.embeddings[classifier.class_names.index(name)]
            torch.testing.assert_close(logits[:, column], classifier.log_logit_scale.exp() * semantic @ vector)


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
