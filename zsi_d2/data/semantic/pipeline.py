"""Prepare a semantic zero-shot benchmark on disk: the split's label maps from the standard files.

Writes, under `<benchmark folder>/zero_shot/<split>/`, one label PNG per image (uint8, or 16-bit for
ADE20k-Full) holding positions in the dataset's class list or the ignore label: `sem_seg_train`
with the unseen classes' pixels set to the ignore label (images are kept: ZegFormer's protocol),
`sem_seg_val` with every class. Images stay where they are. Safe to run twice, resumable, and
`summary.json` is written last (zsi_d2.data.prepare_files).
"""
import json
import logging
import os
from typing import Optional

import numpy as np

from ...errors import InputFileNotFoundError
from ..label_maps import label_lut
from ..prepare_files import (  # noqa: F401  (format_summary: the CLI's, exported here)
    count_files, format_summary, label_folder_counts, remap_label_folder, write_json,
)
from ..splits import get_split
from .benchmarks import benchmark_root, get_benchmark, list_note, prepared_paths

__all__ = ["prepare_semantic_split", "format_summary", "check_images"]

logger = logging.getLogger(__name__)


def check_images(benchmark, root: str, subset: str, stems) -> str:
    """The subset's image folder, once every `<stem>.jpg` is in it (else one error naming the missing)."""
    folder = benchmark.image_dir(root, subset)
    present = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    missing = [s + benchmark.image_ext for s in stems if s + benchmark.image_ext not in present]
    if missing:
        raise InputFileNotFoundError(
            f"'{benchmark.split}' {subset}: {len(missing)} labelled images are missing from {folder} "
            f"(e.g. {missing[0]}): unpack the images again (datasets/README.md)"
        )
    return folder


def _prepare_subset(benchmark, split, root, out_dir, subset, force, workers, progress) -> dict:
    items = benchmark.items(root, subset)
    if not items:
        raise InputFileNotFoundError(f"'{benchmark.split}' {subset}: no label maps found under {root}; "
                                     "see datasets/README.md for the expected files")
    check_images(benchmark, root, subset, [stem for stem, _ in items])
    drop_unseen = subset == "train"
    keep = [not (drop_unseen and c in split.unseen) for c in benchmark.classes]
    lut, legal = label_lut(benchmark.source_values, keep, benchmark.ignore_label, benchmark.unlabelled,
                           benchmark.label_dtype)
    unseen_values = np.zeros(len(lut), dtype=bool)
    unseen_values[[v for v, c in zip(benchmark.source_values, benchmark.classes) if c in split.unseen]] = True
    per_image = remap_label_folder(
        [(source, stem + ".png") for stem, source in items], out_dir, benchmark.read_label, lut, legal,
        unseen_values, benchmark.source_labels, force, workers, progress, desc=f"{benchmark.split} {subset}",
    )
    counts = label_folder_counts(per_image, drop_unseen)
    if benchmark.published_lists is not None:
        counts["images"] = list_note(benchmark, subset, [stem for stem, _ in items])
        if "NOT" in counts["images"]:
            logger.warning("'%s' %s: %s", benchmark.split, subset, counts["images"])
    return counts


def prepare_semantic_split(split_name: str, root: Optional[str] = None, force: bool = False, workers: int = 1,
                           progress: bool = True) -> dict:
    """Write the label maps of one benchmark split under `<root>/zero_shot/<split>/`.

    `root` is the benchmark's folder (default: under $DETECTRON2_DATASETS). Returns the summary;
    `summary["skipped"]` is True when the split was already prepared and nothing was done.
    """
    benchmark, split = get_benchmark(split_name), get_split(split_name)
    root = os.path.abspath(root if root is not None else benchmark_root(split_name))
    out = prepared_paths(split_name, root)
    if not force and os.path.isfile(out["summary"]):
        with open(out["summary"]) as f:
            return dict(json.load(f), skipped=True)
    workers = max(1, int(workers))
    if benchmark.prepare_sources is not None:
        benchmark.prepare_sources(root, workers=workers, progress=progress, force=force)
    benchmark.check_sources(root)
    os.makedirs(out["dir"], exist_ok=True)
    counts = {}
    for subset in ("train", "val"):
        sem_dir = out[f"{subset}_sem_seg"]
        if not force and os.path.isdir(sem_dir):
            counts[subset] = {"label_maps": count_files(sem_dir), "note": "kept existing"}
            continue
        counts[subset] = _prepare_subset(benchmark, split, root, sem_dir, subset, force, workers, progress)
    summary = {
        "split": split_name,
        "kind": "semantic",
        "root": root,
        "seen_classes": len(split.seen),
        "unseen_classes": len(split.unseen),
        "ignore_label": benchmark.ignore_label,
        "counts": counts,
        "outputs": {k: v for k, v in out.items() if k not in ("dir", "summary")},
    }
    write_json(out["summary"], summary)
    return dict(summary, skipped=False)
