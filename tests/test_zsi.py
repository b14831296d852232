"""ZSI: BA-RPN, the zero-shot detector, the Semantic Mask Head and Sync-bg, module by module."""
import copy

import pytest
import torch

from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from conftest import assert_checkpoint_round_trip, assert_class_set_follows_dataset, tiny_cfg
from zsi_d2.errors import InputValueError
from zsi_d2.methods.zsi import BackgroundAwareRPNHead, SemanticMaskHead, ZeroShotDetectorPredictor
from zsi_d2.modeling import use_class_set

ZSI_CONFIG = "configs/zsi/zs_shapes/zsi_mask_rcnn.yaml"


def _cfg(*opts):
    cfg = tiny_cfg("MODEL.EFFICIENTNET.WEIGHTS", "", *opts, config=ZSI_CONFIG)
    cfg.freeze()
    return cfg


@pytest.fixture(scope="module")
def cfg():
    return _cfg()


@pytest.fixture(scope="module")
def batch(cfg):
    mapper = DatasetMapper(cfg, is_train=True)
    return [mapper(copy.deepcopy(d)) for d in DatasetCatalog.get("zs_shapes_tiny_train")[:2]]


def _train_step(model, batch):
    with EventStorage():
        losses = model(batch)
    sum(losses.values()).backward()
    return losses


def test_ba_rpn_objectness_is_the_fg_minus_bg_log_odds():
    """By hand from the head's parameters: 3x3 conv + ReLU, T (1x1 to D), then per anchor a the
    log-odds (foreground_a - background_a) · T(x) at every location."""
    torch.manual_seed(0)
    head = BackgroundAwareRPNHead(in_channels=2, num_anchors=3, box_dim=4, background=torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(head.background, torch.tensor([[1.0, 0.0, 0.0]] * 3))
    with torch.no_grad():
        head.foreground.normal_()
        head.background.normal_()
    x = torch.randn(1, 2, 4, 5)
    logits, deltas = head([x])
    assert logits[0].shape == (1, 3, 4, 5) and deltas[0].shape == (1, 12, 4, 5)
    t = torch.relu(torch.nn.functional.conv2d(x, head.conv.weight, head.conv.bias, padding=1))[0]  # (C, H, W)
    semantic = torch.einsum("dc,chw->dhw", head.to_semantic.weight[:, :, 0, 0], t) + head.to_semantic.bias[:, None, None]
    expected = torch.einsum("ad,dhw->ahw", head.foreground - head.background, semantic)
    torch.testing.assert_close(logits[0][0], expected, atol=1e-5, rtol=1e-5)


def test_training_losses_and_gradients(cfg, batch):
    torch.manual_seed(0)
    model = build_model(cfg).train()
    losses = _train_step(model, batch)
    assert {"loss_box_reconstruction", "loss_mask_reconstruction", "loss_cls", "loss_mask"} <= set(losses)
    assert isinstance(model.proposal_generator.rpn_head, BackgroundAwareRPNHead)
    assert isinstance(model.roi_heads.box_predictor, ZeroShotDetectorPredictor)
    assert isinstance(model.roi_heads.mask_head, SemanticMaskHead)
    assert model.roi_heads.box_predictor.decoder.weight.grad.abs().sum() > 0
    assert model.roi_heads.mask_head.decoder.weight.grad.abs().sum() > 0
    assert model.roi_heads.mask_head.to_semantic.weight.grad.abs().sum() > 0


def test_sync_bg_gives_both_heads_ba_rpns_background_and_trains_it(cfg, batch):
    """After an optimiser step the heads use the BA-RPN vector of that step, and the heads' losses
    alone (BA-RPN's own objectness losses removed) give BA-RPN's background a gradient."""
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    rpn_head = model.proposal_generator.rpn_head
    box_bank, mask_bank = model.roi_heads.box_predictor.cls_score.classes, model.roi_heads.mask_head.classes
    with EventStorage():
        losses = model(batch)
    heads_only = sum(v for k, v in losses.items() if not k.startswith("loss_rpn"))
    heads_only.backward()
    assert rpn_head.background.grad is not None and rpn_head.background.grad.abs().sum() > 0
    before = rpn_head.background_vector().detach().clone()
    optimizer.step()
    after = rpn_head.background_vector().detach()
    assert not torch.equal(before, after)
    for bank in (box_bank, mask_bank):
        torch.testing.assert_close(bank.current_background(), after)
        torch.testing.assert_close(bank.weights()[-1], torch.nn.functional.normalize(after, dim=0))
    # The heads' own backgrounds are unused and frozen.
    assert not box_bank.background.requires_grad and not mask_bank.background.requires_grad


def test_semantic_mask_head_class_embeddings_get_no_gradient(cfg, batch):
    """The class channels are fixed embeddings (a buffer): training moves the projection, not them.
    (That each channel is its embedding · the explicit semantic map: test_zsi_unseen_scoring.py.)"""
    torch.manual_seed(0)
    model = build_model(cfg).train()
    head = model.roi_heads.mask_head
    embeddings = head.classes.embeddings.clone()
    _train_step(model, batch)
    assert head.to_semantic.weight.grad.abs().sum() > 0
    assert head.classes.embeddings.grad is None and not head.classes.embeddings.requires_grad
    torch.testing.assert_close(head.classes.embeddings, embeddings)
    seen = head.classes.num_active
    with use_class_set(model, "zs_shapes_tiny_val"):
        assert head.classes.num_active == len(MetadataCatalog.get("zs_shapes_tiny_val").thing_classes) > seen


def test_test_time_class_set_follows_the_dataset(cfg, batch):
    assert_class_set_follows_dataset(cfg, batch)


def test_checkpoint_round_trip_gives_identical_outputs(cfg, batch, tmp_path):
    assert_checkpoint_round_trip(cfg, batch, tmp_path)


def _ba_rpn_off(model):
    return not isinstance(model.proposal_generator.rpn_head, BackgroundAwareRPNHead)


def _sync_bg_off(model):
    banks = (model.roi_heads.box_predictor.cls_score.classes, model.roi_heads.mask_head.classes)
    return all(bank._background_source is None for bank in banks)


def _smh_off(model):
    return not isinstance(model.roi_heads.mask_head, SemanticMaskHead)


def _reconstruction_off(model):
    return model.roi_heads.box_predictor.decoder is None and model.roi_heads.mask_head.decoder is None


@pytest.mark.parametrize("config, off, absent", [
    ("ablations/no_ba_rpn.yaml", (_ba_rpn_off, _sync_bg_off), set()),
    ("ablations/no_sync_bg.yaml", (_sync_bg_off,), set()),
    ("ablations/no_smh.yaml", (_smh_off,), {"loss_mask_reconstruction"}),
    ("ablations/no_reconstruction.yaml", (_reconstruction_off,), {"loss_box_reconstruction", "loss_mask_reconstruction"}),
])
def test_every_ablation_config_turns_its_component_off(config, off, absent, batch):
    """Each shipped ablation config really removes its component (module gone or loss gone), and
    the full ZSI config has every component on."""
    cfg = tiny_cfg("MODEL.EFFICIENTNET.WEIGHTS", "", config=f"configs/zsi/zs_shapes/{config}")
    model = build_model(cfg).train()
    assert all(check(model) for check in off)
    losses = _train_step(model, batch)
    assert not absent & set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    full = build_model(_cfg())
    assert not any(check(full) for check in (_ba_rpn_off, _sync_bg_off, _smh_off, _reconstruction_off))


def test_sync_bg_without_ba_rpn_is_a_clear_error():
    with pytest.raises(ValueError, match="BackgroundAwareRPNHead"):
        build_model(_cfg("MODEL.RPN.HEAD_NAME", "StandardRPNHead"))


def test_per_group_nms_keeps_unseen_detections_that_a_shared_top_k_drops(cfg):
    from detectron2.structures import Boxes, Instances

    from zsi_d2.modeling.class_set import dataset_class_set

    model = build_model(cfg).eval()
    predictor = model.roi_heads.box_predictor
    class_set = dataset_class_set("zs_shapes_tiny_val")  # GZSI: seen + unseen
    seen, unseen = class_set.group_indices
    assert len(seen) and len(unseen) and set(class_set.names[i] for i in unseen.tolist()) == set(class_set.unseen)
    with use_class_set(model, "zs_shapes_tiny_val"):
        k = predictor.num_classes
        logits = torch.full((2, k + 1), -10.0)
        logits[0, seen[0]] = 10.0  # a confident seen detection
        logits[1, unseen[0]] = 5.0  # a less confident unseen one, elsewhere in the image
        proposal = Instances((128, 128), proposal_boxes=Boxes(torch.tensor([[0.0, 0, 20, 20], [60, 60, 90, 90]])))
        predictor.test_topk_per_image = 1
        shared, _ = predictor.inference((logits, torch.zeros(2, 4)), [proposal])
        assert shared[0].pred_classes.tolist() == [seen[0].item()]
        predictor.nms_groups = class_set.group_indices
        grouped, _ = predictor.inference((logits, torch.zeros(2, 4)), [proposal])
        assert sorted(grouped[0].pred_classes.tolist()) == sorted([seen[0].item(), unseen[0].item()])


def test_per_group_nms_is_used_only_in_gzsi(batch):
    model = build_model(_cfg("MODEL.ZSI.GZSI_PER_GROUP_NMS", "True")).eval()
    inputs = [{k: v for k, v in x.items() if k != "instances"} for x in batch[:1]]
    with torch.no_grad():
        with use_class_set(model, "zs_shapes_tiny_val"):
            model(inputs)
            assert model.roi_heads.box_predictor.nms_groups is not None
        with use_class_set(model, "zs_shapes_tiny_val_zsi"):
            model(inputs)
            assert model.roi_heads.box_predictor.nms_groups is None


def test_reconstruction_cannot_be_won_by_shrinking_the_features(cfg):
    """Regression: with gradient into the visual feature, minimising the reconstruction loss alone
    shrinks (or, with a detached target, blows up) the features; seen on zs_shapes, where
    detection then stopped learning. The loss must train the projection and decoder only."""
    torch.manual_seed(0)
    predictor = build_model(cfg).train().roi_heads.box_predictor
    producer = torch.nn.Linear(16, predictor.cls_score.project.in_features)
    z = torch.randn(64, 16)
    start = producer(z).norm().item()
    params = list(producer.parameters()) + list(predictor.parameters())
    optimizer = torch.optim.SGD([p for p in params if p.requires_grad], lr=1.0)
    for _ in range(300):
        loss = predictor.reconstruction_losses(producer(z))["loss_box_reconstruction"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert 0.5 * start < producer(z).norm().item() < 2 * start
    assert predictor.decoder.weight.grad.abs().sum() > 0 and predictor.cls_score.project.weight.grad.abs().sum() > 0


def test_ba_rpn_composed_conv_has_the_gradients_of_the_two_step_form():
    torch.manual_seed(0)
    head = BackgroundAwareRPNHead(in_channels=4, num_anchors=3, box_dim=4, background=torch.randn(6))
    x = torch.randn(2, 4, 5, 5)
    head([x])[0][0].square().sum().backward()
    fast = {n: p.grad.clone() for n, p in head.named_parameters() if n != "anchor_deltas.weight" and p.grad is not None}
    head.zero_grad()
    t = head.conv(x)
    explicit = torch.einsum("bdhw,ad->bahw", head.to_semantic(t), head.foreground - head.background)
    explicit.square().sum().backward()
    for name, grad in fast.items():
        torch.testing.assert_close(grad, dict(head.named_parameters())[name].grad, rtol=1e-4, atol=1e-6)


def test_semantic_mask_head_composed_convs_match_the_explicit_semantic_map(cfg):
    """The head never materialises the D x 28 x 28 map; its logits and reconstruction must equal
    the explicit semantic map scored by the class embeddings / decoded, in value and gradient."""
    torch.manual_seed(0)
    head = build_model(cfg).roi_heads.mask_head
    with torch.no_grad():
        head.to_semantic.bias.normal_()  # zero at init: make the composed bias path count
    x = torch.randn(3, head.convs[0].in_channels, 14, 14)

    def losses(composed):
        visual = torch.relu(head.deconv(head.convs(x)))
        if composed:
            logits = head._class_logits(visual)
            rebuilt = head._rebuild(visual.detach())
        else:
            semantic = head.to_semantic(visual)
            logits = torch.einsum("rdhw,kd->rkhw", semantic, head.classes.weights())
            rebuilt = head.decoder(head.to_semantic(visual.detach()))
        return logits, rebuilt, visual.detach()

    outputs, grads = [], []
    for composed in (True, False):
        head.zero_grad()
        logits, rebuilt, target = losses(composed)
        (logits.sin().sum() + (rebuilt - target).square().mean()).backward()
        outputs.append((logits.detach(), rebuilt.detach()))
        grads.append({n: p.grad.clone() for n, p in head.named_parameters() if p.grad is not None})
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-5)
    assert grads[0].keys() == grads[1].keys() and "decoder.weight" in grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-3, atol=1e-5)
    assert head.semantic_map(x).shape == (3, head.classes.dim, 28, 28)


@pytest.mark.parametrize("encoder", ["linear", "conv3x3"])
def test_semantic_mask_head_reconstruction_loss_is_the_mse_of_the_rebuilt_map(encoder):
    """The linear head computes the MSE from the feature's second moments: same value and gradients
    as rebuilding the map explicitly (decoder(to_semantic(f))) and taking its MSE."""
    torch.manual_seed(0)
    head = build_model(_cfg("MODEL.ZSI.SMH_ENCODER", encoder)).roi_heads.mask_head
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # biases are zero at init: make every term count
    feature = torch.relu(torch.randn(4, head.convs[-1].out_channels, 28, 28)) + 0.1
    results = []
    for explicit in (True, False):
        head.zero_grad()
        if explicit:
            rebuilt = head.decoder(head.to_semantic(feature)) if encoder == "conv3x3" else \
                torch.einsum("cd,rdhw->rchw", head.decoder.weight[:, :, 0, 0], head.to_semantic(feature)) \
                + head.decoder.bias[None, :, None, None]
            loss = torch.nn.functional.mse_loss(rebuilt, feature)
        else:
            loss = head.reconstruction_loss(feature)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in head.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-4, atol=1e-6)
    assert results[0][1].keys() == results[1][1].keys() and any("decoder" in n for n in results[0][1])
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, rtol=1e-3, atol=1e-6)


def test_semantic_mask_head_conv3x3_encoder_is_the_reference_form(cfg, batch):
    """SMH_ENCODER conv3x3: 3x3 conv C->D + ReLU, learnable 3x3 D->D, scored by the class
    embeddings; the 3x3 decoder pair rebuilds the visual map; the whole model trains."""
    torch.manual_seed(0)
    model = build_model(_cfg("MODEL.ZSI.SMH_ENCODER", "conv3x3"))
    head = model.roi_heads.mask_head
    first, second = head.to_semantic
    assert (first.kernel_size, second.kernel_size) == ((3, 3), (3, 3))
    assert (first.out_channels, second.in_channels, second.out_channels) == (head.classes.dim,) * 3
    assert [c.kernel_size for c in head.decoder] == [(3, 3), (3, 3)]
    assert head.decoder[-1].out_channels == head.convs[-1].out_channels
    x = torch.randn(2, head.convs[0].in_channels, 14, 14)
    visual = torch.relu(head.deconv(head.convs(x)))
    semantic = second(torch.relu(first(visual)))
    expected = torch.einsum("rdhw,kd->rkhw", semantic, head.classes.weights())
    torch.testing.assert_close(head._class_logits(visual), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(head.semantic_map(x), semantic)
    decoded = head.decoder[1](torch.relu(head.decoder[0](semantic)))
    torch.testing.assert_close(head._rebuild(visual), decoded)
    losses = _train_step(model, batch)
    assert {"loss_mask", "loss_mask_reconstruction"} <= losses.keys()
    for name in ("to_semantic.1.weight", "decoder.0.weight"):
        assert dict(head.named_parameters())[name].grad.abs().sum() > 0, name


def test_unknown_smh_encoder_is_one_clear_error():
    with pytest.raises(InputValueError, match="SMH_ENCODER"):
        build_model(_cfg("MODEL.ZSI.SMH_ENCODER", "conv5x5"))
