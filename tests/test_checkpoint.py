"""Fine-tuning from closed-set detectron2 checkpoints: class-agnostic weights load, class-specific
layers start fresh and are named in the log, any other mismatch is a clear error."""
import logging

import pytest
import torch

from detectron2.modeling import build_model

from conftest import tiny_cfg
from zsi_d2.engine import ZeroShotCheckpointer


def _closed_set_checkpoint(tmp_path, *opts):
    """A standard detectron2 Mask R-CNN (5 classes, class-specific heads) on the same backbone."""
    cfg = tiny_cfg(
        "MODEL.EFFICIENTNET.WEIGHTS", "",
        "MODEL.META_ARCHITECTURE", "GeneralizedRCNN",
        "MODEL.ROI_HEADS.NAME", "StandardROIHeads",
        "MODEL.ROI_HEADS.NUM_CLASSES", "5",
        "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "False",
        "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", "False",
        *opts,
    )
    torch.manual_seed(123)
    model = build_model(cfg)
    path = tmp_path / "closed_set.pth"
    torch.save({"model": model.state_dict()}, path)
    return model.state_dict(), str(path)


@pytest.mark.parametrize("config", ["configs/zs_shapes/projection_mask_rcnn.yaml", "configs/zsi/zs_shapes/zsi_mask_rcnn.yaml"])
def test_class_agnostic_weights_load_and_class_specific_start_fresh(tmp_path, caplog, config):
    source, path = _closed_set_checkpoint(tmp_path)
    model = build_model(tiny_cfg("MODEL.EFFICIENTNET.WEIGHTS", "", config=config))
    with caplog.at_level(logging.INFO, logger="zsi_d2.engine.checkpoint"):
        ZeroShotCheckpointer(model).load(path)
    state = model.state_dict()
    for key in ("backbone.fpn_lateral3.weight", "backbone.bottom_up.body.blocks.3.0.conv_pw.weight",
                "proposal_generator.rpn_head.conv.weight", "roi_heads.box_head.fc1.weight"):
        torch.testing.assert_close(state[key], source[key])
    assert state["roi_heads.box_predictor.bbox_pred.weight"].shape[0] == 4  # class-agnostic, fresh
    assert "Created fresh" in caplog.text and "roi_heads.box_predictor" in caplog.text


def test_architecture_mismatch_names_the_parameter(tmp_path):
    _, path = _closed_set_checkpoint(tmp_path, "MODEL.FPN.OUT_CHANNELS", "64")
    model = build_model(tiny_cfg("MODEL.EFFICIENTNET.WEIGHTS", ""))
    with pytest.raises(ValueError, match="backbone.fpn_"):
        ZeroShotCheckpointer(model).load(path)
