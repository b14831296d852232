"""Which class each ground-truth object is given: the diagnosis behind a low GZSI unseen AP.

Why: in GZSI a detector can find an unseen object (high Recall@100) yet score it lower under its
own class than under a seen one, so its AP drops. AP cannot tell "not found" from "found and
called something else"; this table can. For every non-crowd GT instance, the label is the class
of the highest-scoring detection of the same image that overlaps it at IoU >= the threshold, of
any class, or "missed" when none does. Rows are GT classes, columns predicted classes + missed.
"""
from typing import Dict, List, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from ..errors import InputValueError

__all__ = ["MISSED", "instance_label_confusion", "summarize_label_confusion", "format_label_confusion",
           "plot_label_confusion"]

MISSED = "missed"


def _ious(coco_gt: COCO, gt_anns: List[dict], dets: List[dict], iou_type: str) -> np.ndarray:
    """(num_gt, num_det) IoU, crowd rule off (every GT is a normal object here)."""
    if iou_type == "segm":
        gts = [coco_gt.annToRLE(a) for a in gt_anns]
        ds = [d["segmentation"] for d in dets]
    else:
        gts = [a["bbox"] for a in gt_anns]
        ds = [d["bbox"] for d in dets]
    return np.asarray(mask_util.iou(ds, gts, [0] * len(gts))).reshape(len(dets), len(gts)).T


def instance_label_confusion(
    coco_gt: COCO, results: Sequence[Mapping], iou_type: str = "segm", iou_threshold: float = 0.5
) -> Dict[str, Dict[str, int]]:
    """{gt class name: {predicted class name or MISSED: count}} over the GT's non-crowd instances."""
    if iou_type not in ("segm", "bbox"):
        raise InputValueError(f"iou_type (--iou-type) must be 'segm' or 'bbox', got {iou_type!r}: pass one of them")
    names = {c["id"]: c["name"] for c in coco_gt.dataset["categories"]}
    unknown = sorted({r["category_id"] for r in results} - set(names))
    if unknown:
        raise InputValueError(f"Results use category ids {unknown} that the GT does not define: use the GT's "
                              f"category ids ({sorted(names)})")
    key = "segmentation" if iou_type == "segm" else "bbox"
    if results and any(key not in r for r in results):
        raise InputValueError(f"Results lack '{key}': use iou_type='bbox' (--iou-type bbox) for box-only results")
    by_image: Dict[int, List[dict]] = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    table = {name: {} for name in names.values()}
    for image_id in coco_gt.getImgIds():
        gt_anns = [a for a in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[image_id])) if not a.get("iscrowd", 0)]
        if not gt_anns:
            continue
        dets = sorted(by_image.get(image_id, []), key=lambda d: -d["score"])
        ious = _ious(coco_gt, gt_anns, dets, iou_type) if dets else np.zeros((len(gt_anns), 0))
        for ann, row in zip(gt_anns, ious):
            hits = np.flatnonzero(row >= iou_threshold)
            label = names[dets[hits[0]]["category_id"]] if hits.size else MISSED  # dets sorted by score
            counts = table[names[ann["category_id"]]]
            counts[label] = counts.get(label, 0) + 1
    return table


def summarize_label_confusion(table: Mapping[str, Mapping[str, int]], seen: Sequence[str],
                              unseen: Sequence[str]) -> Dict[str, float]:
    """Percent of seen / unseen GT objects labelled correctly, as the other group, or missed."""
    out = {}
    for group, members, other, other_group in (("seen", seen, unseen, "unseen"), ("unseen", unseen, seen, "seen")):
        rows = {c: table[c] for c in members if table.get(c)}
        total = sum(sum(r.values()) for r in rows.values())
        if not total:
            continue
        out[f"{group}/correct"] = 100.0 * sum(r.get(c, 0) for c, r in rows.items()) / total
        out[f"{group}/as_{other_group}"] = 100.0 * sum(r.get(o, 0) for r in rows.values() for o in other) / total
        out[f"{group}/missed"] = 100.0 * sum(r.get(MISSED, 0) for r in rows.values()) / total
    return out


def format_label_confusion(table: Mapping[str, Mapping[str, int]], rows: Sequence[str], top: int = 3) -> str:
    """One line per GT class: its object count and the `top` labels it receives, in percent."""
    lines = []
    for name in rows:
        counts = table.get(name) or {}
        total = sum(counts.values())
        if not total:
            continue
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        labels = ", ".join(f"{label} {100.0 * n / total:.0f}%" for label, n in ranked)
        lines.append(f"{name} ({total}): {labels}")
    return "\n".join(lines)


def plot_label_confusion(table: Mapping[str, Mapping[str, int]], rows: Sequence[str],
                         columns: Sequence[str], path: str, title: str = "") -> None:
    """Row-normalised heat map (GT rows x predicted columns + missed), written to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [*columns, MISSED]
    matrix = np.zeros((len(rows), len(columns)))
    for i, name in enumerate(rows):
        counts = table.get(name) or {}
        total = max(1, sum(counts.values()))
        for j, label in enumerate(columns):
            matrix[i, j] = counts.get(label, 0) / total
    fig, ax = plt.subplots(figsize=(0.45 * len(columns) + 3, 0.4 * len(rows) + 2))
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    for i, j in zip(*np.nonzero(matrix >= 0.05)):
        ax.text(j, i, f"{100 * matrix[i, j]:.0f}", ha="center", va="center", fontsize=6,
                color="white" if matrix[i, j] > 0.6 else "black")
    ax.set_xlabel("label given (highest-scoring overlapping detection)")
    ax.set_ylabel("ground-truth class")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
