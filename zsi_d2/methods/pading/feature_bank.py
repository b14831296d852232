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
import logging
import time

import torch
from torch.utils.data import SequentialSampler

from detectron2.data import build_detection_test_loader

from ...data.mappers import NameUnreadableFiles, build_dataset_mapper
from ...errors import InputValueError
from ...engine.feature_bank_cache import batches_of, load_or_compute_bank
from ...modeling.generative import NO_OBJECT, FeatureBank

__all__ = ["compute_query_bank", "load_or_compute_query_bank"]

logger = logging.getLogger(__name__)


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
        for batch in batches_of(loader, batch_size):
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


def load_or_compute_query_bank(cfg, model, weights: str) -> FeatureBank:
    """The cached bank for (checkpoint, data, config, class set), computed (by the first process)
    and saved when absent (zsi_d2.engine.feature_bank_cache)."""
    return load_or_compute_bank(
        cfg, model, weights, lambda dicts: compute_query_bank(cfg, model, dicts, cfg.MODEL.PADING.BANK_IMAGES_PER_FORWARD),
        what="query", folder=cfg.MODEL.PADING.FEATURE_CACHE_DIR, stage2_keys=("PADING",))
