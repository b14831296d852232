"""Point sampling, Hungarian matcher and set criterion of the mask-classification core.

Expected values are computed here from the formulas with explicit loops (no shared helper), on
points fixed at the prediction's pixel centres so the random sampling drops out; the matcher's
assignment is checked against brute force over all assignments.
"""
import itertools
import math

import pytest
import torch
from torch.nn import functional as F

from zsi_d2.modeling.mask_former import criterion as criterion_module
from zsi_d2.modeling.mask_former.criterion import SetCriterion
from zsi_d2.modeling.mask_former.matcher import HungarianMatcher, batch_mask_costs, fast_softplus
from zsi_d2.modeling.mask_former.point_sampling import (
    calculate_uncertainty,
    point_sample,
    uncertain_point_coords_with_randomness,
)

torch.set_num_threads(1)

H = W = 6  # prediction resolution in the fixed-point tests


def pixel_centres(h=H, w=W):
    """(h*w, 2) normalised (x, y) of the pixel centres, row-major."""
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=1)


def upsample2(mask):
    """Nearest 2x: bilinear samples at the coarse pixel centres read the coarse values back exactly."""
    return mask.repeat_interleave(2, -2).repeat_interleave(2, -1)


def bce(x, t):
    return -(t * math.log(1 / (1 + math.exp(-x))) + (1 - t) * math.log(1 - 1 / (1 + math.exp(-x))))


def mean_bce(logits, target):
    vals = [bce(x, t) for x, t in zip(logits.flatten().tolist(), target.flatten().tolist())]
    return sum(vals) / len(vals)


def dice(logits, target):
    p = [1 / (1 + math.exp(-x)) for x in logits.flatten().tolist()]
    t = target.flatten().tolist()
    return 1 - (2 * sum(a * b for a, b in zip(p, t)) + 1) / (sum(p) + sum(t) + 1)


def make_targets(sizes, num_classes, gen, res=(H, W), up=True):
    targets = []
    for n in sizes:
        coarse = torch.rand(n, *res, generator=gen) > 0.5
        targets.append({"labels": torch.randint(num_classes, (n,), generator=gen),
                        "masks": upsample2(coarse) if up else coarse, "coarse": coarse.float()})
    return targets


# ---------------------------------------------------------------------------- point sampling


def test_point_sample_reads_pixel_centres_and_interpolates():
    x = torch.randn(2, 3, H, W)
    out = point_sample(x, pixel_centres().expand(2, -1, -1))
    assert out.shape == (2, 3, H * W)
    torch.testing.assert_close(out, x.flatten(2))
    # halfway between the centres of pixels (0, 0) and (0, 1): their mean
    mid = point_sample(x, torch.tensor([[[1.0 / W, 0.5 / H]]]).expand(2, -1, -1))
    torch.testing.assert_close(mid[..., 0], (x[:, :, 0, 0] + x[:, :, 0, 1]) / 2)


def test_uncertain_points_come_from_the_uncertain_region():
    torch.manual_seed(0)
    logits = torch.full((2, 1, 8, 8), 20.0)
    logits[..., 4:] = 0.0  # exactly 0 (most uncertain) for x >= 4.5 / 8
    coords = uncertain_point_coords_with_randomness(logits, calculate_uncertainty, 200, 3.0, 0.5)
    assert coords.shape == (2, 200, 2)
    assert coords.min() >= 0 and coords.max() <= 1
    assert (coords[:, :100, 0] >= 4.5 / 8).all()  # importance-sampled part first
    frac = (coords[:, 100:, 0] >= 4.5 / 8).float().mean()  # random part: uniform
    assert 0.25 < frac < 0.65
    uniform = uncertain_point_coords_with_randomness(logits, calculate_uncertainty, 300, 3.0, 0.0)
    assert uniform.shape == (2, 300, 2) and 0.3 < (uniform[..., 0] >= 4.5 / 8).float().mean() < 0.6
    with pytest.raises(ValueError):
        uncertain_point_coords_with_randomness(logits, calculate_uncertainty, 10, 0.5, 0.5)


def test_fast_softplus_and_bce_gradient():
    x = torch.linspace(-100, 100, 2001, dtype=torch.float64)
    torch.testing.assert_close(fast_softplus(x), torch.logaddexp(x, torch.zeros_like(x)), atol=1e-12, rtol=0)
    torch.testing.assert_close(fast_softplus(x.float()), F.softplus(x.float()), atol=1e-6, rtol=0)
    logits = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    labels = torch.rand(3, 7, dtype=torch.float64)
    assert torch.autograd.gradcheck(criterion_module._SigmoidBCE.apply, (logits, labels))
    torch.testing.assert_close(criterion_module._SigmoidBCE.apply(logits, labels),
                               F.binary_cross_entropy_with_logits(logits, labels, reduction="none"))


# ---------------------------------------------------------------------------- matcher


def test_batch_mask_costs_formula():
    gen = torch.Generator().manual_seed(1)
    pred = torch.randn(2, 4, 9, generator=gen) * 3
    tgt = torch.rand(2, 3, 9, generator=gen)  # soft targets too
    cost_bce, cost_dice = batch_mask_costs(pred, tgt)
    assert cost_bce.shape == cost_dice.shape == (2, 4, 3)
    for n in range(2):
        for q in range(4):
            for j in range(3):
                assert cost_bce[n, q, j].item() == pytest.approx(mean_bce(pred[n, q], tgt[n, j]), abs=1e-5)
                assert cost_dice[n, q, j].item() == pytest.approx(dice(pred[n, q], tgt[n, j]), abs=1e-5)


def expected_cost(pred_logits, pred_masks, target, weights):
    """(Q, n) cost from the formula, targets read at the coarse pixel centres."""
    wc, wm, wd = weights
    prob = pred_logits.softmax(-1)
    q_num, n = pred_logits.shape[0], len(target["labels"])
    cost = torch.zeros(q_num, n)
    for q in range(q_num):
        for j in range(n):
            cost[q, j] = (-wc * prob[q, target["labels"][j]] + wm * mean_bce(pred_masks[q], target["coarse"][j])
                          + wd * dice(pred_masks[q], target["coarse"][j]))
    return cost


def brute_force(cost):
    """Minimum-cost one-to-one assignment by enumeration: sorted [(query, target)]."""
    q_num, n = cost.shape
    best, best_pairs = float("inf"), None
    if n <= q_num:
        for qs in itertools.permutations(range(q_num), n):
            total = sum(cost[q, j].item() for j, q in enumerate(qs))
            if total < best:
                best, best_pairs = total, sorted((q, j) for j, q in enumerate(qs))
    else:
        for js in itertools.permutations(range(n), q_num):
            total = sum(cost[q, j].item() for q, j in enumerate(js))
            if total < best:
                best, best_pairs = total, sorted(enumerate(js))
    return best_pairs


def fix_points(monkeypatch, matcher):
    grid = pixel_centres()
    monkeypatch.setattr(matcher, "_point_coords",
                        lambda layers, images, device: grid.expand(layers, images, -1, -1).clone())


@pytest.mark.parametrize("q_num,sizes,weights", [
    (5, [3, 2, 0, 1], (1.0, 1.0, 1.0)),
    (4, [3, 3, 1], (2.0, 5.0, 5.0)),
    (2, [3, 1], (2.0, 5.0, 5.0)),  # more targets than queries
])
def test_matcher_equals_brute_force(monkeypatch, q_num, sizes, weights):
    gen = torch.Generator().manual_seed(q_num * 10 + len(sizes))
    num_classes = 4
    # The class costs alone would pick different queries than the mask costs: both must count.
    pred_logits = torch.randn(len(sizes), q_num, num_classes + 1, generator=gen) * 2
    pred_masks = torch.randn(len(sizes), q_num, H, W, generator=gen) * 2
    targets = make_targets(sizes, num_classes, gen)
    matcher = HungarianMatcher(*weights, num_points=H * W)
    fix_points(monkeypatch, matcher)
    indices = matcher(pred_logits, pred_masks, targets)
    assert len(indices) == len(sizes)
    for b, (q_idx, t_idx) in enumerate(indices):
        assert q_idx.dtype == t_idx.dtype == torch.int64
        assert len(q_idx) == len(t_idx) == min(q_num, sizes[b])
        assert q_idx.tolist() == sorted(q_idx.tolist())
        if sizes[b] == 0:
            continue
        cost = expected_cost(pred_logits[b], pred_masks[b], targets[b], weights)
        assert sorted(zip(q_idx.tolist(), t_idx.tolist())) == brute_force(cost)
    # All layers at once = one layer at a time.
    layers = matcher.match_layers([(pred_logits, pred_masks), (pred_logits.flip(1), pred_masks.flip(1))], targets)
    for got, ref in zip(layers[0], indices):
        assert got[0].tolist() == ref[0].tolist() and got[1].tolist() == ref[1].tolist()
    for got, ref in zip(layers[1], matcher(pred_logits.flip(1), pred_masks.flip(1), targets)):
        assert got[0].tolist() == ref[0].tolist() and got[1].tolist() == ref[1].tolist()


def test_matcher_random_points_find_the_obvious_assignment():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(3)
    targets = make_targets([4, 0], 3, gen, res=(16, 16), up=False)
    perm = [3, 0, 2, 1, 4]  # query q predicts target perm[q] exactly (query 4: nothing)
    masks = torch.full((2, 5, 16, 16), -8.0)
    for q, j in enumerate(perm[:4]):
        masks[0, q] = targets[0]["coarse"][j] * 16 - 8
    logits = torch.zeros(2, 5, 4)
    indices = HungarianMatcher(1.0, 1.0, 1.0, num_points=500)(logits, masks, targets)
    assert sorted(zip(*[i.tolist() for i in indices[0]])) == sorted((q, perm[q]) for q in range(4))
    assert indices[1][0].numel() == indices[1][1].numel() == 0


# ---------------------------------------------------------------------------- criterion


def test_sample_targets_groups_rows_by_target():
    gen = torch.Generator().manual_seed(4)
    masks = torch.rand(3, 10, 10, generator=gen)
    tgt_idx = torch.tensor([2, 0, 2, 1, 0, 2])  # each target matched by several layers, in any order
    coords = torch.rand(6, 7, 2, generator=gen)
    expected = point_sample(masks[tgt_idx].unsqueeze(1), coords).squeeze(1)
    torch.testing.assert_close(criterion_module._sample_targets(masks, tgt_idx, coords), expected)
    bool_masks = masks > 0.5
    torch.testing.assert_close(criterion_module._sample_targets(bool_masks, tgt_idx[:2], coords[:2]),
                               point_sample(bool_masks[tgt_idx[:2]].unsqueeze(1).float(), coords[:2]).squeeze(1))


class FixedMatcher:
    """Stands in for the matcher: the same given assignment for every prediction."""

    def __init__(self, indices):
        self.indices = [(torch.tensor(q), torch.tensor(t)) for q, t in indices]

    def __call__(self, pred_logits, pred_masks, targets):
        return self.indices


KEEP = 20  # loss points per mask in the fixed-point tests


def fix_loss_points(monkeypatch):
    """Points = centres of each predicted mask's KEEP highest pixels: fixed, and different per mask,
    so a mix-up of rows (prediction i read at mask j's points) shows."""
    grid = pixel_centres()
    monkeypatch.setattr(criterion_module, "uncertain_point_coords_with_randomness",
                        lambda logits, *args: grid[logits.flatten(1).topk(KEEP, dim=1).indices])


def at_points(pred, target):
    idx = pred.flatten().topk(KEEP).indices
    return pred.flatten()[idx], target.flatten()[idx]


def expected_losses(pred_logits, pred_masks, targets, indices, class_weights, num_masks):
    """Unweighted (ce, bce, dice) from explicit loops."""
    num_columns = pred_logits.shape[-1]
    num, den = 0.0, 0.0
    for b in range(pred_logits.shape[0]):
        matched = dict(zip(*indices[b]))
        for q in range(pred_logits.shape[1]):
            y = int(targets[b]["labels"][matched[q]]) if q in matched else num_columns - 1
            w = float(class_weights[y])
            num += -w * float(pred_logits[b, q].log_softmax(-1)[y])
            den += w
    loss_bce = sum(mean_bce(*at_points(pred_masks[b, q], targets[b]["coarse"][j]))
                   for b, (qs, js) in enumerate(indices) for q, j in zip(qs, js)) / num_masks
    loss_dice = sum(dice(*at_points(pred_masks[b, q], targets[b]["coarse"][j]))
                    for b, (qs, js) in enumerate(indices) for q, j in zip(qs, js)) / num_masks
    return num / den, loss_bce, loss_dice


def make_outputs(gen, batch, q_num, num_columns, num_aux=0):
    def one():
        return {"pred_logits": (torch.randn(batch, q_num, num_columns, generator=gen) * 2).requires_grad_(),
                "pred_masks": (torch.randn(batch, q_num, H, W, generator=gen) * 2).requires_grad_()}
    out = one()
    out["aux_outputs"] = [one() for _ in range(num_aux)]
    return out


def check_losses(losses, outputs, targets, indices, class_weights, num_masks, weights=(2.0, 5.0, 5.0)):
    layers = [outputs] + outputs["aux_outputs"]
    for layer, o in enumerate(layers):
        suffix = "" if layer == 0 else f"_{layer - 1}"
        ce, lb, ld = expected_losses(o["pred_logits"].detach(), o["pred_masks"].detach(), targets, indices,
                                     class_weights, num_masks)
        assert losses["loss_ce" + suffix].item() == pytest.approx(weights[0] * ce, rel=1e-5)
        assert losses["loss_mask" + suffix].item() == pytest.approx(weights[1] * lb, rel=1e-5)
        assert losses["loss_dice" + suffix].item() == pytest.approx(weights[2] * ld, rel=1e-5)


def test_criterion_hand_computed_with_deep_supervision(monkeypatch):
    fix_loss_points(monkeypatch)
    gen = torch.Generator().manual_seed(5)
    num_classes = 3
    targets = make_targets([3, 1], num_classes, gen)
    # Image 1's masks at the prediction's own resolution: each image is sampled in its own coordinates.
    targets[1]["masks"] = targets[1]["coarse"].bool()
    indices = [([0, 2], [2, 0]), ([3], [0])]  # image 0's target 1 unmatched: still counts in num_masks
    outputs = make_outputs(gen, 2, 4, num_classes + 1, num_aux=2)
    criterion = SetCriterion(FixedMatcher(indices), num_points=H * W)
    losses = criterion(outputs, targets)
    assert set(losses) == {f"loss_{k}{s}" for k in ("ce", "mask", "dice") for s in ("", "_0", "_1")}
    class_weights = [1.0] * num_classes + [0.1]
    check_losses(losses, outputs, targets, indices, class_weights, num_masks=4)
    criterion.max_candidates = 1  # one row per importance-sampling pass: same rows, same order
    check_losses(criterion(outputs, targets), outputs, targets, indices, class_weights, num_masks=4)
    criterion.max_candidates = 1 << 24

    # Another class set on the next call (K read from the logits), explicit per-class weights.
    outputs = make_outputs(gen, 2, 4, num_classes + 3)
    class_loss_weights = torch.tensor([1.0, 3.0, 0.5, 2.0, 1.5, 0.2])
    losses = criterion(outputs, targets, class_loss_weights=class_loss_weights)
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice"}
    check_losses(losses, outputs, targets, indices, class_loss_weights.tolist(), num_masks=4)
    with pytest.raises(ValueError, match="class_loss_weights"):
        criterion(outputs, targets, class_loss_weights=torch.ones(4))


def test_no_object_weight_and_loss_weights(monkeypatch):
    fix_loss_points(monkeypatch)
    gen = torch.Generator().manual_seed(6)
    targets = make_targets([2, 2], 2, gen)
    indices = [([1, 4], [0, 1]), ([0, 2], [1, 0])]
    outputs = make_outputs(gen, 2, 5, 3)
    for no_object_weight in (0.1, 1.0):
        criterion = SetCriterion(FixedMatcher(indices), class_weight=1.5, mask_weight=2.0, dice_weight=3.0,
                                 no_object_weight=no_object_weight, num_points=H * W)
        check_losses(criterion(outputs, targets), outputs, targets, indices, [1.0, 1.0, no_object_weight],
                     num_masks=4, weights=(1.5, 2.0, 3.0))


def test_importance_sampling_follows_the_prediction():
    """Ratio 1: every point where the prediction is exactly 0 (uncertain), whatever the target."""
    torch.manual_seed(0)
    masks = torch.full((1, 2, 16, 16), 20.0)
    masks[..., 2:14, 4:14] = 0.0  # exactly 0 on 39 % of the area, away from the zero-padded border
    targets = [{"labels": torch.tensor([0]), "masks": torch.ones(1, 16, 16, dtype=torch.bool)}]
    criterion = SetCriterion(FixedMatcher([([1], [0])]), num_points=100, oversample_ratio=6.0,
                             importance_sample_ratio=1.0, deep_supervision=False)
    losses = criterion({"pred_logits": torch.zeros(1, 2, 3), "pred_masks": masks}, targets)
    assert losses["loss_mask"].item() == pytest.approx(5.0 * math.log(2), rel=1e-5)
    assert losses["loss_dice"].item() == pytest.approx(5.0 * (1 - 101 / 151), rel=1e-5)


def test_empty_targets_give_zero_mask_losses_with_graph():
    gen = torch.Generator().manual_seed(7)
    outputs = make_outputs(gen, 2, 4, 3, num_aux=1)
    targets = [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 12, 12, dtype=torch.bool)}
               for _ in range(2)]
    criterion = SetCriterion(HungarianMatcher(2.0, 5.0, 5.0, num_points=50), num_points=50)
    losses = criterion(outputs, targets)
    for suffix in ("", "_0"):
        assert losses["loss_mask" + suffix].item() == 0 and losses["loss_dice" + suffix].item() == 0
        assert losses["loss_mask" + suffix].requires_grad
    no_object = torch.full((2, 4), 2, dtype=torch.long)
    expected = 2.0 * F.cross_entropy(outputs["pred_logits"].detach().transpose(1, 2), no_object)
    torch.testing.assert_close(losses["loss_ce"], expected)
    sum(losses.values()).backward()
    for o in [outputs] + outputs["aux_outputs"]:
        assert o["pred_masks"].grad is not None and o["pred_masks"].grad.abs().sum() == 0
        assert o["pred_logits"].grad.abs().sum() > 0


def test_real_matcher_gradients_reach_every_prediction():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(8)
    targets = make_targets([3, 0, 2], 4, gen)
    outputs = make_outputs(gen, 3, 5, 5, num_aux=2)
    criterion = SetCriterion(HungarianMatcher(2.0, 5.0, 5.0, num_points=64), num_points=64)
    losses = criterion(outputs, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for o in [outputs] + outputs["aux_outputs"]:
        assert o["pred_logits"].grad.abs().sum() > 0
        assert o["pred_masks"].grad[0].abs().sum() > 0 and o["pred_masks"].grad[2].abs().sum() > 0
        assert o["pred_masks"].grad[1].abs().sum() == 0  # image without targets: class loss only

    no_aux = SetCriterion(HungarianMatcher(num_points=64), num_points=64, deep_supervision=False)
    assert set(no_aux(outputs, targets)) == {"loss_ce", "loss_mask", "loss_dice"}
    targets[0]["labels"][0] = 4  # not in the 4-class set
    with pytest.raises(ValueError, match="labels"):
        criterion(outputs, targets)


def test_from_config():
    from detectron2.config import get_cfg

    from zsi_d2.modeling.mask_former.config import add_mask_former_config

    cfg = add_mask_former_config(get_cfg())
    cfg.MODEL.MASK_FORMER.CLASS_WEIGHT = 3.0
    cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 3136
    cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION = False
    criterion = SetCriterion(cfg)
    assert criterion.class_weight == 3.0 and criterion.mask_weight == 5.0 and criterion.dice_weight == 5.0
    assert criterion.no_object_weight == 0.1 and criterion.num_points == 3136 and not criterion.deep_supervision
    assert criterion.oversample_ratio == 3.0 and criterion.importance_sample_ratio == 0.75
    m = criterion.matcher
    assert (m.cost_class, m.cost_mask, m.cost_dice, m.num_points) == (3.0, 5.0, 5.0, 3136)
