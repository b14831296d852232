#!/usr/bin/env python
"""Draw a trained model's predictions next to the ground truth, unseen classes highlighted.

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

from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.engine import ZeroShotCheckpointer
from zsi_d2.data.catalog import require_registered
from zsi_d2.errors import InputFileNotFoundError, exit_on_input_error
from zsi_d2.modeling import use_class_set
from zsi_d2.utils.visualizer import draw_zero_shot_instances, image_grid

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


def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="zsi_d2")
    require_registered(args.dataset, "--dataset")
    cfg = get_zsi_d2_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.WEIGHTS = args.weights
    cfg.DATASETS.TEST = (args.dataset,)
    cfg.freeze()
    if not os.path.isfile(args.weights):
        raise InputFileNotFoundError(f"--weights {args.weights} does not exist: train first (train_net.py)")
    model = build_model(cfg)
    ZeroShotCheckpointer.from_config(cfg, model, purpose="eval").load(args.weights)  # every parameter, or an error
    model.eval()
    meta = MetadataCatalog.get(args.dataset)
    dicts = DatasetCatalog.get(args.dataset)
    # Prefer images that contain unseen classes: they are what a zero-shot model is judged on.
    unseen_ids = {i for i, n in enumerate(meta.thing_classes) if n in set(meta.unseen_classes)}
    dicts = sorted(dicts, key=lambda d: -sum(a["category_id"] in unseen_ids for a in d.get("annotations", [])))
    mapper = DatasetMapper(cfg, is_train=False)
    rows = []
    with use_class_set(model, args.dataset), torch.no_grad():
        for d in tqdm(dicts[: args.num], desc="visualise"):
            image = read_image(d["file_name"], format="RGB")
            inputs = mapper(dict(d))
            pred = model([inputs])[0]["instances"].to("cpu")
            pred = pred[pred.scores >= args.score_thresh]
            gt = annotations_to_instances(d["annotations"], image.shape[:2], mask_format="bitmask")
            rows.append([draw_zero_shot_instances(image, gt, meta), draw_zero_shot_instances(image, pred, meta)])
    grid = image_grid(rows)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    cv2.imwrite(args.output, grid[:, :, ::-1])
    logger.info(f"Wrote {args.output}: ground truth (left) and predictions (right); unseen classes in magenta")
    return args.output


if __name__ == "__main__":
    with exit_on_input_error():  # a checkpoint that does not fit the config, an unknown dataset: one line
        main()
