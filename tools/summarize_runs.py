#!/usr/bin/env python
"""Mean ± sample std over seeds of zero-shot results, as a Markdown table (for the README).

    python tools/summarize_runs.py "baseline=output/runs/baseline_s*" "zsi=output/runs/zsi_s*"

Each glob names run folders holding `zero_shot_results.json` (written by train_net.py) and,
optionally, `metrics.json` (for the wall time). Columns: segm AP50 and Recall@100, seen / unseen /
HM in GZSI mode, unseen in ZSI mode. --confusion adds the share of unseen GT objects whose
highest-scoring overlapping detection (segm IoU >= 0.5) is a seen class, from each run's saved
GZSI detections (zsi_d2/evaluation/label_confusion.py).
"""
import argparse
import glob
import json
import os
import re

import numpy as np

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


def results_by_mode(folder):
    """{"gzsi" | "zsi": (dataset name, its results)} from the run's zero_shot_results.json."""
    with open(os.path.join(folder, "zero_shot_results.json")) as f:
        results = json.load(f)
    return {("zsi" if name.endswith("_zsi") else "gzsi"): (name, res) for name, res in results.items()}


def load_run(folder, task="segm"):
    return {mode: res[task] for mode, (_, res) in results_by_mode(folder).items()}


def train_minutes(folder):
    """Training wall time from detectron2's log line 'Overall training speed: ... in H:MM:SS'."""
    log = os.path.join(folder, "log.txt")
    if not os.path.isfile(log):
        return float("nan")
    m = re.findall(r"Overall training speed: \d+ iterations in (\d+):(\d+):(\d+)", open(log).read())
    if not m:
        return float("nan")
    h, mi, s = map(int, m[-1])
    return (h * 3600 + mi * 60 + s) / 60


def unseen_labelled_seen(folder, task="segm"):
    """% of unseen GT objects of the run's GZSI test set labelled as a seen class."""
    import zsi_d2  # noqa: F401  (registers the datasets)
    from detectron2.data import MetadataCatalog
    from zsi_d2.evaluation import load_coco_gt
    from zsi_d2.evaluation.label_confusion import instance_label_confusion, summarize_label_confusion

    test_sets = results_by_mode(folder)
    if "gzsi" not in test_sets:
        raise SystemExit(f"{folder}: zero_shot_results.json has no GZSI test set")
    name = test_sets["gzsi"][0]
    meta = MetadataCatalog.get(name)
    with open(os.path.join(folder, "inference", name, "coco_instances_results.json")) as f:
        results = json.load(f)
    table = instance_label_confusion(load_coco_gt(meta.json_file), results, task)
    return summarize_label_confusion(table, meta.seen_classes, meta.unseen_classes)["unseen/as_seen"]


def _cell(values):
    values = np.asarray(values, float)
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.nanmean(values):.1f} ± {np.nanstd(values, ddof=1):.1f}"


def summarize(label, folders, task="segm", confusion=False):
    runs = [load_run(f, task) for f in folders]
    cells = []
    for _, mode, key in COLUMNS:
        values = np.array([r[mode][key] if r[mode].get(key) is not None else np.nan for r in runs], float)
        cells.append(_cell(values))
    if confusion:
        cells.append(_cell([unseen_labelled_seen(f, task) for f in folders]))
    minutes = np.array([train_minutes(f) for f in folders])
    return f"| {label} | {len(folders)} | " + " | ".join(cells) + f" | {np.nanmean(minutes):.1f} |"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("groups", nargs="+", help="LABEL=GLOB of run folders")
    p.add_argument("--task", default="segm", choices=("segm", "bbox"))
    p.add_argument("--confusion", action="store_true",
                   help="add the %% of unseen objects labelled as a seen class (reads the saved detections)")
    args = p.parse_args(argv)
    extra = ["unseen labelled seen %"] if args.confusion else []
    header = "| run | seeds | " + " | ".join([c[0] for c in COLUMNS] + extra) + " | train min |"
    print(header)
    print("|" + "---|" * (len(COLUMNS) + len(extra) + 3))
    for group in args.groups:
        label, pattern = group.split("=", 1)
        folders = sorted(f for f in glob.glob(pattern) if os.path.isfile(os.path.join(f, "zero_shot_results.json")))
        if not folders:
            raise SystemExit(f"No finished runs match '{pattern}' (need zero_shot_results.json)")
        print(summarize(label, folders, args.task, args.confusion))


if __name__ == "__main__":
    main()
