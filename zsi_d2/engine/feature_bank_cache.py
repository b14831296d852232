"""A generative second stage's feature bank, computed once per (checkpoint, data, config, class set)
and cached: PADing's query bank and the pixel-level methods' pixel bank share this.

Why: the stage-1 model is frozen, so its features of a training image never change; a second
stage reads them from a file instead of running the model every iteration. The file name is keyed
on the checkpoint's bytes, the training images, the input and model config without the second
stage's own keys (so every ablation of one stage 1 shares a bank) and the class set; with several
processes the first computes the bank and the others read the file.
"""
import contextlib
import hashlib
import logging
import os
import random
from typing import Callable, Sequence

import numpy as np
import torch

from detectron2.data import DatasetCatalog
from detectron2.utils import comm

from ..modeling.class_set import use_class_set
from ..modeling.generative import FeatureBank
from .resume import RNGState

__all__ = ["own_random_state", "bank_cache_key", "load_or_compute_bank", "batches_of"]

logger = logging.getLogger(__name__)


def batches_of(loader, size: int):
    """A test loader's one-image lists, regrouped into lists of `size` (the last may be shorter): the
    frozen model sees the images padded together, as in training."""
    batch = []
    for item in loader:
        batch.extend(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@contextlib.contextmanager
def own_random_state(seed: int):
    """The bank's augmentation and sampling draws from `seed`, and the caller's generators untouched:
    training then draws the same numbers whether the bank was computed or read from the cache (so a
    resumed run equals an uninterrupted one), and the bank is the same in every run."""
    saved = RNGState().state_dict()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        RNGState.restore(saved)


@contextlib.contextmanager
def _applied(model, class_set):
    """`class_set` applied to `model` within the block, the previous one restored after."""
    from ..modeling.class_set import apply_class_set
    from ..utils.model import unwrap

    previous = unwrap(model).class_set
    apply_class_set(model, class_set)
    try:
        yield class_set
    finally:
        apply_class_set(model, previous)


def bank_cache_key(cfg, weights: str, dataset_names, dicts, class_names, stage2_keys: Sequence[str]) -> str:
    """What a bank depends on: the checkpoint's bytes, the images, the input and model config without
    MODEL.<stage2_keys> (the second stage's settings) and the class set."""
    h = hashlib.sha1()
    with open(weights, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    for name in dataset_names:
        h.update(name.encode())
    for d in dicts:
        h.update(d["file_name"].encode())
    h.update(cfg.INPUT.dump().encode())
    segmenter = cfg.MODEL.clone()
    segmenter.defrost()
    for key in (*stage2_keys, "META_ARCHITECTURE", "WEIGHTS"):
        segmenter.pop(key, None)
    segmenter.ZERO_SHOT.pop("CALIBRATION")  # a test-time setting, off while the bank is computed
    h.update(segmenter.dump().encode())
    h.update(repr(tuple(class_names)).encode())
    return h.hexdigest()[:16]


def load_or_compute_bank(cfg, model, weights: str, compute: Callable[[list], FeatureBank], *, what: str,
                         folder: str, stage2_keys: Sequence[str], datasets: Sequence[str] = (),
                         class_set=None) -> FeatureBank:
    """The cached bank for (checkpoint, data, config, class set): `compute(dicts)` (by the first
    process, with the class set applied and its own random state) when absent. `datasets`: the
    images (default DATASETS.TRAIN); `class_set`: the classes labels index (default the first
    dataset's: the training set's seen classes)."""
    datasets = list(datasets or cfg.DATASETS.TRAIN)
    dicts = [d for name in datasets for d in DatasetCatalog.get(name)]  # loaded once: key and bank
    chosen = use_class_set(model, datasets[0]) if class_set is None else _applied(model, class_set)
    with chosen as labels_of:
        folder = folder or os.path.join(cfg.OUTPUT_DIR, "feature_bank")
        key = bank_cache_key(cfg, weights, datasets, dicts, labels_of.names, stage2_keys)
        path = os.path.join(folder, f"{what}_{key}.pt")
        if comm.is_main_process() and not os.path.isfile(path):
            with own_random_state(cfg.SEED if cfg.SEED >= 0 else 0):
                bank = compute(dicts)
            os.makedirs(folder, exist_ok=True)
            torch.save(bank.state(), path + ".tmp")
            os.replace(path + ".tmp", path)
            logger.info(f"Stage-2 {what} bank: {len(bank)} images, {int((bank.labels >= 0).sum())} labelled "
                        f"features, saved to {path}")
        comm.synchronize()  # the other processes wait for the file
    bank = FeatureBank.from_state(torch.load(path, map_location="cpu"))
    logger.info(f"Stage-2 {what} bank read from {path} ({len(bank)} images)")
    return bank
