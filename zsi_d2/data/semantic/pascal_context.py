"""Pascal-Context, 33 classes (CaGNet's benchmark): where the standard files are and how they are read.

Layout under `$DETECTRON2_DATASETS/VOCdevkit/VOC2010` (VOC 2010's own tarball, plus the Context labels):

    JPEGImages/*.jpg                    VOCtrainval_03-May-2010.tar
    ImageSets/Main/{train,val}.txt      the 4,998 training / 5,105 validation images (same tarball)
    33_context_labels/*.png             33_context_labels.tar.gz (Mottaghi et al., the Pascal-Context page)
  or, instead of all three, CaGNet's own copy (CaGNet_context_data.tar, the README's download):
    images/{train,val}/*.jpg            the same images, already split
    annotations/{train,val}/*.png       the same 33-class labels

A label pixel holds 0 (unlabelled: none of the 33 classes; CaGNet's labels_refined.txt "unlabel",
mapped to its ignore index 255) or 1..33 (the classes in 33_labels.txt order, which is
PASCAL_CONTEXT_CLASSES'). Training images are VOC 2010's Main train list, validation its val list:
the sizes CaGNet reports (4998 / 5105); the digests below are those of CaGNet's lists
(dataset/context/split/{train,test}_list.npy, sorted stems), so the preparation says whether the
user's files give exactly the published images.
"""
import os
from typing import Dict, List, Tuple

import numpy as np

from ...errors import InputFileNotFoundError
from ..prepare_files import read_label_image

__all__ = ["source_paths", "check_sources", "items", "read_label", "image_dir", "SOURCE_LABELS",
           "CONTEXT_UNLABELLED", "DOWNLOADS"]

SOURCE_LABELS = "Pascal-Context 33-class label map (0 = unlabelled, 1..33 = the classes in 33_labels.txt order)"
CONTEXT_UNLABELLED = (0,)

# CaGNet's lists (dataset/context/split/{train,test}_list.npy @249305b): size, sha256 of the sorted stems.
PUBLISHED_LISTS = {
    "train": (4998, "2da5ca32fd4ef15bec421829de47e0652cb7b749f4cd24a2485757607ecb1975"),
    "val": (5105, "261199d190e5c22dc3458c97a9e831f25247e2ae41eb650f5202e1e0d82563d5"),
}
_PAGE = "https://cs.stanford.edu/~roozbeh/pascal-context/"
DOWNLOADS = {
    "images": "VOCtrainval_03-May-2010.tar from http://host.robots.ox.ac.uk/pascal/VOC/voc2010/, unpacked into "
              "$DETECTRON2_DATASETS",
    "train_list": "VOCtrainval_03-May-2010.tar (VOC2010/ImageSets/Main/train.txt)",
    "val_list": "VOCtrainval_03-May-2010.tar (VOC2010/ImageSets/Main/val.txt)",
    "labels": f"33_context_labels.tar.gz from {_PAGE}, unpacked into VOCdevkit/VOC2010",
}


def source_paths(root: str) -> Dict[str, str]:
    """The standard files under `root` (the VOC2010 folder), and CaGNet's copy's folders."""
    return {
        "images": os.path.join(root, "JPEGImages"),
        "train_list": os.path.join(root, "ImageSets", "Main", "train.txt"),
        "val_list": os.path.join(root, "ImageSets", "Main", "val.txt"),
        "labels": os.path.join(root, "33_context_labels"),
        **{f"cagnet_{kind}_{subset}": os.path.join(root, kind, subset)
           for kind in ("images", "annotations") for subset in ("train", "val")},
    }


def _cagnet_copy(root: str) -> bool:
    """CaGNet's copy is used when its annotations/ folder is there and 33_context_labels/ is not."""
    src = source_paths(root)
    return os.path.isdir(os.path.join(root, "annotations")) and not os.path.isdir(src["labels"])


def check_sources(root: str) -> None:
    """Every file the split needs, or one error listing what is missing and where it comes from."""
    src = source_paths(root)
    if _cagnet_copy(root):
        needed = [k for k in src if k.startswith("cagnet_")]
        where = {k: "CaGNet_context_data.tar (CaGNet's README), unpacked into VOCdevkit/VOC2010" for k in needed}
    else:
        needed, where = ["images", "train_list", "val_list", "labels"], DOWNLOADS
    missing = [k for k in needed if not (os.path.isfile if k.endswith("_list") else os.path.isdir)(src[k])]
    if missing:
        lines = "\n".join(f"  {src[k]}\n      (from {where[k]})" for k in missing)
        raise InputFileNotFoundError(
            f"Cannot prepare 'pascal_context_29_4': Pascal-Context files missing under {root}: put VOC 2010 and the "
            "33-class Context labels there (JPEGImages/, ImageSets/Main/{train,val}.txt and 33_context_labels/, or "
            f"CaGNet's images/ + annotations/; datasets/README.md). Missing:\n{lines}"
        )


def _list_stems(path: str) -> List[str]:
    with open(path) as f:
        return sorted({line.split()[0] for line in f if line.strip()})


def items(root: str, subset: str) -> List[Tuple[str, str]]:
    """(stem, label file) of the subset: VOC 2010's Main list, or CaGNet's annotations/<subset>/."""
    src = source_paths(root)
    if _cagnet_copy(root):
        folder = src[f"cagnet_annotations_{subset}"]
        return [(f[:-len(".png")], os.path.join(folder, f)) for f in sorted(os.listdir(folder)) if f.endswith(".png")]
    labels = {f[:-len(".png")] for f in os.listdir(src["labels"]) if f.endswith(".png")}
    stems = _list_stems(src[f"{subset}_list"])
    unlabelled = [s for s in stems if s not in labels]
    if unlabelled:
        raise InputFileNotFoundError(
            f"{len(unlabelled)} images of {src[f'{subset}_list']} have no label map in {src['labels']} "
            f"(e.g. {unlabelled[0]}.png): unpack 33_context_labels.tar.gz again"
        )
    return [(s, os.path.join(src["labels"], s + ".png")) for s in stems]


def read_label(path: str) -> np.ndarray:
    return read_label_image(path)


def image_dir(root: str, subset: str) -> str:
    src = source_paths(root)
    return src[f"cagnet_images_{subset}"] if _cagnet_copy(root) else src["images"]

