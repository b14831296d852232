#!/usr/bin/env python
"""Export a trained ZeroShotMaskFormer to TorchScript (detectron2's TracingAdapter + torch.jit.trace).

    python tools/export_model.py --config-file CONFIG --weights MODEL.pth \
        --dataset zs_shapes_val_panoptic --output output/export/model.ts [--size 128 128]

The class set is the dataset's (as at evaluation). The model is traced on the dataset's first image
resized to --size (default: its size after the test-time resize), so the file accepts that size only.
Then eager and traced outputs are compared on another image of the dataset (a trace that froze a
value would differ there) and the largest difference is printed. Load with
`zsi_d2.modeling.mask_former.export.TracedMaskFormer.load(path)` (detectron2-format outputs), or
plainly with `torch.jit.load` (a flat tuple of tensors; layout in the file's zsi_d2_export.json).
"""
import argparse
import logging
import os
import sys

import torch

import zsi_d2  # noqa: F401  (first: makes detectron2 importable, registers datasets and models)

from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger
from detectron2.modeling import META_ARCH_REGISTRY, build_model

from zsi_d2.config import command_config
from zsi_d2.data.catalog import require_registered
from zsi_d2.engine import ZeroShotCheckpointer
from zsi_d2.errors import InputValueError, exit_on_input_error
from zsi_d2.modeling import use_class_set
from zsi_d2.modeling.mask_former.export import trace_mask_former
from zsi_d2.modeling.mask_former.meta_arch import ZeroShotMaskFormer

logger = logging.getLogger("zsi_d2.export")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", required=True, help="trained model (.pth)")
    p.add_argument("--dataset", required=True, help="registered dataset whose class set the export scores")
    p.add_argument("--output", required=True, help="TorchScript file to write (model.ts)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="fixed input size (default: first image)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides")
    return p.parse_args(argv)


def _image(cfg, d, size):
    """The model's input for dataset dict `d`: the test-time mapper's image, resized to `size`."""
    image = DatasetMapper(cfg, is_train=False)(dict(d))["image"]
    if size is None or tuple(image.shape[-2:]) == tuple(size):
        return image
    array = read_image(d["file_name"], format=cfg.INPUT.FORMAT)
    array = T.ResizeTransform(array.shape[0], array.shape[1], size[0], size[1]).apply_image(array)
    return torch.as_tensor(array.transpose(2, 0, 1).copy())


def compare(eager, traced):
    """Largest |difference| of the float outputs, and whether the discrete outputs are equal."""
    diffs, panoptic_equal, instances_equal = [0.0], True, True
    if "sem_seg" in eager:
        diffs.append((eager["sem_seg"] - traced["sem_seg"]).abs().max().item())
    if "panoptic_seg" in eager:
        def segments(seg, info):
            return {(s["category_id"], s["isthing"], (seg == s["id"]).numpy().tobytes()) for s in info}
        panoptic_equal = segments(*eager["panoptic_seg"]) == segments(*traced["panoptic_seg"])
    if "instances" in eager:
        a, b = eager["instances"], traced["instances"]
        instances_equal = len(a) == len(b) and torch.equal(a.pred_classes, b.pred_classes) and torch.equal(
            a.pred_masks, b.pred_masks)
        if instances_equal and len(a):
            diffs.append((a.scores - b.scores).abs().max().item())
            diffs.append((a.pred_boxes.tensor - b.pred_boxes.tensor).abs().max().item())
    return {"max_abs_diff": max(diffs), "panoptic_equal": panoptic_equal, "instances_equal": instances_equal}


def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="zsi_d2")
    require_registered(args.dataset, "--dataset")
    cfg = command_config(args.config_file, args.opts, args.weights)
    if not issubclass(META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE), ZeroShotMaskFormer):
        raise InputValueError(
            f"tools/export_model.py exports the mask-classification models (ZeroShotMaskFormer and PADing); "
            f"{args.config_file} builds {cfg.MODEL.META_ARCHITECTURE}, whose export is not written yet"
        )
    model = build_model(cfg)
    ZeroShotCheckpointer.from_config(cfg, model, purpose="eval").load(args.weights)
    model.eval()
    dicts = DatasetCatalog.get(args.dataset)
    example = _image(cfg, dicts[0], args.size)
    check = _image(cfg, dicts[1 if len(dicts) > 1 else 0], tuple(example.shape[-2:]))
    with use_class_set(model, args.dataset):
        traced = trace_mask_former(model, example, meta={"dataset": args.dataset, "weights": args.weights})
        with torch.no_grad():
            eager = model([{"image": check}])[0]
    result = compare(eager, traced(check))
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    traced.save(args.output)
    h, w = traced.input_size
    print(f"Wrote {args.output} (input {h}x{w}, {len(traced.meta['class_names'])} classes of {args.dataset}); "
          f"on another image: max |eager - traced| = {result['max_abs_diff']:.3g}, panoptic "
          f"{'equal' if result['panoptic_equal'] else 'DIFFERENT'}, instances "
          f"{'equal' if result['instances_equal'] else 'DIFFERENT'}")
    if not (result["panoptic_equal"] and result["instances_equal"]):
        logger.warning("The traced model differs from eager mode: a step of the inference froze a value.")
    return result


if __name__ == "__main__":
    with exit_on_input_error():  # a checkpoint that does not fit the config, an unknown dataset: one line
        result = main()
    sys.exit(0 if result["panoptic_equal"] and result["instances_equal"] else 1)
