#!/usr/bin/env python
"""Prepare the semantic zero-shot benchmarks Pascal VOC 15/5, Pascal-Context 29/4 and ADE20k-Full 572/275 (see
datasets/README.md).

    python datasets/prepare_semantic_zero_shot.py --split voc_15_5 [--root DIR] [--workers N] [--force]
    python datasets/prepare_semantic_zero_shot.py --split pascal_context_29_4 [--root DIR] [--workers N]
    python datasets/prepare_semantic_zero_shot.py --split ade20k_full_572_275 [--root DIR] [--workers N]

Reads the benchmark's folder (default: $DETECTRON2_DATASETS/VOCdevkit/VOC2012, .../VOCdevkit/VOC2010 or
$DETECTRON2_DATASETS/ADE20K_2021_17_01) and writes `<folder>/zero_shot/<split>/`. Safe to run twice:
finished outputs are kept (use --force to rebuild), interrupted runs resume.
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # works from a checkout too
import zsi_d2  # noqa: F401,E402  (compat layer before detectron2; registers the datasets)
from zsi_d2.data.prepare_files import run_preparation  # noqa: E402
from zsi_d2.data.semantic import (  # noqa: E402
    SEMANTIC_BENCHMARKS, benchmark_root, prepare_semantic_split, semantic_dataset_names,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--split", nargs="+", required=True, choices=sorted(SEMANTIC_BENCHMARKS),
                        help="split(s) to prepare")
    parser.add_argument("--root", default=None,
                        help="the benchmark's folder (default: under $DETECTRON2_DATASETS); one split at a time")
    parser.add_argument("--workers", type=int, default=1, help="processes for the label-map passes")
    parser.add_argument("--force", action="store_true", help="rebuild outputs that already exist")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.root and len(args.split) > 1:
        parser.error("--root names one benchmark's folder: prepare one split at a time with it")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    for split in args.split:
        root = os.path.abspath(args.root or benchmark_root(split))
        if root != benchmark_root(split):
            logging.getLogger("prepare_semantic_zero_shot").warning(
                "--root %s is not %s: the registered datasets look under $DETECTRON2_DATASETS, so point it at the "
                "folder holding %s when training.", root, benchmark_root(split), SEMANTIC_BENCHMARKS[split].folder,
            )
        status = run_preparation(lambda: prepare_semantic_split(split, root, force=args.force, workers=args.workers,
                                                                progress=not args.no_progress),
                                 semantic_dataset_names(split))
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
