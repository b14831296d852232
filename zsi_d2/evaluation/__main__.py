"""Command-line zero-shot evaluation of result files, including other frameworks' outputs.

Why: zero-shot numbers are only comparable when computed by the same code. This CLI applies
zsi_d2's evaluators (same per-class rules, same seen/unseen/HM summarisation) to standard
files, so results exported by any framework can be scored next to zsi_d2's own.

    python -m zsi_d2.evaluation instance --gt instances.json --predictions results.json \\
        --split coco_48_17 [--mode gzsi|zsi] [--json out.json] [--allow-empty]
    python -m zsi_d2.evaluation panoptic --gt panoptic.json --gt-folder panoptic/ \\
        --predictions pred.json [--pred-folder pred/] --unseen "cat,dog"
    python -m zsi_d2.evaluation semantic --gt gt_pngs/ --predictions pred_pngs/ \\
        --categories cats.json --unseen "cat,dog"
    python -m zsi_d2.evaluation semantic --gt datasets/zs_shapes/<preset>/val/sem_seg \\
        --predictions pred_pngs/ --split zs_shapes        # or --dataset zs_shapes_val
    python -m zsi_d2.evaluation confusion --gt instances.json --predictions results.json \\
        --split coco_48_17 [--iou-type segm|bbox] [--png confusion.png] [--json out.json]

`confusion` prints which class each GT object is given (label_confusion.py): how many unseen
objects are found but called a seen class, the usual cause of a low GZSI unseen AP.

Classes: --unseen lists unseen names (every other class of the GT is seen); --split NAME takes
seen and unseen from zsi_d2.data.splits (split classes absent from the GT are skipped).
Semantic label values: --categories FILE, or the `stuff_classes` of a registered dataset
(--dataset NAME, or the registered datasets of --split), as detectron2's label PNGs index them.
No silent numbers: an empty results list is refused (unless --allow-empty), and a seen or
unseen group that cannot be scored (nan) is explained on stderr.
Exit status: 0 on success, 2 on a usage or input error (one line on stderr naming the file or
option).
"""
import argparse
import logging
import os
import sys
from typing import List, Optional, Sequence, Tuple

from ..data.metadata import EVALUATION_MODES
from ..errors import InputError, InputFileNotFoundError, InputValueError
from .files import read_json, write_results_json
from .label_space import resolve_classes, semantic_label_space

logger = logging.getLogger("zsi_d2.evaluation")



class _Parser(argparse.ArgumentParser):
    """argparse's usage errors in one line too (its default prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _require_file(path: str, what: str) -> str:
    if os.path.isdir(path):
        raise InputFileNotFoundError(f"{what} {path} is a folder, not a file")
    if not os.path.isfile(path):
        raise InputFileNotFoundError(f"{what} not found: {path}")
    return path


def _require_dir(path: str, what: str) -> str:
    if os.path.isfile(path):
        raise InputFileNotFoundError(f"{what} {path} is a file, not a folder")
    if not os.path.isdir(path):
        raise InputFileNotFoundError(f"{what} not found: {path}")
    return path


def _load_instance_inputs(args):
    """(COCO GT, results list, GT class names, seen, unseen) of an instance GT + results pair.

    Refuses an empty results list unless --allow-empty: its all-zero table looks like a result.
    """
    from .instance import check_coco_gt, coco_from_dataset

    gt = read_json(args.gt, "GT json (--gt)")
    check_coco_gt(gt, f"GT json (--gt) {args.gt}")
    results = read_json(args.predictions, "Predictions json (--predictions)")
    if isinstance(results, dict) and "annotations" in results:
        results = results["annotations"]
    if not isinstance(results, list):
        raise InputValueError(f"Predictions json (--predictions) {args.predictions} must hold a COCO results list "
                       "[{image_id, category_id, score, bbox/segmentation}, ...]")
    if not results:
        if not args.allow_empty:
            raise InputValueError(f"Predictions json (--predictions) {args.predictions} holds no detection, so every "
                           "number would be 0: check the model's output, or pass --allow-empty to score it anyway")
        logger.warning(f"{args.predictions} holds no detection (--allow-empty): every AP and recall is 0")
    coco_gt = coco_from_dataset(gt)
    names = [c["name"] for c in coco_gt.dataset["categories"]]
    seen, unseen = resolve_classes(names, args.unseen, args.split)
    return coco_gt, results, names, seen, unseen


def _check_results(args, coco_gt, results, iou_type: str) -> None:
    """validate_instance_results, its message prefixed with the predictions file."""
    from .instance import validate_instance_results

    try:
        validate_instance_results(coco_gt, results, iou_type)
    except ValueError as e:
        raise InputValueError(f"Predictions json (--predictions) {args.predictions}: {e}") from None


def _run_instance(args) -> Tuple[dict, Sequence[str], Sequence[str], Sequence[str]]:
    from .instance import evaluate_instance_results

    coco_gt, results, names, seen, unseen = _load_instance_inputs(args)
    _check_results(args, coco_gt, results, "bbox")  # the fields every task needs
    if args.tasks:
        tasks = args.tasks
    else:
        tasks = ["bbox"] if (not results or any("bbox" in r for r in results)) else []
        if any("segmentation" in r for r in results):
            tasks.append("segm")
    out = {}
    for task in tasks:
        _check_results(args, coco_gt, results, task)
        out[task] = evaluate_instance_results(
            coco_gt, results, seen, unseen, args.mode, args.iou_thresholds, args.max_dets, task
        )
    return out, names, seen, unseen


def _run_panoptic(args):
    from .panoptic import check_panoptic_json, evaluate_panoptic

    gt = read_json(args.gt, "GT panoptic json (--gt)")
    check_panoptic_json(gt, f"GT panoptic json (--gt) {args.gt}", "ground truth")
    _require_dir(args.gt_folder, "GT panoptic folder (--gt-folder)")
    _require_file(args.predictions, "Predictions panoptic json (--predictions)")
    pred_folder = args.pred_folder or os.path.splitext(args.predictions)[0]
    _require_dir(pred_folder, "Prediction PNG folder (--pred-folder)")
    names = [c["name"] for c in gt["categories"]]
    seen, unseen = resolve_classes(names, args.unseen, args.split)
    # The predictions go in by path, so that pq_compute's messages name the file.
    res = evaluate_panoptic(gt, args.gt_folder, args.predictions, pred_folder, seen, unseen, args.mode,
                            num_workers=args.workers)
    return {"panoptic_seg": res}, names, seen, unseen


def _run_semantic(args):
    from .metrics import evaluated_groups, mode_from_metadata
    from .semantic import evaluate_semantic_folders

    _require_dir(args.gt, "GT label folder (--gt)")
    _require_dir(args.predictions, "Prediction label folder (--predictions)")
    if args.register:
        from zsi_d2.data import import_register_modules

        try:
            import_register_modules(args.register)
        except (ImportError, FileNotFoundError) as e:
            raise InputValueError(str(e)) from None
    categories, ignore, dataset = semantic_label_space(args.categories, args.dataset, args.split, args.ignore_label)
    names = [c["name"] for c in categories]
    if args.unseen or args.split:
        seen, unseen = resolve_classes(names, args.unseen, args.split)
    elif dataset:
        seen, unseen = evaluated_groups(*dataset, names, "semantic evaluation")
    else:
        raise InputValueError("pass --unseen NAMES or --split NAME (or --dataset NAME) to say which classes are unseen")
    if args.mode is None:  # only with --dataset: its zero_shot_mode, as the evaluators read it
        try:
            args.mode = mode_from_metadata(*dataset, seen_only_as_gzsi=False)
        except ValueError as e:
            raise InputValueError(f"{e}: pass --mode gzsi or --mode zsi") from None
    res = evaluate_semantic_folders(args.gt, args.predictions, categories, seen, unseen, args.mode, ignore)
    return {"sem_seg": res}, names, seen, unseen


def _run_confusion(args) -> int:
    from .label_confusion import (
        format_label_confusion,
        instance_label_confusion,
        plot_label_confusion,
        summarize_label_confusion,
    )

    coco_gt, results, _, seen, unseen = _load_instance_inputs(args)
    _check_results(args, coco_gt, results, args.iou_type)
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
        write_results_json({"summary": summary, "table": table}, args.json)
        print(f"Wrote {args.json}")
    return 0


def _iou_thresholds(text: str) -> List[float]:
    from .instance import check_iou_thresholds

    try:
        return check_iou_thresholds([t for t in text.split(",") if t.strip()])
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None


def _iou(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IoU in (0, 1], e.g. 0.5")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _instance_tasks(text: str) -> List[str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in tasks if t not in ("bbox", "segm")]
    if bad or not tasks:
        raise argparse.ArgumentTypeError(f"{text!r}: give bbox, segm or bbox,segm")
    return list(dict.fromkeys(tasks))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m zsi_d2.evaluation",
        description="Zero-shot (seen / unseen / harmonic mean) evaluation of result files.",
    )
    sub = parser.add_subparsers(dest="task", required=True)

    def class_arguments(p, required=True):
        group = p.add_mutually_exclusive_group(required=required)
        group.add_argument("--unseen", help="comma-separated unseen class names; all other GT classes are seen")
        group.add_argument("--split", help="name of a split registered in zsi_d2.data.splits")

    def common(p, required_classes=True):
        class_arguments(p, required_classes)
        p.add_argument("--mode", choices=EVALUATION_MODES, default=None,
                       help="gzsi (default): all classes, report seen/unseen/HM; zsi: unseen classes only")
        p.add_argument("--json", metavar="FILE", help="also write the numbers to this json file")
        p.add_argument("--per-class", action="store_true", help="also print per-class numbers")
        p.add_argument("--gt", required=True)
        p.add_argument("--predictions", required=True)

    def allow_empty(p):
        p.add_argument("--allow-empty", action="store_true",
                       help="score an empty results list (all zeros) instead of refusing it")

    p = sub.add_parser("instance", help="COCO instances GT json + COCO results json (bbox and/or segm)")
    common(p)
    allow_empty(p)
    p.add_argument("--tasks", type=_instance_tasks,
                   help="comma-separated subset of bbox,segm (default: what the results contain)")
    p.add_argument("--iou-thresholds", type=_iou_thresholds, default="0.4,0.5,0.6",
                   help="comma-separated IoU thresholds in (0, 1], at most two decimals")
    p.add_argument("--max-dets", type=_positive_int, default=100, help="detections per image (and Recall@N)")

    p = sub.add_parser("panoptic", help="COCO panoptic GT json/folder + prediction json/folder")
    common(p)
    p.add_argument("--gt-folder", required=True, help="folder of GT panoptic PNGs")
    p.add_argument("--pred-folder", help="folder of predicted PNGs (default: --predictions without .json)")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="score the images in this many processes (panopticapi's multi-core path)")

    p = sub.add_parser("semantic", help="folders of GT and predicted label PNGs (same file names)")
    common(p, required_classes=False)
    p.add_argument("--categories", help="json list of {\"id\": label value, \"name\": class name}")
    p.add_argument("--dataset", metavar="NAME",
                   help="registered dataset whose stuff_classes the label values index (default with --split: "
                        "the split's registered datasets); also gives seen/unseen and the mode when not passed")
    p.add_argument("--register", metavar="MODULE", action="append", default=[],
                   help="module (dotted name or .py path) that registers --dataset; repeatable")
    p.add_argument("--ignore-label", type=int, default=None,
                   help="label value that is not scored (default: the dataset's ignore_label, else 255)")

    p = sub.add_parser("confusion", help="which class each GT object is given (instance results)")
    class_arguments(p)
    allow_empty(p)
    p.add_argument("--gt", required=True)
    p.add_argument("--predictions", required=True)
    p.add_argument("--iou-type", choices=("segm", "bbox"), default="segm")
    p.add_argument("--iou", type=_iou, default=0.5, help="IoU in (0, 1] a detection needs to label a GT object")
    p.add_argument("--png", metavar="FILE", help="also draw the row-normalised table")
    p.add_argument("--title", help="title of the drawing (default: the predictions path)")
    p.add_argument("--json", metavar="FILE", help="also write the table and summary to this json file")
    return parser


class _Formatter(logging.Formatter):
    """detectron2's log format; warnings say so, as detectron2's own formatter does."""

    def formatMessage(self, record):
        text = super().formatMessage(record)
        return text.replace("]: ", "]: WARNING: ", 1) if record.levelno >= logging.WARNING else text


class _StderrHandler(logging.StreamHandler):
    """Writes to the current sys.stderr, which a caller (or a test) may have replaced since."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def _setup_cli_logging():
    """zsi_d2's log lines go to stderr so that stdout carries only the tables (detectron2's
    setup_logger writes its console lines to stdout, so it is not used here; the format is its)."""
    root = logging.getLogger("zsi_d2")
    if not any(getattr(h, "_zsi_d2_cli", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_Formatter("[%(asctime)s %(name)s]: %(message)s", "%m/%d %H:%M:%S"))
        handler._zsi_d2_cli = True
        root.addHandler(handler)
    root.setLevel(logging.INFO)


_UNSCORABLE = {  # why a per-class number is nan, per task (see metrics.py)
    "bbox": "has ground truth", "segm": "has ground truth",
    "panoptic_seg": "has a GT segment or a prediction", "sem_seg": "has a GT pixel or a prediction",
}


def _explain_nan_groups(results, seen, unseen, gt: str) -> None:
    """Say why a whole group (and so the HM) is nan instead of printing nan without a word."""
    from .metrics import nan_groups

    hints = {"seen": "a ZSI test set holds unseen classes only: score it with --mode zsi",
             "unseen": "the ground truth holds no unseen class (a training set?): check --unseen / --split"}
    for task, res in results.items():
        for group in nan_groups(res):
            members = seen if group == "seen" else unseen
            what = f"{group} and HM are" if any(k.endswith("/hm") for k in res) else f"{group} is"
            why = (f"none of the {len(members)} {group} class(es) {_UNSCORABLE[task]} in {gt}" if members
                   else f"no {group} class is a class of {gt}")
            logger.warning(f"{task}: {what} nan: {why} ({hints[group]})")


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "mode", "") is None and not getattr(args, "dataset", None):
        args.mode = "gzsi"  # --dataset gives its own mode (semantic)
    _setup_cli_logging()
    try:
        if args.task == "confusion":  # prints its own report
            return _run_confusion(args)
        runner = {"instance": _run_instance, "panoptic": _run_panoptic, "semantic": _run_semantic}[args.task]
        results, names, seen, unseen = runner(args)
    except (InputError, FileNotFoundError, ValueError) as e:
        print(f"{parser.prog} {args.task}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyError as e:
        print(f"{parser.prog} {args.task}: error: malformed input, missing field {e}", file=sys.stderr)
        return 2

    from .metrics import format_per_class_table, format_zero_shot_table

    print(f"Zero-shot {args.task} evaluation ({args.mode}): {len(seen)} seen, {len(unseen)} unseen classes")
    print(format_zero_shot_table(results))
    _explain_nan_groups(results, seen, unseen, args.gt)
    if args.per_class:
        for task, res in results.items():
            print(f"\n{task} per class:\n" + format_per_class_table(res, names, seen, unseen))
    if args.json:
        write_results_json(results, args.json)
        print(f"Wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
