"""ADE20k-Full (the ADE20K_2021_17_01 release): where the files are and how they are read.

Layout under `$DETECTRON2_DATASETS/ADE20K_2021_17_01`, MaskFormer's / Mask2Former's:

    images_detectron2/{training,validation}/*.jpg       written by MaskFormer's
    annotations_detectron2/{training,validation}/*.tif    datasets/prepare_ade20k_full_sem_seg.py
  or, when those are absent, the release itself (https://groups.csail.mit.edu/vision/datasets/ADE20K/),
  from which this module writes the two folders above the same way:
    index_ade20k.pkl                                      its "folder" / "filename" lists
    images/ADE/{training,validation}/**/X.jpg, X_seg.png  images and full-class label images

A prepared label is a uint16 trainId (the row of ADE20K_FULL_CATEGORIES), 65535 = unlabelled.
The release's class of a pixel is R // 10 * 256 + G of its _seg.png (the ADE object id); images
whose shorter side exceeds 512 are resized to 512 (labels with nearest neighbour), as MaskFormer.
"""
import functools
import logging
import os
import pickle
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

from ...errors import InputFileNotFoundError, InputValueError
from ..label_maps import label_lut
from ..prepare_files import finish_folder, parallel_map, read_label_image, start_folder, write_image
from ..splits import ADE20K_FULL_IDS

__all__ = ["source_paths", "check_sources", "prepare_sources", "items", "read_label", "image_dir", "SOURCE_LABELS",
           "RELEASE", "ADE_IGNORE_LABEL", "release_labels", "resized_size"]

logger = logging.getLogger(__name__)

ADE_IGNORE_LABEL = 65535  # unlabelled, in MaskFormer's 16-bit label maps
SOURCE_LABELS = "uint16 ADE20k-Full label map (trainId 0..846, 65535 = unlabelled, MaskFormer's annotations_detectron2)"
_SUBSETS = {"train": "training", "val": "validation"}
_MAX_SIZE = 512  # MaskFormer's preparation: shorter side capped at 512

RELEASE = "https://groups.csail.mit.edu/vision/datasets/ADE20K/"


def source_paths(root: str) -> Dict[str, str]:
    """The prepared folders (and the release index) under `root` (the ADE20K_2021_17_01 folder)."""
    paths = {"index": os.path.join(root, "index_ade20k.pkl")}
    for subset, folder in _SUBSETS.items():
        paths[f"{subset}_images"] = os.path.join(root, "images_detectron2", folder)
        paths[f"{subset}_labels"] = os.path.join(root, "annotations_detectron2", folder)
    return paths


def _prepared(root: str) -> bool:
    src = source_paths(root)
    return all(os.path.isdir(src[f"{s}_{k}"]) for s in _SUBSETS for k in ("images", "labels"))


def check_sources(root: str) -> None:
    src = source_paths(root)
    missing = [src[k] for k in src if k != "index" and not os.path.isdir(src[k])]
    if missing:
        raise InputFileNotFoundError(
            f"Cannot prepare 'ade20k_full_572_275': ADE20k-Full files missing under {root}: run MaskFormer's "
            "datasets/prepare_ade20k_full_sem_seg.py, or unpack the ADE20K_2021_17_01 release there (index_ade20k.pkl "
            f"+ images/, from {RELEASE}) and this script writes them (datasets/README.md). Missing:\n"
            + "\n".join(f"  {path}" for path in missing)
        )


# ---------------------------------------------------------------------------------------------
# From the release (what MaskFormer's datasets/prepare_ade20k_full_sem_seg.py does)
# ---------------------------------------------------------------------------------------------
def release_labels(seg_rgb: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """uint16 trainIds of a release _seg.png (R // 10 * 256 + G = ADE object id; other ids = 65535)."""
    seg_rgb = np.asarray(seg_rgb)
    ade_ids = (seg_rgb[:, :, 0].astype(np.int32) // 10) * 256 + seg_rgb[:, :, 1].astype(np.int32)
    return lut[ade_ids]


def resized_size(height: int, width: int, max_size: int = _MAX_SIZE) -> Tuple[int, int]:
    """(h, w) after capping the shorter side at `max_size` (unchanged when it is not larger)."""
    if width >= height > max_size:
        return max_size, round(width / float(height) * max_size)
    if height >= width > max_size:
        return round(height / float(width) * max_size), max_size
    return height, width


def _release_worker(job, lut):
    image_path, out_image, out_label = job
    seg_path = image_path[:-len(".jpg")] + "_seg.png"
    for path in (image_path, seg_path):
        if not os.path.isfile(path):
            raise InputFileNotFoundError(f"{path} (listed in index_ade20k.pkl) is missing: unpack the "
                                         "ADE20K_2021_17_01 release again")
    if os.path.isfile(out_image) and os.path.isfile(out_label):
        return
    import cv2

    with Image.open(image_path) as img:
        image = np.asarray(img)
    labels = release_labels(read_label_image(seg_path), lut).astype(np.int32)
    h, w = resized_size(*image.shape[:2])
    if (h, w) != image.shape[:2]:
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
    write_image(out_image, image)
    write_image(out_label, labels.astype(np.uint16))


def prepare_sources(root: str, workers: int = 1, progress: bool = True, force: bool = False) -> None:
    """Write images_detectron2/ and annotations_detectron2/ from the release, unless they exist."""
    src = source_paths(root)
    if _prepared(root) or not os.path.isfile(src["index"]):
        return  # MaskFormer's folders are there, or check_sources names what is missing
    with open(src["index"], "rb") as f:
        index = pickle.load(f)
    try:
        folders, files = list(index["folder"]), list(index["filename"])
    except (KeyError, TypeError):
        raise InputValueError(f"{src['index']} has no 'folder' / 'filename' lists: use the index of the "
                              "ADE20K_2021_17_01 release") from None
    lut = label_lut(ADE20K_FULL_IDS, [True] * len(ADE20K_FULL_IDS), ADE_IGNORE_LABEL, (), np.uint16)[0]
    partial = {k: start_folder(os.path.join(root, k), force) for k in ("images_detectron2", "annotations_detectron2")}
    jobs = []
    for folder, name in zip(folders, files):
        subset = "validation" if name.split("_")[1] == "val" else "training"  # ADE_val_*.jpg, ADE_train_*.jpg
        for part in partial.values():
            os.makedirs(os.path.join(part, subset), exist_ok=True)
        jobs.append((
            os.path.join(os.path.dirname(root), folder, name),  # the index's folders start at the dataset root
            os.path.join(partial["images_detectron2"], subset, name),
            os.path.join(partial["annotations_detectron2"], subset, name[:-len(".jpg")] + ".tif"),
        ))
    logger.info("Writing MaskFormer's images_detectron2/ and annotations_detectron2/ from %s", src["index"])
    parallel_map(functools.partial(_release_worker, lut=lut), jobs, workers, "ADE20k-Full release", progress)
    for final, part in partial.items():
        finish_folder(part, os.path.join(root, final))


# ---------------------------------------------------------------------------------------------
def items(root: str, subset: str) -> List[Tuple[str, str]]:
    """(stem, label file) of every label map of the subset ("train": training/, "val": validation/)."""
    folder = source_paths(root)[f"{subset}_labels"]
    return [(f[:-len(".tif")], os.path.join(folder, f)) for f in sorted(os.listdir(folder)) if f.endswith(".tif")]


def read_label(path: str) -> np.ndarray:
    return read_label_image(path)


def image_dir(root: str, subset: str) -> str:
    return source_paths(root)[f"{subset}_images"]
