"""Small synthetic ground truths and predictions shared by the tests of zsi_d2.evaluation.

Kept out of conftest.py (owned by the project lead); test modules import it directly.
Everything is generated from a seed so the tests are deterministic and need no data files.
"""
import json
import os

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

from coco_fixtures import SHARED_PANOPTIC as COCO_PANOPTIC_SAMPLE, SHARED_PANOPTIC_MISSING  # noqa: E402,F401

# Non-contiguous dataset ids on purpose: results must use them, not 0..K-1.
INSTANCE_CATEGORIES = [
    {"id": 3, "name": "cat"},
    {"id": 7, "name": "dog"},
    {"id": 11, "name": "bird"},
    {"id": 12, "name": "fish"},
    {"id": 20, "name": "frog"},  # no GT at all: must be nan and excluded from means
]
INSTANCE_SEEN = ("cat", "dog", "frog")
INSTANCE_UNSEEN = ("bird", "fish")


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


def _box_mask(h, w, box):
    x, y, bw, bh = [int(round(v)) for v in box]
    m = np.zeros((h, w), dtype=np.uint8)
    m[max(y, 0):max(y + bh, 0), max(x, 0):max(x + bw, 0)] = 1
    return m


def make_instance_dataset(seed=0, num_images=12, height=64, width=80):
    """A COCO GT dict and a noisy COCO results list with boxes and RLE masks.

    Predictions include jittered true positives, duplicates, misclassifications, pure false
    positives and missed objects, so precision/recall curves are non-trivial at IoU 0.4-0.6.
    One GT object is a crowd region.
    """
    rng = np.random.RandomState(seed)
    gt_cats = [c for c in INSTANCE_CATEGORIES if c["name"] != "frog"]
    images, anns, results = [], [], []
    ann_id = 1
    for img_id in range(1, num_images + 1):
        images.append({"id": img_id, "file_name": f"{img_id:06d}.jpg", "height": height, "width": width})
        for _ in range(rng.randint(3, 8)):
            cat = gt_cats[rng.randint(len(gt_cats))]
            bw, bh = rng.randint(8, 30), rng.randint(8, 30)
            x, y = rng.randint(0, width - bw), rng.randint(0, height - bh)
            box = [float(x), float(y), float(bw), float(bh)]
            mask = _box_mask(height, width, box)
            # Cut a corner off the mask so segm IoU differs from bbox IoU.
            mask[y:y + bh // 3, x:x + bw // 3] = 0
            iscrowd = int(ann_id == 5)
            anns.append({
                "id": ann_id, "image_id": img_id, "category_id": cat["id"], "bbox": box,
                "area": float(mask.sum()), "iscrowd": iscrowd, "segmentation": _rle(mask),
            })
            ann_id += 1
            if rng.rand() < 0.15:
                continue  # missed object
            for _dup in range(1 + int(rng.rand() < 0.3)):
                jitter = rng.uniform(-0.2, 0.2, size=4) * np.array([bw, bh, bw, bh])
                pbox = [float(max(0, x + jitter[0])), float(max(0, y + jitter[1])),
                        float(max(2, bw + jitter[2])), float(max(2, bh + jitter[3]))]
                pcat = cat if rng.rand() > 0.2 else gt_cats[rng.randint(len(gt_cats))]
                results.append({
                    "image_id": img_id, "category_id": pcat["id"], "score": float(rng.rand()),
                    "bbox": pbox, "segmentation": _rle(_box_mask(height, width, pbox)),
                })
        for _ in range(rng.randint(0, 3)):  # background false positives
            pbox = [float(rng.randint(0, width - 10)), float(rng.randint(0, height - 10)), 9.0, 9.0]
            results.append({
                "image_id": img_id, "category_id": gt_cats[rng.randint(len(gt_cats))]["id"],
                "score": float(rng.rand()), "bbox": pbox,
                "segmentation": _rle(_box_mask(height, width, pbox)),
            })
    gt = {"images": images, "annotations": anns, "categories": [dict(c) for c in INSTANCE_CATEGORIES]}
    return gt, results


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)
    return str(path)


def id2rgb(id_map):
    id_map = np.asarray(id_map, dtype=np.uint32)
    return np.stack([id_map % 256, (id_map // 256) % 256, (id_map // 65536) % 256], -1).astype(np.uint8)


def write_panoptic_png(path, id_map):
    Image.fromarray(id2rgb(id_map)).save(path)
    return str(path)


def has_coco_panoptic_sample():
    return os.path.isfile(os.path.join(COCO_PANOPTIC_SAMPLE, "panoptic_examples.json")) and os.path.isdir(
        os.path.join(COCO_PANOPTIC_SAMPLE, "panoptic_examples")
    )
