"""Hold out part of a training set: `<name>_fit` to train on, `<name>_holdout` to choose test-time
settings on (e.g. the calibrated-stacking gamma) without any unseen label.

Why: a zero-shot training set holds seen classes only, so its held-out part is the one place where
a test-time setting can be tuned without looking at unseen classes; images the model trained on
would make it look more certain than it is on new images.

    from zsi_d2.data.holdout import register_holdout_split
    register_holdout_split("coco_zsi_48_17_train", fraction=0.05)
    # DATASETS.TRAIN ("coco_zsi_48_17_train_fit",)
    # MODEL.ZERO_SHOT.CALIBRATION.DATASETS ("coco_zsi_48_17_train_holdout",)

Which images are held out depends only on each file name and `seed` (not on the order or number of
images), so the split is stable across machines and runs.
"""
import hashlib
import logging
from typing import Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..errors import InputValueError
from .catalog import require_registered

__all__ = ["register_holdout_split", "is_held_out"]

logger = logging.getLogger(__name__)

# Metadata naming files of the whole dataset: an evaluator would read the wrong ground truth.
_WHOLE_DATASET_FILES = ("json_file", "panoptic_json")


def is_held_out(file_name: str, fraction: float, seed: int = 0) -> bool:
    """Deterministic: the first 8 bytes of sha1(seed:file_name) as a number in [0, 1) < fraction."""
    digest = hashlib.sha1(f"{seed}:{file_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64 < fraction


def _part(name, fraction, seed, held_out):
    dicts = [d for d in DatasetCatalog.get(name) if is_held_out(d["file_name"], fraction, seed) == held_out]
    logger.info("%s: %d images %s (fraction %.3f, seed %d)", name, len(dicts),
                "held out" if held_out else "kept for training", fraction, seed)
    return dicts


def register_holdout_split(name: str, fraction: float = 0.05, seed: int = 0) -> Tuple[str, str]:
    """Register `<name>_fit` and `<name>_holdout` (lazily, with `name`'s metadata); returns the names."""
    require_registered(name)
    if not 0 < fraction < 1:
        raise InputValueError(f"register_holdout_split('{name}'): fraction must be in (0, 1), got {fraction}")
    source = {k: v for k, v in MetadataCatalog.get(name).as_dict().items()
              if k != "name" and k not in _WHOLE_DATASET_FILES}
    names = (f"{name}_fit", f"{name}_holdout")
    for new, held_out in zip(names, (False, True)):
        if new in DatasetCatalog.list():
            DatasetCatalog.remove(new)
            MetadataCatalog.remove(new)
        DatasetCatalog.register(new, lambda h=held_out: _part(name, fraction, seed, h))
        MetadataCatalog.get(new).set(**source, holdout_of=name, holdout_fraction=fraction, holdout_seed=seed)
    return names
