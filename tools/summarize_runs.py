#!/usr/bin/env python
"""Mean ± sample std over seeds of zero-shot results, as a Markdown table (for the README).

    python tools/summarize_runs.py "baseline=output/runs/baseline_s*" "zsi=output/runs/zsi_s*"

Each glob names run folders holding `zero_shot_results.json` (written by train_net.py) and,
optionally, detectron2's `log.txt` (the wall time: its "Overall training speed" line). Columns: segm
AP50 and Recall@100, seen / unseen / HM in GZSI mode, unseen in ZSI mode. --confusion adds the share
of unseen GT objects whose highest-scoring overlapping detection (segm IoU >= 0.5) is a seen class,
from each run's saved GZSI detections (zsi_d2/evaluation/label_confusion.py).

A cell that only some runs can fill (a test set, a metric or a timed log they lack) is the mean of
the others followed by "(n=K)"; a cell no run can fill reads "n/a". Each gap is named on stderr.
"""
import argparse
import glob
import logging
import os
import re
import sys

import numpy as np

from zsi_d2.errors import InputValueError

logger = logging.getLogger(__name__)

RESULTS_FILE = "zero_shot_results.json"
COLUMNS = [
    ("GZSI AP50 seen", "gzsi", "AP50/seen"),
    ("unseen", "gzsi", "AP50/unseen"),
    ("HM", "gzsi", "AP50/hm"),
    ("GZSI R@100 seen", "gzsi", "Recall@100/seen"),
    ("unseen", "gzsi", "Recall@100/unseen"),
    ("HM", "gzsi", "Recall@100/hm"),
    ("ZSI AP50 unseen", "zsi", "AP50/unseen"),
    ("ZSI R@100 unseen", "zsi", "Recall@100/unseen"),
]
# detectron2's IterationTimer: "Overall training speed: 998 iterations in 0:41:05 (2.4701 s / it)";
# str(timedelta) writes "1 day, 2:03:04" past 24 hours.
_TRAINING_SPEED = re.compile(r"Overall training speed: \d+ iterations in (?:(\d+) days?, )?(\d+):(\d+):(\d+)")


def _read_json(path, what):
    from zsi_d2.evaluation.files import read_json

    return read_json(path, what)


def _mode_of(dataset_name):
    """The test set's registered zero_shot_mode; by its name when it is not registered here."""
    from detectron2.data import MetadataCatalog

    import zsi_d2  # noqa: F401  (registers the built-in datasets)

    if dataset_name in MetadataCatalog.list():
        mode = MetadataCatalog.get(dataset_name).get("zero_shot_mode", None)
        if mode in ("gzsi", "zsi"):
            return mode
    return "zsi" if dataset_name.endswith(("_zsi", "_zsi_panoptic")) else "gzsi"


def results_by_mode(folder):
    """{"gzsi" | "zsi": (dataset name, its results)} from the run's zero_shot_results.json."""
    path = os.path.join(folder, RESULTS_FILE)
    results = _read_json(path, "run results")
    if not isinstance(results, dict) or not all(isinstance(r, dict) for r in results.values()):
        raise InputValueError(f"{path} is not a train_net.py results file "
                              "({test set: {task: {metric: value}}}): give run folders written by train_net.py")
    by_mode = {}
    for name, res in results.items():
        mode = _mode_of(name)
        if mode in by_mode:
            raise InputValueError(f"{path} holds two {mode.upper()} test sets ({by_mode[mode][0]}, {name}): a row "
                                  "summarizes one of each; evaluate the other one into separate run folders")
        by_mode[mode] = (name, res)
    return by_mode


def load_run(folder, task="segm"):
    """{"gzsi" | "zsi": that test set's `task` metrics}; a test set without `task` is an error."""
    out = {}
    for mode, (name, res) in results_by_mode(folder).items():
        if task not in res:
            raise InputValueError(f"{os.path.join(folder, RESULTS_FILE)}: test set {name} has no '{task}' results "
                                  f"(it has {sorted(res)}): choose them with --task")
        out[mode] = res[task]
    return out


def train_minutes(folder):
    """Training wall time from detectron2's log line 'Overall training speed: ... in H:MM:SS'.

    None when there is no log or no such line (detectron2 does not time runs of a few iterations).
    """
    log = os.path.join(folder, "log.txt")
    if not os.path.isfile(log):
        return None
    with open(log) as f:
        found = _TRAINING_SPEED.findall(f.read())
    if not found:
        return None
    days, h, mi, s = found[-1]
    return int(days or 0) * 24 * 60 + int(h) * 60 + int(mi) + int(s) / 60


def unseen_labelled_seen(folder, task="segm"):
    """% of unseen GT objects of the run's GZSI test set labelled as a seen class (None: no unseen GT)."""
    import zsi_d2  # noqa: F401  (registers the datasets)
    from detectron2.data import MetadataCatalog
    from zsi_d2.evaluation import load_coco_gt
    from zsi_d2.evaluation.label_confusion import instance_label_confusion, summarize_label_confusion

    test_sets = results_by_mode(folder)
    if "gzsi" not in test_sets:
        raise InputValueError(f"{os.path.join(folder, RESULTS_FILE)} has no GZSI test set: --confusion reads its "
                              "detections; leave --confusion out, or evaluate a GZSI test set")
    name = test_sets["gzsi"][0]
    meta = MetadataCatalog.get(name)
    for field in ("json_file", "seen_classes", "unseen_classes"):
        if meta.get(field, None) is None:
            raise InputValueError(f"{folder}: test set '{name}' is not a registered zero-shot dataset here (its "
                                  f"metadata has no {field}); --confusion needs its ground truth: register it, "
                                  "then rerun")
    results = _read_json(os.path.join(folder, "inference", name, "coco_instances_results.json"),
                         f"saved detections of {name} (written by the GZSI evaluation)")
    table = instance_label_confusion(load_coco_gt(meta.json_file), results, task)
    return summarize_label_confusion(table, meta.seen_classes, meta.unseen_classes).get("unseen/as_seen")


def _cell(values):
    """'mean ± sample std' of the values that are not None; '(n=K)' when only K runs gave one."""
    present = np.asarray([v for v in values if v is not None], float)
    present = present[~np.isnan(present)]
    if not present.size:
        return "n/a"
    text = f"{present[0]:.1f}" if present.size == 1 else f"{present.mean():.1f} ± {present.std(ddof=1):.1f}"
    return text if present.size == len(values) else f"{text} (n={present.size})"


def _metric(run, folder, mode, key, task):
    """One run's value, or None (named on stderr) when its test set or the metric is missing."""
    if mode not in run:
        logger.warning(f"{folder}: no {mode.upper()} test set in {RESULTS_FILE}: '{key}' left out")
        return None
    value = run[mode].get(key)
    if value is None:
        logger.warning(f"{folder}: {mode.upper()} {task} '{key}' is missing or null (nothing to score): left out")
    return value


def summarize(label, folders, task="segm", confusion=False):
    runs = [load_run(f, task) for f in folders]
    cells = [_cell([_metric(r, f, mode, key, task) for r, f in zip(runs, folders)]) for _, mode, key in COLUMNS]
    if confusion:
        shares = [unseen_labelled_seen(f, task) for f in folders]
        for f, share in zip(folders, shares):
            if share is None:
                logger.warning(f"{f}: its GZSI test set has no unseen ground-truth object: confusion left out")
        cells.append(_cell(shares))
    minutes = [train_minutes(f) for f in folders]
    for f, m in zip(folders, minutes):
        if m is None:
            logger.warning(f"{f}: no 'Overall training speed' line in log.txt: train minutes left out")
    present = [m for m in minutes if m is not None]
    wall = "n/a" if not present else f"{np.mean(present):.1f}" + ("" if len(present) == len(minutes)
                                                                  else f" (n={len(present)})")
    return f"| {label} | {len(folders)} | " + " | ".join(cells) + f" | {wall} |"


def _groups(specs):
    """[(label, sorted finished run folders)] from LABEL=GLOB arguments."""
    out = []
    for spec in specs:
        label, sep, pattern = spec.partition("=")
        if not sep or not label or not pattern:
            raise InputValueError(f"'{spec}' is not LABEL=GLOB: write e.g. \"zsi=output/runs/zsi_mask_rcnn_s*\"")
        folders = sorted(f for f in glob.glob(pattern) if os.path.isfile(os.path.join(f, RESULTS_FILE)))
        if not folders:
            raise InputValueError(f"No finished runs match '{pattern}' (need {RESULTS_FILE}): check the glob, or "
                                  "finish the runs first")
        out.append((label, folders))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("groups", nargs="+", help="LABEL=GLOB of run folders")
    p.add_argument("--task", default="segm", choices=("segm", "bbox"))
    p.add_argument("--confusion", action="store_true",
                   help="add the %% of unseen objects labelled as a seen class (reads the saved detections)")
    args = p.parse_args(argv)
    try:
        rows = [summarize(label, folders, args.task, args.confusion) for label, folders in _groups(args.groups)]
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"summarize_runs: {e}") from None
    extra = ["unseen labelled seen %"] if args.confusion else []
    print("| run | seeds | " + " | ".join([c[0] for c in COLUMNS] + extra) + " | train min |")
    print("|" + "---|" * (len(COLUMNS) + len(extra) + 3))
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
