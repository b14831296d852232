"""Pixel decoders built from a cfg: output shapes and strides, the order of the multi-scale
features, gradients reaching every parameter; the sine position embedding and reference points."""
import math

import pytest
import torch
from detectron2.layers import ShapeSpec
from torch.nn import functional as F

from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.modeling.mask_former.config import add_mask_former_config
from zsi_d2.modeling.mask_former.pixel_decoder import (
    PIXEL_DECODER_REGISTRY,
    FPNPixelDecoder,
    MSDeformAttnEncoderOnly,
    MSDeformAttnPixelDecoder,
    build_pixel_decoder,
)
from zsi_d2.modeling.mask_former.position_encoding import PositionEmbeddingSine

IMAGE = 64
# EfficientNet-Lite0-like outputs (channels shrunk), plus one feature the decoder must not use.
INPUT_SHAPE = {
    "stage1": ShapeSpec(channels=4, stride=2),
    "stage2": ShapeSpec(channels=8, stride=4),
    "stage3": ShapeSpec(channels=16, stride=8),
    "stage4": ShapeSpec(channels=24, stride=16),
    "stage5": ShapeSpec(channels=40, stride=32),
}


def _cfg(name):
    cfg = add_mask_former_config(get_zsi_d2_cfg())
    ssh = cfg.MODEL.SEM_SEG_HEAD
    ssh.PIXEL_DECODER_NAME = name
    ssh.IN_FEATURES = ["stage2", "stage3", "stage4", "stage5"]
    ssh.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["stage3", "stage4", "stage5"]
    ssh.CONVS_DIM = 32
    ssh.MASK_DIM = 32
    ssh.TRANSFORMER_ENC_LAYERS = 1
    ssh.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 4
    ssh.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD = 64
    ssh.COMMON_STRIDE = 4
    ssh.NORM = "GN"
    return cfg


def _features(batch=2, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return {
        k: torch.randn(batch, s.channels, IMAGE // s.stride, IMAGE // s.stride, generator=g, dtype=dtype)
        for k, s in INPUT_SHAPE.items()
    }


def _random_loss(outputs):
    """Random projections (a plain sum after GroupNorm would have zero gradient)."""
    g = torch.Generator().manual_seed(1)
    return sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in outputs)


@pytest.mark.parametrize("name", ["MSDeformAttnPixelDecoder", "FPNPixelDecoder"])
def test_decoder_outputs_and_gradients(name):
    torch.manual_seed(0)
    decoder = build_pixel_decoder(_cfg(name), INPUT_SHAPE)
    assert type(decoder) is PIXEL_DECODER_REGISTRY.get(name)
    # The published init zeroes the offset and attention-weight matrices, so the query (and the
    # level embeddings in it) gets no gradient at step 0; make them non-zero to see every path.
    with torch.no_grad():
        for n, p in decoder.named_parameters():
            if n.endswith(("sampling_offsets.weight", "attention_weights.weight")):
                p.normal_(0, 0.1)
    assert "stage1" not in decoder.in_features
    features = _features()
    mask_features, encoder_features, multi_scale = decoder.forward_features(features)
    assert mask_features.shape == (2, 32, IMAGE // 4, IMAGE // 4)  # stride 4
    assert [tuple(f.shape) for f in multi_scale] == [(2, 32, 2, 2), (2, 32, 4, 4), (2, 32, 8, 8)]
    assert encoder_features is multi_scale[0]
    _random_loss([mask_features] + multi_scale).backward()
    missing = [n for n, p in decoder.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_deformable_decoder_structure_and_names():
    """Mask2Former's parameter names (its pixel-decoder weights load); encoder over the three
    coarsest levels, one FPN level at stride 4, 1x1 mask-feature conv."""
    decoder = build_pixel_decoder(_cfg("MSDeformAttnPixelDecoder"), INPUT_SHAPE)
    assert isinstance(decoder, MSDeformAttnPixelDecoder)
    assert decoder.transformer_in_features == ["stage5", "stage4", "stage3"]
    assert decoder.fpn_features == ["stage2"]
    assert decoder.mask_features.kernel_size == (1, 1)
    keys = set(decoder.state_dict())
    for k in [
        "input_proj.0.0.weight", "input_proj.2.1.weight", "transformer.level_embed",
        "transformer.encoder.layers.0.self_attn.sampling_offsets.weight",
        "transformer.encoder.layers.0.self_attn.attention_weights.bias",
        "transformer.encoder.layers.0.self_attn.value_proj.weight",
        "transformer.encoder.layers.0.self_attn.output_proj.weight",
        "transformer.encoder.layers.0.linear1.weight", "transformer.encoder.layers.0.norm2.bias",
        "adapter_1.weight", "adapter_1.norm.weight", "layer_1.weight", "layer_1.norm.bias",
        "mask_features.weight",
    ]:
        assert k in keys, k
    assert decoder.input_proj[0][0].in_channels == 40  # lowest resolution first
    assert decoder.transformer.level_embed.shape == (3, 32)


def test_fpn_decoder_structure():
    decoder = build_pixel_decoder(_cfg("FPNPixelDecoder"), INPUT_SHAPE)
    assert isinstance(decoder, FPNPixelDecoder)
    assert decoder.in_features == ["stage2", "stage3", "stage4", "stage5"]
    assert decoder.mask_features.kernel_size == (3, 3)
    assert not hasattr(decoder, "adapter_4") and hasattr(decoder, "layer_4")


def test_deformable_decoder_half_inputs_and_batch_independence():
    """Each image is decoded alone (no padding mask, no batch statistics): batch of 2 = 2 batches
    of 1. Half-precision inputs are decoded in float32."""
    torch.manual_seed(0)
    decoder = build_pixel_decoder(_cfg("MSDeformAttnPixelDecoder"), INPUT_SHAPE).eval()
    features = _features()
    with torch.no_grad():
        both = decoder.forward_features(features)[0]
        first = decoder.forward_features({k: v[:1] for k, v in features.items()})[0]
        half = decoder.forward_features({k: v.bfloat16() for k, v in features.items()})[0]
    assert torch.allclose(both[:1], first, atol=1e-5)
    assert half.dtype == torch.float32


def test_bad_configs():
    cfg = _cfg("MSDeformAttnPixelDecoder")
    cfg.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = 2  # stage1 is not among IN_FEATURES
    with pytest.raises(ValueError, match="stride"):
        build_pixel_decoder(cfg, INPUT_SHAPE)
    cfg = _cfg("MSDeformAttnPixelDecoder")
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    with pytest.raises(ValueError, match="res3"):
        build_pixel_decoder(cfg, INPUT_SHAPE)
    cfg = _cfg("MSDeformAttnPixelDecoder")
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 48
    with pytest.raises(ValueError, match="32"):
        build_pixel_decoder(cfg, INPUT_SHAPE)


def test_reference_points_are_pixel_centres():
    ref = MSDeformAttnEncoderOnly.reference_points([(2, 3), (1, 2)], "cpu", torch.float64)
    assert ref.shape == (1, 8, 2, 2)
    assert torch.equal(ref[0, :, 0], ref[0, :, 1])  # the same point on every level
    expected = [[(j + 0.5) / 3, (i + 0.5) / 2] for i in range(2) for j in range(3)] + [[0.25, 0.5], [0.75, 0.5]]
    assert torch.allclose(ref[0, :, 0], torch.tensor(expected, dtype=torch.float64))


def _detr_sine(mask, num_pos_feats, temperature=10000, scale=2 * math.pi):
    """DETR's formula, one position and channel at a time."""
    B, H, W = mask.shape
    out = torch.zeros(B, 2 * num_pos_feats, H, W, dtype=torch.float64)
    valid = (~mask).double()
    ys, xs = valid.cumsum(1), valid.cumsum(2)
    for b in range(B):
        for i in range(H):
            for j in range(W):
                y = ys[b, i, j] / (ys[b, -1, j] + 1e-6) * scale
                x = xs[b, i, j] / (xs[b, i, -1] + 1e-6) * scale
                for k in range(num_pos_feats):
                    freq = temperature ** (2 * (k // 2) / num_pos_feats)
                    f = torch.sin if k % 2 == 0 else torch.cos
                    out[b, k, i, j] = f(y / freq)
                    out[b, num_pos_feats + k, i, j] = f(x / freq)
    return out


def test_position_embedding_matches_detr_formula():
    pe = PositionEmbeddingSine(4, normalize=True)
    x = torch.zeros(2, 3, 3, 5)
    mask = torch.zeros(2, 3, 5, dtype=torch.bool)
    mask[1, :, 4:] = True  # a padded column in the second image
    with_mask = pe(x, mask)
    assert with_mask.shape == (2, 8, 3, 5) and with_mask.dtype == torch.float32
    assert torch.allclose(with_mask.double(), _detr_sine(mask, 4), atol=1e-5)
    no_mask = pe(x)
    assert no_mask.shape == (2, 8, 3, 5)
    assert torch.allclose(no_mask, with_mask[:1].expand(2, -1, -1, -1), atol=1e-6)
    assert pe(x.double()).dtype == torch.float64
    with pytest.raises(ValueError):
        PositionEmbeddingSine(4, normalize=False, scale=1.0)


# ---- against Mask2Former's MSDeformAttnPixelDecoder (msdeformattn.py) ----------------------------
def _deformable_decoder(enc_layers=2, seed=0):
    """Float64, with query-dependent sampling offsets and attention weights (the published init zeroes
    both matrices, which would hide what the queries are made of)."""
    torch.manual_seed(seed)
    cfg = _cfg("MSDeformAttnPixelDecoder")
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = enc_layers
    decoder = build_pixel_decoder(cfg, INPUT_SHAPE).double().eval()
    with torch.no_grad():
        for n, p in decoder.named_parameters():
            if n.endswith(("sampling_offsets.weight", "attention_weights.weight")):
                p.normal_(0, 0.1)
    return decoder


def mask2former_forward_features(decoder, features):
    """Mask2Former's forward_features + MSDeformAttnTransformerEncoderOnly + encoder layers, on
    `decoder`'s weights: query = src + pos + level embedding, value = src, reference points at pixel
    centres (valid ratios 1), then the FPN with bilinear top-down upsampling."""
    from test_ms_deform_attn import mask2former_msdeformattn_forward

    srcs = [proj(features[f]) for proj, f in zip(decoder.input_proj, decoder.transformer_in_features)]
    level_embed = decoder.transformer.level_embed
    pos = [decoder.pe_layer(features[f]).flatten(2).transpose(1, 2) + level_embed[lvl].view(1, 1, -1)
           for lvl, f in enumerate(decoder.transformer_in_features)]
    shapes = [tuple(s.shape[-2:]) for s in srcs]
    src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
    pos = torch.cat(pos, 1)
    spatial_shapes = torch.as_tensor(shapes, dtype=torch.long)
    points = []
    for h, w in shapes:
        ref_y, ref_x = torch.meshgrid(torch.linspace(0.5, h - 0.5, h, dtype=torch.float64),
                                      torch.linspace(0.5, w - 0.5, w, dtype=torch.float64), indexing="ij")
        points.append(torch.stack((ref_x.reshape(-1)[None] / w, ref_y.reshape(-1)[None] / h), -1))
    reference_points = torch.cat(points, 1)[:, :, None].expand(-1, -1, len(shapes), -1)
    for layer in decoder.transformer.encoder.layers:
        src2 = mask2former_msdeformattn_forward(layer.self_attn, src + pos, reference_points, src, spatial_shapes)
        src = layer.norm1(src + src2)
        src = layer.norm2(src + layer.linear2(torch.relu(layer.linear1(src))))
    B = src.shape[0]
    out = [z.transpose(1, 2).view(B, -1, h, w) for z, (h, w) in zip(src.split([h * w for h, w in shapes], 1), shapes)]
    for f, lateral, output in zip(decoder.fpn_features, decoder.lateral_convs, decoder.output_convs):
        cur = lateral(features[f])
        out.append(output(cur + F.interpolate(out[-1], size=cur.shape[-2:], mode="bilinear", align_corners=False)))
    return decoder.mask_features(out[-1]), out[0], out[:3]


def test_deformable_decoder_equals_mask2former_forward():
    decoder = _deformable_decoder()
    features = _features(dtype=torch.float64)
    with torch.no_grad():
        ours = decoder.forward_features(features)
        want = mask2former_forward_features(decoder, features)
    torch.testing.assert_close(ours[0], want[0], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(ours[1], want[1], rtol=1e-9, atol=1e-10)
    for a, b in zip(ours[2], want[2]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_fpn_top_down_upsampling_is_bilinear(monkeypatch):
    """The encoder's finest map is a single 1 at (3, 4) of channel 0 (8 x 8): what the FPN adds to its
    16 x 16 lateral is that pixel upsampled bilinearly (align_corners=False), the tent
    [1/4, 3/4, 3/4, 1/4] over rows 5-8 and columns 7-10, not nearest's 2 x 2 block of ones."""
    decoder = _deformable_decoder(enc_layers=1)
    encoder_forward = decoder.transformer.forward

    def one_hot_memory(srcs, pos_embeds):
        memory, spatial_shapes, level_start_index, shapes = encoder_forward(srcs, pos_embeds)
        memory = torch.zeros_like(memory)
        h, w = shapes[-1]
        assert (h, w) == (8, 8)
        memory[:, int(level_start_index[-1]) + 3 * w + 4, 0] = 1.0
        return memory, spatial_shapes, level_start_index, shapes

    monkeypatch.setattr(decoder.transformer, "forward", one_hot_memory)
    seen = {}
    decoder.lateral_convs[0].register_forward_hook(lambda m, args, out: seen.update(lateral=out))
    decoder.output_convs[0].register_forward_pre_hook(lambda m, args: seen.update(summed=args[0]))
    with torch.no_grad():
        decoder.forward_features(_features(dtype=torch.float64))
    added = seen["summed"] - seen["lateral"]
    tent = torch.tensor([0.25, 0.75, 0.75, 0.25], dtype=torch.float64)
    expected = torch.zeros(2, 32, 16, 16, dtype=torch.float64)
    expected[:, 0, 5:9, 7:11] = tent[:, None] * tent[None, :]
    torch.testing.assert_close(added, expected, rtol=0, atol=1e-12)
