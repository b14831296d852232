"""Register the COCO zero-shot datasets in detectron2's DatasetCatalog and MetadataCatalog.

Registration is lazy and reads no file: the metadata (classes, id maps, paths, seen/unseen,
evaluation mode) comes from the split tables, so names resolve even before the data is prepared.
Loading a dataset whose files are missing fails with the path and the prepare command.

The evaluation mode is part of the name and never a flag: "train" sets hold seen classes only,
"test_unseen" / "val_zsi" sets are evaluated ZSI-style (unseen classes only), the others GZSI.
"""
import json
import logging
import os
from collections import defaultdict
from typing import Dict, Optional

from detectron2.data import MetadataCatalog
from detectron2.data.datasets import load_coco_json, load_sem_seg
from detectron2.structures import BoxMode

from ...errors import InputFileNotFoundError, InputValueError
from ..metadata import panoptic_metadata, register_builtin_dataset, require_prepared, standard_segment
from ..zs_shapes import datasets_root
from .categories import split_categories
from .layout import coco_root, download_hint, get_layout, prepare_command, prepared_paths, source_paths
from .prepare import IGNORE_LABEL

__all__ = [
    "COCO_ZERO_SHOT_DATASETS", "dataset_names", "coco_zero_shot_metadata", "register_all_coco_zero_shot",
    "load_coco_zero_shot",
]

logger = logging.getLogger(__name__)

# registered name -> (split, subset, zero_shot_mode)
COCO_ZERO_SHOT_DATASETS = {
    "coco_2014_zsi_48_17_train": ("coco_48_17", "train", "train"),
    "coco_2014_zsi_48_17_test_unseen": ("coco_48_17", "test_unseen", "zsi"),
    "coco_2014_gzsi_48_17_test": ("coco_48_17", "test_gzsi", "gzsi"),
    "coco_2014_zsi_65_15_train": ("coco_65_15", "train", "train"),
    "coco_2014_zsi_65_15_test_unseen": ("coco_65_15", "test_unseen", "zsi"),
    "coco_2014_gzsi_65_15_test": ("coco_65_15", "test_gzsi", "gzsi"),
    "coco_2017_zsp_119_14_train": ("coco_panoptic_119_14", "train", "train"),
    "coco_2017_zsp_119_14_val": ("coco_panoptic_119_14", "val", "gzsi"),
    "coco_2017_zsp_119_14_val_zsi": ("coco_panoptic_119_14", "val", "zsi"),
    "coco_2017_zsp_119_14_train_panoptic": ("coco_panoptic_119_14", "train", "train"),
    "coco_2017_zsp_119_14_val_panoptic": ("coco_panoptic_119_14", "val", "gzsi"),
    "coco_2017_zsp_119_14_val_zsi_panoptic": ("coco_panoptic_119_14", "val", "zsi"),
    "coco_stuff_zss_156_15_train": ("coco_stuff_156_15", "train", "train"),
    "coco_stuff_zss_156_15_val": ("coco_stuff_156_15", "val", "gzsi"),
    "coco_stuff_zss_156_15_val_zsi": ("coco_stuff_156_15", "val", "zsi"),
    "coco_stuff_zss_167_15_train": ("coco_stuff_167_15", "train", "train"),
    "coco_stuff_zss_167_15_val": ("coco_stuff_167_15", "val", "gzsi"),
    "coco_stuff_zss_167_15_val_zsi": ("coco_stuff_167_15", "val", "zsi"),
    "coco_stuff_zss_167_15_train_images": ("coco_stuff_167_15", "train", "train"),
}
# Images-only views: the training images without any label file (a self-training pool: transductive
# methods read images that show unseen objects, never their labels); nothing to evaluate.
_UNLABELLED = {"coco_stuff_zss_167_15_train_images"}

# A panoptic split has two views, as detectron2's coco_2017_val / coco_2017_val_panoptic: the instance
# view (annotations, thing ids 0..N-1 among the things; what the R-CNN family reads) and the
# "_panoptic" view in detectron2's standard panoptic convention (segments_info, one label space).
_PANOPTIC_SUFFIX = "_panoptic"
_TASKS = {
    "instance": ("instance",),
    "panoptic": ("instance", "semantic"),
    "panoptic_panoptic": ("panoptic", "instance", "semantic"),
    "semantic": ("semantic",),
}


def _view(dataset_name: str) -> str:
    """The layout kind, with "_panoptic" appended for the standard panoptic view of a panoptic split."""
    kind = get_layout(COCO_ZERO_SHOT_DATASETS[dataset_name][0]).kind
    return kind + _PANOPTIC_SUFFIX if kind == "panoptic" and dataset_name.endswith(_PANOPTIC_SUFFIX) else kind


def dataset_names(split_name: str) -> Dict[str, str]:
    """{registered name: zero_shot_mode} of one split."""
    return {n: mode for n, (s, _, mode) in COCO_ZERO_SHOT_DATASETS.items() if s == split_name}


def _paths(split_name: str, subset: str, coco_dir: str, view: str) -> dict:
    src, out = source_paths(split_name, coco_dir), prepared_paths(split_name, coco_dir)
    if view == "instance":
        return {
            "json_file": out[f"{subset}_json"],
            "image_root": src["train_images" if subset == "train" else "val_images"],
        }
    if view.startswith("panoptic"):
        paths = {
            "json_file": out[f"{subset}_instances"],
            "sem_seg_root": out[f"{subset}_sem_seg"],
            "image_root": src[f"{subset}_images"],
        }
        if view == "panoptic_panoptic":
            paths.update(panoptic_json=out[f"{subset}_json"], panoptic_root=src[f"{subset}_panoptic"])
        return paths
    return {"sem_seg_root": out[f"{subset}_sem_seg"], "image_root": src[f"{subset}_images"]}


def coco_zero_shot_metadata(dataset_name: str, root: Optional[str] = None) -> dict:
    """Metadata of one registered dataset; the contract every zsi_d2 dataset follows.

    Classes are the split's seen + unseen classes in the dataset's own order (ignored classes are
    absent); `stuff_classes` is the semantic label space (all classes for panoptic, as detectron2
    does). Instance views map thing ids to 0..N-1 among the things; "_panoptic" views follow
    detectron2's standard panoptic convention (`panoptic_metadata`: one label space, stuff_classes).
    """
    split_name, subset, mode = COCO_ZERO_SHOT_DATASETS[dataset_name]
    view = _view(dataset_name)
    coco_dir = coco_root(root)
    cats = split_categories(split_name)
    meta = {}
    if view == "panoptic_panoptic":
        meta.update(panoptic_metadata(cats), ignore_label=IGNORE_LABEL, label_divisor=1000)
    if view in ("instance", "panoptic"):
        things = [c for c in cats if c["isthing"]]
        meta.update(
            thing_classes=[c["name"] for c in things],
            thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(things)},
        )
    if view in ("panoptic", "semantic"):
        meta.update(
            stuff_classes=[c["name"] for c in cats],
            stuff_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(cats)},
            ignore_label=IGNORE_LABEL,
        )
    if dataset_name in _UNLABELLED:
        meta["unlabelled"] = True
    meta.update(
        zero_shot_mode=mode,
        zero_shot_tasks=() if dataset_name in _UNLABELLED else _TASKS[view],
        coco_root=coco_dir,
        prepare_command=prepare_command(split_name, coco_dir),
        **_paths(split_name, subset, coco_dir, view),
    )
    return meta


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
def _require(dataset_name: str, meta, key: str) -> str:
    path = meta.get(key)
    prepared = os.path.normpath(path).startswith(
        os.path.normpath(prepared_paths(meta.zero_shot_split, meta.coco_root)["dir"]))
    return require_prepared(dataset_name, key, path, meta.prepare_command, datasets_root(),
                            download=None if prepared else download_hint(path))


def _not_prepared_for_split(dataset_name: str, category_id: int, path: str) -> InputValueError:
    return InputValueError(
        f"Dataset '{dataset_name}': category id {category_id} in {path} is not a class of its split; "
        "the file was not prepared for this split. Re-run the prepare command with --force."
    )


def _to_contiguous(mapping: Dict[int, int], category_id: int, dataset_name: str, path: str) -> int:
    try:
        return mapping[category_id]
    except KeyError:
        raise _not_prepared_for_split(dataset_name, category_id, path) from None


def _load_instances(dataset_name: str, meta) -> list:
    json_file, image_root = _require(dataset_name, meta, "json_file"), _require(dataset_name, meta, "image_root")
    id_map = meta.thing_dataset_id_to_contiguous_id
    dicts = load_coco_json(json_file, image_root)  # no dataset_name: ids stay official, mapped here
    for d in dicts:
        for ann in d["annotations"]:
            ann["category_id"] = _to_contiguous(id_map, ann["category_id"], dataset_name, json_file)
    return dicts


def _read_thing_annotations(dataset_name: str, json_file: str, thing_map) -> Dict[int, list]:
    """{image id: detectron2 annotations} of a panoptic split's instances json (thing ids mapped)."""
    with open(json_file) as f:
        inst = json.load(f)
    anns_by_image = defaultdict(list)
    for ann in inst["annotations"]:
        anns_by_image[ann["image_id"]].append({
            "bbox": ann["bbox"],
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": _to_contiguous(thing_map, ann["category_id"], dataset_name, json_file),
            "segmentation": ann["segmentation"],
            "iscrowd": ann.get("iscrowd", 0),
        })
    return anns_by_image


def _load_panoptic(dataset_name: str, meta) -> list:
    """Instance view (annotations + sem_seg) or "_panoptic" view (segments_info in detectron2's
    standard convention + sem_seg) of a panoptic split, one dict per panoptic record."""
    standard = _view(dataset_name) == "panoptic_panoptic"
    keys = ("panoptic_json", "panoptic_root") if standard else ()
    paths = {k: _require(dataset_name, meta, k) for k in keys + ("json_file", "sem_seg_root", "image_root")}
    # The panoptic json lists the images of both views (the instance json holds only the things).
    with open(meta.get("panoptic_json", None) or _panoptic_json_of(dataset_name, meta)) as f:
        pan = json.load(f)
    if not standard:
        anns_by_image = _read_thing_annotations(dataset_name, paths["json_file"], meta.thing_dataset_id_to_contiguous_id)
    images = {im["id"]: im for im in pan["images"]}
    dicts = []
    for rec in pan["annotations"]:
        image = images[rec["image_id"]]
        d = {
            "file_name": os.path.join(paths["image_root"], image["file_name"]),
            "image_id": rec["image_id"],
            "height": image["height"],
            "width": image["width"],
            "sem_seg_file_name": os.path.join(paths["sem_seg_root"], rec["file_name"]),
        }
        if standard:
            d["pan_seg_file_name"] = os.path.join(paths["panoptic_root"], rec["file_name"])
            d["segments_info"] = [_standard(seg, meta, dataset_name, paths["panoptic_json"])
                                  for seg in rec["segments_info"]]
        else:
            d["annotations"] = anns_by_image.get(rec["image_id"], [])
        dicts.append(d)
    logger.info("Loaded %d images of %s", len(dicts), dataset_name)
    return dicts


def _panoptic_json_of(dataset_name: str, meta) -> str:
    """The prepared panoptic json of an instance view (its image list)."""
    split_name, subset, _ = COCO_ZERO_SHOT_DATASETS[dataset_name]
    path = prepared_paths(split_name, meta.coco_root)[f"{subset}_json"]
    if not os.path.isfile(path):
        raise InputFileNotFoundError(f"Dataset '{dataset_name}': panoptic json not found: {path}\n"
                                     f"Prepare it with:\n  {meta.prepare_command}")
    return path


def _standard(segment, meta, dataset_name: str, path: str):
    try:
        return standard_segment(segment, meta)
    except InputValueError:
        raise _not_prepared_for_split(dataset_name, segment["category_id"], path) from None


def _load_semantic(dataset_name: str, meta) -> list:
    sem_root, image_root = _require(dataset_name, meta, "sem_seg_root"), _require(dataset_name, meta, "image_root")
    return load_sem_seg(sem_root, image_root, gt_ext="png", image_ext="jpg")


_LOADERS = {"instance": _load_instances, "panoptic": _load_panoptic, "semantic": _load_semantic}


def load_coco_zero_shot(dataset_name: str) -> list:
    """detectron2 dataset dicts of a registered COCO zero-shot dataset (paths from its metadata)."""
    meta = MetadataCatalog.get(dataset_name)
    split_name = COCO_ZERO_SHOT_DATASETS[dataset_name][0]
    dicts = _LOADERS[get_layout(split_name).kind](dataset_name, meta)
    if dataset_name in _UNLABELLED:
        return [{"file_name": d["file_name"]} for d in dicts]
    return dicts


# ---------------------------------------------------------------------------------------------
def _register_one(name: str, root: Optional[str]) -> None:
    split_name, _, mode = COCO_ZERO_SHOT_DATASETS[name]
    register_builtin_dataset(name, lambda n=name: load_coco_zero_shot(n), coco_zero_shot_metadata(name, root),
                             split_name, mode, root_key="coco_root")


def register_all_coco_zero_shot(root: Optional[str] = None) -> None:
    """Register every COCO zero-shot dataset under `root` (default: $DETECTRON2_DATASETS).

    Idempotent; after DETECTRON2_DATASETS changed, calling it again re-registers the new paths.
    """
    for name in COCO_ZERO_SHOT_DATASETS:
        _register_one(name, root)
