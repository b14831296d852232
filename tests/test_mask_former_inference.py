"""Mask-classification inference (zsi_d2.modeling.mask_former.inference) on hand-built queries.

Scores are set exactly through log-probability logits, so every threshold case is decided by the
rule under test and not by rounding. The oracle test is the core of the later PQ = 100 test: queries
that copy a ground-truth panoptic map must give that map back.

The panoptic rule has one implementation (vectorised, so the eager model and its TorchScript export
share it); `panoptic_inference_loop` below is Mask2Former's loop, kept here as its test oracle: the
hand-built cases run on both, and random cases (overlaps, thresholds, stuff merging, ties, masks at
exactly 0.5) must give the same map and segments on both, also through a trace.
"""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import BitMasks, Instances

from zsi_d2.modeling.mask_former.inference import (
    _as_is_thing, instance_inference, instance_inference_tensors, masks_to_boxes, panoptic_inference,
    panoptic_inference_tensors, panoptic_segments_info, resize_mask_predictions, semantic_inference,
)

torch.set_num_threads(1)
BIG = 20.0  # mask logit magnitude: sigmoid(+-20) is 1 / 0 to float precision


def _cls(probs_per_query, num_classes):
    """(Q, K+1) logits whose softmax is the given distributions; a float p means (class, p)."""
    rows = []
    for spec in probs_per_query:
        if spec == "none":
            p = np.full(num_classes + 1, 0.01)
            p[-1] = 1 - 0.01 * num_classes
        else:
            c, s = spec
            p = np.full(num_classes + 1, (1 - s) / num_classes)
            p[c] = s
        rows.append(np.log(p))
    return torch.tensor(np.array(rows), dtype=torch.float32)


def _masks(binary):
    """Mask logits +-BIG from a (Q, H, W) bool array."""
    return torch.where(torch.as_tensor(np.asarray(binary)), BIG, -BIG).float()


def panoptic_inference_loop(mask_cls, mask_pred, is_thing, object_mask_threshold=0.8, overlap_threshold=0.8):
    """The oracle: Mask2Former's `panoptic_inference` loop (maskformer_model.py), one kept query at a
    time with Python branches, written with local class indices and `is_thing` for the metadata."""
    num_classes = mask_cls.shape[-1] - 1
    is_thing = _as_is_thing(is_thing, num_classes, mask_cls.device)
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    masks = mask_pred.sigmoid()
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], masks[keep]

    h, w = mask_pred.shape[-2:]
    panoptic_seg = torch.zeros((h, w), dtype=torch.int32, device=mask_pred.device)
    segments_info = []
    if cur_masks.shape[0] == 0:
        return panoptic_seg, segments_info

    cur_mask_ids = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
    stuff_segment_of_class = {}
    segment_id = 0
    for k in range(cur_classes.shape[0]):
        pred_class = int(cur_classes[k].item())
        thing = bool(is_thing[pred_class].item())
        won = cur_mask_ids == k
        own = cur_masks[k] >= 0.5
        mask = won & own
        won_area, own_area = int(won.sum().item()), int(own.sum().item())
        if won_area == 0 or own_area == 0 or not bool(mask.any()):
            continue
        if won_area / own_area < overlap_threshold:
            continue
        if not thing and pred_class in stuff_segment_of_class:
            panoptic_seg[mask] = stuff_segment_of_class[pred_class]
            continue
        segment_id += 1
        panoptic_seg[mask] = segment_id
        if not thing:
            stuff_segment_of_class[pred_class] = segment_id
        segments_info.append({"id": segment_id, "isthing": thing, "category_id": pred_class})
    return panoptic_seg, segments_info


# The hand-built panoptic cases hold for the routine and for the oracle alike.
PANOPTIC_RULES = pytest.mark.parametrize("panoptic", [panoptic_inference, panoptic_inference_loop], ids=["routine", "oracle"])


def test_semantic_inference_is_the_explicit_sum():
    g = torch.Generator().manual_seed(0)
    mask_cls, mask_pred = torch.randn(4, 6, generator=g) * 3, torch.randn(4, 5, 7, generator=g) * 3
    out = semantic_inference(mask_cls, mask_pred)
    assert out.shape == (5, 5, 7)
    expected = np.zeros((5, 5, 7))
    c, m = mask_cls.double().numpy(), mask_pred.double().numpy()
    for q in range(4):
        p = np.exp(c[q]) / np.exp(c[q]).sum()  # softmax over K+1, then "no object" dropped
        for k in range(5):
            expected[k] += p[k] / (1 + np.exp(-m[q]))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_semantic_inference_and_resize_trace():
    g = torch.Generator().manual_seed(1)
    example = (torch.randn(3, 4, generator=g), torch.randn(3, 6, 8, generator=g))
    traced = torch.jit.trace(semantic_inference, example)
    other = (torch.randn(3, 4, generator=g) * 5, torch.randn(3, 6, 8, generator=g) * 5)
    torch.testing.assert_close(traced(*other), semantic_inference(*other))

    def resize(x):
        return resize_mask_predictions(x, (16, 20), (13, 18), (26, 36))

    traced = torch.jit.trace(resize, (example[1],))
    torch.testing.assert_close(traced(other[1]), resize(other[1]))


def test_resize_mask_predictions_matches_mask2former_order():
    """Upsample the batch to the padded size, then detectron2's sem_seg_postprocess per image."""
    g = torch.Generator().manual_seed(2)
    batch = torch.randn(2, 3, 8, 10, generator=g)
    padded, sizes, outputs = (32, 40), [(30, 37), (25, 40)], [(60, 74), (20, 32)]
    up = F.interpolate(batch, size=padded, mode="bilinear", align_corners=False)
    for i in range(2):
        ours = resize_mask_predictions(batch[i], padded, sizes[i], outputs[i])
        assert ours.shape == (3, *outputs[i])
        torch.testing.assert_close(ours, sem_seg_postprocess(up[i], sizes[i], *outputs[i]))


@PANOPTIC_RULES
def test_panoptic_merges_stuff_and_drops_low_scores(panoptic):
    # classes: 0 thing, 1 stuff, 2 stuff
    is_thing = torch.tensor([True, False, False])
    left = np.zeros((4, 6, 8), bool)
    left[0, :, :4] = True   # stuff 1, left half
    left[1, :, 4:] = True   # stuff 1 again, right half -> same segment
    left[2, 2:4, 2:6] = True  # thing, score 0.7 < 0.8 -> dropped
    left[3, :3, :] = True   # "no object" -> dropped
    mask_cls = _cls([(1, 0.95), (1, 0.9), (0, 0.7), "none"], 3)
    seg, info = panoptic(mask_cls, _masks(left), is_thing, 0.8, 0.8)
    assert seg.dtype == torch.int32 and seg.shape == (6, 8)
    assert info == [{"id": 1, "isthing": False, "category_id": 1}]
    assert (seg == 1).all()


@PANOPTIC_RULES
def test_panoptic_score_threshold_is_strict(panoptic):
    is_thing = [True, False]
    binary = np.zeros((1, 4, 4), bool)
    binary[0, 1:3, 1:3] = True
    mask_cls = _cls([(0, 0.9)], 2)
    score = F.softmax(mask_cls, -1).max().item()
    assert panoptic(mask_cls, _masks(binary), is_thing, score, 0.8)[1] == []
    below = float(np.nextafter(np.float32(score), np.float32(0)))  # scores are float32
    seg, info = panoptic(mask_cls, _masks(binary), is_thing, below, 0.8)
    assert info == [{"id": 1, "isthing": True, "category_id": 0}]
    assert (seg.numpy() == binary[0]).all()


@PANOPTIC_RULES
def test_panoptic_overlap_rule_and_ids(panoptic):
    is_thing = torch.tensor([True, True, False])
    binary = np.zeros((3, 8, 8), bool)
    binary[0, 0:6] = True  # rows 0-5, best score
    binary[1, 2:8] = True  # rows 2-7: wins rows 6-7 only, 2/6 of its own area
    binary[2, :, :] = False
    binary[2, 0:2, 0:2] = True  # stuff under the first thing: wins nothing -> no segment
    mask_cls = _cls([(0, 0.95), (1, 0.9), (2, 0.85)], 3)
    seg, info = panoptic(mask_cls, _masks(binary), is_thing, 0.8, 0.8)
    assert info == [{"id": 1, "isthing": True, "category_id": 0}]
    assert (seg[0:6] == 1).all() and (seg[6:] == 0).all()
    # 2/6 >= 0.3: kept, ids in query order from 1
    seg, info = panoptic(mask_cls, _masks(binary), is_thing, 0.8, 0.3)
    assert info == [{"id": 1, "isthing": True, "category_id": 0}, {"id": 2, "isthing": True, "category_id": 1}]
    assert (seg[6:] == 2).all() and (seg[:6] == 1).all()


@PANOPTIC_RULES
def test_panoptic_nothing_kept_and_bad_is_thing(panoptic):
    seg, info = panoptic(_cls(["none", "none"], 2), torch.zeros(2, 3, 5), [True, False])
    assert info == [] and seg.shape == (3, 5) and (seg == 0).all() and seg.dtype == torch.int32
    with pytest.raises(ValueError, match="one entry per class"):
        panoptic(_cls(["none"], 2), torch.zeros(1, 3, 5), [True, False, True])


def _ground_truth_panoptic():
    """12 x 16 map: stuff 3 in two disconnected parts, stuff 4, things 0, 0 (touching), 1; VOID."""
    gt = np.zeros((12, 16), np.int64)
    segments = {}
    gt[:, :] = 10
    segments[10] = (3, False)
    gt[:, 8:] = 11
    segments[11] = (4, False)
    gt[:, 12:] = 10  # stuff 3 again on the right: one segment in two parts
    gt[2:6, 2:5] = 20
    segments[20] = (0, True)
    gt[2:6, 5:7] = 21  # same class, touching the previous instance
    segments[21] = (0, True)
    gt[7:10, 9:14] = 22
    segments[22] = (1, True)
    gt[10:, :3] = 0  # VOID
    return gt, segments


@PANOPTIC_RULES
def test_panoptic_oracle_reproduces_the_ground_truth(panoptic):
    gt, segments = _ground_truth_panoptic()
    num_classes, is_thing = 5, torch.tensor([True, True, False, False, False])
    queries = []  # (class, binary mask); stuff 3 given as two queries (one per part), merged back
    for sid, (c, thing) in segments.items():
        if sid == 10:
            left, right = gt == 10, gt == 10
            left[:, 8:] = False
            right[:, :8] = False
            queries += [(c, left), (c, right)]
        else:
            queries.append((c, gt == sid))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(queries))
    queries = [queries[i] for i in order]
    mask_cls = torch.zeros(len(queries) + 3, num_classes + 1)
    for q, (c, _) in enumerate(queries):
        mask_cls[q, c] = 15.0  # one-hot: softmax ~ 1
    mask_cls[len(queries):, -1] = 15.0  # "no object" queries with random masks: ignored
    binary = np.concatenate([np.stack([m for _, m in queries]), rng.random((3, 12, 16)) > 0.5])
    seg, info = panoptic(mask_cls, _masks(binary), is_thing)

    seg = seg.numpy()
    assert [s["id"] for s in info] == list(range(1, len(info) + 1))
    assert len(info) == len(segments)
    by_id = {s["id"]: s for s in info}
    assert ((seg == 0) == (gt == 0)).all()
    for sid, (c, thing) in segments.items():
        pred = np.unique(seg[gt == sid])
        assert len(pred) == 1, f"segment {sid} split into {pred}"
        assert (seg == pred[0]).sum() == (gt == sid).sum()
        assert by_id[int(pred[0])]["category_id"] == c and by_id[int(pred[0])]["isthing"] == thing


@PANOPTIC_RULES
def test_panoptic_own_mask_includes_probability_one_half(panoptic):
    """A pixel belongs to a query's own mask at sigmoid >= 0.5, i.e. from logit 0 on (Mask2Former:
    `cur_masks[k] >= 0.5`); the own area of the overlap test counts it too."""
    mask_pred = torch.full((1, 4, 4), -1.0)
    mask_pred[0, :, :2] = 0.0  # exactly probability 0.5
    mask_pred[0, 0, 3] = 1e-3
    seg, info = panoptic(_cls([(0, 0.9)], 1), mask_pred, [True], 0.8, 1.0)
    assert info == [{"id": 1, "isthing": True, "category_id": 0}]
    assert torch.equal(seg, (mask_pred[0] >= 0).int())
    # Query 1 wins 2 of its 10 own pixels (all at logit 0): 2/10 passes 0.2, fails 0.25.
    mask_pred = torch.full((2, 4, 4), -5.0)
    mask_pred[0, :, :2] = 5.0
    mask_pred[1, :, :2] = 0.0
    mask_pred[1, 0, 2:] = 0.0
    mask_cls = _cls([(0, 0.95), (0, 0.9)], 1)
    assert len(panoptic(mask_cls, mask_pred, [True], 0.8, 0.25)[1]) == 1
    seg, info = panoptic(mask_cls, mask_pred, [True], 0.8, 0.2)
    assert len(info) == 2 and (seg == 2).sum() == 2


# ---- the routine against the oracle -----------------------------------------------------------
def _tensor_rule(mask_cls, mask_pred, is_thing, *thresholds):
    seg, segment_ids, classes, isthing = panoptic_inference_tensors(mask_cls, mask_pred, is_thing, *thresholds)
    return seg, panoptic_segments_info(segment_ids, classes, isthing)


def _assert_same_panoptic(a, b):
    """Same map and same segments_info: the routine keeps the loop's ids and order."""
    assert a[0].dtype == b[0].dtype == torch.int32
    assert torch.equal(a[0], b[0])
    assert a[1] == b[1]


def _random_case(g, num_queries, num_classes, h, w):
    """Few classes (stuff queries share classes: merging), blob-like masks of varied size, some exact
    ties (saturated masks, repeated class rows) and pixels at exactly probability 0.5."""
    mask_cls = torch.randn(num_queries, num_classes + 1, generator=g) * 3
    dup = torch.randint(0, num_queries, (num_queries // 3,), generator=g)
    if len(dup) > 1:
        mask_cls[dup[1:]] = mask_cls[dup[0]].clone()  # equal scores: argmax ties break in query order
    coarse = torch.randn(num_queries, 1, max(h // 4, 1), max(w // 4, 1), generator=g)
    mask_pred = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[:, 0] * 8
    mask_pred += torch.randn(num_queries, 1, 1, generator=g) * 4
    saturate = torch.rand(num_queries, generator=g) < 0.3
    mask_pred[saturate] = mask_pred[saturate].sign() * 30.0
    mask_pred[torch.rand(mask_pred.shape, generator=g) < 0.1] = 0.0
    is_thing = torch.rand(num_classes, generator=g) < 0.5
    return mask_cls, mask_pred, is_thing


def test_panoptic_routine_equals_the_oracle_on_random_queries():
    g = torch.Generator().manual_seed(0)
    merged = opened = at_score = 0
    for i in range(150):
        q, k = int(torch.randint(1, 16, (1,), generator=g)), int(torch.randint(1, 5, (1,), generator=g))
        mask_cls, mask_pred, is_thing = _random_case(g, q, k, 9 + i % 7, 11 + i % 5)
        scores, labels = F.softmax(mask_cls, -1).max(-1)
        # Every third case: the score threshold at a query's own score (strictly above: dropped).
        score_threshold = float(scores[i % q]) if i % 3 == 0 else float(torch.rand(1, generator=g)) * 0.8
        thresholds = (score_threshold, [0.0, 0.3, 0.8, 1.0][i % 4])
        loop = panoptic_inference_loop(mask_cls, mask_pred, is_thing, *thresholds)
        _assert_same_panoptic(_tensor_rule(mask_cls, mask_pred, is_thing, *thresholds), loop)
        _assert_same_panoptic(panoptic_inference(mask_cls, mask_pred, is_thing, *thresholds), loop)
        # How often stuff merging ran (a stuff segment drawn from several queries' pixels), so the
        # comparison is not vacuous there.
        keep = (labels != k) & (scores > thresholds[0])
        winner = torch.where(keep[:, None, None], scores[:, None, None] * mask_pred.sigmoid(), -1.0).argmax(0)
        opened += len(loop[1])
        merged += any(len(winner[loop[0] == s["id"]].unique()) > 1 for s in loop[1] if not s["isthing"])
        at_score += i % 3 == 0 and labels[i % q] != k
    assert opened > 150 and merged > 10 and at_score > 20


def test_panoptic_routine_equals_the_oracle_on_hand_built_queries():
    is_thing = torch.tensor([True, True, False])
    binary = np.zeros((5, 8, 8), bool)
    binary[0, 0:4, 0:4] = True  # thing 0, best score
    binary[1, 4:8, 5:8] = True  # thing 1
    binary[2, :, 0:4] = True  # stuff 2, left: wins rows 4-7 = 16 of 32 pixels (ratio 0.5 exactly)
    binary[3, :, 4:8] = True  # stuff 2, right: wins 20 of 32; merged into query 2's segment
    binary[4, 7:, :] = True  # "no object"
    mask_cls = _cls([(0, 0.95), (1, 0.9), (2, 0.85), (2, 0.85), "none"], 3)
    for thresholds in [(0.8, 0.8), (0.8, 0.3), (0.0, 0.0), (0.9, 0.5), (0.99, 0.5), (0.8, 0.5), (0.8, 0.5 + 1e-12)]:
        ours = _tensor_rule(mask_cls, _masks(binary), is_thing, *thresholds)
        _assert_same_panoptic(ours, panoptic_inference_loop(mask_cls, _masks(binary), is_thing, *thresholds))
        if thresholds == (0.8, 0.3):  # the case is what it says: 2 things and 1 stuff from 2 queries
            assert [s["category_id"] for s in ours[1]] == [0, 1, 2] and (ours[0] == 3).sum() == 36
        if thresholds == (0.8, 0.5 + 1e-12):  # query 2 is just below: the ratio is exact (float64)
            assert (ours[0] == 3).sum() == 20
    nothing = (_cls(["none", "none"], 2), torch.zeros(2, 3, 5), [True, False])
    _assert_same_panoptic(_tensor_rule(*nothing), panoptic_inference_loop(*nothing))
    with pytest.raises(ValueError, match="one entry per class"):
        panoptic_inference_tensors(_cls(["none"], 2), torch.zeros(1, 3, 5), [True, False, True])


def test_panoptic_routine_traces_to_a_graph_that_generalises():
    """Traced on one case, run on others with other kept queries, overlaps and merges."""
    g = torch.Generator().manual_seed(1)
    cases = [_random_case(g, 12, 3, 10, 12) for _ in range(40)]
    is_thing = torch.tensor([True, False, False])  # fixed per model, as the class set is
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # is_thing becomes a constant: intended
        traced = torch.jit.trace(lambda c, m: panoptic_inference_tensors(c, m, is_thing, 0.4, 0.5), cases[0][:2],
                                 check_trace=False)
    outcomes, kept = set(), set()
    for mask_cls, mask_pred, _ in cases:
        seg, segment_ids, classes, isthing = traced(mask_cls, mask_pred)
        ours = (seg, panoptic_segments_info(segment_ids, classes, isthing))
        loop = panoptic_inference_loop(mask_cls, mask_pred, is_thing, 0.4, 0.5)
        _assert_same_panoptic(ours, loop)
        outcomes.add(tuple((s["category_id"], s["isthing"]) for s in loop[1]))
        scores, labels = F.softmax(mask_cls, -1).max(-1)
        kept.add(int(((labels != 3) & (scores > 0.4)).sum()))
    assert len(outcomes) > 10 and len(kept) > 3  # the cases really differ, also in how many queries are kept


def test_instance_masks_are_cut_at_probability_one_half():
    """pred_masks = logit > 0 (Mask2Former: `(mask_pred > 0).float()`), so sigmoid > 0.5 strictly; the
    score is the class score x the mean probability over that mask. Logits near 0 decide it."""
    mask_cls = torch.log(torch.tensor([[0.7, 0.1, 0.2]]))
    logits = torch.tensor([[[0.0, 0.05, -0.05, 0.4], [0.3, -0.3, 2.0, -2.0]]])
    out = instance_inference(mask_cls, logits, [True, True], top_k=1)
    expected = torch.tensor([[[False, True, False, True], [True, False, True, False]]])
    assert torch.equal(out.pred_masks, expected)
    mean = torch.sigmoid(torch.tensor([0.05, 0.4, 0.3, 2.0])).mean()
    torch.testing.assert_close(out.scores, 0.7 * mean[None])
    torch.testing.assert_close(out.pred_boxes.tensor, torch.tensor([[0.0, 0.0, 4.0, 2.0]]))


def test_instance_top_k_things_and_scores():
    # classes 0, 1 things, 2 stuff
    is_thing = [True, True, False]
    mask_cls = torch.log(torch.tensor([
        [0.60, 0.05, 0.30, 0.05],  # q0: thing 0 (0.60), stuff 2 (0.30)
        [0.05, 0.50, 0.40, 0.05],  # q1: thing 1 (0.50), stuff 2 (0.40)
        [0.02, 0.02, 0.06, 0.90],  # q2: mostly no object
    ]))
    logits = torch.full((3, 6, 8), -3.0)
    logits[0, 1:3, 2:5] = torch.tensor([1.0, 2.0, 3.0])  # varying logits: a mean, not a max
    logits[1, 4:6, 0:2] = 4.0
    out = instance_inference(mask_cls, logits, is_thing, top_k=3)
    assert isinstance(out, Instances) and out.image_size == (6, 8)
    # top 3 pairs: (q0, 0) .60, (q1, 1) .50, (q1, 2) .40 -> the stuff pair dropped after top-k
    assert out.pred_classes.tolist() == [0, 1]
    assert out.pred_masks.dtype == torch.bool and out.pred_masks.shape == (2, 6, 8)
    assert (out.pred_masks[0] == (logits[0] > 0)).all()
    mean0 = torch.sigmoid(torch.tensor([1.0, 2.0, 3.0])).mean()
    torch.testing.assert_close(out.scores, torch.stack([0.60 * mean0, 0.50 * torch.sigmoid(torch.tensor(4.0))]))
    torch.testing.assert_close(out.pred_boxes.tensor, torch.tensor([[2.0, 1, 5, 3], [0.0, 4, 2, 6]]))
    torch.testing.assert_close(out.pred_boxes.tensor, BitMasks(out.pred_masks).get_bounding_boxes().tensor)
    # one query may give several classes; top_k larger than Q x K is capped
    assert instance_inference(mask_cls, logits, [True] * 3, top_k=100).pred_classes.numel() == 9
    assert instance_inference(mask_cls, logits, is_thing, top_k=1).pred_classes.tolist() == [0]
    assert instance_inference(mask_cls, logits, [True] * 3, top_k=0).pred_classes.numel() == 3  # 0 = Q


def test_masks_to_boxes_matches_detectron2():
    g = torch.Generator().manual_seed(3)
    masks = torch.rand(6, 9, 11, generator=g) > 0.93
    masks[2] = False  # empty -> zero box
    masks[3] = False
    masks[3, 8, 10] = True  # single corner pixel
    torch.testing.assert_close(masks_to_boxes(masks), BitMasks(masks).get_bounding_boxes().tensor)
    assert masks_to_boxes(torch.zeros(0, 4, 5, dtype=torch.bool)).shape == (0, 4)


def test_instance_tensors_trace_with_a_data_dependent_thing_filter():
    is_thing = torch.tensor([True, False, True, False])
    g = torch.Generator().manual_seed(4)

    def run(c, m):
        return instance_inference_tensors(c, m, is_thing, 6)

    example = (torch.randn(5, 5, generator=g) * 3, torch.randn(5, 7, 9, generator=g) * 3)
    with warnings.catch_warnings():  # shape checks and the constant is_thing, as intended
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(run, example, check_trace=False)
    counts = set()
    for seed in range(5, 10):
        g.manual_seed(seed)
        other = (torch.randn(5, 5, generator=g) * 3, torch.randn(5, 7, 9, generator=g) * 3)
        for a, b in zip(traced(*other), run(*other)):
            torch.testing.assert_close(a, b)
        counts.add(run(*other)[3].numel())
    assert len(counts) > 1, "every input kept the same number of things: the trace check is vacuous"



def test_instance_boxes_from_logits_are_the_masks_boxes_and_channels_gather_as_index_copy():
    """The export-friendly forms (boxes from max logit > 0, dataset channels by a gather) give what
    masks_to_boxes(binary) and index_copy_ give, with empty masks and no detections too."""
    from zsi_d2.modeling.mask_former.inference import (
        instance_inference_tensors, masks_to_boxes, to_dataset_channels,
    )

    gen = torch.Generator().manual_seed(0)
    mask_cls = torch.randn(6, 5, generator=gen)
    mask_pred = torch.randn(6, 12, 16, generator=gen) - 1.5
    mask_pred[2] = -1.0  # a query whose mask is empty
    for is_thing in ([True] * 4, [False] * 4):  # detections, and none at all
        binary, boxes, _, _ = instance_inference_tensors(mask_cls, mask_pred, is_thing, top_k=10)
        assert torch.equal(boxes, masks_to_boxes(binary))
    assert binary.shape[0] == 0
    local = torch.randn(3, 4, 5, generator=gen)
    ids = torch.tensor([4, 0, 2])
    expected = local.new_zeros(6, 4, 5).index_copy_(0, ids, local)
    assert torch.equal(to_dataset_channels(local, ids, 6), expected)
