"""The pixel-level generative second stage (PixelGenerativeSegmentor, ZS3Net's recipe): the pixel
bank, the frozen stage 1, the classifier re-trained over seen + unseen classes, and its checks."""
import pytest
import torch

from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from test_semantic_model import semantic_cfg
from zsi_d2.data.mappers import build_dataset_mapper
from zsi_d2.errors import CheckpointMismatchError, InputValueError
from zsi_d2.modeling import use_class_set
from zsi_d2.modeling.generative import IGNORE
from zsi_d2.modeling.semantic import compute_pixel_bank
from zsi_d2.modeling.semantic.generative import at_most_per_class

STAGE1 = "configs/semantic/zs_shapes/deeplab_seen.yaml"
STAGE2 = "configs/semantic/zs_shapes/gmmn_stage2.yaml"


def test_at_most_k_of_each_class():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 0, 1, 2, 2, 2, 2])
    kept = at_most_per_class(labels, 2)
    assert sorted(labels[kept].tolist()) == [0, 0, 1, 1, 2, 2] and len(set(kept.tolist())) == 6
    assert sorted(labels[at_most_per_class(labels, 10)].tolist()) == sorted(labels.tolist())


def test_the_bank_samples_each_labelled_class_at_the_feature_resolution():
    cfg = semantic_cfg(config=STAGE1)
    model = build_model(cfg)
    dicts = DatasetCatalog.get("zs_shapes_tiny_train_panoptic")[:3]
    mapper = build_dataset_mapper(cfg, is_train=False)
    with use_class_set(model, "zs_shapes_tiny_train_panoptic"):
        bank = compute_pixel_bank(model, dicts, mapper, per_class=5, batch_size=2)
    assert bank.names == model.training_class_set.names and len(bank) == 3
    batch = [mapper(dict(d)) for d in dicts]
    model.eval()
    with torch.no_grad(), use_class_set(model, "zs_shapes_tiny_train_panoptic"):
        images = model.preprocess_image(batch)
        features = model.pixel_features(images.tensor)
        targets = model.prepare_targets(batch, images)
    for i in range(3):
        small = torch.nn.functional.interpolate(targets[i][None, None].float(), size=features.shape[-2:],
                                                mode="nearest")[0, 0].long()
        present = sorted(set(small[small != 255].tolist()))
        labels = bank.labels[i][bank.labels[i] != IGNORE]
        assert sorted(set(labels.tolist())) == present and len(labels) == 5 * len(present)
        columns = features[i].flatten(1).t()  # every bank row is the feature of a pixel of its class
        for row, label in zip(bank.features[i][: len(labels)], labels):
            match = (columns - row).abs().amax(1) < 1e-5
            assert match.any() and (small.flatten()[match] == label).all()


def test_stage2_freezes_stage1_and_retrains_the_classifier_over_seen_and_unseen(pixel_stage1, pixel_stage2):
    out, log = pixel_stage2
    assert "Stage 2 starts its classifier over 22 classes from random filters" in log
    before = torch.load(pixel_stage1, map_location="cpu", weights_only=False)["model"]
    after = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    frozen = [k for k in before if k.startswith(("backbone.", "head."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert after["classifier.conv.weight"].shape[0] == 22 > before["classifier.conv.weight"].shape[0]
    assert "mIoU/unseen" in (out / "zero_shot_results.json").read_text()


def test_stage2_refuses_a_missing_or_foreign_starting_checkpoint(pixel_stage1, tmp_path):
    cfg = semantic_cfg("MODEL.META_ARCHITECTURE", "PixelGenerativeSegmentor", "MODEL.WEIGHTS", "", config=STAGE2)
    model = build_model(cfg)
    with pytest.raises(InputValueError, match="needs a stage-1 checkpoint: MODEL.WEIGHTS is empty"):
        model.check_starting_weights(cfg)
    state = torch.load(pixel_stage1, map_location="cpu", weights_only=False)
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("head.")}
    torch.save(state, tmp_path / "no_head.pth")
    cfg.MODEL.WEIGHTS = str(tmp_path / "no_head.pth")
    with pytest.raises(CheckpointMismatchError, match="not a stage-1 checkpoint of this backbone and head"):
        model.check_starting_weights(cfg)
