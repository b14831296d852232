"""Mask-classification inference on one image: semantic, panoptic and instance outputs.

Inputs are one image's query predictions: `mask_cls` (Q, K+1) class logits ("no object" last) and
`mask_pred` (Q, H, W) mask logits at the resolution the rule should work at (see
`resize_mask_predictions`). Classes are *local* indices into the model's active class set; the
caller maps them to dataset ids. The rules are Mask2Former's (`maskformer_model.py`,
semantic/panoptic/instance_inference), so thresholds and scores read the same as the published numbers.

Every rule traces (`torch.jit.trace`) to a graph that stays correct for other inputs of the same
shape, so the eager model and its TorchScript export run the same code: no `.item()`, no Python
branch on values; top-k is a fixed size, the kept queries and the thing filter are boolean or
integer indices (recorded as data-dependent ops). `panoptic_inference_tensors` returns per-query
tensors, and `panoptic_segments_info` turns them into `segments_info` outside a trace;
`panoptic_inference` does both. `instance_inference` returns `Instances`, which detectron2's
`TracingAdapter` flattens.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from detectron2.structures import Boxes, Instances

__all__ = [
    "upsample_to_padded",
    "crop_and_resize",
    "resize_mask_predictions",
    "semantic_inference",
    "panoptic_inference",
    "panoptic_inference_tensors",
    "panoptic_segments_info",
    "instance_inference",
    "instance_inference_tensors",
    "masks_to_boxes",
    "to_dataset_channels",
]


def upsample_to_padded(mask_pred: torch.Tensor, padded_size: Tuple[int, int]) -> torch.Tensor:
    """(Q, h, w) mask logits -> (Q, H_pad, W_pad): the masks cover the padded batch tensor, so they are
    upsampled to it before the padding can be cut away (Mask2Former's first step)."""
    if mask_pred.dim() != 3:
        raise ValueError(f"upsample_to_padded: expected (Q, h, w) logits, got {tuple(mask_pred.shape)}")
    return F.interpolate(mask_pred[None], size=tuple(padded_size), mode="bilinear", align_corners=False)[0]


def crop_and_resize(x: torch.Tensor, image_size: Tuple[int, int], output_size: Tuple[int, int]) -> torch.Tensor:
    """(C, H_pad, W_pad) -> (C, out_h, out_w): detectron2's `sem_seg_postprocess`. The padding is cut
    away (`image_size`, the resized image before padding), then a bilinear resize to `output_size`
    (the dataset dict's "height", "width"), so outputs align with the original image."""
    x = x[None, :, : image_size[0], : image_size[1]]
    return F.interpolate(x, size=tuple(output_size), mode="bilinear", align_corners=False)[0]


def resize_mask_predictions(
    mask_pred: torch.Tensor,
    padded_size: Tuple[int, int],
    image_size: Tuple[int, int],
    output_size: Tuple[int, int],
) -> torch.Tensor:
    """Mask logits (Q, h, w) of one padded image -> (Q, out_h, out_w) at the requested output size.

    Mask2Former's order when panoptic or instance outputs are on: `upsample_to_padded`, then
    `crop_and_resize`. Resizing logits (not probabilities) keeps the 0-logit boundary.
    """
    if mask_pred.dim() != 3:
        raise ValueError(f"resize_mask_predictions: expected (Q, h, w) logits, got {tuple(mask_pred.shape)}")
    return crop_and_resize(upsample_to_padded(mask_pred, padded_size), image_size, output_size)


def semantic_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor,
                       class_probs: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(K, H, W) per-pixel class scores: sum over queries of P(class | query) x P(pixel in mask).

    The softmax is over all K+1 logits and "no object" is dropped afterwards, so a query that is
    mostly "no object" contributes little to every class. `class_probs` (Q, K), when given, replaces
    that softmax as it is (ZegFormer's fused segmenter + CLIP scores: no renormalisation).
    """
    probs = F.softmax(mask_cls, dim=-1)[..., :-1] if class_probs is None else class_probs
    return torch.einsum("qc,qhw->chw", probs.to(mask_pred.dtype), mask_pred.sigmoid())


def to_dataset_channels(local: torch.Tensor, dataset_ids: torch.Tensor, num_dataset_classes: int) -> torch.Tensor:
    """(K, H, W) scores of the local classes -> (num_dataset_classes, H, W), channel `dataset_ids[k]`
    holding local channel k, zeros elsewhere. A gather through the inverse map rather than a scatter
    (`index_copy_`): the same values, but exported to ONNX a scatter is ScatterElements with an index
    per element, 7.6 ms of a 128x128 image's 22 channels in onnxruntime against a fraction for Gather."""
    dataset_ids = dataset_ids.to(local.device)
    inverse = torch.full((num_dataset_classes,), local.shape[0], dtype=torch.long, device=local.device)
    inverse[dataset_ids] = torch.arange(local.shape[0], device=local.device)  # traced on constants: folded
    padded = torch.cat([local, local.new_zeros((1,) + tuple(local.shape[1:]))])  # row K: the zero channel
    return padded.index_select(0, inverse)


def _as_is_thing(is_thing, num_classes: int, device) -> torch.Tensor:
    """(K,) bool tensor on `device`; refuses a length that does not match the class logits."""
    is_thing = torch.as_tensor(is_thing, dtype=torch.bool, device=device)
    if is_thing.dim() != 1 or is_thing.numel() != num_classes:
        raise ValueError(
            f"is_thing must have one entry per class (K = {num_classes}, from mask_cls with K+1 "
            f"columns, 'no object' last); got shape {tuple(is_thing.shape)}"
        )
    return is_thing


def _count(ids: torch.Tensor, size: int) -> torch.Tensor:
    """torch.bincount(ids, minlength=size) for ids < size, as a scatter-add (ONNX has no bincount)."""
    return torch.zeros(size, dtype=torch.int32, device=ids.device).scatter_add_(0, ids, torch.ones_like(ids, dtype=torch.int32))


def panoptic_inference_tensors(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    is_thing: Union[torch.Tensor, Sequence[bool]],
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Non-overlapping segments from query predictions (Mask2Former's rule), as per-query tensors.

    1. Keep queries whose top class is not "no object" and whose top softmax score is strictly
       above `object_mask_threshold`.
    2. Every pixel goes to the kept query maximising score x sigmoid(mask) (ties: the first).
    3. A query becomes a segment on the pixels it wins where its own mask is >= 0.5, unless its
       won area / its own area (mask >= 0.5) is below `overlap_threshold` (mostly covered by
       better queries) or either area is 0. As in Mask2Former, the won area counts every pixel
       the query wins, also where its own mask is below 0.5.
    4. Queries of one stuff class are merged into one segment (stuff has no instances): a valid
       stuff query is drawn with the first valid query of its class.
    Segment ids are 1..n in query order. Mask2Former writes this as a loop over the kept queries
    with `.item()`; here it has no Python loop or branch on values, so `torch.jit.trace` keeps it
    correct for other inputs and the eager model and its export share it (tests hold it equal to
    the loop). Only the kept queries' masks are read (one extra sentinel row, scored below every
    kept query, wins where none is kept), so it costs what the loop costs.

    Returns `panoptic_seg` (H, W) int32 (0 = no segment) and, per query, `segment_ids` (Q,) int32
    (the id of the segment the query opens, 0 where it opens none: dropped, rejected or merged into
    an earlier stuff query), `classes` (Q,) long local indices and `isthing` (Q,) bool.
    """
    num_queries, num_classes = mask_cls.shape[0], mask_cls.shape[-1] - 1
    is_thing = _as_is_thing(is_thing, num_classes, mask_cls.device)
    scores, classes = F.softmax(mask_cls, dim=-1).max(-1)
    thing = is_thing[classes.clamp(max=num_classes - 1)]  # "no object" rows: any value, never kept
    if num_queries == 0:  # a shape, not a value: fixed under a trace
        return mask_pred.new_zeros(mask_pred.shape[-2:], dtype=torch.int32), classes.int(), classes, thing
    keep = classes.ne(num_classes) & (scores > object_mask_threshold)

    kept = keep.nonzero()[:, 0]  # query ids, in order
    nobody = kept.new_full((1,), num_queries)
    rows = torch.cat([kept, torch.zeros_like(nobody)])  # + a sentinel row (any mask), weighted -1
    masks = mask_pred[rows].sigmoid()
    weights = torch.cat([scores[kept], scores.new_full((1,), -1.0)])
    row_winner = (weights.view(-1, 1, 1) * masks).argmax(0).flatten()  # (H*W,) rows; the sentinel: no kept query
    row_query = torch.cat([kept, nobody])
    winner = row_query[row_winner]  # (H*W,) query ids; num_queries where no query is kept
    own = (masks >= 0.5).flatten(1)
    own_at_winner = own.gather(0, row_winner.unsqueeze(0))[0]
    own_rows = own.sum(1, dtype=torch.int32)  # int32: a default bool sum copies every mask to int64 first
    own_area = own_rows.new_zeros(num_queries + 1).scatter(0, row_query, own_rows)[:num_queries]
    won_area = _count(winner, num_queries + 1)[:num_queries]
    drawn_area = _count(torch.where(own_at_winner, winner, nobody), num_queries + 1)[:num_queries]
    ratio_ok = won_area.double() / own_area.double().clamp(min=1) >= overlap_threshold  # float64: Python's int / int
    valid = keep & (won_area > 0) & (own_area > 0) & (drawn_area > 0) & ratio_ok

    # Stuff merging: a valid stuff query points at the first valid stuff query of its class.
    query_ids = torch.arange(num_queries, device=mask_cls.device)
    valid_stuff = valid & ~thing
    same = valid_stuff.view(-1, 1) & valid_stuff.view(1, -1) & (classes.view(-1, 1) == classes.view(1, -1))
    first = same.int().argmax(1)  # first True per row (argmax returns the first maximum)
    owner = torch.where(valid_stuff, first, query_ids)
    opens = valid & (owner == query_ids)
    segment_ids = torch.where(opens, opens.int().cumsum(0), torch.zeros_like(query_ids)).int()
    drawn_as = torch.where(valid, segment_ids[owner], torch.zeros_like(segment_ids))
    drawn_as = torch.cat([drawn_as, drawn_as.new_zeros(1)])  # "nobody" draws nothing
    panoptic_seg = drawn_as[winner] * own_at_winner  # int32: 0 where the winner's own mask is below 0.5
    return panoptic_seg.view(mask_pred.shape[-2:]), segment_ids, classes, thing


def panoptic_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    is_thing: Union[torch.Tensor, Sequence[bool]],
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
) -> Tuple[torch.Tensor, List[Dict]]:
    """`panoptic_inference_tensors` in detectron2's format: `panoptic_seg` (H, W) int32 and
    `segments_info` [{"id", "isthing", "category_id": local class index}] (what detectron2's
    panoptic evaluators read, once category_id is mapped to the dataset's ids)."""
    seg, segment_ids, classes, isthing = panoptic_inference_tensors(
        mask_cls, mask_pred, is_thing, object_mask_threshold, overlap_threshold)
    return seg, panoptic_segments_info(segment_ids, classes, isthing)


def panoptic_segments_info(
    segment_ids: torch.Tensor,
    classes: torch.Tensor,
    isthing: torch.Tensor,
    category_ids: Union[torch.Tensor, Sequence[int], None] = None,
) -> List[Dict]:
    """`segments_info` from `panoptic_inference_tensors`' per-query tensors (not traced: a list of
    dicts), sorted by id. `category_ids` maps local classes to dataset ids (None: keep local indices)."""
    opened = segment_ids > 0
    classes = classes[opened].tolist()
    if category_ids is not None:
        lookup = torch.as_tensor(category_ids).tolist()
        classes = [lookup[c] for c in classes]
    info = [{"id": int(i), "isthing": bool(t), "category_id": int(c)}
            for i, c, t in zip(segment_ids[opened].tolist(), classes, isthing[opened].tolist())]
    return sorted(info, key=lambda s: s["id"])


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(n, 4) float XYXY tight boxes of (n, H, W) binary masks; all zeros for an empty mask.

    Same values as detectron2's `BitMasks.get_bounding_boxes` (x1, y1 inclusive; x2, y2 = last
    pixel + 1), but vectorised (no Python loop, so it traces) and on the masks' device.
    """
    masks = masks.bool()
    return _boxes_from_projections(masks.any(dim=1), masks.any(dim=2))


def _boxes_from_projections(cols: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """masks_to_boxes from the masks' projections: `cols` (n, W) and `rows` (n, H), whether any pixel
    of that column / row is in the mask."""
    (n, w), h = cols.shape, rows.shape[1]
    xs = torch.arange(w, device=cols.device).expand(n, w)
    ys = torch.arange(h, device=cols.device).expand(n, h)
    x1 = torch.where(cols, xs, w).min(dim=1).values
    x2 = torch.where(cols, xs, -1).max(dim=1).values + 1
    y1 = torch.where(rows, ys, h).min(dim=1).values
    y2 = torch.where(rows, ys, -1).max(dim=1).values + 1
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float()
    nonempty = cols.any(dim=1)
    return torch.where(nonempty[:, None], boxes, torch.zeros_like(boxes))


def instance_inference_tensors(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    is_thing: Union[torch.Tensor, Sequence[bool]],
    top_k: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tensors of `instance_inference`: (pred_masks bool, pred_boxes (n, 4), scores, pred_classes).

    Every (query, class) pair is a candidate with score softmax(mask_cls)[q, c] ("no object"
    dropped); the `top_k` best pairs are kept (sorted by class score; capped at Q x K; `top_k` <= 0
    means Q, Mask2Former's default and MASK_FORMER.TEST.DETECTIONS_PER_IMAGE = 0),
    then only thing classes (stuff has no instances; pass all-True for a things-only dataset).
    One query may therefore give several detections of different classes, as in Mask2Former.
    Final score = class score x mean mask probability over the binary mask (logit > 0).
    """
    num_queries, num_classes = mask_cls.shape[0], mask_cls.shape[-1] - 1
    is_thing = _as_is_thing(is_thing, num_classes, mask_cls.device)
    scores = F.softmax(mask_cls, dim=-1)[:, :-1]
    k = min(int(top_k) if top_k > 0 else num_queries, num_queries * num_classes)
    class_scores, flat_idx = scores.flatten().topk(k, sorted=True)
    classes = flat_idx % num_classes
    query_idx = torch.div(flat_idx, num_classes, rounding_mode="floor")
    keep = is_thing[classes]
    class_scores, classes, query_idx = class_scores[keep], classes[keep], query_idx[keep]
    # Mask scores and boxes are per query, computed once per query and then picked for each
    # detection (a query can give several): the same values as computing them on the picked masks,
    # on Q masks instead of top_k. Boxes are masks_to_boxes(logits > 0), their projections taken as
    # max logit > 0 (a pixel > 0 in that column / row): a float ReduceMax in ONNX, where a bool
    # `any` is a cast to int64 and an int64 ReduceSum (17 ms of onnxruntime's 60 ms post-processing
    # on 95 masks of 128x128).
    positive = (mask_pred > 0).flatten(1).to(mask_pred.dtype)
    query_mask_scores = (mask_pred.sigmoid().flatten(1) * positive).sum(1) / (positive.sum(1) + 1e-6)
    query_boxes = _boxes_from_projections(mask_pred.amax(dim=1) > 0, mask_pred.amax(dim=2) > 0)
    binary = mask_pred[query_idx] > 0
    return binary, query_boxes[query_idx], class_scores * query_mask_scores[query_idx], classes


def instance_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    is_thing: Union[torch.Tensor, Sequence[bool]],
    top_k: int,
) -> Instances:
    """detectron2 `Instances` of one image: pred_masks (bool), pred_boxes (from the masks), scores,
    pred_classes (local indices). See `instance_inference_tensors` for the rule.

    Unlike Mask2Former (zero boxes unless an option is uncommented), boxes are the masks' tight
    boxes, so box AP and detectron2's Visualizer work on the output.
    """
    masks, boxes, scores, classes = instance_inference_tensors(mask_cls, mask_pred, is_thing, top_k)
    result = Instances(tuple(mask_pred.shape[-2:]))
    result.pred_masks = masks
    result.pred_boxes = Boxes(boxes)
    result.scores = scores
    result.pred_classes = classes
    return result
