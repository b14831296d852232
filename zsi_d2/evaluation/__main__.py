"""Command-line zero-shot evaluation of result files, including other frameworks' outputs.

Why: zero-shot numbers are only comparable when computed by the same code. This CLI applies
zsi_d2's evaluators (same per-class rules, same seen/unseen/HM summarisation) to standard
files, so results exported by any framework can be scored next to zsi_d2's own.

    python -m zsi_d2.evaluation instance --gt instances.json --predictions results.json \\
        --split coco_48_17 [--mode gzsi|zsi] [--json out.json]
    python -m zsi_d2.evaluation panoptic --gt panoptic.json --gt-folder panoptic/ \\
        --predictions pred.json [--pred-folder pred/] --unseen "cat,dog"
    python -m zsi_d2.evaluation semantic --gt gt_pngs/ --predictions pred_pngs/ \\
        --categories cats.json --unseen "cat,dog"
    python -m zsi_d2.evaluation confusion --gt instances.json --predictions results.json \
        --split coco_48_17 [--iou-type segm|bbox] [--png confusion.png] [--json out.json]

`confusion` prints which class each GT object is given (label_confusion.py): how many unseen
objects are found but called a seen class, the usual cause of a low GZSI unseen AP.

Classes: --unseen lists unseen names (every other class of the GT is seen); --split NAME takes
seen and unseen from zsi_d2.data.splits (split classes absent from the GT are skipped).
Exit status: 0 on success, 2 on a usage or input error (message on stderr).
"""
import argparse
import json
import logging
import os
import sys
from typing import List, Optional, Sequence, Tuple

logger = logging.getLogger("zsi_d2.evaluation")

_TASKS = ("instance", "panoptic", "semantic")


class CLIError(Exception):
    """An input problem to report in one line, without a traceback."""


def _require_file(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise CLIError(f"{what} not found: {path}")
    return path


def _require_dir(path: str, what: str) -> str:
    if not os.path.isdir(path):
        raise CLIError(f"{what} not found: {path}")
    return path


def _load_json(path: str, what: str):
    _require_file(path, what)
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CLIError(f"{what} {path} is not valid json: {e}") from None


def resolve_classes(
    valid_names: Sequence[str], unseen: Optional[str], split: Optional[str]
) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(seen, unseen) names among `valid_names` (the GT's classes, in GT order).

    --unseen: comma-separated names, each must be a GT class; all other GT classes are seen.
    --split: the registered split's seen/unseen, keeping only names that are GT classes (a
    split may cover stuff classes an instance GT does not have), which must leave some class.
    """
    valid = list(valid_names)
    if unseen is not None:
        names = [n.strip() for n in unseen.split(",") if n.strip()]
        if not names:
            raise CLIError("--unseen is empty")
        unknown = [n for n in names if n not in valid]
        if unknown:
            raise CLIError(f"Unknown class name(s) in --unseen: {unknown}. Valid names: {valid}")
        unseen_set = set(names)
        return tuple(n for n in valid if n not in unseen_set), tuple(names)
    from zsi_d2.data.splits import get_split

    try:
        sp = get_split(split)
    except KeyError as e:
        raise CLIError(e.args[0]) from None
    valid_set = set(valid)
    seen_names = tuple(n for n in sp.seen if n in valid_set)
    unseen_names = tuple(n for n in sp.unseen if n in valid_set)
    skipped = [n for n in sp.classes if n not in valid_set]
    if not seen_names and not unseen_names:
        raise CLIError(f"Split '{split}' shares no class with the ground truth. GT classes: {valid}")
    if skipped:
        logger.info(f"{len(skipped)} class(es) of split '{split}' are not in the GT and are skipped: {skipped}")
    return seen_names, unseen_names


def _load_instance_inputs(args):
    """(COCO GT, results list, GT class names, seen, unseen) of an instance GT + results pair."""
    from .instance import load_coco_gt

    _require_file(args.gt, "GT json (--gt)")
    results = _load_json(args.predictions, "Predictions json (--predictions)")
    if isinstance(results, dict) and "annotations" in results:
        results = results["annotations"]
    if not isinstance(results, list):
        raise CLIError(f"{args.predictions} must hold a COCO results list")
    coco_gt = load_coco_gt(args.gt)
    names = [c["name"] for c in coco_gt.dataset["categories"]]
    seen, unseen = resolve_classes(names, args.unseen, args.split)
    return coco_gt, results, names, seen, unseen


def _run_instance(args) -> Tuple[dict, Sequence[str], Sequence[str], Sequence[str]]:
    from .instance import evaluate_instance_results

    coco_gt, results, names, seen, unseen = _load_instance_inputs(args)
    if args.tasks:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    else:
        tasks = ["bbox"] if (not results or any("bbox" in r for r in results)) else []
        if any("segmentation" in r for r in results):
            tasks.append("segm")
        if not tasks:
            raise CLIError(f"{args.predictions}: results have neither 'bbox' nor 'segmentation'")
    thresholds = [float(t) for t in args.iou_thresholds.split(",")]
    out = {}
    for task in tasks:
        out[task] = evaluate_instance_results(
            coco_gt, results, seen, unseen, args.mode, thresholds, args.max_dets, task
        )
    return out, names, seen, unseen


def _run_panoptic(args):
    from .panoptic import evaluate_panoptic

    gt = _load_json(args.gt, "GT panoptic json (--gt)")
    _require_dir(args.gt_folder, "GT panoptic folder (--gt-folder)")
    pred = _load_json(args.predictions, "Predictions panoptic json (--predictions)")
    pred_folder = args.pred_folder or os.path.splitext(args.predictions)[0]
    _require_dir(pred_folder, "Prediction PNG folder (--pred-folder)")
    names = [c["name"] for c in gt["categories"]]
    seen, unseen = resolve_classes(names, args.unseen, args.split)
    res = evaluate_panoptic(gt, args.gt_folder, pred, pred_folder, seen, unseen, args.mode)
    return {"panoptic_seg": res}, names, seen, unseen


def _run_semantic(args):
    from .semantic import evaluate_semantic_folders

    _require_dir(args.gt, "GT label folder (--gt)")
    _require_dir(args.predictions, "Prediction label folder (--predictions)")
    if not args.categories:
        raise CLIError("semantic evaluation needs --categories (a json list of {\"id\", \"name\"})")
    categories = _load_json(args.categories, "Categories json (--categories)")
    if not isinstance(categories, list) or not all(
        isinstance(c, dict) and {"id", "name"} <= set(c) for c in categories
    ):
        raise CLIError(f"{args.categories} must be a json list of {{\"id\", \"name\"}} objects")
    names = [c["name"] for c in categories]
    seen, unseen = resolve_classes(names, args.unseen, args.split)
    res = evaluate_semantic_folders(
        args.gt, args.predictions, categories, seen, unseen, args.mode, args.ignore_label
    )
    return {"sem_seg": res}, names, seen, unseen


def _run_confusion(args) -> int:
    from .label_confusion import (
        format_label_confusion,
        instance_label_confusion,
        plot_label_confusion,
        summarize_label_confusion,
    )

    coco_gt, results, _, seen, unseen = _load_instance_inputs(args)
    table = instance_label_confusion(coco_gt, results, args.iou_type, args.iou)
    summary = summarize_label_confusion(table, seen, unseen)
    print(f"Labels given to GT objects ({args.iou_type} IoU >= {args.iou}; highest-scoring overlapping detection)")
    for key, value in summary.items():
        print(f"  {key:18s} {value:5.1f} %")
    print("\nunseen classes:\n" + format_label_confusion(table, unseen))
    print("\nseen classes:\n" + format_label_confusion(table, seen))
    if args.png:
        rows = [*unseen, *seen]
        plot_label_confusion(table, rows, rows, args.png, title=args.title or args.predictions)
        print(f"Wrote {args.png}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "table": table}, f, indent=2)
        print(f"Wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zsi_d2.evaluation",
        description="Zero-shot (seen / unseen / harmonic mean) evaluation of result files.",
    )
    sub = parser.add_subparsers(dest="task", required=True)

    def class_arguments(p):
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--unseen", help="comma-separated unseen class names; all other GT classes are seen")
        group.add_argument("--split", help="name of a split registered in zsi_d2.data.splits")

    def common(p):
        class_arguments(p)
        p.add_argument("--mode", choices=("gzsi", "zsi"), default="gzsi",
                       help="gzsi: all classes, report seen/unseen/HM; zsi: unseen classes only")
        p.add_argument("--json", metavar="FILE", help="also write the numbers to this json file")
        p.add_argument("--per-class", action="store_true", help="also print per-class numbers")
        p.add_argument("--gt", required=True)
        p.add_argument("--predictions", required=True)

    p = sub.add_parser("instance", help="COCO instances GT json + COCO results json (bbox and/or segm)")
    common(p)
    p.add_argument("--tasks", help="comma-separated subset of bbox,segm (default: what the results contain)")
    p.add_argument("--iou-thresholds", default="0.4,0.5,0.6", help="comma-separated IoU thresholds")
    p.add_argument("--max-dets", type=int, default=100, help="detections per image (and Recall@N)")

    p = sub.add_parser("panoptic", help="COCO panoptic GT json/folder + prediction json/folder")
    common(p)
    p.add_argument("--gt-folder", required=True, help="folder of GT panoptic PNGs")
    p.add_argument("--pred-folder", help="folder of predicted PNGs (default: --predictions without .json)")

    p = sub.add_parser("semantic", help="folders of GT and predicted label PNGs (same file names)")
    common(p)
    p.add_argument("--categories", help="json list of {\"id\": label value, \"name\": class name}")
    p.add_argument("--ignore-label", type=int, default=255)

    p = sub.add_parser("confusion", help="which class each GT object is given (instance results)")
    class_arguments(p)
    p.add_argument("--gt", required=True)
    p.add_argument("--predictions", required=True)
    p.add_argument("--iou-type", choices=("segm", "bbox"), default="segm")
    p.add_argument("--iou", type=float, default=0.5, help="IoU a detection needs to label a GT object")
    p.add_argument("--png", metavar="FILE", help="also draw the row-normalised table")
    p.add_argument("--title", help="title of the drawing (default: the predictions path)")
    p.add_argument("--json", metavar="FILE", help="also write the table and summary to this json file")
    return parser


def _setup_cli_logging():
    """zsi_d2's log lines go to stderr so that stdout carries only the tables."""
    root = logging.getLogger("zsi_d2")
    if not any(getattr(h, "_zsi_d2_cli", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s]: %(message)s", "%m/%d %H:%M:%S"))
        handler._zsi_d2_cli = True
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_cli_logging()
    try:
        if args.task == "confusion":  # prints its own report
            return _run_confusion(args)
        runner = {"instance": _run_instance, "panoptic": _run_panoptic, "semantic": _run_semantic}[args.task]
        results, names, seen, unseen = runner(args)
    except (CLIError, FileNotFoundError, ValueError) as e:
        print(f"{parser.prog} {args.task}: error: {e}", file=sys.stderr)
        return 2
    except KeyError as e:
        print(f"{parser.prog} {args.task}: error: malformed input, missing field {e}", file=sys.stderr)
        return 2

    from .metrics import format_per_class_table, format_zero_shot_table, nan_to_none

    print(f"Zero-shot {args.task} evaluation ({args.mode}): {len(seen)} seen, {len(unseen)} unseen classes")
    print(format_zero_shot_table(results))
    if args.per_class:
        for task, res in results.items():
            print(f"\n{task} per class:\n" + format_per_class_table(res, names, seen, unseen))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(nan_to_none(results), f, indent=2)
        print(f"Wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
