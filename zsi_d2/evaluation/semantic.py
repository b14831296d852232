"""Zero-shot semantic segmentation evaluation: confusion matrix, IoU, seen / unseen mIoU, hIoU.

Why not detectron2's SemSegEvaluator: it reports one mIoU over all classes, while zero-shot
semantic segmentation (SPNet, ZS3Net, ZegFormer, ...) reports mIoU over seen classes, over
unseen classes and their harmonic mean hIoU. The per-class IoU is the usual
TP / (TP + FP + FN) from a confusion matrix accumulated over the whole dataset (not averaged per
image), with GT pixels equal to `ignore_label` skipped, exactly like detectron2's evaluator.

Conventions (shared with the instance and panoptic evaluators, see metrics.py):
* a class whose union is empty (no GT and never predicted) has IoU nan and is excluded from
  every mean; a class never in the GT but predicted somewhere has IoU 0 and counts;
* "mIoU" is the mean over all evaluated classes, "pAcc" the fraction of correctly labelled
  non-ignored pixels;
* zsi mode: GT pixels of non-unseen classes are ignored, the evaluator's argmax only considers
  unseen classes, and everything (mIoU, pAcc, per-class) is over unseen classes.
"""
import json
import logging
import os
from collections import OrderedDict
from typing import List, Mapping, Optional, Sequence

import numpy as np
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation.evaluator import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from ..errors import InputFileNotFoundError, InputValueError
from .metrics import check_mode, evaluated_groups, format_zero_shot_table, mode_from_metadata, summarize_zero_shot

__all__ = [
    "confusion_matrix",
    "semantic_metrics",
    "load_label_png",
    "evaluate_semantic_folders",
    "categories_from_metadata",
    "ZeroShotSemanticEvaluator",
]

logger = logging.getLogger(__name__)


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_label: int = 255) -> np.ndarray:
    """num_classes × (num_classes + 1) int64 counts; rows = GT class, columns = predicted class.

    GT pixels equal to `ignore_label` are skipped. A *predicted* `ignore_label` means "no
    prediction" (some frameworks write it) and goes to the extra last column: such a pixel is a
    miss of its GT class (it enlarges that class's union) without being any class's false
    positive. Any other value outside [0, num_classes) is an error: silently dropping it would
    inflate the scores.
    """
    gt = np.asarray(gt).astype(np.int64, copy=False)
    pred = np.asarray(pred).astype(np.int64, copy=False)
    if gt.shape != pred.shape:
        raise ValueError(f"GT and prediction sizes differ: {gt.shape} vs {pred.shape}")
    valid = gt != ignore_label
    gt, pred = gt[valid], pred[valid]
    pred = np.where(pred == ignore_label, num_classes, pred)
    for arr, what, high in ((gt, "GT", num_classes), (pred, "predicted", num_classes + 1)):
        bad = (arr < 0) | (arr >= high)
        if not bad.any():
            continue
        values = sorted(np.unique(arr[bad]).tolist())[:10]
        if what == "GT":  # read from a label file: the user's data
            raise InputValueError(f"GT labels {values} are outside [0, {num_classes}) and not the ignore label "
                                  f"{ignore_label}: fix the label maps, or the dataset's stuff_classes")
        raise ValueError(f"predicted labels {values} are outside [0, {num_classes}) and not the ignore label "
                         f"{ignore_label}")
    counts = np.bincount(gt * (num_classes + 1) + pred, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1)


def semantic_metrics(
    conf: np.ndarray,
    class_names: Sequence[str],
    seen_names: Sequence[str],
    unseen_names: Sequence[str],
    mode: str = "gzsi",
) -> "OrderedDict[str, float]":
    """Zero-shot numbers (percent) from a confusion matrix over `class_names`.

    `conf` is C×C or C×(C+1) as returned by `confusion_matrix` (rows GT, columns prediction,
    optional last column = GT pixels left unlabelled by the prediction).

    Keys: "mIoU/seen", "mIoU/unseen", "mIoU/hm" (the hIoU; zsi mode: "mIoU/unseen" only),
    "mIoU", "pAcc", then "IoU/<class>" for every evaluated class.
    """
    check_mode(mode)
    conf = np.asarray(conf, dtype=np.float64)
    names = list(class_names)
    n = len(names)
    if conf.ndim != 2 or conf.shape[0] != n or conf.shape[1] not in (n, n + 1):
        raise ValueError(f"Confusion matrix {conf.shape} does not match {n} class names")
    unknown = [n for n in list(seen_names) + list(unseen_names) if n not in names]
    if unknown:
        raise InputValueError(f"Class name(s) {unknown} are not in the label space: use its names. "
                              f"Valid names: {names}")
    if mode == "zsi":
        evaluated = [i for i, n in enumerate(names) if n in set(unseen_names)]
        conf = conf.copy()
        mask = np.ones(len(names), dtype=bool)
        mask[evaluated] = False
        conf[mask, :] = 0  # GT pixels of seen (and other) classes are ignored
    else:
        evaluated = list(range(len(names)))

    tp = np.diag(conf[:, :n])
    union = conf[:, :n].sum(0) + conf.sum(1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan) * 100
    per_class = OrderedDict((names[i], float(iou[i])) for i in evaluated)

    out = summarize_zero_shot("mIoU", per_class, seen_names, unseen_names, mode, per_class_keys=False)
    valid = [v for v in per_class.values() if not np.isnan(v)]
    out["mIoU"] = float(np.mean(valid)) if valid else float("nan")
    total = conf.sum()
    out["pAcc"] = float(tp.sum() / total * 100) if total > 0 else float("nan")
    for name, value in per_class.items():
        out[f"IoU/{name}"] = value
    return out


def load_label_png(path: str) -> np.ndarray:
    """A single-channel label PNG (L, P, I or I;16 mode) as an int64 array."""
    if not os.path.isfile(path):
        raise InputFileNotFoundError(f"Label PNG not found: {path}: check the path (or the dataset's "
                                     "sem_seg_file_name)")
    with PathManager.open(path, "rb") as f:
        img = Image.open(f)
        img.load()
    arr = np.array(img)
    if arr.ndim != 2:
        raise InputValueError(f"{path} is not a single-channel label image (shape {arr.shape}): save the labels "
                              "as a single-channel (L, P or I) PNG")
    return arr.astype(np.int64)


_UNLABELLED = -1  # remapped ignore value (class indices may exceed the raw ignore value)
_UNKNOWN = -2


def _remap(arr: np.ndarray, ids: Sequence[int], ignore_label: int, path: str) -> np.ndarray:
    """Label values → class indices via a lookup table; ignore → -1; unknown values → error."""
    if arr.min(initial=0) < 0:
        raise InputValueError(f"{path} contains negative labels: label values are category ids or the ignore label")
    lut = np.full(max(int(arr.max(initial=0)), max(ids, default=0), ignore_label) + 1, _UNKNOWN, dtype=np.int64)
    lut[list(ids)] = np.arange(len(ids))
    lut[ignore_label] = _UNLABELLED
    out = lut[arr]
    if (out == _UNKNOWN).any():
        bad = sorted(np.unique(arr[out == _UNKNOWN]).tolist())
        raise InputValueError(
            f"{path} contains label value(s) {bad[:10]} that are neither category ids {list(ids)} "
            f"nor the ignore label {ignore_label}: give the categories these labels use (--categories, "
            "--ignore-label) or fix the label map"
        )
    return out


def evaluate_semantic_folders(
    gt_folder: str,
    pred_folder: str,
    categories: Sequence[Mapping],
    seen_names: Sequence[str],
    unseen_names: Sequence[str],
    mode: str = "gzsi",
    ignore_label: int = 255,
) -> "OrderedDict[str, float]":
    """Score a folder of predicted label PNGs against a folder of GT label PNGs (same names).

    `categories` = [{"id": label value, "name": class name}, ...] defines the label space of both
    folders (any framework's ids, need not be contiguous); `ignore_label` in the GT is skipped.
    """
    for folder, what in ((gt_folder, "GT"), (pred_folder, "prediction")):
        if not os.path.isdir(folder):
            raise InputFileNotFoundError(f"Semantic {what} folder not found: {folder}: check the path")
    ids = [int(c["id"]) for c in categories]
    names = [c["name"] for c in categories]
    if len(set(ids)) != len(ids) or len(set(names)) != len(names):
        raise InputValueError("Category ids and names must be unique (--categories, stuff_classes): "
                              "remove the duplicates")
    if ignore_label in ids:
        raise InputValueError(f"The ignore label {ignore_label} is also a category id: choose another "
                              "--ignore-label (ignore_label) or category id")
    gt_files = sorted(f for f in os.listdir(gt_folder) if f.lower().endswith(".png"))
    if not gt_files:
        raise InputFileNotFoundError(f"No .png label files in {gt_folder}: give the folder of the GT label PNGs")
    conf = np.zeros((len(ids), len(ids) + 1), dtype=np.int64)
    for name in gt_files:
        gt_path, pred_path = os.path.join(gt_folder, name), os.path.join(pred_folder, name)
        if not os.path.isfile(pred_path):
            raise InputFileNotFoundError(f"Prediction for {gt_path} not found: {pred_path}: write one label PNG "
                                         "per GT file, with the same name")
        gt = _remap(load_label_png(gt_path), ids, ignore_label, gt_path)
        pred = load_label_png(pred_path)
        if pred.shape != gt.shape:
            raise InputValueError(f"{pred_path} has size {pred.shape}, its GT {gt_path} has {gt.shape}: "
                                  "predict at the GT's size")
        pred = _remap(pred, ids, ignore_label, pred_path)
        conf += confusion_matrix(gt, pred, len(ids), ignore_label=_UNLABELLED)
    logger.info(f"Scored {len(gt_files)} label maps from {pred_folder}")
    return semantic_metrics(conf, names, seen_names, unseen_names, mode)


def categories_from_metadata(metadata, dataset_name: str) -> List[dict]:
    """[{"id": label value, "name": class}] of a registered dataset: its label PNGs hold indices
    into `stuff_classes` (detectron2's semantic convention, followed by every zsi_d2 dataset)."""
    classes = metadata.get("stuff_classes", None)
    if not classes:
        raise InputValueError(f"Dataset '{dataset_name}' has no metadata 'stuff_classes' (its semantic label "
                              "space): set it where the dataset is registered, or pass --categories")
    return [{"id": i, "name": name} for i, name in enumerate(classes)]


class ZeroShotSemanticEvaluator(DatasetEvaluator):
    """detectron2 evaluator: zero-shot mIoU over `stuff_classes` (detectron2's semantic label space).

    Metadata read: `stuff_classes`, `ignore_label` (default 255), `seen_classes`,
    `unseen_classes`, `zero_shot_mode`. GT comes from the dataset dicts' `sem_seg_file_name`
    (uint8 PNG of indices into stuff_classes), looked up by the input's file_name like
    detectron2's SemSegEvaluator (or taken from the input dict when it carries the field).
    `outputs[i]["sem_seg"]` is a C×H×W score tensor at the GT's resolution.
    """

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None, distributed: bool = True):
        self._dataset_name = dataset_name
        self._metadata = MetadataCatalog.get(dataset_name)
        if not hasattr(self._metadata, "stuff_classes"):
            raise InputValueError(f"Dataset '{dataset_name}' has no metadata 'stuff_classes', which "
                                  "ZeroShotSemanticEvaluator needs: set it where the dataset is registered")
        self._class_names = list(self._metadata.stuff_classes)
        self._ignore_label = int(getattr(self._metadata, "ignore_label", 255))
        self._mode = mode_from_metadata(self._metadata, dataset_name)
        self._seen, self._unseen = evaluated_groups(
            self._metadata, dataset_name, self._class_names, "semantic evaluation"
        )
        self._unseen_index = [self._class_names.index(n) for n in self._unseen]
        if self._mode == "zsi" and not self._unseen_index:
            raise InputValueError(f"zsi evaluation of '{dataset_name}' needs unseen classes among stuff_classes: "
                                  "add them to its stuff_classes, or register it in gzsi mode")
        self._output_dir = output_dir
        self._distributed = distributed
        self._gt_file_by_image = None  # filled lazily from DatasetCatalog

    def _gt_file(self, inp) -> str:
        if "sem_seg_file_name" in inp:
            return inp["sem_seg_file_name"]
        if self._gt_file_by_image is None:
            self._gt_file_by_image = {
                d["file_name"]: d["sem_seg_file_name"]
                for d in DatasetCatalog.get(self._dataset_name) if "sem_seg_file_name" in d
            }
        try:
            return self._gt_file_by_image[inp["file_name"]]
        except KeyError:
            raise InputValueError(f"No sem_seg_file_name for {inp['file_name']} in dataset '{self._dataset_name}': "
                                  "give each of its records a label map (sem_seg_file_name)") from None

    def reset(self):
        n = len(self._class_names)
        self._conf = np.zeros((n, n + 1), dtype=np.int64)

    def process(self, inputs, outputs):
        num_classes = len(self._class_names)
        for inp, out in zip(inputs, outputs):
            scores = out["sem_seg"]
            if scores.shape[0] != num_classes:
                raise ValueError(
                    f"sem_seg has {scores.shape[0]} channels but '{self._dataset_name}' has "
                    f"{num_classes} stuff_classes"
                )
            if self._mode == "zsi":
                # zsi: the model is asked which *unseen* class each pixel is.
                best = scores[self._unseen_index].argmax(dim=0).cpu().numpy()
                pred = np.asarray(self._unseen_index, dtype=np.int64)[best]
            else:
                pred = scores.argmax(dim=0).cpu().numpy()
            gt_file = self._gt_file(inp)
            gt = load_label_png(gt_file)
            if self._mode == "zsi":
                seen_gt = ~np.isin(gt, self._unseen_index) & (gt != self._ignore_label)
                gt = np.where(seen_gt, self._ignore_label, gt)
            try:
                self._conf += confusion_matrix(gt, pred, num_classes, self._ignore_label)
            except InputValueError as e:  # a GT label file with values outside stuff_classes
                raise InputValueError(f"{gt_file}: {e}") from None

    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            conf_list = comm.gather(self._conf, dst=0)
            if not comm.is_main_process():
                return {}
            conf = np.sum(conf_list, axis=0)
        else:
            conf = self._conf
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            with PathManager.open(os.path.join(self._output_dir, "sem_seg_confusion.json"), "w") as f:
                json.dump({"classes": self._class_names, "confusion": conf.tolist()}, f)
        res = semantic_metrics(conf, self._class_names, self._seen, self._unseen, self._mode)
        logger.info(
            f"Zero-shot semantic results on '{self._dataset_name}' ({self._mode}):\n"
            + format_zero_shot_table(res)
        )
        return OrderedDict({"sem_seg": res})
