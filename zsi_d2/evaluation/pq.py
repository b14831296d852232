"""Panoptic Quality (Kirillov et al., CVPR 2019) as a pure metric: numpy, no detectron2.

`pq_from_segments` follows panopticapi's `pq_compute_single_core` rule for rule, in three steps:

1. areas (`overlaps`, `segment_areas`): one count of every (GT id, predicted id) pixel pair gives
   the intersections and both maps' areas; the predicted map and its segments_info must list the
   same ids (panopticapi's checks);
2. matching (`match_segments`): a GT and a predicted segment of the same category match iff
   IoU > 0.5 (strictly), which makes the matching unique; crowd GT segments (iscrowd=1) never
   match; the union leaves out the predicted segment's pixels on VOID (nobody annotated them);
3. false negatives and positives (`count_unmatched`): unmatched non-crowd GT segments are FN;
   an unmatched predicted segment is an FP unless more than half of it lies on VOID plus the
   crowd region of its own category.

Per class PQ = Σ IoU(tp) / (TP + ½FP + ½FN) = SQ·RQ; classes with TP + FP + FN = 0 are nan.
One deliberate difference: areas are counted from the id maps, not read from the json's "area"
field, so stale areas cannot skew IoUs (for consistent COCO files the two are identical).
`pq_compute_images` runs it over many images, in several processes if asked, as panopticapi's
`pq_compute_multi_core` does.
"""
import multiprocessing
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from ..errors import InputValueError
from ..utils.panoptic_ids import OFFSET, VOID, rgb2id, read_panoptic_png

__all__ = [
    "PQStatCat", "PQStat", "categories_by_id", "overlaps", "segment_areas", "match_segments", "count_unmatched",
    "pq_from_segments", "pq_compute_images",
]


@dataclass
class PQStatCat:
    """Sums for one category: matched IoU total, true/false positives, false negatives."""

    iou: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __iadd__(self, other: "PQStatCat") -> "PQStatCat":
        self.iou += other.iou
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        return self


class PQStat:
    """Per-category PQ sums; add image results with `+=`, reduce across processes by summing."""

    def __init__(self):
        self.pq_per_cat: Dict[int, PQStatCat] = defaultdict(PQStatCat)

    def __getitem__(self, category_id: int) -> PQStatCat:
        return self.pq_per_cat[category_id]

    def __iadd__(self, other: "PQStat") -> "PQStat":
        for label, stat in other.pq_per_cat.items():
            self.pq_per_cat[label] += stat
        return self

    def per_class(self, category_ids: Iterable[int]) -> "OrderedDict[int, Dict[str, float]]":
        """{category id: {"pq", "sq", "rq" (fractions, nan if TP+FP+FN == 0), "tp", "fp", "fn"}}."""
        out = OrderedDict()
        for cid in category_ids:
            s = self.pq_per_cat.get(cid, PQStatCat())
            denom = s.tp + 0.5 * s.fp + 0.5 * s.fn
            if denom == 0:
                pq = sq = rq = float("nan")
            else:
                pq = s.iou / denom
                sq = s.iou / s.tp if s.tp else 0.0
                rq = s.tp / denom
            out[cid] = {"pq": pq, "sq": sq, "rq": rq, "tp": s.tp, "fp": s.fp, "fn": s.fn}
        return out


def categories_by_id(categories) -> "OrderedDict[int, dict]":
    """Accept panopticapi's {id: category} dict or a COCO list of categories."""
    if isinstance(categories, Mapping):
        items = [(int(k), dict(v)) for k, v in categories.items()]
    else:
        items = [(int(c["id"]), dict(c)) for c in categories]
    out = OrderedDict()
    for cid, cat in items:
        cat.setdefault("id", cid)
        cat.setdefault("isthing", 1)
        out[cid] = cat
    return out


def _ids(segmentation: np.ndarray) -> np.ndarray:
    """An H×W id map as it is, an H×W×3 panoptic colour image decoded."""
    segmentation = np.asarray(segmentation)
    return segmentation.astype(np.int64) if segmentation.ndim == 2 else rgb2id(segmentation)


def overlaps(gt: np.ndarray, pred: np.ndarray) -> Tuple[Dict[Tuple[int, int], int], Dict[int, int], Dict[int, int]]:
    """The pixel count of every (gt id, pred id) pair present, and from it the areas of the GT
    and of the predicted ids: one sort of the image instead of three."""
    labels, counts = np.unique(gt * OFFSET + pred, return_counts=True)  # int64: ids < 2^24
    pairs = dict(zip(zip((labels // OFFSET).tolist(), (labels % OFFSET).tolist()), counts.tolist()))
    gt_area, pred_area = defaultdict(int), defaultdict(int)
    for (gt_label, pred_label), count in pairs.items():
        gt_area[gt_label] += count
        pred_area[pred_label] += count
    return pairs, dict(gt_area), dict(pred_area)


def segment_areas(pred_area: Dict[int, int], pred_segms: Dict[int, dict], categories=None, where: str = "") -> None:
    """Step 1: set each predicted segment's "area" from the id map's counts; the map and the
    segments must list the same ids, and (when `categories` is given) only known categories."""
    listed = set(pred_segms)
    for label, count in sorted(pred_area.items()):
        if label not in pred_segms:
            if label == VOID:
                continue
            raise InputValueError(f"Segment id {label} is in the predicted map but not in its segments_info{where}: "
                                  "list every segment of the PNG in segments_info")
        pred_segms[label]["area"] = count
        listed.discard(label)
        if categories is not None and pred_segms[label]["category_id"] not in categories:
            raise InputValueError(
                f"Predicted segment {label} has unknown category_id "
                f"{pred_segms[label]['category_id']}{where}: use the ground truth's category ids, "
                f"{sorted(categories)}"
            )
    if listed:
        raise InputValueError(f"Segment id(s) {sorted(listed)} are in segments_info but not in the predicted "
                              f"map{where}: list only the segments the PNG holds")


def match_segments(gt_segms, pred_segms, gt_area, pairs, stat: PQStat) -> Tuple[Set[int], Set[int]]:
    """Step 2: TP and their IoU into `stat`; returns the matched GT and predicted ids."""
    gt_matched, pred_matched = set(), set()
    for (gt_label, pred_label), intersection in pairs.items():
        if gt_label not in gt_segms or pred_label not in pred_segms:
            continue
        gt_info, pred_info = gt_segms[gt_label], pred_segms[pred_label]
        if gt_info["iscrowd"] == 1 or gt_info["category_id"] != pred_info["category_id"]:
            continue
        union = pred_info["area"] + gt_area.get(gt_label, 0) - intersection - pairs.get((VOID, pred_label), 0)
        iou = intersection / union
        if iou > 0.5:
            s = stat[gt_info["category_id"]]
            s.tp += 1
            s.iou += iou
            gt_matched.add(gt_label)
            pred_matched.add(pred_label)
    return gt_matched, pred_matched


def count_unmatched(gt_segms, pred_segms, pairs, gt_matched, pred_matched, stat: PQStat) -> None:
    """Step 3: FN for unmatched non-crowd GT, FP for unmatched predictions not mostly on VOID or
    on their category's crowd region."""
    crowd_by_category = {}
    for gt_label, gt_info in gt_segms.items():
        if gt_label in gt_matched:
            continue
        if gt_info["iscrowd"] == 1:
            # panopticapi keeps one crowd region per category (the last listed); so do we.
            crowd_by_category[gt_info["category_id"]] = gt_label
            continue
        stat[gt_info["category_id"]].fn += 1
    for pred_label, pred_info in pred_segms.items():
        if pred_label in pred_matched:
            continue
        ignored = pairs.get((VOID, pred_label), 0)
        if pred_info["category_id"] in crowd_by_category:
            ignored += pairs.get((crowd_by_category[pred_info["category_id"]], pred_label), 0)
        if ignored / pred_info["area"] > 0.5:
            continue
        stat[pred_info["category_id"]].fp += 1


def pq_from_segments(
    gt_ids: np.ndarray,
    gt_segments: Sequence[Mapping],
    pred_ids: np.ndarray,
    pred_segments: Sequence[Mapping],
    categories=None,
    keep_category_ids: Optional[Iterable[int]] = None,
    stat: Optional[PQStat] = None,
    image_id=None,
) -> PQStat:
    """Accumulate PQ sums for one image (the module docstring gives the rules).

    Args:
        gt_ids, pred_ids: H×W segment-id maps (or H×W×3 COCO panoptic colour images).
        gt_segments: GT segments_info, [{"id", "category_id", "iscrowd" (default 0)}, ...].
            GT ids present in the map but not listed are neither matched nor counted.
        pred_segments: predicted segments_info, [{"id", "category_id"}, ...]; every non-VOID id in
            `pred_ids` must be listed and every listed id must occur (as panopticapi demands).
        categories: {id: {"isthing", ...}} or a list of categories; when given, predicted
            categories outside it are an error.
        keep_category_ids: zero-shot "zsi" restriction. GT segments of other categories are
            dropped from the GT list (their pixels stay labelled, so predictions there are false
            positives, like detections on unevaluated objects in COCO), and predicted segments of
            other categories are removed (their pixels become VOID in the prediction).
        stat: accumulate into this PQStat (a new one when None). Returned.
        image_id: only used in error messages.
    """
    stat = PQStat() if stat is None else stat
    where = f" (image {image_id})" if image_id is not None else ""
    gt, pred = _ids(gt_ids), _ids(pred_ids).copy()
    if gt.shape != pred.shape:
        raise InputValueError(f"GT and prediction id maps differ in size{where}: {gt.shape} vs {pred.shape}; "
                              "predict at the GT's size")
    if pred.size and (pred.min() < 0 or pred.max() >= OFFSET):
        raise InputValueError(f"Predicted segment ids must lie in [0, {OFFSET}){where}: renumber the segments")
    cats = categories_by_id(categories) if categories is not None else None

    gt_segms = {int(s["id"]): dict(s) for s in gt_segments}
    pred_segms = {int(s["id"]): dict(s) for s in pred_segments}
    if keep_category_ids is not None:
        keep = {int(c) for c in keep_category_ids}
        gt_segms = {k: v for k, v in gt_segms.items() if v["category_id"] in keep}
        dropped = [k for k, v in pred_segms.items() if v["category_id"] not in keep]
        if dropped:
            pred[np.isin(pred, dropped)] = VOID
            for k in dropped:
                del pred_segms[k]
    for s in gt_segms.values():
        s.setdefault("iscrowd", 0)

    pairs, gt_area, pred_area = overlaps(gt, pred)
    segment_areas(pred_area, pred_segms, cats, where)
    gt_matched, pred_matched = match_segments(gt_segms, pred_segms, gt_area, pairs, stat)
    count_unmatched(gt_segms, pred_segms, pairs, gt_matched, pred_matched, stat)
    return stat


# One image of a file-level evaluation: (GT PNG path, GT segments, prediction PNG path,
# prediction segments, image id).
ImagePair = Tuple[str, Sequence[Mapping], str, Sequence[Mapping], object]


def _score_images(pairs: List[ImagePair], categories, keep_category_ids) -> PQStat:
    stat = PQStat()
    for gt_path, gt_segments, pred_path, pred_segments, image_id in pairs:
        pq_from_segments(read_panoptic_png(gt_path), gt_segments, read_panoptic_png(pred_path), pred_segments,
                         categories, keep_category_ids, stat, image_id)
    return stat


def pq_compute_images(pairs: Sequence[ImagePair], categories=None, keep_category_ids=None,
                      num_workers: int = 1) -> PQStat:
    """PQ sums over images read from PNG files; with `num_workers` > 1 the images are split into
    that many chunks scored in parallel processes (panopticapi's `pq_compute_multi_core`)."""
    pairs = list(pairs)
    cats = categories_by_id(categories) if categories is not None else None
    keep = None if keep_category_ids is None else sorted(int(c) for c in keep_category_ids)
    if num_workers < 1:
        raise InputValueError(f"num_workers (--workers) must be at least 1, got {num_workers}: pass 1 or more")
    if num_workers == 1 or len(pairs) < 2:
        return _score_images(pairs, cats, keep)
    chunks = [c.tolist() for c in np.array_split(np.arange(len(pairs)), min(num_workers, len(pairs)))]
    with multiprocessing.get_context("fork").Pool(len(chunks)) as pool:
        parts = pool.starmap(_score_images, [([pairs[i] for i in chunk], cats, keep) for chunk in chunks])
    stat = PQStat()
    for part in parts:
        stat += part
    return stat
