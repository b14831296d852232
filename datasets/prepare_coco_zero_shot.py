#!/usr/bin/env python
"""Prepare COCO zero-shot splits from the standard COCO files (see datasets/README.md).

    python datasets/prepare_coco_zero_shot.py --split coco_48_17 [--coco-root DIR] [--workers N] [--force]

Reads `<coco-root>` (default: $DETECTRON2_DATASETS/coco) and writes `<coco-root>/zero_shot/<split>/`.
Safe to run twice: finished outputs are kept (use --force to rebuild), interrupted runs resume.
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # works from a checkout too
import zsi_d2  # noqa: F401  (compat layer before detectron2; registers the datasets)
from zsi_d2.data.coco import COCO_SPLIT_LAYOUTS, coco_root, dataset_names, prepare_coco_split
from zsi_d2.data.prepare_files import run_preparation


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--split", nargs="+", required=True, choices=sorted(COCO_SPLIT_LAYOUTS),
                        help="split(s) to prepare")
    parser.add_argument("--coco-root", default=None,
                        help="folder holding the standard COCO files (default: $DETECTRON2_DATASETS/coco)")
    parser.add_argument("--workers", type=int, default=1, help="processes for the label-map passes")
    parser.add_argument("--force", action="store_true", help="rebuild outputs that already exist")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    coco_dir = os.path.abspath(args.coco_root or coco_root())
    if coco_dir != coco_root():
        logging.getLogger("prepare_coco_zero_shot").warning(
            "--coco-root %s is not $DETECTRON2_DATASETS/coco (%s): set DETECTRON2_DATASETS=%s when "
            "training, or the registered datasets will not find these files.",
            coco_dir, coco_root(), os.path.dirname(coco_dir),
        )
    for split in args.split:
        status = run_preparation(lambda: prepare_coco_split(split, coco_dir, force=args.force, workers=args.workers,
                                                            progress=not args.no_progress), dataset_names(split))
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
