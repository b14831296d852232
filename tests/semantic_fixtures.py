"""Small Pascal VOC and ADE20k-Full trees in their standard on-disk conventions, for the semantic benchmark tests.

`build_voc_root(base, labels="aug")` writes under `base` (a stand-in for $DETECTRON2_DATASETS):
    VOCdevkit/VOC2012/JPEGImages/*.jpg, ImageSets/Segmentation/val.txt,
    VOCdevkit/VOC2012/SegmentationClassAug/*.png  (labels="aug": grey PNGs, 0 bg, 1..20, 255 boundary)
  or VOCdevkit/VOC2012/SegmentationClass/*.png     (labels="sbd": VOC's palette PNGs, for VOC's images)
   + VOCdevkit/benchmark_RELEASE/dataset/cls/*.mat (SBD's GTcls.Segmentation, for the others)
`build_ade_root(base, source="maskformer")` writes under `base`:
    ADE20K_2021_17_01/images_detectron2/{training,validation}/*.jpg + annotations_detectron2/.../*.tif
    (uint16 trainIds, 65535 = unlabelled), or (source="release") the release's index_ade20k.pkl with
    images/ADE/{training,validation}/<scene>/X.jpg and X_seg.png (class = R // 10 * 256 + G).

Every image is a small "design" (class name, rectangle) painted in order over a background, so a
test says by hand what each prepared pixel must be. Kept out of conftest.py (owned by the lead).
"""
import os
import pickle

import numpy as np
from PIL import Image

from zsi_d2.data import splits

H, W = 24, 32
FULL = (0, 0, W, H)  # x0, y0, x1, y1

# ---- Pascal VOC: stem -> [(class, rectangle)] over background (0); a boundary row of 255 under each box
VOC_TRAIN = {
    "2007_000032": [("person", (2, 2, 12, 20)), ("sheep", (16, 4, 30, 20))],  # sheep: unseen
    "2007_000039": [("tv monitor", (4, 4, 28, 20))],  # only an unseen class
    "2008_000123": [("dog", (3, 3, 20, 20)), ("cat", (22, 2, 30, 10))],  # seen only
}
VOC_VAL = {
    "2007_000033": [("aeroplane", FULL), ("sheep", (5, 5, 20, 18))],
    "2007_000042": [("train", (0, 6, 32, 20)), ("person", (2, 2, 6, 6))],
}
# SBD route: images labelled by SBD only (train) and one labelled by both, where VOC's label must win.
SBD_ONLY = ("2008_000123",)
VOC_AND_SBD = "2007_000032"


def voc_value(name):
    """The VOC label value of a class (1..20 in VOC order)."""
    return splits.VOC_CLASSES.index(name) + 1


def paint(design, value_of, background, dtype):
    labels = np.full((H, W), background, dtype=dtype)
    for name, (x0, y0, x1, y1) in design:
        labels[y0:y1, x0:x1] = value_of(name)
    return labels


def voc_labels(design):
    labels = paint(design, voc_value, 0, np.uint8)
    for _, (x0, y0, x1, y1) in design:
        if y1 < H and (x0, y0, x1, y1) != FULL:
            labels[y1, x0:x1] = 255  # VOC's boundary band
    return labels


def _write_jpg(path, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, size=(H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, quality=90)


def _write_palette_png(path, labels):
    img = Image.fromarray(labels, mode="P")
    img.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    img.save(path)


def _write_sbd_mat(path, labels):
    from scipy.io import savemat

    savemat(path, {"GTcls": {"Segmentation": labels, "Boundaries": np.zeros(1), "CategoriesPresent": np.zeros(1)}})


def build_voc_root(base, labels="aug", extra_images=()):
    """The VOC2012 folder of a fixture tree (VOCdevkit/VOC2012 under `base`)."""
    root = os.path.join(base, "VOCdevkit", "VOC2012")
    folders = {"aug": os.path.join(root, "SegmentationClassAug"), "voc": os.path.join(root, "SegmentationClass"),
               "sbd": os.path.join(base, "VOCdevkit", "benchmark_RELEASE", "dataset", "cls")}
    for folder in (folders["voc"], folders["sbd"]) if labels == "sbd" else (folders["aug"],):
        os.makedirs(folder, exist_ok=True)
    os.makedirs(os.path.join(root, "ImageSets", "Segmentation"), exist_ok=True)
    with open(os.path.join(root, "ImageSets", "Segmentation", "val.txt"), "w") as f:
        f.write("".join(s + "\n" for s in VOC_VAL))
    for seed, (stem, design) in enumerate({**VOC_TRAIN, **VOC_VAL}.items()):
        _write_jpg(os.path.join(root, "JPEGImages", stem + ".jpg"), seed)
        lab = voc_labels(design)
        if labels == "aug":
            Image.fromarray(lab).save(os.path.join(folders["aug"], stem + ".png"))
            continue
        if stem not in SBD_ONLY:
            _write_palette_png(os.path.join(folders["voc"], stem + ".png"), lab)
        if stem in SBD_ONLY or stem == VOC_AND_SBD:
            sbd = np.where(lab == 255, 0, lab)  # SBD has no boundary band ...
            if stem == VOC_AND_SBD:
                sbd = np.full_like(lab, voc_value("bird"))  # ... and here a label VOC's must replace
            _write_sbd_mat(os.path.join(folders["sbd"], stem + ".mat"), sbd)
    for seed, stem in enumerate(extra_images):  # images without labels (VOC's detection-only images)
        _write_jpg(os.path.join(root, "JPEGImages", stem + ".jpg"), 100 + seed)
    return root


# ---- ADE20k-Full: file stem -> [(class name, rectangle)] over unlabelled (65535 / an unknown ADE id)
def ade_name(index):
    return splits.ADE20K_FULL_CLASSES[index]


WALL, SKY, PERSON, RUNWAY, CATWALK, LAST = (ade_name(i) for i in (0, 2, 11, 52, 166, 846))  # CATWALK, LAST: rare
ADE_TRAIN = {
    "ADE_train_00000001": [(WALL, FULL), (PERSON, (2, 2, 12, 20)), (CATWALK, (16, 4, 30, 20))],
    "ADE_train_00000002": [(SKY, (0, 0, 32, 12)), (RUNWAY, (0, 12, 32, 24))],
}
ADE_VAL = {
    "ADE_val_00000001": [(SKY, FULL), (LAST, (4, 4, 20, 16)), (PERSON, (22, 2, 30, 22))],
}
ADE_BIG = "ADE_train_00000003"  # release route only: shorter side 520 > 512, so it is resized


def ade_train_id(name):
    return splits.ADE20K_FULL_CLASSES.index(name)


def ade_labels(design):
    labels = paint(design, ade_train_id, 65535, np.uint16)
    labels[-1, :] = 65535  # an unlabelled row
    return labels


def _seg_png(train_ids):
    """A release _seg.png: R // 10 * 256 + G is the ADE object id; R's last digit and B are instance data."""
    ids = np.asarray(splits.ADE20K_FULL_IDS + (1,))[np.where(train_ids == 65535, len(splits.ADE20K_FULL_IDS),
                                                             train_ids)]
    assert 1 not in splits.ADE20K_FULL_IDS  # id 1 stands for a class outside the 847
    rgb = np.zeros(train_ids.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = ids // 256 * 10 + 3
    rgb[..., 1] = ids % 256
    rgb[..., 2] = 9
    return rgb


def build_ade_root(base, source="maskformer"):
    """The ADE20K_2021_17_01 folder of a fixture tree under `base`."""
    root = os.path.join(base, "ADE20K_2021_17_01")
    index = {"folder": [], "filename": []}
    designs = [("training", ADE_TRAIN), ("validation", ADE_VAL)]
    for seed, (stem, design, subset) in enumerate((s, d, sub) for sub, ds in designs for s, d in ds.items()):
        labels = ade_labels(design)
        if source == "maskformer":
            _write_jpg(os.path.join(root, "images_detectron2", subset, stem + ".jpg"), seed)
            os.makedirs(os.path.join(root, "annotations_detectron2", subset), exist_ok=True)
            Image.fromarray(labels).save(os.path.join(root, "annotations_detectron2", subset, stem + ".tif"))
            continue
        folder = os.path.join("ADE20K_2021_17_01", "images", "ADE", subset, "scene")
        _write_jpg(os.path.join(base, folder, stem + ".jpg"), seed)
        Image.fromarray(_seg_png(labels)).save(os.path.join(base, folder, stem + "_seg.png"))
        index["folder"].append(folder)
        index["filename"].append(stem + ".jpg")
    if source == "release":
        folder = os.path.join("ADE20K_2021_17_01", "images", "ADE", "training", "scene")
        big = np.full((520, 600), ade_train_id(WALL), dtype=np.uint16)
        big[:, 300:] = ade_train_id(PERSON)
        Image.fromarray(np.zeros((520, 600, 3), dtype=np.uint8)).save(os.path.join(base, folder, ADE_BIG + ".jpg"))
        Image.fromarray(_seg_png(big)).save(os.path.join(base, folder, ADE_BIG + "_seg.png"))
        index["folder"].append(folder)
        index["filename"].append(ADE_BIG + ".jpg")
        with open(os.path.join(root, "index_ade20k.pkl"), "wb") as f:
            pickle.dump(index, f)
    return root
