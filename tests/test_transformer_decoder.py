"""MultiScaleMaskedTransformerDecoder: shapes, the attention-mask rule, that masked positions are
really ignored, the level round-robin, gradients, and torch.jit.trace equivalence (small, CPU)."""
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.modeling.mask_former.config import add_mask_former_config
from zsi_d2.modeling.mask_former.transformer_decoder import (
    CrossAttentionLayer,
    MultiheadAttention,
    MultiScaleMaskedTransformerDecoder,
    build_transformer_decoder,
    masked_attention_mask,
)

# Non-square sizes so a swapped H/W shows; lowest resolution first; mask features at 4x level 0.
LEVEL_SIZES = ((3, 4), (6, 8), (12, 16))
MASK_SIZE = (12, 16)
HIDDEN, QUERIES, MASK_DIM, HEADS = 32, 10, 32, 4


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cfg(**mask_former):
    cfg = get_zsi_d2_cfg()
    add_mask_former_config(cfg)
    mf = cfg.MODEL.MASK_FORMER
    mf.HIDDEN_DIM, mf.NHEADS, mf.DIM_FEEDFORWARD = HIDDEN, HEADS, 64
    mf.NUM_OBJECT_QUERIES, mf.DEC_LAYERS = QUERIES, 4
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = MASK_DIM
    for k, v in mask_former.items():
        setattr(mf, k, v)
    return cfg


def _decoder(in_channels=HIDDEN, seed=0, **mask_former):
    torch.manual_seed(seed)
    return build_transformer_decoder(_cfg(**mask_former), in_channels).eval()


def _inputs(batch=2, in_channels=HIDDEN, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(batch, in_channels, h, w, generator=g) for h, w in LEVEL_SIZES]
    return feats, torch.randn(batch, MASK_DIM, *MASK_SIZE, generator=g)


def _predictions(out):
    """All predictions, first (learnable queries alone) to last."""
    return out["aux_outputs"] + [{"pred_queries": out["pred_queries"], "pred_masks": out["pred_masks"]}]


@pytest.mark.parametrize("in_channels,pre_norm", [(HIDDEN, False), (16, True)])
def test_output_shapes(in_channels, pre_norm):
    dec = _decoder(in_channels, PRE_NORM=pre_norm)
    assert isinstance(dec, MultiScaleMaskedTransformerDecoder) and dec.num_layers == 3
    proj = nn.Sequential if in_channels == HIDDEN else nn.Conv2d
    assert all(isinstance(p, proj) for p in dec.input_proj)
    out = dec(*_inputs(in_channels=in_channels))
    assert len(out["aux_outputs"]) == 3
    for p in _predictions(out):
        assert set(p) == {"pred_queries", "pred_masks"}
        assert p["pred_queries"].shape == (2, QUERIES, HIDDEN)
        assert p["pred_masks"].shape == (2, QUERIES, *MASK_SIZE)
        assert torch.isfinite(p["pred_queries"]).all() and torch.isfinite(p["pred_masks"]).all()


def test_config_keys_reach_the_module():
    dec = _decoder(DROPOUT=0.25, ENFORCE_INPUT_PROJ=True, DEC_LAYERS=2)
    assert dec.num_layers == 1 and all(isinstance(p, nn.Conv2d) for p in dec.input_proj)
    assert dec.transformer_ffn_layers[0].dropout.p == 0.25
    assert dec.transformer_cross_attention_layers[0].multihead_attn.dropout == 0.25
    assert dec.mask_embed.layers[-1].out_features == MASK_DIM
    # DEC_LAYERS 1: the prediction from the learnable queries only.
    out = _decoder(DEC_LAYERS=1)(*_inputs())
    assert out["aux_outputs"] == [] and out["pred_masks"].shape == (2, QUERIES, *MASK_SIZE)


def test_attention_mask_rule_by_hand():
    # 4x4 logits, constant on 2x2 blocks: bilinear resizing to 2x2 (align_corners=False) gives
    # the block values exactly. Blocked = sigmoid < 0.5 (logit 0 is *not* blocked).
    blocks = torch.tensor(
        [
            [[[1.0, -1.0], [0.0, -2.0]], [[-1.0, -3.0], [-0.5, -2.0]], [[2.0, 1.0], [1.0, 3.0]], [[-1.0, -1.0], [-1.0, 3.0]]],
            [[[-1.0, 1.0], [-1.0, -1.0]], [[-1.0, 2.0], [-0.5, -2.0]], [[-2.0, -1.0], [-1.0, -3.0]], [[0.0, 0.0], [0.0, 0.0]]],
        ]
    )  # (B=2, Q=4, 2, 2)
    logits = blocks.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    expected = torch.tensor(
        [
            [[0, 1, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]],  # query 1 fully blocked -> open
            [[1, 0, 1, 1], [1, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]],  # query 2 fully blocked -> open
        ],
        dtype=torch.bool,
    )
    assert torch.equal(masked_attention_mask(logits, (2, 2)), expected)

    # Same size (no resizing), random logits: the rule written out by hand.
    logits = torch.randn(2, 5, 3, 4)
    logits[1, 2] = -torch.rand(3, 4) - 0.1  # one fully blocked row
    hand = logits.flatten(2).sigmoid() < 0.5
    hand[hand.all(-1)] = False
    assert hand[0].any() and not hand[1, 2].any()
    assert torch.equal(masked_attention_mask(logits, (3, 4)), hand)


def test_attention_mask_records_nothing_for_backward():
    # The mask is a constant: computing it must not keep tensors alive for autograd.
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        mask = masked_attention_mask(logits, (4, 4))
    assert mask.dtype == torch.bool and not saved


@pytest.mark.parametrize("self_attention", [False, True])
def test_attention_matches_torch_multihead_attention(self_attention):
    # Same state dict as nn.MultiheadAttention, same result; its mask is (B * heads, Q, S).
    torch.manual_seed(0)
    ours = MultiheadAttention(HIDDEN, HEADS)
    ref = nn.MultiheadAttention(HIDDEN, HEADS)
    ref.load_state_dict(ours.state_dict())
    query = torch.randn(2, 7, HIDDEN)
    key = query if self_attention else torch.randn(2, 12, HIDDEN)
    value = torch.randn(2, key.shape[1], HIDDEN)
    blocked = torch.rand(2, 7, key.shape[1]) < 0.5
    blocked[:, :, 0] = False  # no fully blocked row
    got = ours(query, key, value, attn_mask=blocked)
    want = ref(
        query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1),
        attn_mask=blocked.repeat_interleave(HEADS, dim=0), need_weights=False,
    )[0].transpose(0, 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def _capture_cross_attention(dec):
    """Record (memory length, attn_mask) of every cross-attention call, in order."""
    calls = []

    def hook(module, args):
        calls.append((args[1].shape[1], args[3]))  # memory (B, S, C)

    for layer in dec.modules():
        if isinstance(layer, CrossAttentionLayer):
            layer.register_forward_pre_hook(hook)
    return calls


@pytest.mark.parametrize("dec_layers", [4, 6])
def test_layers_use_the_previous_prediction_on_the_round_robin_level(dec_layers):
    dec = _decoder(DEC_LAYERS=dec_layers)
    calls = _capture_cross_attention(dec)
    out = dec(*_inputs())
    preds = _predictions(out)
    assert len(calls) == dec_layers - 1
    for i, (length, attn_mask) in enumerate(calls):
        h, w = LEVEL_SIZES[i % 3]  # layer i attends level i % 3, lowest resolution first
        assert length == h * w
        mask = masked_attention_mask(preds[i]["pred_masks"], (h, w))
        assert mask.any() and not mask.all()
        assert torch.equal(attn_mask, mask)


def test_each_level_first_matters_at_its_layer():
    # Perturbing level k changes the predictions after layer k (which attends it) and after,
    # never the earlier ones.
    dec = _decoder()
    feats, mask_features = _inputs()
    base = _predictions(dec(feats, mask_features))
    for k in range(3):
        moved = [f + 3.0 * torch.randn_like(f) if j == k else f for j, f in enumerate(feats)]
        preds = _predictions(dec(moved, mask_features))
        for j, (a, b) in enumerate(zip(base, preds)):
            same = torch.allclose(a["pred_queries"], b["pred_queries"], atol=1e-6)
            assert same == (j <= k), (k, j)


def _single_layer_with_region(blocked_cols):
    """One layer; every query predicts the same mask: blocked on level-0 columns < blocked_cols."""
    dec = _decoder(DEC_LAYERS=2)
    last = dec.mask_embed.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.randn(MASK_DIM, generator=torch.Generator().manual_seed(1)))
    feats, _ = _inputs()
    # Mask features -b on the pixels of the blocked level-0 cells (4x4 pixels each), +b elsewhere.
    sign = torch.ones(MASK_SIZE)
    sign[:, : 4 * blocked_cols] = -1.0
    mask_features = (sign[None, None] * last.bias.detach()[None, :, None, None]).expand(2, -1, -1, -1)
    return dec, feats, mask_features


def test_masked_positions_are_ignored():
    dec, feats, mask_features = _single_layer_with_region(blocked_cols=2)
    calls = _capture_cross_attention(dec)
    base = dec(feats, mask_features)["pred_queries"]
    blocked = calls[0][1].view(2, QUERIES, 3, 4)
    assert blocked[..., :2].all() and not blocked[..., 2:].any()

    noise = 5.0 * torch.randn_like(feats[0])
    inside, outside = noise.clone(), noise.clone()
    inside[..., 2:] = 0  # perturb only positions blocked for every query
    outside[..., :2] = 0
    same = dec([feats[0] + inside] + feats[1:], mask_features)["pred_queries"]
    changed = dec([feats[0] + outside] + feats[1:], mask_features)["pred_queries"]
    torch.testing.assert_close(same, base, rtol=0, atol=1e-6)
    assert (changed - base).abs().max() > 1e-3


def test_fully_masked_queries_attend_everywhere():
    # Every query blocked everywhere -> un-blocked: finite output, every position matters.
    dec, feats, mask_features = _single_layer_with_region(blocked_cols=4)
    base = dec(feats, mask_features)["pred_queries"]
    assert torch.isfinite(base).all()
    for cols in (slice(0, 2), slice(2, 4)):
        moved = feats[0].clone()
        moved[..., cols] += 5.0
        out = dec([moved] + feats[1:], mask_features)["pred_queries"]
        assert (out - base).abs().max() > 1e-3


def test_gradients_reach_every_parameter():
    dec = _decoder(in_channels=16).train()
    feats, mask_features = _inputs(in_channels=16)
    feats = [f.requires_grad_() for f in feats]
    g = torch.Generator().manual_seed(2)
    loss = 0.0
    for p in _predictions(dec(feats, mask_features)):
        # Random weights: a plain sum of LayerNorm outputs has no gradient.
        loss = loss + (torch.randn(p["pred_queries"].shape, generator=g) * p["pred_queries"]).sum()
        loss = loss + (torch.randn(p["pred_masks"].shape, generator=g) * p["pred_masks"]).sum()
    loss.backward()
    for name, p in dec.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(f.grad.abs().sum() > 0 for f in feats)


class _Traceable(nn.Module):
    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, f0, f1, f2, mask_features):
        out = self.decoder([f0, f1, f2], mask_features)
        return out["pred_queries"], out["pred_masks"]


def test_jit_trace_matches_eager():
    wrapper = _Traceable(_decoder(in_channels=16)).eval()
    first, second = _inputs(in_channels=16, seed=3), _inputs(in_channels=16, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)  # no value-dependent Python logic
        traced = torch.jit.trace(wrapper, (*first[0], first[1]))
    for feats, mask_features in (first, second):
        with torch.no_grad():
            eager = wrapper(*feats, mask_features)
            got = traced(*feats, mask_features)
        for e, t in zip(eager, got):
            torch.testing.assert_close(t, e, rtol=1e-5, atol=1e-5)
    # The second input masks differently, so the trace did not freeze the first one's masks.
    m1 = masked_attention_mask(wrapper(*first[0], first[1])[1], (3, 4))
    m2 = masked_attention_mask(wrapper(*second[0], second[1])[1], (3, 4))
    assert not torch.equal(m1, m2)


# ---- against Mask2Former's code (mask2former_transformer_decoder.py), sequence-first --------------
def _torch_attention(ours):
    """nn.MultiheadAttention (what Mask2Former uses) with the weights of one of our attention blocks."""
    ref = nn.MultiheadAttention(ours.embed_dim, ours.num_heads).to(ours.in_proj_weight.dtype)
    ref.load_state_dict(ours.state_dict())
    return ref.eval()


def mask2former_cross_attention(layer, tgt, memory, attn_mask, pos, query_pos):
    """CrossAttentionLayer.forward_post / forward_pre: q = tgt + query_pos, k = memory + pos, v = memory."""
    attn = _torch_attention(layer.multihead_attn)
    x = layer.norm(tgt) if layer.normalize_before else tgt
    x = attn(x + query_pos, memory + pos, memory, attn_mask=attn_mask, need_weights=False)[0]
    return tgt + x if layer.normalize_before else layer.norm(tgt + x)


def mask2former_self_attention(layer, tgt, query_pos):
    """SelfAttentionLayer.forward_post / forward_pre: q = k = tgt + query_pos, v = tgt (normed first if pre-norm)."""
    attn = _torch_attention(layer.self_attn)
    x = layer.norm(tgt) if layer.normalize_before else tgt
    x = attn(x + query_pos, x + query_pos, x, need_weights=False)[0]
    return tgt + x if layer.normalize_before else layer.norm(tgt + x)


def mask2former_ffn(layer, tgt):
    x = layer.norm(tgt) if layer.normalize_before else tgt
    x = layer.linear2(torch.relu(layer.linear1(x)))
    return tgt + x if layer.normalize_before else layer.norm(tgt + x)


def mask2former_decoder_forward(dec, x, mask_features):
    """MultiScaleMaskedTransformerDecoder.forward + forward_prediction_heads: [(queries, masks)] per prediction."""
    src, pos, sizes = [], [], []
    for i in range(dec.num_feature_levels):
        sizes.append(x[i].shape[-2:])
        pos.append(dec.pe_layer(x[i], None).flatten(2).permute(2, 0, 1))
        src.append((dec.input_proj[i](x[i]).flatten(2) + dec.level_embed.weight[i][None, :, None]).permute(2, 0, 1))
    bs = src[0].shape[1]
    query_embed = dec.query_embed.weight.unsqueeze(1).repeat(1, bs, 1)
    output = dec.query_feat.weight.unsqueeze(1).repeat(1, bs, 1)

    def heads(output, size):
        decoder_output = dec.decoder_norm(output).transpose(0, 1)
        masks = torch.einsum("bqc,bchw->bqhw", dec.mask_embed(decoder_output), mask_features)
        attn_mask = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
        attn_mask = attn_mask.sigmoid().flatten(2).unsqueeze(1).repeat(1, dec.num_heads, 1, 1).flatten(0, 1) < 0.5
        return (decoder_output, masks), attn_mask

    prediction, attn_mask = heads(output, sizes[0])
    predictions = [prediction]
    for i in range(dec.num_layers):
        level = i % dec.num_feature_levels
        attn_mask[torch.where(attn_mask.sum(-1) == attn_mask.shape[-1])] = False
        output = mask2former_cross_attention(dec.transformer_cross_attention_layers[i], output, src[level], attn_mask,
                                             pos[level], query_embed)
        output = mask2former_self_attention(dec.transformer_self_attention_layers[i], output, query_embed)
        output = mask2former_ffn(dec.transformer_ffn_layers[i], output)
        prediction, attn_mask = heads(output, sizes[(i + 1) % dec.num_feature_levels])
        predictions.append(prediction)
    return predictions


def _double_inputs(in_channels=HIDDEN, seed=0):
    feats, mask_features = _inputs(in_channels=in_channels, seed=seed)
    return [f.double() for f in feats], mask_features.double()


@pytest.mark.parametrize("pre_norm", [False, True])
def test_layers_equal_mask2former_layers_on_torch_attention(pre_norm):
    """One cross-attention, self-attention and FFN layer each against Mask2Former's, with queries,
    keys and values made as there (query_pos on the queries of both attentions, pos on the keys only)."""
    dec = _decoder(PRE_NORM=pre_norm).double()
    g = torch.Generator().manual_seed(5)
    tgt, query_pos = (torch.randn(QUERIES, 2, HIDDEN, generator=g, dtype=torch.float64) for _ in range(2))
    memory, pos = (torch.randn(12, 2, HIDDEN, generator=g, dtype=torch.float64) for _ in range(2))
    blocked = torch.rand(2, QUERIES, 12, generator=g) < 0.5
    blocked[..., 0] = False
    cross = dec.transformer_cross_attention_layers[0]
    got = cross(tgt.transpose(0, 1), memory.transpose(0, 1), (memory + pos).transpose(0, 1), blocked,
                query_pos.transpose(0, 1))
    want = mask2former_cross_attention(cross, tgt, memory, blocked.repeat_interleave(HEADS, dim=0), pos, query_pos)
    torch.testing.assert_close(got, want.transpose(0, 1), rtol=1e-10, atol=1e-12)
    selfattn = dec.transformer_self_attention_layers[0]
    got = selfattn(tgt.transpose(0, 1), query_pos.transpose(0, 1))
    torch.testing.assert_close(got, mask2former_self_attention(selfattn, tgt, query_pos).transpose(0, 1),
                               rtol=1e-10, atol=1e-12)
    ffn = dec.transformer_ffn_layers[0]
    torch.testing.assert_close(ffn(tgt), mask2former_ffn(ffn, tgt), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("in_channels,pre_norm", [(HIDDEN, False), (16, True)])
def test_decoder_equals_mask2former_forward(in_channels, pre_norm):
    """Every prediction (decoder-normed queries and mask logits) equals Mask2Former's forward on the
    same weights: level embeddings on the memory, sine positions on the keys, masked attention from
    the previous prediction at the round-robin level, cross-attention before self-attention."""
    dec = _decoder(in_channels, PRE_NORM=pre_norm, DEC_LAYERS=5).double()
    feats, mask_features = _double_inputs(in_channels)
    with torch.no_grad():
        ours = _predictions(dec(feats, mask_features))
        want = mask2former_decoder_forward(dec, feats, mask_features)
    assert len(ours) == len(want) == 5
    for i, (p, (queries, masks)) in enumerate(zip(ours, want)):
        torch.testing.assert_close(p["pred_queries"], queries, rtol=1e-9, atol=1e-10, msg=f"prediction {i}")
        torch.testing.assert_close(p["pred_masks"], masks, rtol=1e-9, atol=1e-10, msg=f"prediction {i}")
