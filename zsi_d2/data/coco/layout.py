"""Where the standard COCO files are expected and where the prepared zero-shot files go.

One place for every path, so that the prepare script, the dataset registration and the error
messages can never disagree. Layout under `$DETECTRON2_DATASETS/coco` (detectron2's own, plus
COCO-Stuff's `stuffthingmaps/` as MaskFormer uses it):

    train2014/ val2014/ train2017/ val2017/        images
    annotations/instances_{train,val}2014.json      instance splits read these
    annotations/panoptic_{train,val}2017.json       panoptic split reads these ...
    panoptic_{train,val}2017/*.png                  ... and these
    stuffthingmaps/{train,val}2017/*.png            COCO-Stuff splits read these (167/15's val: in place)
    zero_shot/<split>/...                           written by datasets/prepare_coco_zero_shot.py
"""
import os
from dataclasses import dataclass
from typing import Dict, Optional

from ...errors import InputKeyError
from ..zs_shapes import datasets_root

__all__ = [
    "CocoSplitLayout", "COCO_SPLIT_LAYOUTS", "get_layout", "coco_root", "prepare_command",
    "source_paths", "prepared_paths", "download_hint", "SUMMARY_FILE",
]

SUMMARY_FILE = "summary.json"  # written last: its presence means the split is fully prepared


@dataclass(frozen=True)
class CocoSplitLayout:
    split: str  # name in zsi_d2.data.splits
    kind: str  # "instance", "panoptic" or "semantic"
    # Semantic: the validation label maps are read where they are (stuffthingmaps/val2017), because
    # the split's label order is the file's own (every value kept, position = value); the
    # preparation only checks them. Training maps are always written (unseen pixels = 255).
    val_labels_in_place: bool = False


COCO_SPLIT_LAYOUTS = {
    "coco_48_17": CocoSplitLayout("coco_48_17", "instance"),
    "coco_65_15": CocoSplitLayout("coco_65_15", "instance"),
    "coco_panoptic_119_14": CocoSplitLayout("coco_panoptic_119_14", "panoptic"),
    "coco_stuff_156_15": CocoSplitLayout("coco_stuff_156_15", "semantic"),
    "coco_stuff_167_15": CocoSplitLayout("coco_stuff_167_15", "semantic", val_labels_in_place=True),
}


def get_layout(split_name: str) -> CocoSplitLayout:
    try:
        return COCO_SPLIT_LAYOUTS[split_name]
    except KeyError:
        raise InputKeyError(
            f"'{split_name}' is not a COCO zero-shot split; choose from {sorted(COCO_SPLIT_LAYOUTS)}"
        ) from None


def coco_root(root: Optional[str] = None) -> str:
    """`<DETECTRON2_DATASETS>/coco` (or `<root>/coco`), absolute."""
    return os.path.join(datasets_root(root), "coco")


def prepare_command(split_name: str, coco_dir: Optional[str] = None) -> str:
    coco_dir = coco_dir if coco_dir is not None else coco_root()
    return f"python datasets/prepare_coco_zero_shot.py --coco-root {coco_dir} --split {split_name}"


def source_paths(split_name: str, coco_dir: str) -> Dict[str, str]:
    """The standard COCO files a split is prepared from."""
    kind = get_layout(split_name).kind
    j = lambda *p: os.path.join(coco_dir, *p)  # noqa: E731
    if kind == "instance":
        return {
            "train_json": j("annotations", "instances_train2014.json"),
            "val_json": j("annotations", "instances_val2014.json"),
            "train_images": j("train2014"),
            "val_images": j("val2014"),
        }
    if kind == "panoptic":
        return {
            "train_json": j("annotations", "panoptic_train2017.json"),
            "val_json": j("annotations", "panoptic_val2017.json"),
            "train_panoptic": j("panoptic_train2017"),
            "val_panoptic": j("panoptic_val2017"),
            "train_images": j("train2017"),
            "val_images": j("val2017"),
        }
    return {
        "train_labels": j("stuffthingmaps", "train2017"),
        "val_labels": j("stuffthingmaps", "val2017"),
        "train_images": j("train2017"),
        "val_images": j("val2017"),
    }


def prepared_paths(split_name: str, coco_dir: str) -> Dict[str, str]:
    """The files datasets/prepare_coco_zero_shot.py writes for a split (and registration reads)."""
    kind = get_layout(split_name).kind
    base = os.path.join(coco_dir, "zero_shot", split_name)
    j = lambda *p: os.path.join(base, *p)  # noqa: E731
    paths = {"dir": base, "summary": j(SUMMARY_FILE)}
    if kind == "instance":
        paths.update(
            train_json=j("instances_train2014_seen.json"),  # seen classes only
            test_unseen_json=j("instances_val2014_unseen.json"),  # ZSI: unseen annotations only
            test_gzsi_json=j("instances_val2014_gzsi.json"),  # GZSI: seen + unseen
        )
    elif kind == "panoptic":
        paths.update(
            train_json=j("panoptic_train2017.json"),
            val_json=j("panoptic_val2017.json"),
            train_instances=j("instances_train2017.json"),  # thing segments as COCO instances
            val_instances=j("instances_val2017.json"),
            train_sem_seg=j("sem_seg_train2017"),  # uint8 contiguous ids, 255 = VOID
            val_sem_seg=j("sem_seg_val2017"),
        )
    else:
        paths.update(
            train_sem_seg=j("sem_seg_train2017"),  # uint8 contiguous ids, unseen and unlabelled = 255
            val_sem_seg=j("sem_seg_val2017"),
        )
        if get_layout(split_name).val_labels_in_place:
            paths["val_sem_seg"] = source_paths(split_name, coco_dir)["val_labels"]  # checked, not copied
    return paths


_HINTS = {
    "instances_train2014.json": "annotations_trainval2014.zip from https://cocodataset.org/#download",
    "instances_val2014.json": "annotations_trainval2014.zip from https://cocodataset.org/#download",
    "train2014": "train2014.zip from https://cocodataset.org/#download",
    "val2014": "val2014.zip from https://cocodataset.org/#download",
    "train2017": "train2017.zip from https://cocodataset.org/#download",
    "val2017": "val2017.zip from https://cocodataset.org/#download",
    "panoptic_train2017.json": "panoptic_annotations_trainval2017.zip from https://cocodataset.org/#download",
    "panoptic_val2017.json": "panoptic_annotations_trainval2017.zip from https://cocodataset.org/#download",
    "panoptic_train2017": "annotations/panoptic_train2017.zip inside panoptic_annotations_trainval2017.zip",
    "panoptic_val2017": "annotations/panoptic_val2017.zip inside panoptic_annotations_trainval2017.zip",
}


def download_hint(path: str) -> str:
    """What to download and unzip so that `path` exists (for error messages)."""
    name = os.path.basename(os.path.normpath(path))
    if os.path.basename(os.path.dirname(os.path.normpath(path))) == "stuffthingmaps":
        return "stuffthingmaps_trainval2017.zip from https://github.com/nightrome/cocostuff, unzipped into stuffthingmaps/"
    return _HINTS.get(name, "the standard COCO release (see datasets/README.md)")
