#!/usr/bin/env python
"""Mean ± sample std over seeds of zero-shot results, as a Markdown table (for the README).

    python tools/summarize_runs.py "baseline=output/runs/baseline_s*" "zsi=output/runs/zsi_s*"

Each glob names run folders holding `zero_shot_results.json` (written by train_net.py) and,
optionally, `metrics.json` (for the wall time). Columns: segm AP50 and Recall@100, seen / unseen /
HM in GZSI mode, unseen in ZSI mode.
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


def load_run(folder, task="segm"):
    with open(os.path.join(folder, "zero_shot_results.json")) as f:
        results = json.load(f)
    by_mode = {}
    for name, res in results.items():
        by_mode["zsi" if name.endswith("_zsi") else "gzsi"] = res[task]
    return by_mode


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


def summarize(label, folders, task="segm"):
    runs = [load_run(f, task) for f in folders]
    cells = []
    for _, mode, key in COLUMNS:
        values = np.array([r[mode][key] if r[mode].get(key) is not None else np.nan for r in runs], float)
        cells.append(f"{np.nanmean(values):.1f} ± {np.nanstd(values, ddof=1):.1f}" if len(values) > 1 else f"{values[0]:.1f}")
    minutes = np.array([train_minutes(f) for f in folders])
    return f"| {label} | {len(folders)} | " + " | ".join(cells) + f" | {np.nanmean(minutes):.1f} |"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("groups", nargs="+", help="LABEL=GLOB of run folders")
    p.add_argument("--task", default="segm", choices=("segm", "bbox"))
    args = p.parse_args(argv)
    header = "| run | seeds | " + " | ".join(c[0] for c in COLUMNS) + " | train min |"
    print(header)
    print("|" + "---|" * (len(COLUMNS) + 3))
    for group in args.groups:
        label, pattern = group.split("=", 1)
        folders = sorted(f for f in glob.glob(pattern) if os.path.isfile(os.path.join(f, "zero_shot_results.json")))
        if not folders:
            raise SystemExit(f"No finished runs match '{pattern}' (need zero_shot_results.json)")
        print(summarize(label, folders, args.task))


if __name__ == "__main__":
    main()
