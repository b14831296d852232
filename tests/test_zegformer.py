"""ZegFormer: MaskFormer's decoder and criterion as options of the core, the segment classifier, the
meta-architecture's semantic calibration, and its configs on zs_shapes."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zsi_d2  # noqa: F401  (registers everything)
from detectron2.modeling import build_model
from detectron2.structures import Instances

from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.errors import InputValueError
from zsi_d2.modeling.mask_former.full_mask_criterion import (
    FullMaskHungarianMatcher, FullMaskSetCriterion, pairwise_dice_cost, pairwise_focal_cost, sigmoid_focal_loss,
)
from zsi_d2.modeling.mask_former.standard_decoder import StandardTransformerDecoder

ZEGFORMER = "configs/zegformer/zs_shapes/zegformer.yaml"
ZEGFORMER_M2F = "configs/zegformer/zs_shapes/zegformer_mask2former_decoder.yaml"


def _cfg(path, *opts):
    cfg = get_zsi_d2_cfg()
    cfg.merge_from_file(path)
    cfg.merge_from_list(list(opts))
    return cfg


# ---- MaskFormer's (DETR's) decoder --------------------------------------------------------------
def _detr_reference(dec: StandardTransformerDecoder, x, mask_features):
    """DETR's decoder written with torch.nn.MultiheadAttention (sequence-first, as DETR's code),
    weights copied from `dec`: post-norm, self-attn -> cross-attn -> FFN, target starting at zero,
    the query embedding added to queries (and self-attention keys), the positional encoding to the
    memory's keys, every layer's output through the shared decoder norm."""
    def mha(ours):
        ref = nn.MultiheadAttention(ours.embed_dim, ours.num_heads)
        ref.in_proj_weight.data.copy_(ours.in_proj_weight)
        ref.in_proj_bias.data.copy_(ours.in_proj_bias)
        ref.out_proj.load_state_dict(ours.out_proj.state_dict())
        return ref.eval()

    pos = dec.pe_layer(x).flatten(2).permute(2, 0, 1)  # (HW, B, C)
    memory = dec.input_proj(x).flatten(2).permute(2, 0, 1)
    query_pos = dec.query_embed.weight.unsqueeze(1).repeat(1, x.shape[0], 1)  # (Q, B, C)
    tgt = torch.zeros_like(query_pos)
    outs = []
    for sa, ca, ffn in zip(dec.transformer_self_attention_layers, dec.transformer_cross_attention_layers,
                           dec.transformer_ffn_layers):
        q = tgt + query_pos
        tgt = sa.norm(tgt + mha(sa.self_attn)(q, q, tgt)[0])
        tgt = ca.norm(tgt + mha(ca.multihead_attn)(tgt + query_pos, memory + pos, memory)[0])
        tgt = ffn.norm(tgt + ffn.linear2(F.relu(ffn.linear1(tgt))))
        outs.append(dec.decoder_norm(tgt).transpose(0, 1))
    masks = [torch.einsum("bqc,bchw->bqhw", dec.mask_embed(o), mask_features) for o in outs]
    return outs, masks


def test_standard_decoder_is_detrs_decoder():
    torch.manual_seed(0)
    dec = StandardTransformerDecoder(24, hidden_dim=32, num_queries=5, nheads=4, dim_feedforward=64, enc_layers=0,
                                     dec_layers=3, pre_norm=False, mask_dim=16, enforce_input_project=False,
                                     dropout=0.0).eval()
    x, mask_features = torch.randn(2, 24, 4, 5), torch.randn(2, 16, 8, 10)
    with torch.no_grad():
        out = dec(x, mask_features)
        ref_queries, ref_masks = _detr_reference(dec, x, mask_features)
    assert len(out["aux_outputs"]) == 2  # DEC_LAYERS predictions: no prediction from the queries alone
    got_queries = [o["pred_queries"] for o in out["aux_outputs"]] + [out["pred_queries"]]
    got_masks = [o["pred_masks"] for o in out["aux_outputs"]] + [out["pred_masks"]]
    for got, ref in zip(got_queries + got_masks, ref_queries + ref_masks):
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_standard_decoder_encoder_layers_change_the_memory():
    torch.manual_seed(0)
    kw = dict(hidden_dim=32, num_queries=5, nheads=4, dim_feedforward=64, dec_layers=2, pre_norm=False, mask_dim=16,
              enforce_input_project=False, dropout=0.0)
    without = StandardTransformerDecoder(32, enc_layers=0, **kw).eval()
    with_enc = StandardTransformerDecoder(32, enc_layers=1, **kw).eval()
    with_enc.load_state_dict(without.state_dict(), strict=False)
    x, mf = torch.randn(1, 32, 4, 4), torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(without(x, mf)["pred_masks"], with_enc(x, mf)["pred_masks"])


# ---- MaskFormer's criterion ---------------------------------------------------------------------
def test_focal_loss_matches_torchvision():
    from torchvision.ops import sigmoid_focal_loss as tv_focal

    torch.manual_seed(0)
    logits, targets = torch.randn(3, 50), (torch.rand(3, 50) > 0.6).float()
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets), tv_focal(logits, targets, reduction="none").mean(1))


def test_pairwise_costs_equal_the_losses_of_each_pair():
    torch.manual_seed(0)
    logits, targets = torch.randn(4, 30), (torch.rand(3, 30) > 0.5).float()
    focal, dice = pairwise_focal_cost(logits, targets), pairwise_dice_cost(logits, targets)
    for q in range(4):
        for t in range(3):
            torch.testing.assert_close(focal[q, t], sigmoid_focal_loss(logits[q:q + 1], targets[t:t + 1])[0])
            p = logits[q].sigmoid()
            expected = 1 - (2 * (p * targets[t]).sum() + 1) / (p.sum() + targets[t].sum() + 1)
            torch.testing.assert_close(dice[q, t], expected)


def _two_targets(h=16, w=16):
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, :8, :8] = True
    masks[1, 8:, 8:] = True
    return {"labels": torch.tensor([1, 0]), "masks": masks}


def test_full_mask_matcher_finds_the_obvious_assignment():
    target = _two_targets()
    pred_masks = torch.full((3, 8, 8), -8.0)
    pred_masks[2, :4, :4] = 8.0  # query 2 draws target 0 (at half resolution)
    pred_masks[0, 4:, 4:] = 8.0  # query 0 draws target 1
    pred_logits = torch.zeros(3, 3)
    [(q, t)] = FullMaskHungarianMatcher(1.0, 20.0, 1.0)(pred_logits[None], pred_masks[None], [target])
    assert dict(zip(q.tolist(), t.tolist())) == {2: 0, 0: 1}


def test_full_mask_criterion_losses_on_whole_masks():
    """loss_mask = 20 x focal and loss_dice = dice on the bilinearly upsampled masks of the matched
    queries (sum / number of targets); loss_ce with no object weighted 0.1; one pair per aux layer."""
    target = _two_targets()
    torch.manual_seed(0)
    pred_masks = torch.randn(1, 3, 8, 8)
    pred_logits = torch.randn(1, 3, 3)
    crit = FullMaskSetCriterion(FullMaskHungarianMatcher(1.0, 20.0, 1.0), class_weight=1.0, mask_weight=20.0,
                                dice_weight=1.0, no_object_weight=0.1)
    outputs = {"pred_logits": pred_logits, "pred_masks": pred_masks,
               "aux_outputs": [{"pred_logits": pred_logits, "pred_masks": pred_masks}]}
    losses = crit(outputs, [target])
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_mask_0", "loss_dice_0"}
    [(q, t)] = crit.matcher(pred_logits, pred_masks, [target])
    up = F.interpolate(pred_masks[0, q][:, None], size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    up, tgt = up.flatten(1), target["masks"][t].float().flatten(1)
    torch.testing.assert_close(losses["loss_mask"], 20.0 * sigmoid_focal_loss(up, tgt).sum() / 2)
    p = up.sigmoid()
    dice = 1 - (2 * (p * tgt).sum(1) + 1) / (p.sum(1) + tgt.sum(1) + 1)
    torch.testing.assert_close(losses["loss_dice"], dice.sum() / 2)
    labels = torch.full((3,), 2)
    labels[q] = target["labels"][t]
    weight = torch.tensor([1.0, 1.0, 0.1])
    torch.testing.assert_close(losses["loss_ce"], F.cross_entropy(pred_logits[0], labels, weight))


# ---- the segment classifier, the meta-architecture and its configs ------------------------------
# Each zs_shapes config is built once per module (building loads the backbone's ImageNet weights and
# the class-name embeddings); tests take a copy.
@pytest.fixture(scope="module")
def zegformer():
    torch.manual_seed(0)
    return build_model(_cfg(ZEGFORMER))


@pytest.fixture(scope="module")
def zegformer_m2f():
    torch.manual_seed(0)
    return build_model(_cfg(ZEGFORMER_M2F))


def test_segment_classifier_as_released(zegformer):
    """cos(segment, name) x 100 for the classes; segment . background x 100 with the background NOT
    normalised (ZegFormer's bg_feature, Kaiming-uniform init); nn.Linear's default init of the projection."""
    head = copy.deepcopy(zegformer.classifier)
    bank = head.classifier.classes
    assert head.classifier.log_logit_scale.exp().item() == pytest.approx(100.0)
    assert head.classifier.project.weight.std().item() > 0.02  # not the core's N(0, 0.01) init
    bound = math.sqrt(6 / ((1 + 5) * bank.dim))  # kaiming_uniform(a=sqrt(5)) of (1, D): fan_in = D
    assert bound / 2 < bank.background.abs().max().item() <= bound + 1e-6
    with torch.no_grad():
        bank.background.copy_(torch.linspace(-1, 1, bank.dim))  # norm far from 1
    queries = torch.randn(2, 5, head.classifier.project.in_features)
    logits = head(queries)
    seg = F.normalize(head.classifier.project(queries), dim=-1)
    torch.testing.assert_close(logits[..., :-1], 100.0 * seg @ bank.weights()[:-1].t(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits[..., -1], 100.0 * seg @ bank.background, atol=1e-4, rtol=1e-4)


def _batch(model, with_targets=True):
    image = torch.randint(0, 255, (3, 128, 128), generator=torch.Generator().manual_seed(0)).float()
    x = {"image": image, "height": 128, "width": 128}
    if with_targets:
        inst = Instances((128, 128))
        masks = torch.zeros(2, 128, 128, dtype=torch.bool)
        masks[0, 10:40, 10:40] = True
        masks[1, 60:90, 50:100] = True
        inst.gt_masks = masks
        inst.gt_classes = model.class_set.dataset_ids[:2].clone()
        x["instances"] = inst
    return [x]


@pytest.mark.parametrize("which,decoder,criterion", [
    ("zegformer", "StandardTransformerDecoder", "FullMaskSetCriterion"),
    ("zegformer_m2f", "MultiScaleMaskedTransformerDecoder", "SetCriterion"),
])
def test_zegformer_configs_train_and_infer(which, decoder, criterion, request):
    model = copy.deepcopy(request.getfixturevalue(which))
    assert type(model).__name__ == "ZegFormer"
    assert type(model.transformer_decoder).__name__ == decoder
    assert type(model.criterion).__name__ == criterion
    model.train()
    losses = model(_batch(model))
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.classifier.classifier.classes.background.grad is not None
    model.eval()
    with torch.no_grad():
        out = model(_batch(model, with_targets=False))[0]
    assert out["sem_seg"].shape == (len(model.class_set.dataset_classes), 128, 128)
    assert {"panoptic_seg", "instances"} <= set(out)


def test_gzero_calibrate_lowers_only_the_seen_channels(zegformer):
    from zsi_d2.modeling.class_set import apply_class_set, dataset_class_set

    model = copy.deepcopy(zegformer).eval()
    apply_class_set(model, dataset_class_set("zs_shapes_val_panoptic", "auto"))
    batch = _batch(model, with_targets=False)
    with torch.no_grad():
        plain = model(batch)[0]["sem_seg"]
        model.gzero_calibrate = 0.1
        calibrated = model(batch)[0]["sem_seg"]
    seen = model.class_set.is_seen_dataset
    assert seen.any() and (~seen).any()
    torch.testing.assert_close(calibrated[seen], plain[seen] - 0.1)
    torch.testing.assert_close(calibrated[~seen], plain[~seen])


@pytest.mark.parametrize("opts,needle", [
    (["MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE", "multi_scale_pixel_decoder"], "does not suit"),
    (["MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE", "res9"], "neither one of"),
    (["MODEL.MASK_FORMER.CRITERION", "focal"], "MODEL.MASK_FORMER.CRITERION 'focal'"),
    (["MODEL.MASK_FORMER.CLASSIFIER", "linear"], "must be 'embedding'"),
    (["MODEL.CLIP_CLS_STYLE", "box"], "MODEL.CLIP_CLS_STYLE"),
])
def test_zegformer_bad_config_is_one_line(opts, needle):
    with pytest.raises(InputValueError) as e:
        build_model(_cfg(ZEGFORMER, *opts))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_mask2former_decoder_refuses_a_single_map():
    cfg = _cfg(ZEGFORMER_M2F, "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE", "stage5")
    with pytest.raises(InputValueError, match="does not suit MultiScaleMaskedTransformerDecoder"):
        build_model(cfg)


def test_decoder_input_widths():
    from detectron2.layers import ShapeSpec
    from zsi_d2.modeling.mask_former.meta_arch import decoder_input_channels

    shapes = {"stage5": ShapeSpec(channels=320, stride=32)}
    widths = {source: decoder_input_channels(_cfg(ZEGFORMER, "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE", source,
                                                  "MODEL.SEM_SEG_HEAD.CONVS_DIM", 96), shapes)
              for source in ("stage5", "transformer_encoder", "pixel_embedding")}
    assert widths == {"stage5": 320, "transformer_encoder": 96, "pixel_embedding": 128}


@pytest.mark.parametrize("source", ["transformer_encoder", "pixel_embedding"])
def test_standard_decoder_reads_the_pixel_decoder_outputs(zegformer, source):
    """The core hands the decoder the map TRANSFORMER_IN_FEATURE names (here as wide as HIDDEN_DIM,
    so the copied model's decoder reads it without an input projection)."""
    model = copy.deepcopy(zegformer).eval()
    model.transformer_in_feature = source
    model.transformer_decoder.input_proj = nn.Identity()
    seen = []
    model.transformer_decoder.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape))
    with torch.no_grad():
        out = model(_batch(model, with_targets=False))[0]
    assert torch.isfinite(out["sem_seg"]).all()
    assert seen[0][-2:] == ((4, 4) if source == "transformer_encoder" else (32, 32))  # stride 32 vs 4 of 128 px


# ---- the CLIP image branch inside ZegFormer -----------------------------------------------------
def test_image_branch_off_by_default(zegformer):
    assert not zegformer.image_branch.enabled
    assert not any("image_branch" in k for k in zegformer.state_dict())  # checkpoints unchanged by the branch


def test_image_branch_feeds_the_semantic_sum(zegformer, tiny_clip, no_network, tmp_path):
    """With a CLIP checkpoint, the semantic output is the sum over queries of the branch's fused
    probabilities x mask probabilities (ZegFormer's semantic_inference2, no renormalisation); the
    panoptic output stays the segmenter's; GZERO_CALIBRATE then lowers the seen channels."""
    from zsi_d2.modeling.class_set import apply_class_set, dataset_class_set
    from zsi_d2.modeling.clip_image_branch import ClipImageBranch
    from zsi_d2.modeling.mask_former.inference import upsample_to_padded

    plain = copy.deepcopy(zegformer).eval()
    apply_class_set(plain, dataset_class_set("zs_shapes_val_panoptic", "auto"))
    fused = copy.deepcopy(plain)
    fused.image_branch = ClipImageBranch(weights=tiny_clip["ckpt"], arch=tiny_clip["arch"], ensembling=True,
                                         cache_dir=str(tmp_path))
    assert fused.image_branch.enabled
    batch = _batch(plain, with_targets=False)
    with torch.no_grad():
        a, b = plain(batch)[0], fused(batch)[0]
        images = plain.preprocess_image(batch)
        outputs = plain.predict(images.tensor)
        masks = upsample_to_padded(outputs["pred_masks"][0], tuple(images.tensor.shape[-2:]))
        text = fused.image_branch.class_embeddings(fused.class_set.names)
        probs = fused.image_branch.classify(batch[0]["image"], masks, outputs["pred_logits"][0],
                                            fused.class_set.is_seen, text)
    expected = torch.einsum("qc,qhw->chw", probs, masks.sigmoid())  # 128 px: no crop or resize
    ids = fused.class_set.dataset_ids
    torch.testing.assert_close(b["sem_seg"][ids], expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(a["sem_seg"], b["sem_seg"])
    assert torch.equal(a["panoptic_seg"][0], b["panoptic_seg"][0])
    fused.gzero_calibrate = 0.1
    with torch.no_grad():
        c = fused(batch)[0]["sem_seg"]
    seen = fused.class_set.is_seen_dataset
    torch.testing.assert_close(c[seen], b["sem_seg"][seen] - 0.1)
    torch.testing.assert_close(c[~seen], b["sem_seg"][~seen])
