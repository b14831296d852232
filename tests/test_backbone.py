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
    assert not any(p.requires_grad for p in backbone.body.bn1.parameters())


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="MODEL.EFFICIENTNET.WEIGHTS"):
        EfficientNetLite(weights=str(tmp_path / "nope.pth"))


def test_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="stage9"):
        EfficientNetLite(weights="", out_features=("stage9",))
