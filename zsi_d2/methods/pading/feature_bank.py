"""The frozen stage-1 segmenter's query embeddings of every annotated training image, computed once
and cached: PADing's FeatureBank (zsi_d2.modeling.generative.feature_bank).

Why: in stage 2 the segmenter is frozen, so its outputs on an image never change; PADing's
reference runs it on every batch anyway (most of its stage-2 time). Here each training image goes
through it once (the training mapper, one augmentation draw), the last layer's queries are matched
to the ground truth by the stage-1 Hungarian matcher (as the reference matches them), and the
(Q, C) embeddings with their labels (a seen class, or NO_OBJECT) are kept. Images without a
target (nothing annotated, or everything cropped away) are left out, as detectron2's loader drops
them (DATALOADER.FILTER_EMPTY_ANNOTATIONS). Calibrated stacking is a test-time setting and is off
while the bank is computed. The cache file is keyed on the checkpoint's bytes, the training
images, the input and model config and the class set, so a changed one is never reused. With
several processes the bank is computed once, by the first, and read by the others.
"""
import contextlib
import hashlib
import logging
import os
import random
import time

import numpy as np

import torch
from torch.utils.data import SequentialSampler

from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.utils import comm

from ...data.mappers import NameUnreadableFiles, build_dataset_mapper
from ...errors import InputValueError
from ...engine.resume import RNGState
from ...modeling.class_set import use_class_set
from ...modeling.generative import NO_OBJECT, FeatureBank

__all__ = ["compute_query_bank", "load_or_compute_query_bank", "query_bank_cache_key"]

logger = logging.getLogger(__name__)


def _batches(loader, size):
    """The test loader's one-image lists, regrouped into lists of `size` (the last may be shorter)."""
    batch = []
    for item in loader:
        batch.extend(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.no_grad()
def compute_query_bank(cfg, model, dicts, batch_size: int = 8) -> FeatureBank:
    """Run the (frozen) model once over the training images `dicts`, `batch_size` images per forward
    (padded together, as in training); match its last-layer queries; keep images with a target.
    The logits matched are `predict`'s, uncalibrated: calibration is a test-time setting."""
    mapper = NameUnreadableFiles(build_dataset_mapper(cfg, is_train=True))
    # Every image, in order, in whichever process computes the bank (the default sampler would shard).
    loader = build_detection_test_loader(dicts, mapper=mapper, sampler=SequentialSampler(dicts),
                                         num_workers=cfg.DATALOADER.NUM_WORKERS)
    was_training = model.training
    model.eval()
    queries, labels, start, done, reported, empty = [], [], time.perf_counter(), 0, 0, 0
    try:
        for batch in _batches(loader, batch_size):
            done += len(batch)
            empty += sum(1 for x in batch if not len(x["instances"]))
            batch = [x for x in batch if len(x["instances"])]
            if batch:
                images = model.preprocess_image(batch)
                out = model.predict(images.tensor)
                targets = model.prepare_targets(batch, images)
                matches = model.criterion.matcher(out["pred_logits"], out["pred_masks"], targets)
                for b, (query_idx, target_idx) in enumerate(matches):
                    label = torch.full((out["pred_queries"].shape[1],), NO_OBJECT, dtype=torch.long)
                    label[query_idx] = targets[b]["labels"][target_idx].cpu()
                    queries.append(out["pred_queries"][b].cpu())
                    labels.append(label)
            if done - reported >= 200 or done == len(dicts):
                reported = done
                logger.info(f"Stage-2 query bank: {done}/{len(dicts)} images "
                            f"({time.perf_counter() - start:.0f} s)")
    finally:
        model.train(was_training)
    if not queries:
        raise InputValueError("No annotated training images in DATASETS.TRAIN: nothing to take query embeddings "
                              "from; train on a dataset with annotations")
    if done != len(dicts):
        raise RuntimeError(f"Stage-2 query bank: the loader gave {done} of {len(dicts)} training images")
    if empty:
        logger.info(f"Stage-2 query bank: {empty} of {len(dicts)} training images have no target and are left out")
    return FeatureBank(torch.stack(queries), torch.stack(labels), model.class_set.names)


@contextlib.contextmanager
def own_random_state(seed: int):
    """The bank's augmentation and point draws from `seed`, and the caller's generators untouched:
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


def query_bank_cache_key(cfg, weights: str, dataset_names, dicts, class_names) -> str:
    """What the bank depends on: the checkpoint's bytes, the images, the input and segmenter config
    (not the stage-2 settings, so every ablation of a stage 1 shares one bank) and the class set."""
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
    for key in ("PADING", "META_ARCHITECTURE", "WEIGHTS"):
        segmenter.pop(key)
    segmenter.ZERO_SHOT.pop("CALIBRATION")  # off while the bank is computed
    h.update(segmenter.dump().encode())
    h.update(repr(tuple(class_names)).encode())
    return h.hexdigest()[:16]


def load_or_compute_query_bank(cfg, model, weights: str) -> FeatureBank:
    """The cached bank for (checkpoint, data, config, class set), computed (by the first process)
    and saved when absent."""
    datasets = list(cfg.DATASETS.TRAIN)
    dicts = [d for name in datasets for d in DatasetCatalog.get(name)]  # loaded once: key and bank
    with use_class_set(model, datasets[0]) as train_set:  # the seen classes: targets are matched among them
        folder = cfg.MODEL.PADING.FEATURE_CACHE_DIR or os.path.join(cfg.OUTPUT_DIR, "feature_bank")
        path = os.path.join(folder, f"queries_{query_bank_cache_key(cfg, weights, datasets, dicts, train_set.names)}.pt")
        if comm.is_main_process() and not os.path.isfile(path):
            with own_random_state(cfg.SEED if cfg.SEED >= 0 else 0):
                bank = compute_query_bank(cfg, model, dicts, batch_size=cfg.MODEL.PADING.BANK_IMAGES_PER_FORWARD)
            os.makedirs(folder, exist_ok=True)
            torch.save(bank.state(), path + ".tmp")
            os.replace(path + ".tmp", path)
            matched = int((bank.labels >= 0).sum())
            logger.info(f"Stage-2 query bank: {len(bank)} images, {matched} matched queries, saved to {path}")
        comm.synchronize()  # the other processes wait for the file
    bank = FeatureBank.from_state(torch.load(path, map_location="cpu"))
    logger.info(f"Stage-2 query bank read from {path} ({len(bank)} images)")
    return bank
