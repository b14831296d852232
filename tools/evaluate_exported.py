#!/usr/bin/env python
"""Evaluate an exported zsi_d2 model (ONNX or TorchScript, zsi_d2.export) on a registered dataset.

    python tools/evaluate_exported.py --exported model.onnx --dataset zs_shapes_val_panoptic \
        [--output DIR] [--threads N] [--optimization extended|all|...] [--input-format RGB|BGR] [--limit N] \
        [--eager [--config-file CONFIG --weights MODEL.pth]]

The file runs over the dataset through detectron2's `inference_on_dataset`, scored by the evaluators
zsi_d2's trainer builds for it (`ZeroShotTrainer.build_evaluator` -> build_zero_shot_evaluator: the
tasks the dataset's metadata supports that the file's outputs have: panoptic PQ, instance AP,
semantic mIoU, each as seen / unseen / HM in the dataset's mode). The numbers are comparable with
`train_net.py --eval-only` on the same weights: the exported graph is the eager inference, fixed to
one input size, so the images must already be that size (no test-time resize is applied; zs_shapes
images are 128x128): another size is refused in one line. The file's classes must be the dataset's
(an export traced under that dataset's class set, as tools/export_model.py --dataset does).

--eager also evaluates the eager model the file was exported from (its metadata's config and weights,
as tools/export_model.py records them, or --config-file / --weights) with the same evaluators, through
the trainer's own test loader (ZeroShotTrainer.build_test_loader) under the dataset's class set, and
prints the differences.
"""
import argparse
import json
import logging
import os

import torch

import zsi_d2  # noqa: F401  (first: makes detectron2 importable, registers datasets and models)

from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog, build_detection_test_loader
from detectron2.evaluation import inference_on_dataset
from detectron2.utils.logger import setup_logger

from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.data.catalog import require_registered
from zsi_d2.errors import InputValueError, exit_on_input_error
from zsi_d2.evaluation import build_zero_shot_evaluator, format_zero_shot_table
from zsi_d2.export import load_exported
from zsi_d2.export.exported import DEFAULT_OPTIMIZATION, OPTIMIZATION_LEVELS

logger = logging.getLogger("zsi_d2.evaluate_exported")

# what each family's outputs can be scored on (zsi_d2.data.metadata ZERO_SHOT_TASKS)
FAMILY_TASKS = {"mask_classification": ("panoptic", "instance", "semantic"), "rcnn": ("instance",),
                "semantic": ("semantic",)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--exported", required=True, help="a file written by zsi_d2.export (tools/export_model.py)")
    p.add_argument("--dataset", required=True, help="registered zero-shot dataset, images at the export size")
    p.add_argument("--output", help="folder for the evaluators' files and metrics.json")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op / torch threads")
    p.add_argument("--optimization", default=DEFAULT_OPTIMIZATION, choices=tuple(OPTIMIZATION_LEVELS),
                   help="onnxruntime graph optimisation level")
    p.add_argument("--input-format", help="channel order the file expects (default: its metadata's, else RGB)")
    p.add_argument("--limit", type=int, default=0, help="evaluate the first N images only (0: all)")
    p.add_argument("--eager", action="store_true", help="also evaluate the eager model (config + weights)")
    p.add_argument("--config-file", help="--eager: the config (default: the file's metadata)")
    p.add_argument("--weights", help="--eager: the weights (default: the file's metadata)")
    return p.parse_args(argv)


def evaluation_cfg(family, has_masks, dataset):
    """The two keys build_zero_shot_evaluator reads: the tasks (the dataset's that the outputs have)
    and MODEL.MASK_ON."""
    supported = tuple(MetadataCatalog.get(dataset).get("zero_shot_tasks", ("instance",)))
    tasks = [t for t in FAMILY_TASKS[family] if t in supported]
    if not tasks:
        raise InputValueError(f"{dataset} supports {list(supported)}; a {family} export's outputs score "
                              f"{list(FAMILY_TASKS[family])}: nothing to evaluate")
    cfg = get_zsi_d2_cfg()
    cfg.TEST.ZERO_SHOT_TASKS = tasks
    cfg.MODEL.MASK_ON = has_masks
    cfg.freeze()
    return cfg


# the label space each family scores a dataset in (the models' class_kind, zsi_d2.modeling.class_set)
FAMILY_CLASS_KIND = {"mask_classification": "auto", "rcnn": "thing", "semantic": "auto"}


def check_classes(exported, dataset):
    """The file's classes and label space must be the ones use_class_set gives its family on `dataset`."""
    from zsi_d2.modeling.class_set import dataset_class_set

    expected = dataset_class_set(dataset, FAMILY_CLASS_KIND[exported.family.name])
    if (list(exported.meta["dataset_classes"]) != list(expected.dataset_classes)
            or list(exported.class_names) != list(expected.names)):
        raise InputValueError(f"{exported.meta.get('dataset') or 'the exported file'}'s label space is not "
                              f"{dataset}'s classes: export it under that dataset (tools/export_model.py --dataset "
                              f"{dataset})")


class ExportedAsModel:
    """`model(batched_inputs)` of detectron2 over an exported file: one image at a time, at its size."""

    def __init__(self, exported):
        self.exported = exported

    def __call__(self, batched_inputs):
        outputs = []
        for x in batched_inputs:
            size = tuple(x["image"].shape[-2:])
            original = (x.get("height", size[0]), x.get("width", size[1]))
            if size != self.exported.input_size or original != size:
                h, w = self.exported.input_size
                raise InputValueError(f"{x.get('file_name', 'an image')} is {original[0]}x{original[1]}; the "
                                      f"exported model takes {h}x{w} images only (a fixed-size export): evaluate "
                                      "a dataset of that size, or export at this one")
            outputs.append(self.exported(x["image"]))
        return outputs


def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="zsi_d2")
    require_registered(args.dataset, "--dataset")
    torch.set_num_threads(args.threads)
    exported = load_exported(args.exported, threads=args.threads, optimization=args.optimization)
    check_classes(exported, args.dataset)
    dicts = DatasetCatalog.get(args.dataset)
    if args.limit:
        dicts = dicts[:args.limit]
    h, w = exported.input_size
    other = next((d for d in dicts if (d.get("height", h), d.get("width", w)) != (h, w)), None)
    if other is not None:
        raise InputValueError(f"{args.dataset}: {other.get('file_name')} is {other['height']}x{other['width']}; the "
                              f"exported model takes {h}x{w} images only (a fixed-size export): evaluate a dataset "
                              "of that size, or export at this one")
    has_masks = "pred_masks" in json.dumps(exported.meta["outputs_schema"]) or exported.family.name != "rcnn"
    cfg = evaluation_cfg(exported.family.name, has_masks, args.dataset)
    evaluator = build_zero_shot_evaluator(cfg, args.dataset, args.output)
    fmt = args.input_format or exported.meta.get("input_format", "RGB")
    mapper = DatasetMapper(is_train=False, augmentations=[], image_format=fmt)
    loader = build_detection_test_loader(dicts, mapper=mapper, num_workers=0)
    results = inference_on_dataset(ExportedAsModel(exported), loader, evaluator)
    quantised = f", {exported.meta['quantization']}" if "quantization" in exported.meta else ""
    print(f"{args.exported} ({exported.format}{quantised}) "
          f"on {args.dataset}, {len(dicts)} images:\n{format_zero_shot_table(results)}")
    everything = {args.dataset: results}
    if args.eager:
        eager = evaluate_eager(args, exported, dicts, cfg)
        everything[f"{args.dataset} (eager)"] = eager
        flat, flat_eager = flatten(results), flatten(eager)
        diffs = {k: flat[k] - flat_eager[k] for k in flat if isinstance(flat.get(k), float)
                 and isinstance(flat_eager.get(k), float)}
        worst = max(diffs, key=lambda k: abs(diffs[k]) if diffs[k] == diffs[k] else -1, default=None)
        print(f"eager on the same images:\n{format_zero_shot_table(eager)}\nexported - eager: largest "
              f"|difference| {abs(diffs[worst]) if worst else 0:.4g} ({worst}) over {len(diffs)} metrics")
        results = {"exported": results, "eager": eager, "exported_minus_eager": diffs}
    if args.output:
        os.makedirs(args.output, exist_ok=True)
        from zsi_d2.evaluation.files import write_results_json

        write_results_json(everything, os.path.join(args.output, "metrics.json"))
    return results


def flatten(results, prefix=""):
    out = {}
    for k, v in results.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def evaluate_eager(args, exported, dicts, eval_cfg):
    """The eager model of the file's config and weights, evaluated as train_net's test does."""
    from detectron2.modeling import build_model

    from zsi_d2.config import command_config
    from zsi_d2.engine import ZeroShotCheckpointer, ZeroShotTrainer
    from zsi_d2.modeling import use_class_set

    config = args.config_file or exported.meta.get("config")
    weights = args.weights or exported.meta.get("weights")
    if not config or not weights:
        raise InputValueError("--eager: the file names no config / weights (export it with tools/export_model.py, "
                              "or give --config-file and --weights)")
    cfg = command_config(config, [], weights)
    model = build_model(cfg)
    ZeroShotCheckpointer.from_config(cfg, model, purpose="eval").load(weights)
    model.eval()
    evaluator = build_zero_shot_evaluator(eval_cfg, args.dataset,
                                          os.path.join(args.output, "eager") if args.output else None)
    loader = ZeroShotTrainer.build_test_loader(cfg, args.dataset)
    if args.limit:
        from detectron2.data import DatasetMapper as _Mapper

        loader = build_detection_test_loader(dicts, mapper=_Mapper(cfg, False), num_workers=0)
    with use_class_set(model, args.dataset), torch.no_grad():
        return inference_on_dataset(model, loader, evaluator)


if __name__ == "__main__":
    with exit_on_input_error():
        main()
