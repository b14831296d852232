"""Zero-shot instance evaluation (boxes and masks): per-class COCO AP, seen / unseen / HM.

Why not detectron2's COCOEvaluator: it reports averages over *all* classes (so unseen classes
drown among seen ones), evaluates at IoU 0.5:0.95 while the zero-shot instance literature
(ZSI, Zheng et al. 2021; PADing) reports AP and Recall@100 at IoU 0.4/0.5/0.6, and its fast
COCOeval needs detectron2's compiled `_C`, which zsi_d2's detectron2 build lacks. Here the
matching and the 101-point interpolated precision are pycocotools' own COCOeval, so per-class
numbers are identical to the official tool; only the summarisation differs.
"""
import contextlib
import copy
import io
import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detectron2.data import MetadataCatalog
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.evaluation.evaluator import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from ..errors import InputValueError
from .files import read_json
from .metrics import check_mode, evaluated_groups, format_zero_shot_table, mode_from_metadata, summarize_zero_shot

__all__ = [
    "ZeroShotInstanceEvaluator",
    "check_coco_gt",
    "check_iou_thresholds",
    "coco_from_dataset",
    "evaluate_instance_results",
    "load_coco_gt",
    "validate_instance_results",
]

logger = logging.getLogger(__name__)

# The only area range evaluated: zero-shot papers report "all" only, and dropping the
# small/medium/large ranges makes COCOeval ~4x cheaper.
_AREA_ALL = [0.0, 1e5 ** 2]


def coco_from_dataset(dataset: Mapping) -> COCO:
    """A pycocotools COCO built quietly from an already loaded (and checked) json dict."""
    coco = COCO()
    coco.dataset = dict(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def check_coco_gt(dataset, source: str) -> None:
    """Refuse what is not a COCO instances ground truth, naming `source` (a path) and the fix.

    pycocotools fails on these with a bare AssertionError or KeyError: a results list (ground
    truth and predictions swapped), a panoptic json, or a json without images or annotations.
    """
    if isinstance(dataset, list):
        raise InputValueError(
            f"{source} holds a list (a COCO results file?), not a COCO instances ground truth with "
            "'images', 'annotations' and 'categories': were the ground truth and the predictions swapped?"
        )
    if not isinstance(dataset, Mapping):
        raise InputValueError(f"{source} is not a COCO instances ground truth: give a json object with 'images', "
                              "'annotations' and 'categories'")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(dataset.get(k), list)]
    if missing:
        raise InputValueError(f"{source} is not a COCO instances ground truth: it has no {missing} list(s); "
                              "give a COCO instances json (e.g. instances_val.json)")
    anns = dataset["annotations"]
    if anns and isinstance(anns[0], Mapping) and "segments_info" in anns[0]:
        raise InputValueError(f"{source} is a COCO panoptic json, not an instances one: "
                              "score it with the panoptic task")
    if not anns:
        raise InputValueError(f"{source} has no annotations, so there is nothing to score against: "
                              "give the ground truth with its annotations")
    fields = {"id", "image_id", "category_id"}
    bad = [i for i, a in enumerate(anns)
           if not isinstance(a, Mapping) or not fields <= set(a) or not ("bbox" in a or "segmentation" in a)]
    if bad:
        raise InputValueError(f"{source}: {len(bad)} annotation(s) lack 'id', 'image_id', 'category_id' or a 'bbox'/"
                              f"'segmentation' (e.g. annotation #{bad[0]}); is it a COCO instances ground truth?")
    for key, fields in (("images", {"id"}), ("categories", {"id", "name"})):
        bad = [i for i, x in enumerate(dataset[key]) if not isinstance(x, Mapping) or not fields <= set(x)]
        if bad:
            raise InputValueError(f"{source}: every entry of '{key}' needs {sorted(fields)} (entry #{bad[0]} has not): "
                                  "add them, or give a COCO instances ground truth")


def load_coco_gt(json_file: str) -> COCO:
    """Load and check a COCO instances json quietly; every failure names the path."""
    dataset = read_json(json_file, "COCO ground-truth json")
    check_coco_gt(dataset, json_file)
    return coco_from_dataset(dataset)


def check_iou_thresholds(thresholds: Sequence[float]) -> List[float]:
    """IoU thresholds as floats in (0, 1], each named exactly by its "AP<100·t>" key.

    Why: 50 instead of 0.5 would be scored at an IoU nobody reaches and printed as "AP5000", and
    0.555 would be printed as "AP56": both are numbers that do not mean what they say.
    """
    out = [float(t) for t in thresholds]
    if not out:
        raise InputValueError("IoU thresholds (iou_thresholds, --iou-thresholds) are empty: "
                              "give at least one, e.g. 0.5")
    for t in out:
        if not 0 < t <= 1:
            raise InputValueError(f"IoU threshold {t:g} is outside (0, 1]: thresholds are fractions, e.g. 0.5")
        if abs(t * 100 - round(t * 100)) > 1e-6:
            raise InputValueError(f"IoU threshold {t:g} has more than two decimals, so its key "
                                  f"{_ap_key(t)} would misname it: use multiples of 0.01")
    if len({_ap_key(t) for t in out}) != len(out):
        raise InputValueError(f"IoU thresholds {[f'{t:g}' for t in out]} repeat a value")
    return out


def _ap_key(threshold: float) -> str:
    return f"AP{int(round(threshold * 100))}"


def _fill_gt_defaults(coco_gt: COCO) -> None:
    """COCOeval reads `iscrowd` and `area` of every GT annotation; many third-party jsons omit
    them. Fill the COCO defaults (not crowd; area of the box) in place so evaluation works."""
    for ann in coco_gt.dataset.get("annotations", []):
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            if "bbox" in ann:
                ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
            else:
                ann["area"] = 0.0


def _category_names(coco_gt: COCO) -> Dict[str, int]:
    name_to_id = {}
    for cat in coco_gt.dataset.get("categories", []):
        if cat["name"] in name_to_id:
            raise InputValueError(f"The ground truth has two categories named {cat['name']!r}: "
                                  "rename one of them in its json")
        name_to_id[cat["name"]] = cat["id"]
    return name_to_id


def validate_instance_results(coco_gt: COCO, results: Sequence[Mapping], iou_type: str = "bbox") -> None:
    """Check a COCO results list against the GT before pycocotools sees it.

    pycocotools fails on bad results with a bare assertion or KeyError deep inside; these checks
    turn the common mistakes (a ground truth given as results, contiguous instead of dataset
    category ids, wrong image ids, no masks for segm) into errors that say what is wrong and what
    is valid.
    """
    if not isinstance(results, (list, tuple)):
        raise InputValueError("Results must be a COCO results list: give a list of "
                              "{image_id, category_id, score, bbox/segmentation}")
    fields = ("image_id", "category_id", "score")
    bad = [i for i, r in enumerate(results) if not isinstance(r, Mapping) or not set(fields) <= set(r)]
    if bad:
        raise InputValueError(
            f"{len(bad)} of {len(results)} result(s) lack one of {list(fields)} (e.g. result #{bad[0]}): a COCO "
            "results list has a score per detection (is it a ground-truth file? were the files swapped?)"
        )
    valid_cats = set(coco_gt.getCatIds())
    bad_cats = sorted({r["category_id"] for r in results} - valid_cats, key=str)
    if bad_cats:
        raise InputValueError(
            f"Results contain unknown category id(s) {bad_cats}; valid category ids of the "
            f"ground truth are {sorted(valid_cats)}. (Results must use the dataset's category "
            "ids, not contiguous model class indices.)"
        )
    valid_imgs = set(coco_gt.getImgIds())
    bad_imgs = sorted({r["image_id"] for r in results} - valid_imgs, key=str)
    if bad_imgs:
        shown = bad_imgs[:20]
        raise InputValueError(
            f"Results contain {len(bad_imgs)} image id(s) that are not in the ground truth, "
            f"e.g. {shown}: score them against the ground truth the predictions were made for"
        )
    key = "segmentation" if iou_type == "segm" else "bbox"
    missing = sum(1 for r in results if key not in r and not (iou_type == "bbox" and "segmentation" in r))
    if missing:
        also = " (nor 'segmentation')" if iou_type == "bbox" else ""
        raise InputValueError(f"{missing} of {len(results)} result(s) have no '{key}' field{also}, which "
                              f"{iou_type!r} evaluation needs: score the task the results have "
                              "(--tasks, iou_type)")


def _empty_results(coco_gt: COCO) -> COCO:
    """A results COCO with no detections (loadRes cannot take an empty list)."""
    return coco_from_dataset({
        "images": list(coco_gt.dataset["images"]),
        "categories": copy.deepcopy(coco_gt.dataset["categories"]),
        "annotations": [],
    })


def evaluate_instance_results(
    coco_gt: COCO,
    results: List[Mapping],
    seen_names: Sequence[str],
    unseen_names: Sequence[str],
    mode: str = "gzsi",
    iou_thresholds: Sequence[float] = (0.4, 0.5, 0.6),
    max_dets: int = 100,
    iou_type: str = "bbox",
) -> "OrderedDict[str, float]":
    """Per-class AP / Recall of COCO-format `results` against `coco_gt`, summarised zero-shot.

    Args:
        coco_gt: ground truth (category ids are the dataset's ids).
        results: COCO results list of {"image_id", "category_id", "score", "bbox" and/or
            "segmentation" (RLE)}; category ids are dataset ids. Not modified.
        seen_names, unseen_names: class names of the split; each must be a GT category name.
        mode: "gzsi" evaluates seen + unseen classes and reports seen/unseen/hm; "zsi"
            restricts GT and results to unseen categories and reports unseen only.
        iou_thresholds: one "AP<100·t>" metric per threshold.
        max_dets: detections kept per image and class (by score; pycocotools' maxDets), also
            the "Recall@<max_dets>" metric.
        iou_type: "bbox" or "segm".

    Returns:
        {"AP50/seen", "AP50/unseen", "AP50/hm", ..., "Recall@100/seen", ..., "AP50/<class>", ...}
        in percent. Per class: AP at IoU t is the mean over COCO's 101 recall points of the
        interpolated precision (exactly pycocotools' value); Recall@N is measured at IoU 0.5.
        Classes without (non-crowd) GT are nan and excluded from the means.
    """
    check_mode(mode)
    if iou_type not in ("bbox", "segm"):
        raise InputValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}: pass one of them")
    if int(max_dets) < 1:
        raise InputValueError(f"max_dets (--max-dets) must be at least 1, got {max_dets}: pass e.g. 100")
    name_to_id = _category_names(coco_gt)
    unknown = [n for n in list(seen_names) + list(unseen_names) if n not in name_to_id]
    if unknown:
        raise InputValueError(
            f"Class name(s) {unknown} are not categories of the ground truth: use its names "
            f"(--unseen, --split). Valid names: {sorted(name_to_id)}"
        )
    eval_names = list(unseen_names) if mode == "zsi" else list(seen_names) + list(unseen_names)
    if not eval_names:
        raise InputValueError(f"Nothing to evaluate: no {'unseen' if mode == 'zsi' else 'seen or unseen'} classes; "
                              "name them (--unseen, --split)" + (" or use --mode gzsi" if mode == "zsi" else ""))
    eval_cat_ids = [name_to_id[n] for n in eval_names]
    id_to_name = {v: k for k, v in name_to_id.items()}

    validate_instance_results(coco_gt, results, iou_type)
    _fill_gt_defaults(coco_gt)

    # Restricting to the evaluated categories here is equivalent to COCOeval's own per-category
    # matching (params.catIds) and makes loadRes cheaper; results are deep-copied because
    # loadRes writes "id"/"area"/"iscrowd" into them.
    keep = set(eval_cat_ids)
    dts = [copy.deepcopy(dict(r)) for r in results if r["category_id"] in keep]
    if results and not dts:
        logger.warning(
            f"None of the {len(results)} results is of an evaluated category ({mode}: {eval_names}); "
            "every AP is 0"
        )
    if iou_type == "segm":
        # As detectron2 does: without "bbox", loadRes takes the area from the mask.
        for d in dts:
            d.pop("bbox", None)

    thresholds = check_iou_thresholds(iou_thresholds)
    # Recall@N is reported at IoU 0.5, so 0.5 is always evaluated.
    all_thresholds = sorted(set(thresholds) | {0.5})

    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(dts) if dts else _empty_results(coco_gt)
        coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
        params = coco_eval.params
        params.catIds = sorted(eval_cat_ids)
        params.iouThrs = np.array(all_thresholds, dtype=np.float64)
        params.maxDets = [int(max_dets)]
        params.areaRng = [list(_AREA_ALL)]
        params.areaRngLbl = ["all"]
        coco_eval.evaluate()
        coco_eval.accumulate()

    precision = coco_eval.eval["precision"]  # [T, R, K, A=1, M=1]
    recall = coco_eval.eval["recall"]  # [T, K, A=1, M=1]
    cat_index = {c: k for k, c in enumerate(coco_eval.params.catIds)}
    t50 = int(np.argmin(np.abs(np.array(all_thresholds) - 0.5)))

    per_metric: "OrderedDict[str, Dict[str, float]]" = OrderedDict()
    for t in thresholds:
        ti = int(np.argmin(np.abs(np.array(all_thresholds) - t)))
        per_class = OrderedDict()
        for cat_id in eval_cat_ids:
            p = precision[ti, :, cat_index[cat_id], 0, -1]
            p = p[p > -1]
            per_class[id_to_name[cat_id]] = float(np.mean(p)) * 100 if p.size else float("nan")
        per_metric[_ap_key(t)] = per_class
    per_class = OrderedDict()
    for cat_id in eval_cat_ids:
        r = recall[t50, cat_index[cat_id], 0, -1]
        per_class[id_to_name[cat_id]] = float(r) * 100 if r > -1 else float("nan")
    per_metric[f"Recall@{int(max_dets)}"] = per_class

    out = OrderedDict()
    # Aggregates first (all metrics), then per-class values, so the dict reads like the table.
    for metric, values in per_metric.items():
        out.update(summarize_zero_shot(metric, values, seen_names, unseen_names, mode, per_class_keys=False))
    for metric, values in per_metric.items():
        for name, value in values.items():
            out[f"{metric}/{name}"] = value
    return out


class ZeroShotInstanceEvaluator(DatasetEvaluator):
    """detectron2 evaluator reporting per-class and seen / unseen / HM AP and Recall.

    Reads from the dataset's metadata: `json_file` (COCO instances GT), `thing_classes`,
    `thing_dataset_id_to_contiguous_id` (falls back to matching `thing_classes` to GT category
    names), `seen_classes`, `unseen_classes` and `zero_shot_mode` ("gzsi" default, or "zsi").
    Seen/unseen names that are not instance categories of the GT (stuff classes of a panoptic
    split) are left out, since they have no instances to detect.
    """

    def __init__(
        self,
        dataset_name: str,
        tasks: Sequence[str] = ("bbox", "segm"),
        output_dir: Optional[str] = None,
        distributed: bool = True,
        iou_thresholds: Sequence[float] = (0.4, 0.5, 0.6),
        max_dets: int = 100,
    ):
        self._dataset_name = dataset_name
        self._metadata = MetadataCatalog.get(dataset_name)
        bad = [t for t in tasks if t not in ("bbox", "segm")]
        if bad:
            raise InputValueError(f"Unsupported instance task(s) {bad} (tasks): use 'bbox' and/or 'segm'")
        self._tasks = tuple(tasks)
        self._output_dir = output_dir
        self._distributed = distributed
        self._iou_thresholds = tuple(iou_thresholds)
        self._max_dets = int(max_dets)

        json_file = getattr(self._metadata, "json_file", None)
        if not json_file:
            raise InputValueError(
                f"Dataset '{dataset_name}' has no metadata 'json_file' (COCO instances GT), "
                "which ZeroShotInstanceEvaluator needs: register it with register_coco_instances"
            )
        self._coco_gt = load_coco_gt(json_file)
        self._mode = mode_from_metadata(self._metadata, dataset_name)
        gt_names = _category_names(self._coco_gt)
        self._seen, self._unseen = evaluated_groups(self._metadata, dataset_name, gt_names, "instance evaluation")
        self._contiguous_to_dataset_id = self._build_id_map(gt_names)
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)

    def _build_id_map(self, gt_names: Mapping[str, int]) -> Dict[int, int]:
        mapping = getattr(self._metadata, "thing_dataset_id_to_contiguous_id", None)
        if mapping:
            return {int(v): int(k) for k, v in mapping.items()}
        thing_classes = getattr(self._metadata, "thing_classes", None)
        if not thing_classes:
            raise InputValueError(
                f"Dataset '{self._dataset_name}' has neither 'thing_dataset_id_to_contiguous_id' "
                "nor 'thing_classes' in its metadata: set them where it is registered (register_coco_instances "
                "does, from the json)"
            )
        missing = [n for n in thing_classes if n not in gt_names]
        if missing:
            raise InputValueError(f"Dataset '{self._dataset_name}': thing_classes {missing} are not categories of "
                                  f"{self._metadata.json_file}: make its metadata and json name the same classes")
        return {i: gt_names[n] for i, n in enumerate(thing_classes)}

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        """Convert each output's `instances` to COCO json (contiguous class ids for now)."""
        for inp, out in zip(inputs, outputs):
            if "instances" not in out:
                continue
            instances = out["instances"].to("cpu")
            self._predictions.extend(instances_to_coco_json(instances, inp["image_id"]))

    def _to_dataset_ids(self, results: List[dict]) -> List[dict]:
        unknown = sorted({r["category_id"] for r in results} - set(self._contiguous_to_dataset_id))
        if unknown:
            raise ValueError(
                f"Predicted class index(es) {unknown} are outside thing_classes of "
                f"'{self._dataset_name}' (valid: {_ranges(sorted(self._contiguous_to_dataset_id))})"
            )
        for r in results:
            r["category_id"] = self._contiguous_to_dataset_id[r["category_id"]]
        return results

    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions
        results = self._to_dataset_ids(copy.deepcopy(predictions))

        if self._output_dir:
            path = os.path.join(self._output_dir, "coco_instances_results.json")
            logger.info(f"Saving results to {path}")
            with PathManager.open(path, "w") as f:
                f.write(json.dumps(results))

        tasks = list(self._tasks)
        if "segm" in tasks and results and not any("segmentation" in r for r in results):
            logger.warning("Predictions have no masks; skipping 'segm' evaluation")
            tasks.remove("segm")
        if not results:
            logger.warning(f"No instance predictions for '{self._dataset_name}'; every AP is 0")

        output = OrderedDict()
        for task in tasks:
            output[task] = evaluate_instance_results(
                self._coco_gt, results, self._seen, self._unseen, self._mode,
                self._iou_thresholds, self._max_dets, task,
            )
        logger.info(
            f"Zero-shot instance results on '{self._dataset_name}' ({self._mode}):\n"
            + format_zero_shot_table(output)
        )
        return output


def _ranges(values: List[int]) -> str:
    """[0, 1, 2, 5, 6] -> "0..2, 5..6": the valid class indices, short."""
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(f"{start}..{v}" if v != start else f"{v}")
            start = None
    return ", ".join(parts)
