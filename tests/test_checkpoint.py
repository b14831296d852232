"""Checkpoints load only what fits: fine-tuning from closed-set detectron2 checkpoints (class-agnostic
weights load, class-count layers start fresh and are logged), evaluation refuses any missing or
mis-shaped parameter, unfair starting points and unreadable files are one clear error."""
import logging

import pytest
import torch

from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

from conftest import tiny_cfg
from zsi_d2.engine import ZeroShotCheckpointer
from zsi_d2.errors import CheckpointMismatchError, InputError

ZSI = "configs/zsi/zs_shapes/zsi_mask_rcnn.yaml"
BASELINE = "configs/zs_shapes/projection_mask_rcnn.yaml"


def _closed_set_checkpoint(tmp_path, *opts, num_classes=5):
    """A standard detectron2 Mask R-CNN (class-specific heads) on the same backbone."""
    cfg = tiny_cfg(
        "MODEL.EFFICIENTNET.WEIGHTS", "",
        "MODEL.META_ARCHITECTURE", "GeneralizedRCNN",
        "MODEL.ROI_HEADS.NAME", "StandardROIHeads",
        "MODEL.ROI_HEADS.NUM_CLASSES", str(num_classes),
        "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "False",
        "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", "False",
        *opts,
    )
    torch.manual_seed(123)
    model = build_model(cfg)
    path = tmp_path / "closed_set.pth"
    torch.save({"model": model.state_dict()}, path)
    return model.state_dict(), str(path)


def _zero_shot(tmp_path, *opts, config=BASELINE, name="zero_shot"):
    """A zsi_d2 checkpoint saved the way train_net saves one (with its summary)."""
    cfg = tiny_cfg("MODEL.EFFICIENTNET.WEIGHTS", "", *opts, config=config)
    torch.manual_seed(7)
    model = build_model(cfg)
    ZeroShotCheckpointer.from_config(cfg, model, str(tmp_path), purpose="train").save(name)
    return model, str(tmp_path / f"{name}.pth")


def _checkpointer(purpose, *opts, config=BASELINE):
    cfg = tiny_cfg("MODEL.EFFICIENTNET.WEIGHTS", "", *opts, config=config)
    torch.manual_seed(0)
    model = build_model(cfg)
    return model, ZeroShotCheckpointer.from_config(cfg, model, purpose=purpose)


@pytest.mark.parametrize("config", [BASELINE, ZSI])
def test_class_agnostic_weights_load_and_class_specific_start_fresh(tmp_path, caplog, config):
    source, path = _closed_set_checkpoint(tmp_path)
    model, checkpointer = _checkpointer("train", config=config)
    with caplog.at_level(logging.INFO, logger="zsi_d2.engine.checkpoint"):
        checkpointer.load(path)
    state = model.state_dict()
    for key in ("backbone.fpn_lateral3.weight", "backbone.bottom_up.body.blocks.3.0.conv_pw.weight",
                "proposal_generator.rpn_head.conv.weight", "roi_heads.box_head.fc1.weight"):
        torch.testing.assert_close(state[key], source[key])
    assert state["roi_heads.box_predictor.bbox_pred.weight"].shape[0] == 4  # class-agnostic, fresh
    assert "Created fresh" in caplog.text and "roi_heads.box_predictor" in caplog.text


def test_architecture_mismatch_names_the_parameter(tmp_path):
    _, path = _closed_set_checkpoint(tmp_path, "MODEL.FPN.OUT_CHANNELS", "64")
    _, checkpointer = _checkpointer("train")
    with pytest.raises(CheckpointMismatchError, match="backbone.fpn_"):
        checkpointer.load(path)


def test_training_start_refuses_a_projection_of_another_embedding_size(tmp_path):
    """The projection and the background depend on the embedding, not on the class count: a
    mismatch there is an error even under roi_heads.box_predictor."""
    _, path = _zero_shot(tmp_path)
    state = torch.load(path, weights_only=True)
    for key in ("roi_heads.box_predictor.cls_score.project.weight", "roi_heads.box_predictor.cls_score.project.bias"):
        state["model"][key] = torch.cat([state["model"][key], state["model"][key][:1]])
    torch.save(state, path)
    _, checkpointer = _checkpointer("train")
    with pytest.raises(CheckpointMismatchError, match="cls_score.project.weight"):
        checkpointer.load(path)


def test_evaluation_loads_its_own_checkpoint_exactly(tmp_path):
    source, path = _zero_shot(tmp_path)
    model, checkpointer = _checkpointer("eval")
    checkpointer.load(path)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_evaluation_refuses_missing_parameters_and_says_what_the_checkpoint_is(tmp_path):
    """A baseline checkpoint evaluated with the ZSI config: BA-RPN and the SMH would be random."""
    _, path = _zero_shot(tmp_path)
    _, checkpointer = _checkpointer("eval", config=ZSI)
    with pytest.raises(CheckpointMismatchError) as err:
        checkpointer.load(path)
    message = str(err.value)
    assert "missing" in message and "proposal_generator.rpn_head.background" in message
    assert "meta_architecture=ZeroShotRCNN" in message and "rpn_head=StandardRPNHead" in message


def test_evaluation_refuses_a_projection_of_another_size(tmp_path):
    """Another embedding dimension: fvcore alone would skip the projection with a warning."""
    _, path = _zero_shot(tmp_path, "MODEL.ZERO_SHOT.EMBEDDING.SOURCE", "minilm")
    _, checkpointer = _checkpointer("eval")  # attributes embeddings: another D
    with pytest.raises(CheckpointMismatchError, match=r"cls_score.project.weight: checkpoint \(384, "):
        checkpointer.load(path)


def test_evaluation_counts_frozen_bn_statistics_the_checkpoint_lacks(tmp_path):
    """detectron2's FrozenBatchNorm2d (the R-50/R-101 backbones' norm) fills absent running
    statistics with zeros and ones, silently, when the state dict has no version metadata (a plain
    dict, as converters write): they still count as missing."""
    from detectron2.layers import FrozenBatchNorm2d

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), FrozenBatchNorm2d(4))
    state = {k: v for k, v in model.state_dict().items() if k != "1.running_var"}
    torch.save({"model": state}, tmp_path / "no_stats.pth")
    with pytest.raises(CheckpointMismatchError, match=r"missing from the checkpoint \(1\): 1.running_var"):
        ZeroShotCheckpointer(model, purpose="eval").load(str(tmp_path / "no_stats.pth"))


def test_a_bare_backbone_state_dict_is_refused_for_training_and_evaluation(tmp_path):
    import torchvision

    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    for purpose, expected in (("train", "matches no parameter"), ("eval", "does not fit")):
        _, checkpointer = _checkpointer(purpose)
        with pytest.raises(CheckpointMismatchError, match=expected) as err:
            checkpointer.load(str(path))
        assert "not a detectron2 model" in str(err.value)


def test_a_closed_set_checkpoint_over_the_unseen_classes_is_refused_unless_allowed(tmp_path, caplog):
    all_things = len(MetadataCatalog.get("zs_shapes_tiny_train").thing_classes)  # seen + unseen
    _, path = _closed_set_checkpoint(tmp_path, num_classes=all_things)
    _, checkpointer = _checkpointer("train")
    with pytest.raises(CheckpointMismatchError, match=f"covers {all_things} classes.*ALLOW_UNSEEN_IN_WEIGHTS"):
        checkpointer.load(path)
    model, checkpointer = _checkpointer("train", "MODEL.ZERO_SHOT.ALLOW_UNSEEN_IN_WEIGHTS", "True")
    with caplog.at_level(logging.WARNING, logger="zsi_d2.engine.checkpoint"):
        checkpointer.load(path)
    assert "NOT zero-shot results" in caplog.text


def test_a_zsi_d2_checkpoint_trained_on_unseen_classes_is_refused(tmp_path):
    """Its saved training classes include an unseen one (here: trained on the GZSI val set)."""
    _, path = _zero_shot(tmp_path, "DATASETS.TRAIN", "('zs_shapes_tiny_val',)")
    _, checkpointer = _checkpointer("train")
    with pytest.raises(CheckpointMismatchError, match="trained on unseen classes.*red circle"):
        checkpointer.load(path)


@pytest.mark.parametrize("content", [b"\x80\x02garbage" * 50, b""])
def test_an_unreadable_file_is_one_clear_error(tmp_path, content):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    _, checkpointer = _checkpointer("eval")
    with pytest.raises(InputError, match="broken.pth' is not a readable checkpoint") as err:
        checkpointer.load(str(path))
    assert "\n" not in str(err.value)


def test_a_file_without_parameters_is_one_clear_error(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    _, checkpointer = _checkpointer("eval")
    with pytest.raises(InputError, match="holds no model parameters"):
        checkpointer.load(str(path))
