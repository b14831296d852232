"""Choose the calibrated-stacking gamma on held-out seen-only images, without any unseen label.

Rule (MODEL.ZERO_SHOT.CALIBRATION): run the model once over CALIBRATION.DATASETS (images of seen
classes only, disjoint from DATASETS.TRAIN) scoring seen + unseen names, as in GZSI; for every
gamma of the search grid, re-run the box predictor's inference on the cached RoI outputs and label
each ground-truth object with the class of its highest-scoring detection overlapping it
(IoU >= MATCH_IOU). For mask-classification models (ZeroShotMaskFormer, PADing) the detections are
the last layer's queries, their boxes those of their masks and their scores the calibrated class
probabilities (the held-out objects are the instance annotations: things). For pixel-level models
(ZeroShotSemanticSegmentor: SPNet's calibration subtracts gamma from the seen probabilities) the
held-out "objects" are the labelled pixels of the label maps (every 4th, in raster order), each
labelled with its calibrated top class. Every such object is seen, so an unseen label is an error the calibration
causes; the chosen gamma is the largest whose share of those errors stays <= TARGET_RATE
(zsi_d2.modeling.calibration.choose_gamma). Nothing here reads an unseen annotation: the held-out
sets are audited to hold none.
"""
import json
import logging
import os
import time
from typing import Dict, List

import torch

from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.evaluation.evaluator import inference_context
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, BoxMode, pairwise_iou
from detectron2.utils import comm

from ..data.audit import audit_dataset
from ..data.catalog import require_registered
from ..data.mappers import NameUnreadableFiles
from ..errors import InputValueError, LeakageError
from ..modeling.calibration import SeenCalibrated, choose_gamma, gamma_grid, set_calibration_gamma
from ..modeling.class_set import use_class_set
from ..utils.model import unwrap

__all__ = ["calibrate_for_test", "choose_calibration", "CALIBRATION_FILE"]

logger = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"


def _box_predictor(model):
    """The calibrated module: an R-CNN's box predictor, or a mask-classification model's classifier."""
    model = unwrap(model)
    predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
    if isinstance(predictor, SeenCalibrated):
        return predictor
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, SeenCalibrated) and (hasattr(model, "predict") or hasattr(model, "pixel_features")):
        return classifier
    raise InputValueError(
        f"MODEL.ZERO_SHOT.CALIBRATION.DATASETS: choosing gamma needs an R-CNN with a zero-shot box predictor, a "
        f"mask-classification model or a pixel-level one; {type(model).__name__} is none of them (set "
        "CALIBRATION.GAMMA directly instead)"
    )


def _check_held_out(cfg, names):
    """Registered, seen classes only, and no image shared with the training sets."""
    train_files = {d["file_name"] for name in cfg.DATASETS.TRAIN for d in DatasetCatalog.get(name)}
    for name in names:
        require_registered(name)
        report = audit_dataset(name)
        if not report.ok:
            raise LeakageError(
                f"Calibration dataset '{name}' holds unseen-class labels; gamma must be chosen on seen "
                f"classes only (held-out training images).\n{report.format()}"
            )
        shared = sorted({d["file_name"] for d in DatasetCatalog.get(name)} & train_files)
        if shared:
            raise InputValueError(
                f"Calibration dataset '{name}' shares {len(shared)} images with DATASETS.TRAIN (e.g. {shared[0]}): "
                "choose gamma on images the model was not trained on"
            )


class _RoIOutputs:
    """Catches the proposals given to the ROI heads and the box predictor's outputs of one forward."""

    def __init__(self, model):
        self.proposals, self.predictions = None, None
        model = unwrap(model)
        self._hooks = [
            model.roi_heads.register_forward_pre_hook(self._on_heads),
            model.roi_heads.box_predictor.register_forward_hook(self._on_predictor),
        ]

    def _on_heads(self, module, args):
        self.proposals = args[2]

    def _on_predictor(self, module, args, output):
        self.predictions = tuple(t.detach() for t in output)

    def remove(self):
        for hook in self._hooks:
            hook.remove()


def _gt_boxes(dataset_dict):
    boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in dataset_dict.get("annotations", [])
             if not a.get("iscrowd", 0)]
    return Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))


class _QueryOutputs:
    """A mask-classification model's last-layer query logits and mask boxes of one image."""

    def __init__(self, logits, boxes):
        self.logits, self.boxes = logits, boxes


def _collect_queries(model, inputs, height, width):
    from ..modeling.mask_former.inference import masks_to_boxes, resize_mask_predictions

    images = model.preprocess_image([inputs])
    out = model.predict(images.tensor)
    masks = resize_mask_predictions(out["pred_masks"][0], tuple(images.tensor.shape[-2:]), images.image_sizes[0],
                                    (height, width))
    return _QueryOutputs(out["pred_logits"][0].detach(), Boxes(masks_to_boxes(masks > 0)))


class _PixelOutputs:
    """A pixel-level model's class probabilities (n, K) at the labelled pixels of one image."""

    def __init__(self, probs):
        self.probs = probs


PIXEL_STRIDE = 4  # every 4th labelled pixel: neighbours add little but memory


def _collect_pixels(model, inputs, dataset_dict):
    from detectron2.modeling.postprocessing import sem_seg_postprocess

    from ..evaluation.semantic import load_label_png

    images = model.preprocess_image([inputs])
    scores = model.classifier(model.pixel_features(images.tensor))
    scores = torch.nn.functional.interpolate(scores, size=images.tensor.shape[-2:], mode="bilinear",
                                             align_corners=False)
    probs = sem_seg_postprocess(scores[0].softmax(0), images.image_sizes[0], dataset_dict["height"],
                                dataset_dict["width"])
    labels = torch.as_tensor(load_label_png(dataset_dict["sem_seg_file_name"]).astype("int64"))
    labelled = (labels != model.ignore_value).flatten()
    return _PixelOutputs(probs.flatten(1)[:, labelled][:, ::PIXEL_STRIDE].t().contiguous())


def _collect(cfg, model, names):
    """Per image: (ground-truth boxes, cached predictions, proposals, original height and width)."""
    inner = unwrap(model)
    if hasattr(inner, "pixel_features"):  # pixel-level: probabilities at the labelled pixels
        mapper = NameUnreadableFiles(DatasetMapper(cfg, is_train=False))
        missing = [name for name in names if any("sem_seg_file_name" not in d for d in DatasetCatalog.get(name))]
        if missing:
            raise InputValueError(f"Calibration datasets {missing} have no label maps (sem_seg_file_name), which a "
                                  "pixel-level model's gamma is chosen on: use their *_panoptic views")
        return [(None, _collect_pixels(inner, mapper(dict(d)), d), None, d["height"], d["width"])
                for name in names for d in DatasetCatalog.get(name)]
    if not hasattr(inner, "roi_heads"):  # mask classification: cached query outputs, no proposals
        mapper = NameUnreadableFiles(DatasetMapper(cfg, is_train=False))
        return [(_gt_boxes(d), _collect_queries(inner, mapper(dict(d)), d["height"], d["width"]), None,
                 d["height"], d["width"]) for name in names for d in DatasetCatalog.get(name)]
    mapper = NameUnreadableFiles(DatasetMapper(cfg, is_train=False))
    cached = []
    start = time.perf_counter()
    catcher = _RoIOutputs(model)
    try:
        for name in names:
            dicts = DatasetCatalog.get(name)
            for i, d in enumerate(dicts):
                inputs = mapper(dict(d))
                model([inputs])
                cached.append((_gt_boxes(d), catcher.predictions, catcher.proposals, d["height"], d["width"]))
                if (i + 1) % 100 == 0:
                    logger.info("calibration: %s: %d/%d images (%.0f s)", name, i + 1, len(dicts),
                                time.perf_counter() - start)
    finally:
        catcher.remove()
    return cached


def _share_labelled_unseen(predictor, cached, unseen_local, match_iou, gamma):
    """(share of matched held-out objects whose top overlapping detection is an unseen class, #matched),
    the cached (uncalibrated) predictions scored at calibration `gamma`."""
    matched = wrong = 0
    for gt, predictions, proposals, height, width in cached:
        if isinstance(predictions, _PixelOutputs):  # every labelled pixel an object, labelled by its top class
            classes = predictor.calibrate(predictions.probs, gamma).argmax(dim=1)
            matched += len(classes)
            wrong += int(unseen_local[classes].sum())
            continue
        if len(gt) == 0:
            continue
        if isinstance(predictions, _QueryOutputs):  # every query a detection, labelled by its top class
            probs = predictor.calibrate(predictions.logits, gamma).softmax(-1)[:, :-1]
            query_scores, query_classes = probs.max(dim=1)
            boxes, classes = predictions.boxes, query_classes
        else:
            (instances,), _ = predictor.inference(predictions, proposals, gamma)
            instances = detector_postprocess(instances, height, width)
            boxes, query_scores, classes = instances.pred_boxes, instances.scores, instances.pred_classes
        if len(classes) == 0:
            continue
        iou = pairwise_iou(gt, boxes)  # (G, D)
        scores = torch.where(iou >= match_iou, query_scores[None, :], torch.full_like(iou, -1.0))
        best_score, best = scores.max(dim=1)
        found = best_score >= 0
        matched += int(found.sum())
        wrong += int(unseen_local[classes[best[found]]].sum())
    return (wrong / matched if matched else float("nan")), matched


def choose_calibration(cfg, model) -> Dict:
    """Choose gamma on CALIBRATION.DATASETS (see the module docstring); returns what was measured."""
    c = cfg.MODEL.ZERO_SHOT.CALIBRATION
    names = list(c.DATASETS)
    predictor = _box_predictor(model)
    _check_held_out(cfg, names)
    grid = gamma_grid(c.SEARCH_MAX, c.SEARCH_STEP)
    start = time.perf_counter()
    with inference_context(model), torch.no_grad(), use_class_set(model, names[0], mode="gzsi") as class_set:
        if not class_set.unseen:
            raise InputValueError(f"Calibration dataset '{names[0]}' names no unseen classes: nothing to calibrate")
        cached = _collect(cfg, model, names)  # uncalibrated logits: each gamma is applied to them below
        unseen_local = torch.tensor([n in class_set.unseen for n in class_set.names])
        shares: Dict[float, float] = {}
        counts: List[int] = []
        for gamma in grid:
            shares[gamma], matched = _share_labelled_unseen(predictor, cached, unseen_local, c.MATCH_IOU, gamma)
            counts.append(matched)
    if not counts or counts[0] == 0:
        raise InputValueError(
            f"Calibration datasets {names}: no ground-truth object was matched by a detection at gamma 0 "
            f"(IoU >= {c.MATCH_IOU}), so gamma cannot be chosen: check the datasets and the weights"
        )
    gamma = choose_gamma(shares, c.TARGET_RATE)
    if gamma == grid[0] and shares[gamma] > c.TARGET_RATE:
        logger.warning("calibration: even gamma %.2f labels %.1f %% of held-out seen objects unseen (target %.1f %%)",
                       gamma, 100 * shares[gamma], 100 * c.TARGET_RATE)
    result = {
        "gamma": gamma, "target_rate": c.TARGET_RATE, "share_at_gamma": shares[gamma],
        "matched_objects_at_gamma": counts[grid.index(gamma)], "images": len(cached), "datasets": names,
        "match_iou": c.MATCH_IOU, "shares": {str(g): s for g, s in shares.items()},
        "seconds": round(time.perf_counter() - start, 1),
    }
    table = "  ".join(f"{g:g}:{100 * s:.1f}%" for g, s in shares.items())
    logger.info("calibration on %s (%d images): share of held-out seen objects labelled unseen per gamma: %s",
                names, len(cached), table)
    logger.info("calibration: chose gamma %.2f (share %.1f %% <= target %.1f %%) in %.0f s", gamma,
                100 * shares[gamma], 100 * c.TARGET_RATE, result["seconds"])
    return result


def calibrate_for_test(cfg, model):
    """Before testing: choose gamma when CALIBRATION.DATASETS is set (on the main process, shared
    with the others) and set it on the model, else set CALIBRATION.GAMMA. Returns the result dict
    (None when gamma was not chosen here)."""
    c = cfg.MODEL.ZERO_SHOT.CALIBRATION
    if not c.DATASETS:
        if c.GAMMA:
            set_calibration_gamma(model, c.GAMMA)
            logger.info("calibration: gamma %.2f (MODEL.ZERO_SHOT.CALIBRATION.GAMMA)", c.GAMMA)
        return None
    result = choose_calibration(cfg, model) if comm.is_main_process() else None
    if comm.get_world_size() > 1:
        result = comm.all_gather(result)[0]
    set_calibration_gamma(model, result["gamma"])
    if comm.is_main_process() and cfg.OUTPUT_DIR:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        with open(os.path.join(cfg.OUTPUT_DIR, CALIBRATION_FILE), "w") as f:
            json.dump(result, f, indent=1)
    return result
