"""Calibrated stacking: gamma off the seen logits at test time, chosen on held-out seen-only images."""
import copy
import json

import pytest
import torch
import torch.nn.functional as F

from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model
from detectron2.structures import BoxMode, Boxes, pairwise_iou

from conftest import tiny_cfg
from zsi_d2.engine.calibration import CALIBRATION_FILE, calibrate_for_test, choose_calibration
from zsi_d2.errors import InputValueError, LeakageError
from zsi_d2.modeling import use_class_set
from zsi_d2.modeling.calibration import choose_gamma, gamma_grid, set_calibration_gamma

ZSI_CONFIG = "configs/zsi/zs_shapes/zsi_mask_rcnn.yaml"
CALIB = "zs_shapes_tiny_calib"


def _cfg(*opts, config="configs/zs_shapes/projection_mask_rcnn.yaml"):
    cfg = tiny_cfg("MODEL.EFFICIENTNET.WEIGHTS", "", *opts, config=config)
    cfg.freeze()
    return cfg


def test_choose_gamma_takes_the_last_gamma_before_the_share_first_exceeds_the_target():
    shares = {0.0: 0.01, 0.5: 0.03, 1.0: 0.05, 1.5: 0.2, 2.0: 0.04, 2.5: 0.9}
    assert choose_gamma(shares, 0.05) == 1.0  # 2.0 is under the target again, but after a breach
    assert choose_gamma(shares, 0.0) == 0.0  # even gamma 0 breaches: the smallest gamma
    assert choose_gamma({1.0: 0.0, 0.0: 0.0, 0.5: 0.0}, 0.05) == 1.0  # order of the mapping is irrelevant
    assert gamma_grid(1.0, 0.25) == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(InputValueError, match="TARGET_RATE"):
        choose_gamma(shares, 1.5)


@pytest.mark.parametrize("config", ["configs/zs_shapes/projection_mask_rcnn.yaml", ZSI_CONFIG])
def test_gamma_comes_off_the_seen_logits_only_and_only_at_test_time(config):
    torch.manual_seed(0)
    model = build_model(_cfg(config=config))
    predictor = model.roi_heads.box_predictor
    x = torch.randn(5, predictor.cls_score.project.in_features)
    proposals = [type("P", (), {"__len__": lambda self: 5})()]
    with use_class_set(model, "zs_shapes_tiny_val") as class_set:
        model.eval()
        logits, deltas = predictor(x)
        plain = predictor.predict_probs((logits, deltas), proposals)[0]
        set_calibration_gamma(model, 2.0)
        calibrated = predictor.predict_probs((logits, deltas), proposals)[0]
        seen = torch.tensor([n not in class_set.unseen for n in class_set.names] + [False], dtype=torch.float)
        torch.testing.assert_close(calibrated, F.softmax(logits - 2.0 * seen, dim=1))
        assert not torch.allclose(calibrated, plain)
        model.train()
        torch.testing.assert_close(predictor.predict_probs((logits, deltas), proposals)[0], plain)


def _share_by_full_inference(cfg, model, gamma, match_iou):
    """The rule recomputed through the model's ordinary forward (no caching, dataset class ids)."""
    mapper = DatasetMapper(cfg, is_train=False)
    set_calibration_gamma(model, gamma)
    matched = wrong = 0
    with torch.no_grad(), use_class_set(model, CALIB, mode="gzsi") as class_set:
        model.eval()
        unseen_ids = {class_set.dataset_classes.index(n) for n in class_set.unseen}
        for d in DatasetCatalog.get(CALIB):
            out = model([mapper(copy.deepcopy(d))])[0]["instances"]
            gt = Boxes(torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                                     for a in d["annotations"]]).reshape(-1, 4))
            if len(gt) == 0 or len(out) == 0:
                continue
            iou = pairwise_iou(gt, out.pred_boxes)
            for row in iou:
                candidates = (row >= match_iou).nonzero().flatten()
                if len(candidates):
                    matched += 1
                    best = candidates[out.scores[candidates].argmax()]
                    wrong += int(out.pred_classes[best].item() in unseen_ids)
    return wrong / matched


@pytest.mark.parametrize("config", ["configs/zs_shapes/projection_mask_rcnn.yaml", ZSI_CONFIG])
def test_chosen_gamma_matches_the_rule_through_ordinary_inference(config, tmp_path):
    """The cached search must label the held-out objects exactly as the model's own inference does
    with that gamma; the chosen gamma obeys the target; the file records it."""
    cfg = _cfg("MODEL.ZERO_SHOT.CALIBRATION.DATASETS", f"('{CALIB}',)", "MODEL.ZERO_SHOT.CALIBRATION.MATCH_IOU", "0.1",
               "MODEL.ZERO_SHOT.CALIBRATION.TARGET_RATE", "0.3", "MODEL.ZERO_SHOT.CALIBRATION.SEARCH_MAX", "3.0",
               "MODEL.ZERO_SHOT.CALIBRATION.SEARCH_STEP", "0.5", "OUTPUT_DIR", str(tmp_path),
               "MODEL.MASK_ON", "False", config=config)  # boxes decide the labels; masks only cost time
    torch.manual_seed(0)
    model = build_model(cfg)
    set_calibration_gamma(model, 2.5)  # a configured gamma: the search must neither use nor need it
    result = calibrate_for_test(cfg, model)
    shares = {float(g): s for g, s in result["shares"].items()}
    assert len({round(s, 6) for s in shares.values()}) > 1, "the untrained model's shares should move with gamma"
    assert result["share_at_gamma"] <= 0.3 and result["gamma"] == choose_gamma(shares, 0.3)
    assert model.roi_heads.box_predictor.calibration_gamma == result["gamma"]
    assert json.load(open(tmp_path / CALIBRATION_FILE))["gamma"] == result["gamma"]
    for gamma in (0.0, 2.0):
        assert _share_by_full_inference(cfg, model, gamma, 0.1) == pytest.approx(shares[gamma]), gamma


def test_calibration_refuses_unseen_labels_and_training_images():
    model = build_model(_cfg())
    leaky = _cfg("MODEL.ZERO_SHOT.CALIBRATION.DATASETS", "('zs_shapes_tiny_val',)")
    with pytest.raises(LeakageError, match="zs_shapes_tiny_val.*unseen"):
        choose_calibration(leaky, model)
    trained_on = _cfg("MODEL.ZERO_SHOT.CALIBRATION.DATASETS", "('zs_shapes_tiny_train',)")
    with pytest.raises(InputValueError, match="shares .* images with DATASETS.TRAIN"):
        choose_calibration(trained_on, model)


def test_fixed_gamma_from_the_config_and_bad_gamma():
    model = build_model(_cfg("MODEL.ZERO_SHOT.CALIBRATION.GAMMA", "1.25"))
    assert model.roi_heads.box_predictor.calibration_gamma == 1.25
    with pytest.raises(InputValueError, match="GAMMA must be >= 0"):
        set_calibration_gamma(model, -1.0)


def test_holdout_split_partitions_a_training_set_deterministically():
    from zsi_d2.data.holdout import is_held_out, register_holdout_split

    fit, held = register_holdout_split("zs_shapes_tiny_train", fraction=0.25, seed=3)
    all_files = [d["file_name"] for d in DatasetCatalog.get("zs_shapes_tiny_train")]
    fit_files = [d["file_name"] for d in DatasetCatalog.get(fit)]
    held_files = [d["file_name"] for d in DatasetCatalog.get(held)]
    assert sorted(fit_files + held_files) == sorted(all_files) and not set(fit_files) & set(held_files)
    assert 0 < len(held_files) < len(all_files) / 2
    assert held_files == [f for f in all_files if is_held_out(f, 0.25, seed=3)]
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(held)
    assert meta.seen_classes == MetadataCatalog.get("zs_shapes_tiny_train").seen_classes
    assert meta.get("json_file") is None, "a held-out part must not point evaluators at the whole json"
    # Trained on the fit part, calibrated on the held-out part: accepted; on the fit part: refused.
    model = build_model(_cfg())
    ok = _cfg("DATASETS.TRAIN", f"('{fit}',)", "MODEL.ZERO_SHOT.CALIBRATION.DATASETS", f"('{held}',)")
    from zsi_d2.engine.calibration import _check_held_out

    _check_held_out(ok, [held])
    bad = _cfg("DATASETS.TRAIN", f"('{fit}',)", "MODEL.ZERO_SHOT.CALIBRATION.DATASETS", f"('{fit}',)")
    with pytest.raises(InputValueError, match="shares"):
        choose_calibration(bad, model)


def test_no_matched_held_out_object_is_a_clear_error_not_a_gamma():
    cfg = _cfg("MODEL.ZERO_SHOT.CALIBRATION.DATASETS", f"('{CALIB}',)", "MODEL.ZERO_SHOT.CALIBRATION.MATCH_IOU", "1.01",
               "MODEL.ZERO_SHOT.CALIBRATION.SEARCH_MAX", "0.5", "MODEL.MASK_ON", "False")
    with pytest.raises(InputValueError, match="no ground-truth object was matched"):
        choose_calibration(cfg, build_model(cfg))


def test_seen_mask_follows_the_class_set_in_either_mixin_order():
    """SeenCalibrated and ZeroShotModule cooperate: a head listing them in either order gets the
    names and the seen mask (the set's seen classes, then the background column, not lowered)."""
    from torch import nn

    from zsi_d2.modeling.calibration import SeenCalibrated
    from zsi_d2.modeling.class_set import ClassSet, ZeroShotModule

    class_set = ClassSet(names=("a", "b", "c"), dataset_classes=("a", "b", "c"), unseen=("b",))
    for bases in ((nn.Module, SeenCalibrated, ZeroShotModule), (nn.Module, ZeroShotModule, SeenCalibrated)):
        head = type("Head", bases, {"set_class_names": lambda self, names: setattr(self, "names", names)})()
        head.set_class_set(class_set)
        assert head.names == ("a", "b", "c")
        assert head.calibration_seen.tolist() == [True, False, True, False]
