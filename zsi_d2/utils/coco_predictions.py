"""Predictions as COCO-format JSON that pycocotools reads: `COCO(images_json).loadRes(results_json)`.

Why: a user running a model on their own images wants the predictions in the format their tools
read. Instances are detectron2's COCO results (box, RLE mask, score); panoptic segments and semantic
regions become the same kind of entries (RLE mask and its box, score 1.0: regions are not scored).
Category ids are 1 + the index into `metadata.stuff_classes` (the model's whole label space);
each category says whether it is a thing and whether the model was trained on it ("seen").
"""
import json
import os
from typing import Dict, List

import numpy as np
import pycocotools.mask as mask_util
import torch

from detectron2.evaluation.coco_evaluation import instances_to_coco_json

__all__ = ["coco_categories", "prediction_to_coco", "write_coco_predictions", "IMAGES_JSON", "RESULTS_JSON"]

IMAGES_JSON = "coco_images.json"  # images + categories: the side pycocotools' COCO() reads
RESULTS_JSON = "coco_results.json"  # the predictions: COCO(...).loadRes(...)


def coco_categories(metadata) -> List[Dict]:
    things, unseen = set(metadata.thing_classes), set(metadata.get("unseen_classes", ()))
    return [{"id": i + 1, "name": n, "isthing": int(n in things), "seen": int(n not in unseen)}
            for i, n in enumerate(metadata.stuff_classes)]


def _region(mask: np.ndarray, image_id: int, category_id: int) -> Dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    bbox = mask_util.toBbox(rle).tolist()
    rle["counts"] = rle["counts"].decode("ascii")
    return {"image_id": image_id, "category_id": category_id, "segmentation": rle, "bbox": bbox, "score": 1.0}


def prediction_to_coco(output, task: str, image_id: int, metadata, score_thresh: float = 0.0) -> List[Dict]:
    """COCO result entries of one model output (detectron2's output dict) for `task`
    ("instance", "panoptic" or "semantic")."""
    category = {n: i + 1 for i, n in enumerate(metadata.stuff_classes)}
    if task == "instance":
        instances = output["instances"].to("cpu")
        results = instances_to_coco_json(instances[instances.scores >= score_thresh], image_id)
        for r in results:
            r["category_id"] = category[metadata.thing_classes[r["category_id"]]]
        return results
    if task == "panoptic":
        seg, segments_info = output["panoptic_seg"]
        seg = seg.cpu().numpy()
        return [_region(seg == s["id"], image_id, s["category_id"] + 1) for s in segments_info]
    labels = output["sem_seg"].argmax(dim=0).cpu().numpy() if isinstance(output["sem_seg"], torch.Tensor) \
        else np.asarray(output["sem_seg"])
    return [_region(labels == c, image_id, int(c) + 1) for c in np.unique(labels)]


def write_coco_predictions(folder: str, images: List[Dict], metadata, results: List[Dict]):
    """Write IMAGES_JSON (`images`: id, file_name, height, width; categories) and RESULTS_JSON in
    `folder`; returns their paths. (pycocotools' loadRes cannot read an empty results list.)"""
    os.makedirs(folder, exist_ok=True)
    images_json, results_json = os.path.join(folder, IMAGES_JSON), os.path.join(folder, RESULTS_JSON)
    dataset = {"info": {"description": "zsi_d2 predictions"}, "images": images,
               "categories": coco_categories(metadata), "annotations": []}
    for path, payload in ((images_json, dataset), (results_json, results)):
        with open(path, "w") as f:
            json.dump(payload, f)
    return images_json, results_json
