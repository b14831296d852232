#!/usr/bin/env python
"""zsi_d2's PQ beside panopticapi's, in one process: the same numbers, and the time ratio.

    python tools/benchmark_pq.py --panopticapi PATH \
        --gt datasets/zs_shapes/default_<hash>/annotations/panoptic_val.json \
        --gt-folder datasets/zs_shapes/default_<hash>/val/panoptic \
        --predictions output/.../inference/zs_shapes_val_panoptic/predictions.json [--repeats 9] [--workers 2]

PATH is a checkout of cocodataset/panopticapi (the folder holding `panopticapi/`; it is not on the
package registry). First every category's TP / FP / FN and IoU sum are compared (any difference
is an error), then panopticapi's `pq_compute_single_core` and zsi_d2's `pq_compute` are timed
alternately on the same files; the ratio is the median of per-pair ratios (zsi_d2 / panopticapi),
so a load change on the machine hits both sides of a pair alike. `--workers N` also times zsi_d2's
multi-process path.
"""
import argparse
import contextlib
import io
import json
import logging
import os
import sys
import time

import numpy as np

import zsi_d2  # noqa: F401  (makes detectron2 importable)

from zsi_d2.errors import InputError
from zsi_d2.evaluation.panoptic import pq_compute

logger = logging.getLogger("zsi_d2.benchmark_pq")


def _panopticapi(path):
    if not os.path.isfile(os.path.join(path, "panopticapi", "evaluation.py")):
        raise InputError(f"--panopticapi {path} holds no panopticapi/evaluation.py: give a checkout of "
                         "github.com/cocodataset/panopticapi")
    sys.path.insert(0, os.path.abspath(path))
    from panopticapi.evaluation import pq_compute_single_core

    return pq_compute_single_core


def compare(reference, ours, categories):
    """Category ids whose TP / FP / FN or IoU sum differ between the two PQ accumulators."""
    bad = []
    for cid in categories:
        a, b = reference.pq_per_cat[cid], ours[cid]
        if (a.tp, a.fp, a.fn) != (b.tp, b.fp, b.fn) or abs(a.iou - b.iou) > 1e-9:
            bad.append(cid)
    return bad


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--panopticapi", required=True, help="checkout of cocodataset/panopticapi")
    p.add_argument("--gt", required=True, help="COCO panoptic GT json")
    p.add_argument("--gt-folder", required=True, help="folder of the GT PNGs")
    p.add_argument("--predictions", required=True, help="COCO panoptic predictions json")
    p.add_argument("--pred-folder", default=None, help="default: the predictions json without .json")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        single_core = _panopticapi(args.panopticapi)
        pred_folder = args.pred_folder or os.path.splitext(args.predictions)[0]
        with open(args.gt) as f:
            gt = json.load(f)
        with open(args.predictions) as f:
            pred = json.load(f)
    except (InputError, OSError, ValueError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    categories = {c["id"]: c for c in gt["categories"]}
    pred_by_image = {a["image_id"]: a for a in pred["annotations"]}
    pairs = [(a, pred_by_image[a["image_id"]]) for a in gt["annotations"]]

    def reference():
        with contextlib.redirect_stdout(io.StringIO()):  # it prints progress per image
            return single_core(0, pairs, args.gt_folder, pred_folder, categories)

    def ours(workers=1):
        return pq_compute(gt, args.gt_folder, args.predictions, pred_folder, num_workers=workers)

    bad = compare(reference(), ours(), categories)
    if bad:
        print(f"ERROR: zsi_d2's PQ sums differ from panopticapi's for category ids {bad}", file=sys.stderr)
        return 1
    logger.info("Same TP / FP / FN and IoU sums for all %d categories over %d images", len(categories), len(pairs))
    times = {"panopticapi": [], "zsi_d2": []}
    for _ in range(args.repeats):
        for name, run in (("panopticapi", reference), ("zsi_d2", ours)):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    ratios = np.array(times["zsi_d2"]) / np.array(times["panopticapi"])
    q1, q3 = np.percentile(ratios, [25, 75])
    logger.info("panopticapi single core %.3f s, zsi_d2 %.3f s (medians of %d); zsi_d2 / panopticapi per pair: "
                "median %.3f (IQR %.3f-%.3f)", np.median(times["panopticapi"]), np.median(times["zsi_d2"]),
                args.repeats, np.median(ratios), q1, q3)
    if args.workers > 1:
        start = time.perf_counter()
        ours(args.workers)
        logger.info("zsi_d2 with %d worker processes: %.3f s", args.workers, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
