"""Prepare a COCO zero-shot split on disk: read the standard files, write the split's files.

Safe to run twice: each output is written under a temporary name and renamed into place only
when complete; finished outputs are skipped unless `force`; an interrupted label-map pass resumes
where it stopped. `summary.json` (the counts) is written last, so its presence means "done".
The rules themselves are the pure functions of prepare.py.
"""
import functools
import json
import logging
import os
from typing import Dict, Optional

import numpy as np
from tqdm import tqdm

from ...errors import InputFileNotFoundError
from ...utils.panoptic_ids import read_panoptic_png
from ..prepare_files import (  # noqa: F401  (format_summary: the CLI's, exported here)
    check_label_files, count_files, finish_folder, format_summary, label_folder_counts, load_json, parallel_map,
    read_label_image, remap_label_folder, start_folder, write_image, write_json,
)
from ..splits import get_split
from .categories import split_categories
from .layout import coco_root, download_hint, get_layout, prepared_paths, source_paths
from .prepare import (
    COCO_STUFF_LABELS, coco_stuff_lut, contiguous_ids, instance_gzsi_test_set, instance_training_set,
    instance_zsi_test_set, panoptic_full_set, panoptic_to_instances, panoptic_to_semantic, panoptic_training_set,
)

__all__ = ["prepare_coco_split", "check_sources", "format_summary"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
def check_sources(split_name: str, coco_dir: str) -> Dict[str, str]:
    """All standard files of a split, or one error listing every missing path and where it comes from."""
    src = source_paths(split_name, coco_dir)
    missing = [
        f"  {path}\n      (from {download_hint(path)})"
        for path in src.values()
        if not (os.path.isfile(path) if path.endswith(".json") else os.path.isdir(path))
    ]
    if missing:
        raise InputFileNotFoundError(
            f"Cannot prepare '{split_name}': standard COCO files missing under {coco_dir}:\n"
            + "\n".join(missing)
            + "\nSee datasets/README.md for the expected layout."
        )
    return src


# ---------------------------------------------------------------------------------------------
# Instance splits (COCO 2014)
# ---------------------------------------------------------------------------------------------
def _prepare_instance(split, src, out, force, workers, progress) -> dict:
    steps = (
        ("train_json", "train_json", instance_training_set),
        ("test_unseen_json", "val_json", instance_zsi_test_set),
        ("test_gzsi_json", "val_json", instance_gzsi_test_set),
    )
    counts, loaded = {}, {}
    for out_key, src_key, select in tqdm(steps, desc=split.name, disable=not progress, unit="file"):
        if src_key not in loaded:
            loaded = {src_key: load_json(src[src_key])}  # keep one big json in memory at a time
        subset, counts[out_key] = select(loaded[src_key], split, source=src[src_key])
        if force or not os.path.isfile(out[out_key]):
            write_json(out[out_key], subset)
        else:
            logger.info("Kept existing %s (use --force to rewrite)", out[out_key])
    return counts


# ---------------------------------------------------------------------------------------------
# Panoptic split (COCO 2017 panoptic)
# ---------------------------------------------------------------------------------------------
def _panoptic_worker(job, label_of, thing_ids):
    png, out_png, segments = job
    if not os.path.isfile(png):
        raise InputFileNotFoundError(f"Panoptic PNG listed in the panoptic json is missing: {png}; unpack "
                                     "the COCO panoptic PNGs again")
    pan_ids = read_panoptic_png(png)
    if not os.path.isfile(out_png):
        write_image(out_png, panoptic_to_semantic(pan_ids, segments, label_of))
    return panoptic_to_instances(pan_ids, segments, thing_ids)


def _panoptic_pixels(split, kept, png_dir, sem_dir, inst_json, force, workers, progress, desc) -> dict:
    """Semantic label maps and thing instances (RLE) of every kept image, from its panoptic PNG."""
    cats = split_categories(split.name)
    worker = functools.partial(
        _panoptic_worker, label_of=contiguous_ids(split.name), thing_ids={c["id"] for c in cats if c["isthing"]}
    )
    partial = start_folder(sem_dir, force)
    jobs = [
        (os.path.join(png_dir, rec["file_name"]), os.path.join(partial, rec["file_name"]), rec["segments_info"])
        for rec in kept["annotations"]
    ]
    results = parallel_map(worker, jobs, workers, desc, progress)
    annotations = []
    for rec, anns in zip(kept["annotations"], results):
        for ann in anns:
            annotations.append(dict(ann, id=len(annotations) + 1, image_id=rec["image_id"]))
    instances = {k: v for k, v in kept.items() if k not in ("annotations", "categories")}
    instances.update(annotations=annotations, categories=[c for c in kept["categories"] if c.get("isthing", 1)])
    write_json(inst_json, instances)
    finish_folder(partial, sem_dir)
    return {"label_maps": len(jobs), "thing_instances": len(annotations)}


def _prepare_panoptic(split, src, out, force, workers, progress) -> dict:
    counts = {}
    for subset, select in (("train", panoptic_training_set), ("val", panoptic_full_set)):
        kept, counts[subset] = select(load_json(src[f"{subset}_json"]), split, source=src[f"{subset}_json"])
        if force or not os.path.isfile(out[f"{subset}_json"]):
            write_json(out[f"{subset}_json"], kept)
        sem_dir, inst_json = out[f"{subset}_sem_seg"], out[f"{subset}_instances"]
        if force or not (os.path.isdir(sem_dir) and os.path.isfile(inst_json)):
            counts[subset].update(_panoptic_pixels(
                split, kept, src[f"{subset}_panoptic"], sem_dir, inst_json, force, workers, progress,
                desc=f"{split.name} {subset}",
            ))
        else:
            with open(inst_json) as f:
                n_inst = len(json.load(f)["annotations"])
            counts[subset].update(label_maps=count_files(sem_dir), thing_instances=n_inst)
    return counts


# ---------------------------------------------------------------------------------------------
# Semantic split (COCO-Stuff 2017)
# ---------------------------------------------------------------------------------------------
def _check_in_place(split, lut, legal, label_dir, files, unseen_raw, workers, progress) -> dict:
    """Validation maps read where they are: legal only if remapping would leave every value as it is."""
    values = np.flatnonzero(legal)
    if not (lut[values] == values).all():
        raise ValueError(f"'{split.name}': the validation label maps cannot be read in place, the split's label "
                         "order is not the file's (val_labels_in_place in zsi_d2/data/coco/layout.py)")
    per_image = check_label_files([os.path.join(label_dir, f) for f in files], read_label_image, legal, unseen_raw,
                                  COCO_STUFF_LABELS, workers, progress, desc=f"{split.name} val (check)")
    return dict(label_folder_counts(per_image, False), note=f"read in place from {label_dir}")


def _prepare_semantic(split, src, out, force, workers, progress) -> dict:
    cats = split_categories(split.name)
    unseen_raw = np.zeros(256, dtype=bool)
    unseen_raw[[c["id"] - 1 for c in cats if c["name"] in split.unseen]] = True
    in_place = get_layout(split.name).val_labels_in_place
    counts = {}
    for subset, drop_unseen in (("train", True), ("val", False)):
        sem_dir = out[f"{subset}_sem_seg"]
        label_dir = src[f"{subset}_labels"]
        read_in_place = in_place and subset == "val"
        if not force and os.path.isdir(sem_dir) and not read_in_place:
            counts[subset] = {"label_maps": count_files(sem_dir), "note": "kept existing"}
            continue
        files = sorted(f for f in os.listdir(label_dir) if f.endswith(".png"))
        if not files:
            raise InputFileNotFoundError(f"No label maps (*.png) in {label_dir} (from {download_hint(label_dir)})")
        lut, legal = coco_stuff_lut(split, drop_unseen=drop_unseen)
        if read_in_place:
            counts[subset] = _check_in_place(split, lut, legal, label_dir, files, unseen_raw, workers, progress)
            continue
        per_image = remap_label_folder(
            [(os.path.join(label_dir, f), f) for f in files], sem_dir, read_label_image, lut, legal, unseen_raw,
            COCO_STUFF_LABELS, force, workers, progress, desc=f"{split.name} {subset}",
        )
        counts[subset] = label_folder_counts(per_image, drop_unseen)
    return counts


# ---------------------------------------------------------------------------------------------
_PREPARERS = {"instance": _prepare_instance, "panoptic": _prepare_panoptic, "semantic": _prepare_semantic}


def prepare_coco_split(split_name: str, coco_dir: Optional[str] = None, force: bool = False, workers: int = 1,
                       progress: bool = True) -> dict:
    """Write the zero-shot files of one COCO split under `<coco_dir>/zero_shot/<split>/`.

    Returns the summary (counts per output); `summary["skipped"]` is True when the split was
    already prepared and nothing was done.
    """
    layout = get_layout(split_name)
    split = get_split(split_name)
    coco_dir = os.path.abspath(coco_dir if coco_dir is not None else coco_root())
    out = prepared_paths(split_name, coco_dir)
    if not force and os.path.isfile(out["summary"]):
        with open(out["summary"]) as f:
            return dict(json.load(f), skipped=True)
    src = check_sources(split_name, coco_dir)
    os.makedirs(out["dir"], exist_ok=True)
    counts = _PREPARERS[layout.kind](split, src, out, force, max(1, int(workers)), progress)
    summary = {
        "split": split_name,
        "kind": layout.kind,
        "coco_root": coco_dir,
        "seen_classes": len(split.seen),
        "unseen_classes": len(split.unseen),
        "counts": counts,
        "outputs": {k: v for k, v in out.items() if k not in ("dir", "summary")},
    }
    write_json(out["summary"], summary)
    return dict(summary, skipped=False)
