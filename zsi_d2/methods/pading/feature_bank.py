"""The frozen stage-1 segmenter's query embeddings of every training image, computed once and cached.

Why: in stage 2 the segmenter is frozen, so its outputs on an image never change; PADing's
reference runs it on every batch anyway (most of its stage-2 time). Here each training image goes
through it once (the training mapper, one augmentation draw), the last layer's queries are matched
to the ground truth by the stage-1 Hungarian matcher (as the reference matches them), and the
(Q, C) embeddings with their labels (a seen class, or -1 = no object) are kept. The cache file is
keyed on the checkpoint's bytes, the training images, the input and model config and the class
set, so a changed one is never reused.
"""
import hashlib
import logging
import os
import time

import torch

from detectron2.data import DatasetCatalog, build_detection_test_loader

from ...data.mappers import build_dataset_mapper
from ...modeling.class_set import ClassSet, use_class_set

__all__ = ["QueryBank", "compute_query_bank", "load_or_compute_query_bank"]

logger = logging.getLogger(__name__)


class QueryBank:
    """queries (N, Q, C) float, labels (N, Q) long: index into `names` (seen classes) or -1."""

    def __init__(self, queries: torch.Tensor, labels: torch.Tensor, names):
        self.queries, self.labels, self.names = queries, labels, tuple(names)

    def __len__(self):
        return self.queries.shape[0]

    def relabel(self, class_set: ClassSet) -> torch.Tensor:
        """labels as local indices of `class_set` (no object = len(class_set.names))."""
        lookup = torch.tensor([class_set.names.index(n) for n in self.names] + [len(class_set.names)])
        return lookup[self.labels]  # -1 picks the last entry: no object

    def state(self):
        return {"queries": self.queries, "labels": self.labels, "names": list(self.names)}


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
def compute_query_bank(cfg, model, dicts, batch_size: int = 8) -> QueryBank:
    """Run the (frozen) model once over the training images `dicts`, `batch_size` images per forward
    (padded together, as in training); match its last-layer queries."""
    mapper = build_dataset_mapper(cfg, is_train=True)
    loader = build_detection_test_loader(dicts, mapper=mapper, num_workers=cfg.DATALOADER.NUM_WORKERS)
    was_training = model.training
    model.eval()
    queries, labels, start, done, reported = [], [], time.perf_counter(), 0, 0
    try:
        for batch in _batches(loader, batch_size):
            images = model.preprocess_image(batch)
            out = model.predict(images.tensor)
            targets = model.prepare_targets(batch, images)
            matches = model.criterion.matcher(out["pred_logits"], out["pred_masks"], targets)
            for b, (query_idx, target_idx) in enumerate(matches):
                label = torch.full((out["pred_queries"].shape[1],), -1, dtype=torch.long)
                label[query_idx] = targets[b]["labels"][target_idx].cpu()
                queries.append(out["pred_queries"][b].cpu())
                labels.append(label)
            done += len(batch)
            if done - reported >= 200 or done == len(dicts):
                reported = done
                logger.info(f"Stage-2 query bank: {done}/{len(dicts)} images ({time.perf_counter() - start:.0f} s)")
    finally:
        model.train(was_training)
    if not queries:
        raise ValueError("No training images in DATASETS.TRAIN: nothing to take query embeddings from")
    return QueryBank(torch.stack(queries), torch.stack(labels), model.class_set.names)


def _cache_key(cfg, weights: str, dataset_names, dicts, class_names) -> str:
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
    for key in ("PADING", "META_ARCHITECTURE", "WEIGHTS"):  # stage-2 settings: the same bank serves them all
        segmenter.pop(key)
    h.update(segmenter.dump().encode())
    h.update(repr(tuple(class_names)).encode())
    return h.hexdigest()[:16]


def load_or_compute_query_bank(cfg, model, weights: str) -> QueryBank:
    """The cached bank for (checkpoint, data, config, class set), computed and saved when absent."""
    datasets = list(cfg.DATASETS.TRAIN)
    dicts = [d for name in datasets for d in DatasetCatalog.get(name)]  # loaded once: key and bank
    with use_class_set(model, datasets[0]) as train_set:  # the seen classes: targets are matched among them
        folder = cfg.MODEL.PADING.FEATURE_CACHE_DIR or os.path.join(cfg.OUTPUT_DIR, "feature_bank")
        path = os.path.join(folder, f"queries_{_cache_key(cfg, weights, datasets, dicts, train_set.names)}.pt")
        if os.path.isfile(path):
            state = torch.load(path, map_location="cpu")
            logger.info(f"Stage-2 query bank loaded from {path} ({state['queries'].shape[0]} images)")
            return QueryBank(state["queries"], state["labels"], state["names"])
        bank = compute_query_bank(cfg, model, dicts)
    os.makedirs(folder, exist_ok=True)
    torch.save(bank.state(), path + ".tmp")
    os.replace(path + ".tmp", path)
    matched = int((bank.labels >= 0).sum())
    logger.info(f"Stage-2 query bank: {len(bank)} images, {matched} matched queries, saved to {path}")
    return bank
