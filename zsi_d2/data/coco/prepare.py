"""Pure functions that turn standard COCO annotations into zero-shot training and test sets.

No file access here (see pipeline.py), so every rule of the protocol is testable on small dicts:

- instance splits: the training set keeps images with no unseen instance (crowd regions count)
  and only their seen annotations; the ZSI test set keeps images with an unseen instance and only
  unseen annotations; the GZSI test set keeps seen + unseen annotations. Classes in neither group
  ("ignored") are dropped, never relabelled, so they become background everywhere.
- panoptic: the training set drops every image holding even one unseen segment; validation is
  kept whole.
- semantic (COCO-Stuff): training label maps turn unseen pixels into the ignore label, so an
  unseen class is never a training target, not even as "background".
"""
from collections import Counter, defaultdict
from typing import Dict, Iterable, List, Mapping, Sequence, Set, Tuple

import numpy as np
from pycocotools import mask as mask_util

from ...errors import InputValueError
from ..label_maps import label_lut
from ..splits import ZeroShotSplit
from .categories import check_source_categories, split_categories

__all__ = [
    "IGNORE_LABEL",
    "instance_training_set",
    "instance_zsi_test_set",
    "instance_gzsi_test_set",
    "panoptic_training_set",
    "panoptic_full_set",
    "panoptic_to_semantic",
    "panoptic_to_instances",
    "contiguous_ids",
    "coco_stuff_lut",
    "COCO_STUFF_LABELS",
]

IGNORE_LABEL = 255  # semantic label maps: unlabelled, VOID and (in training) unseen pixels
_COCO_STUFF_UNLABELLED = 255  # the value stuffthingmaps use for unlabelled pixels


def _group_of(split: ZeroShotSplit, name: str) -> str:
    if name in split.unseen:
        return "unseen"
    if name in split.seen:
        return "seen"
    return "ignored"


def _kept_categories(categories: Sequence[Mapping], split: ZeroShotSplit) -> List[dict]:
    """The file's own category records (supercategory etc. kept) of seen + unseen classes, by id."""
    keep = set(split.classes)
    return sorted((dict(c) for c in categories if c["name"] in keep), key=lambda c: int(c["id"]))


def _select_instances(coco: Mapping, split: ZeroShotSplit, source: str, keep: Set[str], forbid: Set[str],
                      require: Set[str]) -> Tuple[dict, dict]:
    """Images without any `forbid` group, with at least one `require` group, keeping `keep` groups."""
    names = check_source_categories(coco["categories"], split, source)
    group = {cid: _group_of(split, n) for cid, n in names.items()}
    by_image = defaultdict(list)
    for ann in coco["annotations"]:
        if ann["category_id"] not in group:
            raise InputValueError(
                f"{source}: annotation {ann.get('id')} has category id {ann['category_id']}, "
                "which is not among the file's categories: use the official COCO annotation file"
            )
        by_image[ann["image_id"]].append(ann)

    images, annotations = [], []
    removed_for = Counter()  # why images were left out
    dropped = Counter()  # annotations of kept images that were not kept, by group
    kept_by_group = Counter()
    for image in coco["images"]:
        anns = by_image.get(image["id"], [])
        groups = {group[a["category_id"]] for a in anns}
        if groups & forbid:
            removed_for["holds_" + "_or_".join(sorted(groups & forbid))] += 1
            continue
        if not groups & require:
            removed_for["no_" + "_or_".join(sorted(require))] += 1
            continue
        images.append(image)
        for a in anns:
            g = group[a["category_id"]]
            if g in keep:
                annotations.append(a)
                kept_by_group[g] += 1
            else:
                dropped[g] += 1

    out = {k: v for k, v in coco.items() if k not in ("images", "annotations", "categories")}
    out.update(images=images, annotations=annotations, categories=_kept_categories(coco["categories"], split))
    counts = {
        "images": len(images),
        "annotations": len(annotations),
        "seen_annotations": kept_by_group["seen"],
        "unseen_annotations": kept_by_group["unseen"],
        "source_images": len(coco["images"]),
        "source_annotations": len(coco["annotations"]),
        "images_left_out": dict(sorted(removed_for.items())),
        "annotations_dropped": dict(sorted(dropped.items())),
    }
    return out, counts


def instance_training_set(coco: Mapping, split: ZeroShotSplit, source: str = "instances json") -> Tuple[dict, dict]:
    """Seen-only training set: images holding any unseen instance are removed entirely."""
    return _select_instances(coco, split, source, keep={"seen"}, forbid={"unseen"}, require={"seen"})


def instance_zsi_test_set(coco: Mapping, split: ZeroShotSplit, source: str = "instances json") -> Tuple[dict, dict]:
    """ZSI test set: images with an unseen instance, unseen annotations only."""
    return _select_instances(coco, split, source, keep={"unseen"}, forbid=set(), require={"unseen"})


def instance_gzsi_test_set(coco: Mapping, split: ZeroShotSplit, source: str = "instances json") -> Tuple[dict, dict]:
    """GZSI test set: images with a seen or unseen instance, seen + unseen annotations."""
    return _select_instances(coco, split, source, keep={"seen", "unseen"}, forbid=set(), require={"seen", "unseen"})


# ---------------------------------------------------------------------------------------------
# Panoptic
# ---------------------------------------------------------------------------------------------
def _check_panoptic_categories(pan: Mapping, split: ZeroShotSplit, source: str) -> Dict[int, str]:
    names = check_source_categories(pan["categories"], split, source)
    wrong = [c["name"] for c in pan["categories"] if bool(c.get("isthing", 1)) == (c["name"] in split.stuff)]
    if wrong:
        raise InputValueError(f"{source}: thing/stuff flags disagree with split '{split.name}' for {wrong}: "
                              "use the official COCO panoptic json")
    return names


def _panoptic_subset(pan: Mapping, split: ZeroShotSplit, source: str, drop_unseen: bool) -> Tuple[dict, dict]:
    names = _check_panoptic_categories(pan, split, source)
    unseen_ids = {cid for cid, n in names.items() if n in split.unseen}
    kept_records, kept_image_ids = [], set()
    segments = removed = removed_unseen_segments = 0
    for record in pan["annotations"]:
        seg_cats = [s["category_id"] for s in record["segments_info"]]
        unknown = [c for c in seg_cats if c not in names]
        if unknown:
            raise InputValueError(f"{source}: image {record['image_id']} has segments of unknown category ids "
                                  f"{unknown}: use the official COCO panoptic json")
        n_unseen = sum(c in unseen_ids for c in seg_cats)
        if drop_unseen and n_unseen:
            removed += 1
            removed_unseen_segments += n_unseen
            continue
        kept_records.append(record)
        kept_image_ids.add(record["image_id"])
        segments += len(seg_cats)
    images = [im for im in pan["images"] if im["id"] in kept_image_ids]
    out = {k: v for k, v in pan.items() if k not in ("images", "annotations", "categories")}
    out.update(images=images, annotations=kept_records, categories=_kept_categories(pan["categories"], split))
    counts = {
        "images": len(images),
        "segments": segments,
        "source_images": len(pan["images"]),
        "images_removed_for_unseen": removed,
        "unseen_segments_removed": removed_unseen_segments,
    }
    return out, counts


def panoptic_training_set(pan: Mapping, split: ZeroShotSplit, source: str = "panoptic json") -> Tuple[dict, dict]:
    """Training set: every image with even one unseen segment (any size, crowd or not) is removed."""
    return _panoptic_subset(pan, split, source, drop_unseen=True)


def panoptic_full_set(pan: Mapping, split: ZeroShotSplit, source: str = "panoptic json") -> Tuple[dict, dict]:
    """Validation set: every image and segment, categories checked against the split."""
    return _panoptic_subset(pan, split, source, drop_unseen=False)


def contiguous_ids(split_name: str) -> Dict[int, int]:
    """Official category id -> contiguous id (position among the split's classes, dataset order)."""
    return {c["id"]: i for i, c in enumerate(split_categories(split_name))}


def panoptic_to_semantic(pan_ids: np.ndarray, segments_info: Iterable[Mapping], label_of: Mapping[int, int],
                         ignore_label: int = IGNORE_LABEL) -> np.ndarray:
    """uint8 label map: each segment's contiguous class id, VOID (and unknown segments) = ignore."""
    uniq, inverse = np.unique(pan_ids, return_inverse=True)
    cat_of_segment = {s["id"]: s["category_id"] for s in segments_info}
    labels = np.array([label_of.get(cat_of_segment.get(int(u), -1), ignore_label) for u in uniq], dtype=np.uint8)
    return labels[inverse].reshape(pan_ids.shape)


def panoptic_to_instances(pan_ids: np.ndarray, segments_info: Iterable[Mapping], thing_ids: Set[int]) -> List[dict]:
    """COCO instance annotations (RLE masks, no ids yet) of the thing segments of one image."""
    anns = []
    for seg in segments_info:
        if seg["category_id"] not in thing_ids:
            continue
        mask = pan_ids == seg["id"]
        if not mask.any():
            continue
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        anns.append({
            "category_id": int(seg["category_id"]),
            "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "area": int(mask_util.area(rle)),
            "bbox": [float(v) for v in mask_util.toBbox(rle)],
            "iscrowd": int(seg.get("iscrowd", 0)),
        })
    return anns


# ---------------------------------------------------------------------------------------------
# COCO-Stuff semantic label maps
# ---------------------------------------------------------------------------------------------
# What a legal COCO-Stuff source map is (for the error on any other value).
COCO_STUFF_LABELS = ("uint8 COCO-Stuff label map (official id - 1, 255 = unlabelled, as in "
                     "stuffthingmaps_trainval2017.zip)")


def coco_stuff_lut(split: ZeroShotSplit, drop_unseen: bool, ignore_label: int = IGNORE_LABEL
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """Lookup table raw pixel -> contiguous id, and which raw values are legal (`label_lut`).

    A stuffthingmaps pixel holds (official id - 1), 255 = unlabelled. With `drop_unseen` unseen
    classes map to `ignore_label` (training); ids of classes outside the split are not legal.
    """
    cats = split_categories(split.name)
    keep = [not (drop_unseen and c["name"] in split.unseen) for c in cats]
    return label_lut([c["id"] - 1 for c in cats], keep, ignore_label, (_COCO_STUFF_UNLABELLED,))
