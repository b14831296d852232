"""EfficientNet-Lite0 backbone: packaged ImageNet weights really load, shapes and freezing."""
import numpy as np
import pytest
import torch

from zsi_d2.modeling.backbone.efficientnet_lite import EfficientNetLite, load_efficientnet_lite0_weights


def test_imagenet_weights_classify_a_real_photo():
    timm = pytest.importorskip("timm")
    skimage_data = pytest.importorskip("skimage.data")
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    load_efficientnet_lite0_weights(model, "imagenet")
    model.eval()
    img = torch.from_numpy(skimage_data.chelsea().astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    img = torch.nn.functional.interpolate(img, size=(224, 224), mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        top5 = model((img - mean) / std).topk(5).indices[0].tolist()
    assert set(top5) & {281, 282, 283, 284, 285}, f"a cat photo classified as {top5}"


def test_output_shapes_and_strides():
    backbone = EfficientNetLite(weights="")
    out = backbone(torch.zeros(1, 3, 128, 96))
    shapes = backbone.output_shape()
    assert list(out) == ["stage2", "stage3", "stage4", "stage5"]
    for name, feat in out.items():
        assert feat.shape[1] == shapes[name].channels
        assert feat.shape[2] == 128 // shapes[name].stride and feat.shape[3] == 96 // shapes[name].stride


def test_frozen_bn_in_train_mode_equals_plain_timm_in_eval_mode():
    """Freezing must keep BN statistics and every activation (timm's BatchNormAct2d)."""
    timm = pytest.importorskip("timm")
    backbone = EfficientNetLite(weights="", norm="FrozenBN").train()
    reference = timm.create_model("efficientnet_lite0", pretrained=False, features_only=True)
    reference.load_state_dict(backbone.body.state_dict())
    reference.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = backbone(x)
        theirs = reference(x)
    for name, ref in zip(["stage1", "stage2", "stage3", "stage4", "stage5"], theirs):
        if name in ours:
            torch.testing.assert_close(ours[name], ref)


FREEZE_AT = 3  # as configs/zs_shapes/Base-ZS-Shapes.yaml: the stem and two block groups


def _in_frozen_part(name, freeze_at):
    """detectron2's FREEZE_AT: 1 = the stem, k > 1 = the stem and the first k - 1 block groups."""
    if freeze_at < 1:
        return False
    if name.split(".")[0] in ("conv_stem", "bn1"):
        return True
    return name.startswith("blocks.") and int(name.split(".")[1]) < freeze_at - 1


def _train_one_step(backbone):
    """One SGD step in train mode on every trainable parameter; returns the state before it."""
    before = {k: v.clone() for k, v in backbone.body.state_dict().items()}
    trainable = [p for p in backbone.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=1.0)
    backbone.train()
    sum(f.square().mean() for f in backbone(torch.randn(2, 3, 64, 64)).values()).backward()
    optimizer.step()
    return before


def _batchnorms(backbone):
    return [(n, m) for n, m in backbone.body.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("norm", ["FrozenBN", "BN"])
def test_frozen_part_keeps_every_weight_and_statistic(norm):
    """After a training step, every BatchNorm (FrozenBN) or every one of the frozen stages (BN) still
    has its weights and running statistics, and every parameter of the frozen stages is unchanged."""
    backbone = EfficientNetLite(weights="", norm=norm, freeze_at=FREEZE_AT)
    before = _train_one_step(backbone)
    after = backbone.body.state_dict()
    bns = _batchnorms(backbone)
    frozen_bns = [(n, m) for n, m in bns if norm == "FrozenBN" or _in_frozen_part(n, FREEZE_AT)]
    assert len(frozen_bns) > 1  # not only the stem's bn1
    if norm == "BN":  # the unfrozen ones do train: the step below can see a change
        moved = [n for n, _ in bns if not _in_frozen_part(n, FREEZE_AT) and
                 not torch.equal(after[f"{n}.running_mean"], before[f"{n}.running_mean"])]
        assert len(moved) == len(bns) - len(frozen_bns)
    for name, m in frozen_bns:
        assert not m.training, f"{name} is in train mode"
        assert not any(p.requires_grad for p in m.parameters()), f"{name} has trainable parameters"
        for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            assert torch.equal(after[f"{name}.{key}"], before[f"{name}.{key}"]), f"{name}.{key} changed"
    frozen = [k for k in after if _in_frozen_part(k, FREEZE_AT)]
    assert frozen and [k for k in frozen if not torch.equal(after[k], before[k])] == []
    assert not any(p.requires_grad for n, p in backbone.body.named_parameters() if _in_frozen_part(n, FREEZE_AT))


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="MODEL.EFFICIENTNET.WEIGHTS"):
        EfficientNetLite(weights=str(tmp_path / "nope.pth"))


def test_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="stage9"):
        EfficientNetLite(weights="", out_features=("stage9",))


def test_no_stage_past_the_deepest_output_is_built():
    """As detectron2's ResNet: a stage feeding no output would hold parameters without gradients,
    which DistributedDataParallel refuses; the outputs are those of the full network."""
    from zsi_d2.modeling.backbone.efficientnet_lite import EfficientNetLite

    full = EfficientNetLite(weights="", out_features=("stage2", "stage3", "stage4", "stage5"), freeze_at=0, norm="BN")
    part = EfficientNetLite(weights="", out_features=("stage2", "stage4"), freeze_at=0, norm="BN")
    part.load_state_dict({k: v for k, v in full.state_dict().items() if k in part.state_dict()})
    x = torch.randn(2, 3, 64, 64)
    full.eval(), part.eval()
    with torch.no_grad():
        assert torch.equal(full(x)["stage4"], part(x)["stage4"])
    assert len(part.body.blocks) < len(full.body.blocks)
    part.train()
    sum(v.sum() for v in part(x).values()).backward()
    assert [n for n, p in part.named_parameters() if p.requires_grad and p.grad is None] == []
