"""ZS5Net's pseudo-labels: the pixels of unlabelled images a trained ZS3Net is most sure are an
unseen class, as real features of that class.

Why: generated unseen features only imitate what the names predict; real features of unseen
objects, found by the model itself in images nobody labelled, add what the generator missed. Only
images and the model's own predictions are read (transductive, never an unseen label).
"""
import logging
import math
import time

import torch
from torch.utils.data import SequentialSampler

from detectron2.data import build_detection_test_loader

from zsi_d2.engine.feature_bank_cache import batches_of
from zsi_d2.errors import InputValueError
from zsi_d2.modeling.generative import IGNORE, FeatureBank
from zsi_d2.modeling.semantic import classify_rows
from zsi_d2.modeling.semantic.generative import sample_pixels

__all__ = ["select_pseudo_labels", "compute_pseudo_label_bank"]

logger = logging.getLogger(__name__)


def select_pseudo_labels(probs: torch.Tensor, unseen: torch.Tensor, top_percent: float) -> torch.Tensor:
    """(K, h, w) class probabilities of one image -> (h, w) labels: for each unseen class u, the most
    confident `top_percent` % (rounded up) of the pixels whose top class is u keep u; every other
    pixel is IGNORE (seen pixels are never pseudo-labelled)."""
    confidence, top = probs.max(dim=0)
    labels = torch.full_like(top, IGNORE)
    for u in unseen.tolist():
        where = torch.nonzero((top == u).flatten()).flatten()
        if not len(where):
            continue
        keep = math.ceil(len(where) * top_percent / 100.0)
        best = where[torch.topk(confidence.flatten()[where], keep).indices]
        labels.view(-1)[best] = u
    return labels


@torch.no_grad()
def compute_pseudo_label_bank(model, teacher, dicts, mapper, unseen: torch.Tensor, top_percent: float,
                              per_class: int, batch_size: int = 8, num_workers: int = 0) -> FeatureBank:
    """The frozen model's pixel features of the unlabelled images `dicts`, `per_class` of each unseen
    class the `teacher` classifier pseudo-labels in an image (drawn with replacement), labels local to
    the model's (stage-2) class set."""
    loader = build_detection_test_loader(dicts, mapper=mapper, sampler=SequentialSampler(dicts), num_workers=num_workers)
    was_training = model.training
    model.eval()
    features, labels, start, done = [], [], time.perf_counter(), 0
    try:
        for batch in batches_of(loader, batch_size):
            done += len(batch)
            images = model.preprocess_image(batch)
            pixel = model.pixel_features(images.tensor)
            stride = images.tensor.shape[-1] / pixel.shape[-1]
            for f, image_size in zip(pixel, images.image_sizes):
                h, w = (math.ceil(s / stride) for s in image_size)  # the image, not its padding
                f = f[:, :h, :w]
                probs = classify_rows(teacher, f.flatten(1).t()).softmax(dim=1).t().reshape(-1, h, w)
                pseudo = select_pseudo_labels(probs, unseen, top_percent)
                rows, labs = sample_pixels(f.cpu(), pseudo.cpu(), per_class, IGNORE)
                features.append(rows)
                labels.append(labs)
            if done % 200 < len(batch) or done == len(dicts):
                logger.info(f"Self-training pseudo-labels: {done}/{len(dicts)} images ({time.perf_counter() - start:.0f} s)")
    finally:
        model.train(was_training)
    longest = max((len(x) for x in labels), default=0)
    if longest == 0:
        raise InputValueError(f"Self-training: the model of MODEL.WEIGHTS predicts no unseen class on any of the "
                              f"{len(dicts)} unlabelled images, so there is nothing to pseudo-label: give a trained "
                              "ZS3Net (projects/ZS3Net/configs/zs_shapes/zs3net.yaml)")
    bank_features = torch.zeros((len(features), longest, pixel.shape[1]))
    bank_labels = torch.full((len(labels), longest), IGNORE, dtype=torch.long)
    for i, (rows, labs) in enumerate(zip(features, labels)):
        bank_features[i, : len(rows)] = rows
        bank_labels[i, : len(labs)] = labs
    found = {model.class_set.names[u]: int((bank_labels == u).sum()) for u in unseen.tolist()}
    logger.info(f"Self-training pseudo-labels on {len(dicts)} unlabelled images (rows per unseen class): {found}")
    return FeatureBank(bank_features, bank_labels, model.class_set.names)
