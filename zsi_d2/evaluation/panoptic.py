"""Zero-shot panoptic evaluation: PQ / SQ / RQ, seen / unseen / HM, from files or a detectron2 model.

The metric itself is `pq.py` (pure, panopticapi's rules); this module reads COCO panoptic files
(`pq_compute`, `evaluate_panoptic`: what the results-file CLI calls), summarises per-category sums
as zero-shot numbers (`summarize_panoptic`) and is detectron2's evaluator
(`ZeroShotPanopticEvaluator`). Why in-house: panopticapi is not installable from the package
registry, and detectron2's evaluator reports averages over all classes only.
"""
import io
import json
import logging
import os
from collections import OrderedDict
from typing import Iterable, List, Mapping, Optional, Sequence

import numpy as np
from PIL import Image

from detectron2.data import MetadataCatalog
from detectron2.evaluation.evaluator import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from ..data.metadata import check_panoptic_convention
from ..errors import InputFileNotFoundError, InputValueError
from ..utils.panoptic_ids import OFFSET, VOID, id2rgb, read_panoptic_png, rgb2id
from .files import read_json
from .metrics import check_mode, evaluated_groups, format_zero_shot_table, mode_from_metadata, summarize_zero_shot
from .pq import PQStat, PQStatCat, categories_by_id, pq_compute_images, pq_from_segments

__all__ = [
    "VOID",
    "OFFSET",
    "rgb2id",
    "id2rgb",
    "PQStatCat",
    "PQStat",
    "pq_from_segments",
    "pq_compute",
    "summarize_panoptic",
    "check_panoptic_json",
    "evaluate_panoptic",
    "ZeroShotPanopticEvaluator",
]

logger = logging.getLogger(__name__)

def _load_json(path_or_dict, what: str = "Panoptic json"):
    if isinstance(path_or_dict, (Mapping, list, tuple)):
        return path_or_dict
    return read_json(path_or_dict, what)


_ANNOTATION_FIELDS = ("image_id", "file_name", "segments_info")


def check_panoptic_json(data, source: str, role: str = "ground truth") -> List[dict]:
    """The annotations of a COCO panoptic json, refusing with `source` named what is not one.

    role "ground truth" needs {"annotations", "categories"}; role "predictions" takes that or a
    bare list of annotations and must not be empty. Catches a list given as GT (files swapped),
    an instances json given as panoptic, and annotations without PNG or segments.
    """
    if role == "predictions" and isinstance(data, (list, tuple)):
        anns = list(data)
    elif isinstance(data, Mapping) and isinstance(data.get("annotations"), list):
        anns = data["annotations"]
    elif isinstance(data, (list, tuple)):
        raise InputValueError(f"{source} holds a list, not a COCO panoptic ground truth with 'annotations' and "
                              "'categories': were the ground truth and the predictions swapped?")
    else:
        raise InputValueError(f"{source} is not a COCO panoptic json: it has no 'annotations' list; "
                              "give a COCO panoptic json (e.g. panoptic_val.json)")
    if role == "ground truth" and not isinstance(data.get("categories"), list):
        raise InputValueError(f"{source} is not a COCO panoptic ground truth: it has no 'categories' list; "
                              "give the panoptic json with its categories")
    if not anns:
        what = ("no image has a prediction: check the model's output" if role == "predictions"
                else "there is nothing to score against: give the ground truth with its annotations")
        raise InputValueError(f"{source} holds no annotations: {what}")
    bad = [i for i, a in enumerate(anns) if not isinstance(a, Mapping) or not set(_ANNOTATION_FIELDS) <= set(a)]
    if bad:
        first = anns[bad[0]]
        hint = (": it looks like a COCO instances json, use the instance task"
                if isinstance(first, Mapping) and "bbox" in first else ": give a COCO panoptic json")
        raise InputValueError(f"{source}: {len(bad)} annotation(s) lack one of {list(_ANNOTATION_FIELDS)} "
                              f"(e.g. annotation #{bad[0]}){hint}")
    return anns


def pq_compute(
    gt_json,
    gt_folder: str,
    pred_json,
    pred_folder: Optional[str] = None,
    categories=None,
    keep_category_ids: Optional[Iterable[int]] = None,
    num_workers: int = 1,
) -> PQStat:
    """PQ sums of a COCO panoptic prediction (json + PNG folder) against the GT (json + folder).

    Args:
        gt_json: COCO panoptic GT, path or loaded dict ("annotations", "categories").
        pred_json: prediction, path or dict with "annotations" (a bare list of annotations is
            accepted too); matched to the GT by image_id. Every GT image needs a prediction.
        pred_folder: default, as in COCO's tools: the json path without ".json".
        categories: defaults to the GT's "categories".
        keep_category_ids: see `pq_from_segments` (zsi mode).
        num_workers: score the images in this many processes (panopticapi's multi-core path).
    """
    gt = _load_json(gt_json, "Panoptic GT json")
    gt_source = gt_json if isinstance(gt_json, str) else "The panoptic ground truth"
    check_panoptic_json(gt, gt_source, "ground truth")
    pred_source = pred_json if isinstance(pred_json, str) else "The panoptic predictions"
    pred_anns = check_panoptic_json(_load_json(pred_json, "Panoptic predictions json"), pred_source, "predictions")
    if pred_folder is None:
        if not isinstance(pred_json, str):
            raise InputValueError("pred_folder is required when pred_json is not a path: pass the folder of "
                                  "the predicted PNGs")
        pred_folder = os.path.splitext(pred_json)[0]
    for folder, what in ((gt_folder, "GT"), (pred_folder, "prediction")):
        if not os.path.isdir(folder):
            raise InputFileNotFoundError(f"Panoptic {what} PNG folder not found: {folder}: check the path")
    categories = categories_by_id(categories if categories is not None else gt["categories"])

    pred_by_image = {a["image_id"]: a for a in pred_anns}
    missing = [a["image_id"] for a in gt["annotations"] if a["image_id"] not in pred_by_image]
    if missing:
        raise InputValueError(
            f"{pred_source} has no prediction for {len(missing)} of {len(gt['annotations'])} GT image(s) "
            f"(e.g. image id {missing[0]!r}): panoptic evaluation needs one per GT image"
        )
    pairs = [
        (os.path.join(gt_folder, a["file_name"]), a["segments_info"],
         os.path.join(pred_folder, pred_by_image[a["image_id"]]["file_name"]),
         pred_by_image[a["image_id"]]["segments_info"], a["image_id"])
        for a in gt["annotations"]
    ]
    return pq_compute_images(pairs, categories, keep_category_ids, num_workers)


def summarize_panoptic(
    stat: PQStat,
    categories,
    seen_names: Sequence[str],
    unseen_names: Sequence[str],
    mode: str = "gzsi",
) -> "OrderedDict[str, float]":
    """Zero-shot PQ/SQ/RQ in percent for All / Things ("_th") / Stuff ("_st") classes.

    Keys: "PQ/seen", "PQ/unseen", "PQ/hm", "SQ/…", "RQ/…", "PQ_th/…", "SQ_th/…", "RQ_th/…",
    "PQ_st/…", "SQ_st/…", "RQ_st/…" (zsi mode: "/unseen" only), then per class "PQ/<name>",
    "SQ/<name>", "RQ/<name>" (nan for classes with TP + FP + FN = 0).
    Classes in neither group get per-class numbers only.
    """
    check_mode(mode)
    cats = categories_by_id(categories)
    names = {}
    for cid, cat in cats.items():
        name = cat.get("name", str(cid))
        if name in names.values():
            raise InputValueError(f"Two panoptic categories are named {name!r}: rename one of them in the json")
        names[cid] = name
    unknown = [n for n in list(seen_names) + list(unseen_names) if n not in names.values()]
    if unknown:
        raise InputValueError(f"Class name(s) {unknown} are not panoptic categories: use their names "
                              f"(--unseen, --split). Valid names: {sorted(names.values())}")
    evaluated = set(unseen_names) if mode == "zsi" else set(names.values())
    per_class = stat.per_class(cats)

    out = OrderedDict()
    for suffix, isthing in (("", None), ("_th", True), ("_st", False)):
        selected = [cid for cid in cats if isthing is None or bool(cats[cid]["isthing"]) == isthing]
        for metric in ("pq", "sq", "rq"):
            values = {names[cid]: per_class[cid][metric] * 100 for cid in selected}
            out.update(summarize_zero_shot(
                metric.upper() + suffix, values, seen_names, unseen_names, mode, per_class_keys=False,
            ))
    for metric in ("pq", "sq", "rq"):
        for cid in cats:
            if names[cid] in evaluated:
                out[f"{metric.upper()}/{names[cid]}"] = per_class[cid][metric] * 100
    return out


def _category_ids_of(names: Sequence[str], categories) -> List[int]:
    by_name = {c.get("name"): cid for cid, c in categories_by_id(categories).items()}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise InputValueError(f"Class name(s) {missing} are not panoptic categories: use their names. "
                              f"Valid names: {sorted(by_name)}")
    return [by_name[n] for n in names]


def evaluate_panoptic(
    gt_json,
    gt_folder: str,
    pred_json,
    pred_folder: Optional[str],
    seen_names: Sequence[str],
    unseen_names: Sequence[str],
    mode: str = "gzsi",
    num_workers: int = 1,
) -> "OrderedDict[str, float]":
    """Files in, zero-shot numbers out: `pq_compute` + `summarize_panoptic` (zsi restricts GT and
    predictions to the unseen categories first)."""
    check_mode(mode)
    gt = _load_json(gt_json, "Panoptic GT json")
    check_panoptic_json(gt, gt_json if isinstance(gt_json, str) else "The panoptic ground truth", "ground truth")
    keep = _category_ids_of(unseen_names, gt["categories"]) if mode == "zsi" else None
    stat = pq_compute(gt, gt_folder, pred_json, pred_folder, gt["categories"], keep, num_workers)
    return summarize_panoptic(stat, gt["categories"], seen_names, unseen_names, mode)


# ---------------------------------------------------------------------------------------------
# detectron2 evaluator
# ---------------------------------------------------------------------------------------------
class ZeroShotPanopticEvaluator(DatasetEvaluator):
    """detectron2 evaluator for zero-shot PQ, following COCOPanopticEvaluator's conventions.

    Metadata read: `panoptic_json`, `panoptic_root` (COCO panoptic GT), `thing_dataset_id_to_
    contiguous_id`, `stuff_dataset_id_to_contiguous_id`, `label_divisor` (only when a model
    returns segments_info=None), `seen_classes`, `unseen_classes`, `zero_shot_mode`.

    Each image is scored in `process()` against its GT and only the per-category sums are kept,
    so memory does not grow with the dataset and no temporary PNGs are written. With
    `output_dir`, predictions are also saved in COCO panoptic format (predictions.json and
    predictions/*.png, the folder the CLI assumes by default) so they can be re-scored with
    `python -m zsi_d2.evaluation panoptic`.
    """

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None):
        self._dataset_name = dataset_name
        self._metadata = MetadataCatalog.get(dataset_name)
        for field in ("panoptic_json", "panoptic_root"):
            if not hasattr(self._metadata, field):
                raise InputValueError(f"Dataset '{dataset_name}' has no metadata '{field}', which "
                                      "ZeroShotPanopticEvaluator needs: register it with register_coco_panoptic")
        self._gt_json = _load_json(PathManager.get_local_path(self._metadata.panoptic_json), "panoptic_json")
        check_panoptic_json(self._gt_json, self._metadata.panoptic_json, "ground truth")
        self._gt_root = PathManager.get_local_path(self._metadata.panoptic_root)
        self._gt_by_image = {a["image_id"]: a for a in self._gt_json["annotations"]}
        self._categories = categories_by_id(self._gt_json["categories"])
        self._mode = mode_from_metadata(self._metadata, dataset_name)
        cat_names = [c["name"] for c in self._categories.values()]
        self._seen, self._unseen = evaluated_groups(self._metadata, dataset_name, cat_names, "panoptic evaluation")
        self._keep = _category_ids_of(self._unseen, self._categories) if self._mode == "zsi" else None
        # One label space (detectron2's standard panoptic convention, refused otherwise): a class
        # index is a thing iff it is a value of the thing map, and one inverse map serves both.
        check_panoptic_convention(dataset_name, self._metadata)
        thing_map = self._metadata.thing_dataset_id_to_contiguous_id
        self._thing_contiguous = set(thing_map.values())
        self._contiguous_to_id = {v: k for k, v in self._metadata.stuff_dataset_id_to_contiguous_id.items()}
        self._contiguous_to_id.update({v: k for k, v in thing_map.items()})
        self._output_dir = output_dir
        if output_dir:
            PathManager.mkdirs(os.path.join(output_dir, "predictions"))

    def reset(self):
        self._stat = PQStat()
        self._image_ids = []
        self._predictions = []

    def _convert_category_id(self, segment_info: dict) -> dict:
        """Contiguous → dataset category id, exactly as COCOPanopticEvaluator does."""
        segment_info = dict(segment_info)
        isthing = segment_info.pop("isthing", None)
        if isthing is None:
            return segment_info  # the model already produced dataset category ids
        cid = segment_info["category_id"]
        if cid not in self._contiguous_to_id:
            raise ValueError(
                f"Predicted class index {cid} is outside stuff_classes of '{self._dataset_name}' "
                f"(valid: 0..{len(self._metadata.stuff_classes) - 1}, detectron2's standard panoptic convention)"
            )
        if bool(isthing) != (cid in self._thing_contiguous):
            name = self._metadata.stuff_classes[cid]
            raise ValueError(
                f"Predicted segment of class {cid} ('{name}') says isthing={bool(isthing)}, but in '{self._dataset_name}' "
                f"it is a {'thing' if cid in self._thing_contiguous else 'stuff'} class: category_id must index "
                "stuff_classes (detectron2's standard panoptic convention), not the things' own list"
            )
        segment_info["category_id"] = self._contiguous_to_id[cid]
        return segment_info

    def _segments_from_labels(self, panoptic_img: np.ndarray):
        """segments_info=None: the map holds category_id * label_divisor + instance_id with -1 for
        VOID (detectron2's Panoptic-DeepLab convention); shift by +1 so that VOID becomes 0."""
        label_divisor = getattr(self._metadata, "label_divisor", None)
        if label_divisor is None:
            raise InputValueError(f"segments_info is None but dataset '{self._dataset_name}' has no "
                                  "metadata 'label_divisor': set it where the dataset is registered")
        thing_ids = self._thing_contiguous
        segments_info = []
        for panoptic_label in np.unique(panoptic_img).tolist():
            if panoptic_label == -1:
                continue
            pred_class = panoptic_label // label_divisor
            segments_info.append({
                "id": int(panoptic_label) + 1,
                "category_id": int(pred_class),
                "isthing": pred_class in thing_ids,
            })
        return panoptic_img + 1, segments_info

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            panoptic_img, segments_info = out["panoptic_seg"]
            panoptic_img = panoptic_img.cpu().numpy().astype(np.int64)
            if segments_info is None:
                panoptic_img, segments_info = self._segments_from_labels(panoptic_img)
            segments_info = [self._convert_category_id(s) for s in segments_info]
            image_id = inp["image_id"]
            gt_ann = self._gt_by_image.get(image_id)
            if gt_ann is None:
                raise InputValueError(f"Image id {image_id!r} of dataset '{self._dataset_name}' is not in "
                                      f"{self._metadata.panoptic_json}: register it with the panoptic json "
                                      "of its images")
            gt_ids = read_panoptic_png(os.path.join(self._gt_root, gt_ann["file_name"]))
            pq_from_segments(
                gt_ids, gt_ann["segments_info"], panoptic_img, segments_info,
                self._categories, self._keep, self._stat, image_id,
            )
            self._image_ids.append(image_id)
            if self._output_dir:
                file_name = os.path.splitext(os.path.basename(inp["file_name"]))[0] + ".png"
                path = os.path.join(self._output_dir, "predictions", file_name)
                with PathManager.open(path, "wb") as f:
                    buf = io.BytesIO()
                    Image.fromarray(id2rgb(panoptic_img)).save(buf, format="PNG")
                    f.write(buf.getvalue())
                self._predictions.append(
                    {"image_id": image_id, "file_name": file_name, "segments_info": segments_info}
                )

    def evaluate(self):
        comm.synchronize()
        gathered = comm.gather((self._stat, self._image_ids, self._predictions), dst=0)
        if not comm.is_main_process():
            return {}
        stat = PQStat()
        image_ids, predictions = [], []
        for s, ids, preds in gathered:
            stat += s
            image_ids.extend(ids)
            predictions.extend(preds)
        missing = set(self._gt_by_image) - set(image_ids)
        if missing:
            logger.warning(f"{len(missing)} of {len(self._gt_by_image)} GT images of "
                           f"'{self._dataset_name}' got no prediction; they are not counted")
        if self._output_dir:
            json_data = {k: v for k, v in self._gt_json.items() if k != "annotations"}
            json_data["annotations"] = predictions
            path = os.path.join(self._output_dir, "predictions.json")
            with PathManager.open(path, "w") as f:
                f.write(json.dumps(json_data, default=int))
            logger.info(f"Saved panoptic predictions to {path} (PNGs in predictions/)")
        res = summarize_panoptic(stat, self._categories, self._seen, self._unseen, self._mode)
        logger.info(
            f"Zero-shot panoptic results on '{self._dataset_name}' ({self._mode}):\n"
            + format_zero_shot_table(res)
        )
        return OrderedDict({"panoptic_seg": res})
