#!/usr/bin/env python
"""Train-step time of several models side by side: same data, same batch, interleaved in one process.

    python tools/benchmark_step.py vanilla configs/zsi/zs_shapes/zsi_mask_rcnn.yaml \
        --iters 40 --threads 2 [--opts KEY VALUE ...]

    python tools/benchmark_step.py spnet=configs/semantic/zs_shapes/spnet.yaml \
        cagnet=projects/CaGNet/configs/zs_shapes/cagnet_train.yaml --iters 30 --threads 1

Each entry is a config file (optionally `label=path`) or `vanilla`: detectron2's own Mask R-CNN
(GeneralizedRCNN + StandardROIHeads, one class channel per training class) on the first config's
backbone, data, batch and schedule. A config under projects/<Name>/ is built with that project's keys
and stepped by its Trainer's `build_train_step` (CaGNet's three optimisers), as its train_net.py
would. Every model gets the same pre-drawn batches; each iteration
times one full step (forward, backward, every optimizer's step) of every model, in an order that rotates
every iteration, so machine load and cache effects fall on all of them alike. Reported: median
and inter-quartile range of the step time, and each model's median per-iteration ratio to the
first entry. Absolute times depend on the machine (project machines differ by up to 4x): compare
the ratios, which come from one process.
"""
import argparse
import json
import logging
import statistics
import time

import torch

import zsi_d2  # noqa: F401  (makes detectron2 importable, registers datasets and models)

from detectron2.data import MetadataCatalog, build_detection_train_loader
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.data.mappers import build_dataset_mapper
from zsi_d2.engine import ZeroShotTrainer
from zsi_d2.engine.train_command import load_project_train_net, project_of

logger = logging.getLogger("zsi_d2.benchmark")

VANILLA = "vanilla"


def trainer_for(path):
    """The Trainer class of the config's project (projects/<Name>/train_net.py), else zsi_d2's."""
    project = None if path == VANILLA else project_of(path)
    return load_project_train_net(project) if project else None


def load_cfg(path, opts):
    cfg = get_zsi_d2_cfg()
    project = trainer_for(path)
    if project is not None:
        project.add_config(cfg)
    cfg.merge_from_file(path)
    cfg.merge_from_list(opts)
    return cfg


def vanilla_cfg(base):
    """detectron2's Mask R-CNN on `base`'s backbone, data, batch and schedule."""
    cfg = base.clone()
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    cfg.MODEL.RPN.HEAD_NAME = "StandardRPNHead"
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
    cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK = False
    # One channel per class of the training data's label space, as detectron2 would train on it.
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).thing_classes)
    return cfg


def parse_entries(entries, opts):
    parsed = []
    for entry in entries:
        label, _, path = entry.rpartition("=") if "=" in entry else (entry, "", entry)
        parsed.append((label or path, path))
    configs = [p for _, p in parsed if p != VANILLA]
    if not configs:
        raise SystemExit("benchmark_step: give at least one config file (vanilla borrows its backbone and data)")
    base = load_cfg(configs[0], opts)
    return [(label, vanilla_cfg(base) if path == VANILLA else load_cfg(path, opts), path)
            for label, path in parsed], base


def draw_batches(cfg, count):
    # the first config's mapper (INPUT.DATASET_MAPPER_NAME), as train_net.py builds it: every entry
    # must read the same inputs (R-CNNs with R-CNNs, mask classification with mask classification)
    loader = iter(build_detection_train_loader(cfg, mapper=build_dataset_mapper(cfg, is_train=True)))
    return [next(loader) for _ in range(count)]


def build_trainable(cfg, seed, path=VANILLA):
    """(model, its one-iteration step on a batch), built as the config's trainer would."""
    torch.manual_seed(seed)
    model = build_model(cfg)
    model.train()
    project = trainer_for(path)
    trainer = project.Trainer if project is not None else ZeroShotTrainer
    return model, trainer.build_train_step(cfg, model)


def step(model, train_step, batch):
    start = time.perf_counter()
    with EventStorage():
        train_step(batch)
    return time.perf_counter() - start


def quartiles(values):
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def benchmark(entries, base, iters, warmup, seed=0):
    models = [(label, *build_trainable(cfg, seed, path)) for label, cfg, path in entries]
    batches = draw_batches(base, warmup + iters)
    times = {label: [] for label, _, _ in models}
    for i, batch in enumerate(batches):
        order = models[i % len(models):] + models[:i % len(models)]
        for label, model, train_step in order:
            seconds = step(model, train_step, batch)
            if i >= warmup:
                times[label].append(seconds)
        if i >= warmup and (i - warmup + 1) % 10 == 0:
            logger.info("benchmark: %d/%d timed iterations", i - warmup + 1, iters)
    reference = models[0][0]
    rows = []
    for label, _, _ in models:
        ratios = [t / r for t, r in zip(times[label], times[reference])]
        q1, q3 = quartiles(times[label])
        rows.append({
            "model": label, "median_s": statistics.median(times[label]), "q1_s": q1, "q3_s": q3,
            "ratio_to_first": statistics.median(ratios), "ratio_q1": quartiles(ratios)[0],
            "ratio_q3": quartiles(ratios)[1],
        })
    return rows


def format_rows(rows, threads, iters):
    lines = [f"train step, {iters} interleaved iterations, {threads} thread(s), this machine",
             f"{'model':<40} {'median s':>9} {'IQR s':>15} {'x first (median, IQR)':>24}"]
    for r in rows:
        lines.append(f"{r['model']:<40} {r['median_s']:>9.3f} {r['q1_s']:>7.3f}-{r['q3_s']:<7.3f} "
                     f"{r['ratio_to_first']:>9.3f} ({r['ratio_q1']:.3f}-{r['ratio_q3']:.3f})")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("entries", nargs="+", help="config files, [label=]path, or 'vanilla'")
    parser.add_argument("--iters", type=int, default=40, help="timed iterations per model")
    parser.add_argument("--warmup", type=int, default=5, help="untimed first iterations")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE pairs for every config")
    args = parser.parse_args(argv)
    if args.iters < 2:
        parser.error("--iters must be at least 2 (the spread is an inter-quartile range)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    entries, base = parse_entries(args.entries, args.opts)
    rows = benchmark(entries, base, args.iters, args.warmup)
    print(format_rows(rows, args.threads, args.iters))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "iters": args.iters, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
