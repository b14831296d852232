"""Models work with the standard tools: deepcopy / EMA copies / pickling after a training step, and
detectron2's box-predictor contract (TRAIN_ON_PRED_BOXES), for ZSI and the projection baseline."""
import copy
import io

import pytest
import torch

from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from detectron2.utils.events import EventStorage

from conftest import tiny_cfg

ZSI_CONFIG = "configs/zsi/zs_shapes/zsi_mask_rcnn.yaml"
PROJECTION_CONFIG = "configs/zs_shapes/projection_mask_rcnn.yaml"
CONFIGS = [ZSI_CONFIG, PROJECTION_CONFIG]


def _cfg(config, *opts):
    # Score threshold 0: every image keeps detections, so comparing outputs compares something.
    cfg = tiny_cfg("MODEL.EFFICIENTNET.WEIGHTS", "", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", *opts, config=config)
    cfg.freeze()
    return cfg


def _batch(cfg):
    mapper = DatasetMapper(cfg, is_train=True)
    return [mapper(copy.deepcopy(d)) for d in DatasetCatalog.get("zs_shapes_tiny_train")[:2]]


def _losses(model, batch):
    with EventStorage():
        return model(batch)


def _step(model, batch):
    """One SGD step (small: no warm-up here, and the next forward must still detect); returns its losses."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = _losses(model, batch)
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()
    return losses


def _predict(model, batch):
    inputs = [{k: v for k, v in x.items() if k != "instances"} for x in batch]
    model.eval()
    with torch.no_grad():
        out = [o["instances"] for o in model(inputs)]
    model.train()
    assert all(len(o) > 0 for o in out)
    return out


def _assert_same_predictions(a, b):
    for x, y in zip(a, b):
        torch.testing.assert_close(x.scores, y.scores)
        torch.testing.assert_close(x.pred_boxes.tensor, y.pred_boxes.tensor)
        torch.testing.assert_close(x.pred_masks, y.pred_masks)


@pytest.mark.parametrize("config", CONFIGS)
def test_deepcopy_ema_copy_and_pickling_work_after_an_optimiser_step(config):
    cfg = _cfg(config)
    batch = _batch(cfg)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    _step(model, batch)
    ema = copy.deepcopy(model)  # what EMA / SWA wrappers do first
    before = _predict(ema, batch)
    _step(model, batch)
    _assert_same_predictions(_predict(ema, batch), before)  # the copy does not move with the model
    ema.load_state_dict(model.state_dict())  # an EMA-style update
    expected = _predict(model, batch)
    _assert_same_predictions(_predict(ema, batch), expected)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    _assert_same_predictions(_predict(torch.load(buffer, weights_only=False), batch), expected)


def test_a_copy_reads_the_background_of_its_own_ba_rpn():
    """Sync-bg is wiring to BA-RPN: a deep copy must follow the copy's BA-RPN, not the original's."""
    cfg = _cfg(ZSI_CONFIG)
    model = build_model(cfg).train()
    _step(model, _batch(cfg))
    other = copy.deepcopy(model)
    original = model.roi_heads.box_predictor.cls_score.classes.current_background().detach().clone()
    with torch.no_grad():
        other.proposal_generator.rpn_head.background.add_(1.0)
    expected = other.proposal_generator.rpn_head.background_vector()
    torch.testing.assert_close(other.roi_heads.box_predictor.cls_score.classes.current_background(), expected)
    torch.testing.assert_close(other.roi_heads.mask_head.classes.current_background(), expected)
    torch.testing.assert_close(model.roi_heads.box_predictor.cls_score.classes.current_background(), original)


@pytest.mark.parametrize("config", CONFIGS)
def test_train_on_pred_boxes_trains(config, monkeypatch):
    cfg = _cfg(config, "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES", "True")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    predictor = model.roi_heads.box_predictor
    calls = []
    original = type(predictor).predict_boxes_for_gt_classes

    def spy(self, predictions, proposals):
        calls.append(len(predictions))
        return original(self, predictions, proposals)

    monkeypatch.setattr(type(predictor), "predict_boxes_for_gt_classes", spy)
    losses = _step(model, _batch(cfg))
    assert calls == [2], "the box head must hand detectron2's (scores, deltas) to predict_boxes_for_gt_classes"
    assert all(torch.isfinite(v) for v in losses.values())
    if config == ZSI_CONFIG:
        assert "loss_box_reconstruction" in losses
        assert predictor.decoder.weight.grad.abs().sum() > 0


def test_box_reconstruction_trains_the_decoder_and_projection_not_the_box_head():
    """In the full model, the ROI heads give the reconstruction a detached box feature."""
    cfg = _cfg(ZSI_CONFIG)
    model = build_model(cfg).train()
    losses = _losses(model, _batch(cfg))
    losses["loss_box_reconstruction"].backward()
    predictor = model.roi_heads.box_predictor
    assert predictor.decoder.weight.grad.abs().sum() > 0
    assert predictor.cls_score.project.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.roi_heads.box_head.parameters())


@pytest.mark.parametrize("config", CONFIGS)
def test_predictor_training_forward_returns_detectron2s_scores_and_deltas(config):
    cfg = _cfg(config)
    model = build_model(cfg).train()
    predictor = model.roi_heads.box_predictor
    shape = model.roi_heads.box_head.output_shape
    reference = FastRCNNOutputLayers(
        shape, box2box_transform=predictor.box2box_transform, num_classes=predictor.num_classes,
        cls_agnostic_bbox_reg=True,
    ).train()
    x = torch.randn(5, shape.channels)
    out, expected = predictor(x), reference(x)
    assert type(out) is tuple and len(out) == len(expected) == 2
    assert [t.shape for t in out] == [t.shape for t in expected] == [(5, predictor.num_classes + 1), (5, 4)]
