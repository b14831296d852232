#!/usr/bin/env python
"""Draw a trained model's predictions next to the ground truth, unseen classes highlighted.

Each view the model produces is drawn beside the ground truth: instances, and the panoptic and
semantic views of mask-classification models (ZeroShotMaskFormer, PADing).

    python tools/visualize_predictions.py --config-file CONFIG --weights MODEL.pth \
        --dataset zs_shapes_val --num 8 --output output/demo/predictions.png
"""
import argparse
import logging
import os

import cv2
import torch
from tqdm import tqdm

import zsi_d2  # noqa: F401  (first: makes detectron2 importable, registers datasets and models)

from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data.detection_utils import annotations_to_instances, read_image
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

from zsi_d2.config import command_config
from zsi_d2.engine import ZeroShotCheckpointer
from zsi_d2.data.catalog import require_registered
from zsi_d2.errors import exit_on_input_error
from zsi_d2.modeling import use_class_set
from zsi_d2.utils.panoptic_ids import read_panoptic_png
from zsi_d2.utils.visualizer import (OUTPUT_KEYS, draw_prediction, draw_zero_shot_instances, draw_zero_shot_panoptic,
                                     image_grid)

logger = logging.getLogger("zsi_d2.visualize")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", required=True, help="trained model (.pth)")
    p.add_argument("--dataset", default="zs_shapes_val", help="registered dataset to draw from")
    p.add_argument("--num", type=int, default=8, help="how many images")
    p.add_argument("--score-thresh", type=float, default=0.5)
    p.add_argument("--output", required=True, help="PNG file to write")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides")
    return p.parse_args(argv)


def _unseen_count(d, meta):
    unseen = set(meta.unseen_classes)
    if "annotations" in d:
        return sum(meta.thing_classes[a["category_id"]] in unseen for a in d["annotations"])
    return sum(meta.stuff_classes[s["category_id"]] in unseen for s in d.get("segments_info", ()))


def draw_ground_truth(image, d, meta):
    """The dataset's own annotation of an image: instances, else its panoptic PNG."""
    if "annotations" in d:
        gt = annotations_to_instances(d["annotations"], image.shape[:2], mask_format="bitmask")
        return draw_zero_shot_instances(image, gt, meta)
    return draw_zero_shot_panoptic(image, read_panoptic_png(d["pan_seg_file_name"]), d["segments_info"], meta)


def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="zsi_d2")
    require_registered(args.dataset, "--dataset")
    cfg = command_config(args.config_file, [*args.opts, "DATASETS.TEST", repr((args.dataset,))], args.weights)
    model = build_model(cfg)
    ZeroShotCheckpointer.from_config(cfg, model, purpose="eval").load(args.weights)  # every parameter, or an error
    model.eval()
    meta = MetadataCatalog.get(args.dataset)
    dicts = DatasetCatalog.get(args.dataset)
    # Prefer images that contain unseen classes: they are what a zero-shot model is judged on.
    dicts = sorted(dicts, key=lambda d: -_unseen_count(d, meta))
    mapper = DatasetMapper(cfg, is_train=False)
    rows = []
    with use_class_set(model, args.dataset), torch.no_grad():
        for d in tqdm(dicts[: args.num], desc="visualise"):
            image = read_image(d["file_name"], format="RGB")
            output = model([mapper(dict(d))])[0]
            # Every view the model produces, in the dataset's label space (instances, panoptic, semantic).
            views = [draw_prediction(image, output, meta, task, args.score_thresh)
                     for task, key in OUTPUT_KEYS.items() if key in output]
            rows.append([draw_ground_truth(image, d, meta)] + views)
    grid = image_grid(rows)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    cv2.imwrite(args.output, grid[:, :, ::-1])
    logger.info(f"Wrote {args.output}: ground truth (left) and each view of the predictions (instances, panoptic, "
                "semantic, as the model gives them); unseen classes in magenta")
    return args.output


if __name__ == "__main__":
    with exit_on_input_error():  # a checkpoint that does not fit the config, an unknown dataset: one line
        main()
