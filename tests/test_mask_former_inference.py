"""Mask-classification inference (zsi_d2.modeling.mask_former.inference) on hand-built queries.

Scores are set exactly through log-probability logits, so every threshold case is decided by the
rule under test and not by rounding. The oracle test is the core of the later PQ = 100 test: queries
that copy a ground-truth panoptic map must give that map back.
"""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import BitMasks, Instances

from zsi_d2.modeling.mask_former.inference import (
    instance_inference, instance_inference_tensors, masks_to_boxes, panoptic_inference,
    resize_mask_predictions, semantic_inference,
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


def test_panoptic_merges_stuff_and_drops_low_scores():
    # classes: 0 thing, 1 stuff, 2 stuff
    is_thing = torch.tensor([True, False, False])
    left = np.zeros((4, 6, 8), bool)
    left[0, :, :4] = True   # stuff 1, left half
    left[1, :, 4:] = True   # stuff 1 again, right half -> same segment
    left[2, 2:4, 2:6] = True  # thing, score 0.7 < 0.8 -> dropped
    left[3, :3, :] = True   # "no object" -> dropped
    mask_cls = _cls([(1, 0.95), (1, 0.9), (0, 0.7), "none"], 3)
    seg, info = panoptic_inference(mask_cls, _masks(left), is_thing, 0.8, 0.8)
    assert seg.dtype == torch.int32 and seg.shape == (6, 8)
    assert info == [{"id": 1, "isthing": False, "category_id": 1}]
    assert (seg == 1).all()


def test_panoptic_score_threshold_is_strict():
    is_thing = [True, False]
    binary = np.zeros((1, 4, 4), bool)
    binary[0, 1:3, 1:3] = True
    mask_cls = _cls([(0, 0.9)], 2)
    score = F.softmax(mask_cls, -1).max().item()
    assert panoptic_inference(mask_cls, _masks(binary), is_thing, score, 0.8)[1] == []
    below = float(np.nextafter(np.float32(score), np.float32(0)))  # scores are float32
    seg, info = panoptic_inference(mask_cls, _masks(binary), is_thing, below, 0.8)
    assert info == [{"id": 1, "isthing": True, "category_id": 0}]
    assert (seg.numpy() == binary[0]).all()


def test_panoptic_overlap_rule_and_ids():
    is_thing = torch.tensor([True, True, False])
    binary = np.zeros((3, 8, 8), bool)
    binary[0, 0:6] = True  # rows 0-5, best score
    binary[1, 2:8] = True  # rows 2-7: wins rows 6-7 only, 2/6 of its own area
    binary[2, :, :] = False
    binary[2, 0:2, 0:2] = True  # stuff under the first thing: wins nothing -> no segment
    mask_cls = _cls([(0, 0.95), (1, 0.9), (2, 0.85)], 3)
    seg, info = panoptic_inference(mask_cls, _masks(binary), is_thing, 0.8, 0.8)
    assert info == [{"id": 1, "isthing": True, "category_id": 0}]
    assert (seg[0:6] == 1).all() and (seg[6:] == 0).all()
    # 2/6 >= 0.3: kept, ids in query order from 1
    seg, info = panoptic_inference(mask_cls, _masks(binary), is_thing, 0.8, 0.3)
    assert info == [{"id": 1, "isthing": True, "category_id": 0}, {"id": 2, "isthing": True, "category_id": 1}]
    assert (seg[6:] == 2).all() and (seg[:6] == 1).all()


def test_panoptic_nothing_kept_and_bad_is_thing():
    seg, info = panoptic_inference(_cls(["none", "none"], 2), torch.zeros(2, 3, 5), [True, False])
    assert info == [] and seg.shape == (3, 5) and (seg == 0).all() and seg.dtype == torch.int32
    with pytest.raises(ValueError, match="one entry per class"):
        panoptic_inference(_cls(["none"], 2), torch.zeros(1, 3, 5), [True, False, True])


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


def test_panoptic_oracle_reproduces_the_ground_truth():
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
    seg, info = panoptic_inference(mask_cls, _masks(binary), is_thing)

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

