"""Leakage audit: a zero-shot training set must hold no unseen instance, segment or pixel.

    python -m zsi_d2.data.audit DATASET_NAME [DATASET_NAME ...] [--register my_datasets.py ...]
    python -m zsi_d2.data.audit DATASET_NAME --config-file CONFIG   # its DATASETS.REGISTER_MODULES

exits 1 and names the offending images when a training set leaks, 2 (one line) for an unknown
dataset or registration module. `train_net.py` runs the same check before training
(`check_training_sets`); DATASETS.CHECK_LEAKAGE False skips it, loudly.
"""
import argparse
import logging
import shlex
import sys
from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from detectron2.data import DatasetCatalog

from ..errors import InputError, InputValueError, LeakageError
from .metadata import DatasetSetupError, registered_metadata, segment_class_name
from .register_modules import import_register_modules

__all__ = ["Leak", "AuditReport", "audit_dataset", "audit_command", "check_training_sets", "check_unlabelled_pool", "main"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Leak:
    file_name: str
    kind: str  # "instance", "segment" or "pixels"
    class_name: str


@dataclass
class AuditReport:
    dataset_name: str
    num_images: int = 0
    leaks: List[Leak] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.leaks

    def leaking_images(self) -> Tuple[str, ...]:
        return tuple(sorted({leak.file_name for leak in self.leaks}))

    def format(self, max_lines: int = 20) -> str:
        if self.ok:
            return f"{self.dataset_name}: {self.num_images} images, no unseen label: OK"
        lines = [
            f"{self.dataset_name}: LEAK: {len(self.leaks)} unseen labels in "
            f"{len(self.leaking_images())} of {self.num_images} images"
        ]
        lines += [f"  {leak.file_name}: {leak.kind} of unseen class '{leak.class_name}'" for leak in self.leaks[:max_lines]]
        if len(self.leaks) > max_lines:
            lines.append(f"  ... and {len(self.leaks) - max_lines} more")
        return "\n".join(lines)


def _unseen_of(dataset_name, meta):
    unseen = meta.get("unseen_classes", None)
    if unseen is None:
        raise DatasetSetupError(
            f"Dataset '{dataset_name}' has no 'unseen_classes' metadata, so it cannot be audited. Make it "
            f"zero-shot where it is registered: zsi_d2.data.make_zero_shot('{dataset_name}', SPLIT_NAME, MODE)."
        )
    return set(unseen)


def audit_dataset(dataset_name: str, check_pixels: bool = True) -> AuditReport:
    """Look at every annotation, panoptic segment and (optionally) semantic label map."""
    meta = registered_metadata(dataset_name)
    unseen = _unseen_of(dataset_name, meta)
    dicts = DatasetCatalog.get(dataset_name)  # may fill thing_classes (register_coco_instances): read after
    things = list(meta.get("thing_classes", []))
    stuff = list(meta.get("stuff_classes", []))
    report = AuditReport(dataset_name, num_images=len(dicts))
    ignore_label = meta.get("ignore_label", 255)
    unseen_stuff_ids = np.array([i for i, n in enumerate(stuff) if n in unseen], dtype=np.int64)
    for d in tqdm(dicts, desc=f"audit {dataset_name}", disable=len(dicts) < 500, leave=False):
        name = d["file_name"]
        for ann in d.get("annotations", []):
            cls = things[ann["category_id"]]
            if cls in unseen:
                report.leaks.append(Leak(name, "instance", cls))
        for seg in d.get("segments_info", []):
            cls = segment_class_name(meta, seg)
            if cls in unseen:
                report.leaks.append(Leak(name, "segment", cls))
        if check_pixels and "sem_seg_file_name" in d and unseen_stuff_ids.size:
            labels = np.unique(np.asarray(Image.open(d["sem_seg_file_name"])))
            labels = labels[labels != ignore_label]
            for label in np.intersect1d(labels, unseen_stuff_ids):
                report.leaks.append(Leak(name, "pixels", stuff[int(label)]))
    return report


def audit_command(dataset_names, register_modules=()) -> str:
    """The audit command line for these datasets, with the modules that register them."""
    words = ["python", "-m", "zsi_d2.data.audit", *dataset_names]
    for module in register_modules:
        words += ["--register", module]
    return " ".join(shlex.quote(w) for w in words)


def check_training_sets(cfg):
    """Refuse to train on a leaking training set (unless DATASETS.CHECK_LEAKAGE is False)."""
    if not cfg.DATASETS.CHECK_LEAKAGE:
        logger.warning(
            "!!! DATASETS.CHECK_LEAKAGE is False: the training sets are NOT audited for unseen labels. "
            "Results from this run are not fair zero-shot results unless the data is checked elsewhere. !!!"
        )
        return
    for name in cfg.DATASETS.TRAIN:
        report = audit_dataset(name)
        if not report.ok:
            command = audit_command([name], cfg.DATASETS.REGISTER_MODULES)
            raise LeakageError(
                f"Training set '{name}' holds {len(report.leaks)} unseen-class labels in "
                f"{len(report.leaking_images())} images; refusing to train. Remove those labels (for zsi_d2's own "
                f"datasets: re-prepare them, datasets/README.md), then audit it again with: {command}\n"
                f"{report.format()}"
            )
        logger.info(report.format())


LABEL_KEYS = ("annotations", "sem_seg_file_name", "segments_info", "pan_seg_file_name")


def check_unlabelled_pool(names, test_names, key: str):
    """Refuse a self-training pool (the `key` config entry names it) that is not registered, carries a
    label the method could read, shares an image with the test sets `test_names`, or fails the
    leakage audit: self-training (transductive) reads images only, never labels, and never the
    images it is scored on."""
    from .catalog import require_registered

    if not names:
        raise InputValueError(f"{key} is empty: name the unlabelled images to pseudo-label (e.g. 'zs_shapes_unlabelled')")
    tested = {d["file_name"] for name in test_names for d in DatasetCatalog.get(name)}
    for name in names:
        require_registered(name, key)
        records = DatasetCatalog.get(name)
        labelled = [k for k in LABEL_KEYS if any(k in r for r in records)]
        if labelled:
            raise LeakageError(f"Self-training dataset '{name}' carries labels ({', '.join(labelled)}); self-training "
                               "reads images only: give an images-only dataset (e.g. 'zs_shapes_unlabelled')")
        shared = sorted({r["file_name"] for r in records} & tested)
        if shared:
            raise LeakageError(f"Self-training dataset '{name}' shares {len(shared)} images with DATASETS.TEST "
                               f"(e.g. {shared[0]}): pseudo-label images the model is not tested on")
        if not audit_dataset(name).ok:
            raise LeakageError(f"Self-training dataset '{name}' fails the leakage audit (python -m zsi_d2.data.audit {name})")


def _register_modules(args):
    modules = []
    if args.config_file:
        from ..config import get_zsi_d2_cfg

        cfg = get_zsi_d2_cfg()
        cfg.merge_from_file(args.config_file)
        modules += list(cfg.DATASETS.REGISTER_MODULES)
    return modules + list(args.register or [])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("datasets", nargs="+", help="registered dataset names")
    parser.add_argument("--register", action="append", metavar="MODULE",
                        help="dotted module name or .py file that registers the datasets (repeatable)")
    parser.add_argument("--config-file", metavar="CONFIG", help="import the config's DATASETS.REGISTER_MODULES")
    parser.add_argument("--no-pixels", action="store_true", help="skip reading semantic label maps")
    parser.add_argument("--max-lines", type=int, default=20, help="offending entries printed per dataset")
    args = parser.parse_args(argv)
    import zsi_d2  # noqa: F401  (registers datasets)

    status = 0
    try:
        import_register_modules(_register_modules(args))
        for name in args.datasets:
            report = audit_dataset(name, check_pixels=not args.no_pixels)
            print(report.format(args.max_lines))
            status |= int(not report.ok)
    except (InputError, FileNotFoundError, ModuleNotFoundError) as e:  # known mistakes: one line, no traceback
        print(f"audit: error: {e}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
