"""ZS5Net's pseudo-labels: the pixels of unlabelled images a trained ZS3Net is most sure are an
unseen class, as real features of that class.

Why: generated unseen features only imitate what the names predict; real features of unseen
objects, found by the model itself in images nobody labelled, add what the generator missed. Only
images and the model's own predictions are read (transductive, never an unseen label).
"""
import logging
import math

import torch

from zsi_d2.errors import InputValueError
from zsi_d2.modeling.generative import IGNORE, FeatureBank
from zsi_d2.modeling.semantic import classify_rows
from zsi_d2.modeling.semantic.generative import frozen_pixel_batches, sample_pixels, stack_rows

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


def compute_pseudo_label_bank(model, teacher, dicts, mapper, unseen: torch.Tensor, top_percent: float,
                              per_class: int, batch_size: int = 8, num_workers: int = 0) -> FeatureBank:
    """The frozen model's pixel features of the unlabelled images `dicts`, `per_class` of each unseen
    class the `teacher` classifier pseudo-labels in an image (drawn with replacement), labels local to
    the model's (stage-2) class set."""
    features, labels, dim = [], [], 0
    for _, images, pixel in frozen_pixel_batches(model, dicts, mapper, batch_size, num_workers, what="pseudo-label"):
        stride, dim = images.tensor.shape[-1] / pixel.shape[-1], pixel.shape[1]
        for f, image_size in zip(pixel, images.image_sizes):
            h, w = (math.ceil(s / stride) for s in image_size)  # the image, not its padding
            f = f[:, :h, :w]
            probs = classify_rows(teacher, f.flatten(1).t()).softmax(dim=1).t().reshape(-1, h, w)
            rows, labs = sample_pixels(f.cpu(), select_pseudo_labels(probs, unseen, top_percent).cpu(), per_class, IGNORE)
            features.append(rows)
            labels.append(labs)
    bank_features, bank_labels = stack_rows(features, labels, dim)
    if not (bank_labels != IGNORE).any():
        raise InputValueError(f"Self-training: the model of MODEL.WEIGHTS predicts no unseen class on any of the "
                              f"{len(dicts)} unlabelled images, so there is nothing to pseudo-label: give a trained "
                              "ZS3Net (projects/ZS3Net/configs/zs_shapes/zs3net.yaml)")
    found = {model.class_set.names[u]: int((bank_labels == u).sum()) for u in unseen.tolist()}
    logger.info(f"Self-training pseudo-labels on {len(dicts)} unlabelled images (rows per unseen class): {found}")
    return FeatureBank(bank_features, bank_labels, model.class_set.names)
