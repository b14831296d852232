#!/usr/bin/env python
"""Export a trained zsi_d2 model to ONNX or TorchScript (detectron2's TracingAdapter, one traced image).

    python tools/export_model.py --config-file CONFIG --weights MODEL.pth --dataset zs_shapes_val_panoptic \
        --format onnx --output output/export/model.onnx [--size 128 128] \
        [--vocabulary "red circle" "purple star" ...] [--extra-vocabulary NAME ...] [--stuff NAME ...] \
        [--int8] [--opts KEY VALUE ...]

Every model family exports (zsi_d2.export): mask classification (the core, PADing, ZegFormer), the
R-CNN family (projection baseline, ZSI) and the pixel-level semantic segmentors (SPNet, ZS3Net, and
CaGNet / SIGN from a config under projects/, built with that project's keys). The class set is the
dataset's (as at evaluation), or the vocabulary given (as demo.py takes it), frozen into the file.
The model is traced on the dataset's first image at --size (default: its size after the test-time
resize), so the file accepts that size only. Then the exported file, loaded back (onnxruntime for
ONNX), is compared with eager mode on another image of the dataset (a trace that froze a value would
differ there): the largest float difference and whether the discrete outputs are equal are printed,
and the exit status is 1 if they are not. --int8 also writes onnxruntime's dynamic int8 quantisation
(`<output>.int8.onnx`, not compared: its outputs differ by design; tools/benchmark.py scores it).
Use the file with `zsi_d2.export.load_exported(path)(image)` (detectron2-format outputs) or
`demo.py --backend onnxruntime --exported FILE`; the graph alone returns a flat tuple of tensors
(layout in the file's `zsi_d2_export` metadata).
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
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

from zsi_d2.config import command_config
from zsi_d2.data.catalog import require_registered
from zsi_d2.engine import ZeroShotCheckpointer
from zsi_d2.engine.train_command import load_project_train_net, project_of
from zsi_d2.errors import InputFileNotFoundError, exit_on_input_error
from zsi_d2.export import FORMATS, compare_outputs, export_model, load_exported, quantize_onnx
from zsi_d2.modeling import use_class_set
from zsi_d2.modeling.vocabulary import set_vocabulary

logger = logging.getLogger("zsi_d2.export")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", required=True, help="trained model (.pth)")
    p.add_argument("--dataset", required=True,
                   help="registered dataset: the images traced and checked on, and (without --vocabulary) the classes")
    p.add_argument("--format", choices=FORMATS, default="onnx")
    p.add_argument("--output", required=True, help="file to write (model.onnx or model.ts)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="fixed input size (default: first image)")
    p.add_argument("--vocabulary", nargs="+", metavar="NAME", help="class names the file scores (as demo.py)")
    p.add_argument("--extra-vocabulary", nargs="+", default=(), metavar="NAME",
                   help="names scored beside the dataset's classes (or the vocabulary)")
    p.add_argument("--stuff", nargs="+", default=(), metavar="NAME", help="vocabulary entries that are regions")
    p.add_argument("--int8", action="store_true", help="also write a dynamic int8 quantisation (ONNX only)")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE pairs")
    return p.parse_args(argv)


def build_config(args):
    """The config, with a project's keys when it lies under projects/<Name>/."""
    project = project_of(args.config_file)
    if project is None:
        return command_config(args.config_file, args.opts, args.weights)
    from zsi_d2.config import get_zsi_d2_cfg

    if not os.path.isfile(args.config_file):
        raise InputFileNotFoundError(f"--config-file '{args.config_file}' not found")
    cfg = get_zsi_d2_cfg()
    load_project_train_net(project).add_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts) + ["MODEL.WEIGHTS", args.weights])
    cfg.freeze()
    return cfg


def model_input(cfg, d, size):
    """The model's input for dataset dict `d`: the test-time mapper's image, resized to `size`."""
    image = DatasetMapper(cfg, is_train=False)(dict(d))["image"]
    if size is None or tuple(image.shape[-2:]) == tuple(size):
        return image
    array = read_image(d["file_name"], format=cfg.INPUT.FORMAT)
    array = T.ResizeTransform(array.shape[0], array.shape[1], size[0], size[1]).apply_image(array)
    return torch.as_tensor(array.transpose(2, 0, 1).copy())


def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="zsi_d2")
    require_registered(args.dataset, "--dataset")
    cfg = build_config(args)
    model = build_model(cfg)
    ZeroShotCheckpointer.from_config(cfg, model, purpose="eval").load(args.weights)
    model.eval()
    dicts = DatasetCatalog.get(args.dataset)
    example = model_input(cfg, dicts[0], args.size)
    check = model_input(cfg, dicts[1 if len(dicts) > 1 else 0], tuple(example.shape[-2:]))
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with use_class_set(model, args.dataset):
        if args.vocabulary or args.extra_vocabulary:
            names = list(args.vocabulary or model.class_set.names) + list(args.extra_vocabulary)
            set_vocabulary(model, names, cfg, stuff=args.stuff)
        export_model(model, example, args.format, args.output,
                     meta={"dataset": args.dataset, "weights": args.weights, "config": args.config_file,
                           "input_format": cfg.INPUT.FORMAT})
        with torch.no_grad():
            eager = model([{"image": check}])[0]
    exported = load_exported(args.output, threads=torch.get_num_threads())
    result = compare_outputs(exported(check), eager)
    h, w = exported.input_size
    print(f"Wrote {args.output} ({args.format}, {exported.family.name}, input {h}x{w}, "
          f"{len(exported.class_names)} classes); on another image: max |eager - exported| = "
          f"{result['max_abs_diff']:.3g}, discrete outputs {'equal' if result['discrete_equal'] else 'DIFFERENT'}")
    if not result["discrete_equal"]:
        logger.warning("The exported model differs from eager mode: %s", result["first_difference"])
    if args.int8:
        if args.format != "onnx":
            logger.warning("--int8: ONNX only; skipped for %s", args.format)
        else:
            path = os.path.splitext(args.output)[0] + ".int8.onnx"
            quantize_onnx(args.output, path)
            print(f"Wrote {path} (dynamic int8)")
    return result


if __name__ == "__main__":
    with exit_on_input_error():  # a checkpoint that does not fit the config, an unknown dataset: one line
        result = main()
    sys.exit(0 if result["discrete_equal"] else 1)
