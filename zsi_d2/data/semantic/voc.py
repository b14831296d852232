"""Pascal VOC 2012 + SBD ("SegmentationClassAug"): where the standard files are and how they are read.

Layout under `$DETECTRON2_DATASETS/VOCdevkit` (VOC's own tarball, plus the SBD labels):

    VOC2012/JPEGImages/*.jpg                     VOCtrainval_11-May-2012.tar
    VOC2012/ImageSets/Segmentation/val.txt       the 1,449 validation images (same tarball)
    VOC2012/SegmentationClassAug/*.png           the augmented label set, 12,031 PNGs (VOC + SBD)
  or, instead of SegmentationClassAug, the two sets it is made of:
    VOC2012/SegmentationClass/*.png              VOC's labels (palette PNGs, same tarball)
    benchmark_RELEASE/dataset/cls/*.mat          SBD's labels (benchmark.tgz, Hariharan et al.)

A label pixel holds 0 (background), 1..20 (the classes in VOC order) or 255 (object boundaries,
"difficult"). Where VOC and SBD both label an image, VOC's label is used, as SegmentationClassAug
does. Training images are every labelled image not in val.txt: 10,582, SPNet's training list, which
CaGNet and ZegFormer use; the digests below are those of SPNet's lists (sorted stems), so the
preparation says whether the user's files give exactly the published images.
"""
import os
from typing import Dict, List, Tuple

import numpy as np

from ...errors import InputFileNotFoundError, InputValueError
from ..prepare_files import read_label_image

__all__ = ["source_paths", "check_sources", "items", "read_label", "image_dir", "SOURCE_LABELS",
           "DOWNLOADS"]

# What a legal source map is (for the error on any other value).
SOURCE_LABELS = "Pascal VOC label map (0 = background, 1..20 = the classes in VOC order, 255 = boundary)"
VOC_UNLABELLED = (0, 255)  # background and boundaries: ZegFormer scores the 20 classes only

# SPNet's lists (datasets/voc12/split/{train,test}_list.npy in ZegFormer): size, sha256 of the sorted stems.
PUBLISHED_LISTS = {
    "train": (10582, "855dff350b7f447bf43cb98ea626a32e0d0b3b7c5786e03b2712a21355b635bf"),
    "val": (1449, "6f8edc37993764f6e212237d39546fb595246244147e8a050813c520aac0ade1"),
}

DOWNLOADS = {
    "images": "VOCtrainval_11-May-2012.tar from http://host.robots.ox.ac.uk/pascal/VOC/voc2012/, unpacked into "
              "$DETECTRON2_DATASETS",
    "val_list": "VOCtrainval_11-May-2012.tar (VOC2012/ImageSets/Segmentation/val.txt)",
    "aug_labels": "SegmentationClassAug.zip (the augmented VOC labels most segmentation code uses), unzipped into "
                  "VOCdevkit/VOC2012",
    "voc_labels": "VOCtrainval_11-May-2012.tar (VOC2012/SegmentationClass)",
    "sbd_labels": "benchmark.tgz from http://home.bharathh.info/pubs/codes/SBD/download.html, unpacked into "
                  "VOCdevkit (benchmark_RELEASE/)",
}


def source_paths(root: str) -> Dict[str, str]:
    """The standard files under `root` (the VOC2012 folder)."""
    return {
        "images": os.path.join(root, "JPEGImages"),
        "val_list": os.path.join(root, "ImageSets", "Segmentation", "val.txt"),
        "aug_labels": os.path.join(root, "SegmentationClassAug"),
        "voc_labels": os.path.join(root, "SegmentationClass"),
        "sbd_labels": os.path.join(os.path.dirname(root), "benchmark_RELEASE", "dataset", "cls"),
    }


def check_sources(root: str) -> None:
    """Every file the split needs, or one error listing what is missing and where it comes from."""
    src = source_paths(root)
    needed = ["images", "val_list"]
    if not os.path.isdir(src["aug_labels"]):
        needed += ["voc_labels", "sbd_labels"] if os.path.isdir(src["voc_labels"]) else ["aug_labels"]
    missing = [key for key in needed if not (os.path.isfile if key == "val_list" else os.path.isdir)(src[key])]
    if missing:
        lines = "\n".join(f"  {src[k]}\n      (from {DOWNLOADS[k]})" for k in missing)
        raise InputFileNotFoundError(
            f"Cannot prepare 'voc_15_5': Pascal VOC files missing under {root}: put VOC 2012 and the SBD labels "
            "there (SegmentationClassAug/, or SegmentationClass/ plus SBD's benchmark_RELEASE/; datasets/README.md). "
            f"Missing:\n{lines}"
        )


def _label_files(root: str) -> Dict[str, str]:
    """stem -> label file: SegmentationClassAug, else SBD's .mat overridden by VOC's PNG."""
    src = source_paths(root)
    folders = [(src["aug_labels"], ".png")] if os.path.isdir(src["aug_labels"]) else [
        (src["sbd_labels"], ".mat"), (src["voc_labels"], ".png")]
    labels = {}
    for folder, ext in folders:
        labels.update({f[:-len(ext)]: os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(ext)})
    return labels


def _val_stems(root: str) -> List[str]:
    with open(source_paths(root)["val_list"]) as f:
        return sorted({line.strip() for line in f if line.strip()})


def items(root: str, subset: str) -> List[Tuple[str, str]]:
    """(stem, label file) of the subset: "val" = val.txt, "train" = every other labelled image."""
    labels, val = _label_files(root), _val_stems(root)
    if subset == "val":
        unlabelled = [s for s in val if s not in labels]
        if unlabelled:
            raise InputFileNotFoundError(
                f"{len(unlabelled)} validation images of {source_paths(root)['val_list']} have no label map "
                f"(e.g. {unlabelled[0]}): the label folder is incomplete; unpack it again"
            )
        stems = val
    else:
        stems = sorted(set(labels) - set(val))
    return [(s, labels[s]) for s in stems]


def read_label(path: str) -> np.ndarray:
    """A label map: a PNG's indices (VOC's palette PNGs included) or SBD's GTcls.Segmentation."""
    if not path.endswith(".mat"):
        return read_label_image(path)
    from scipy.io import loadmat

    try:
        return np.asarray(loadmat(path)["GTcls"][0]["Segmentation"][0]).astype(np.uint8)
    except (KeyError, IndexError, ValueError) as e:
        raise InputValueError(f"{path} is not an SBD class label file (no GTcls.Segmentation: {e}); use "
                              "benchmark_RELEASE/dataset/cls from SBD's benchmark.tgz") from None


def image_dir(root: str, subset: str) -> str:
    return source_paths(root)["images"]

