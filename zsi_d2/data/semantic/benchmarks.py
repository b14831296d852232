"""The semantic zero-shot benchmarks prepared from their standard files: Pascal VOC 15/5, Pascal-Context 29/4
and ADE20k-Full 572/275.

One record per benchmark says where its files live under `$DETECTRON2_DATASETS`, what its source
label values mean and how its files are listed and read (the benchmark's own module: voc.py,
pascal_context.py, ade20k_full.py); preparation (pipeline.py) and registration (register.py) are
written once for all. The class lists and their order come from zsi_d2.data.splits; the label
order is the dataset's (VOC order; Pascal-Context's 33_labels.txt order; ADE20k-Full's published
trainId order), as COCO-Stuff's.
"""
import hashlib
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ...errors import InputKeyError
from .. import splits as _splits
from ..zs_shapes import datasets_root
from . import ade20k_full, pascal_context, voc

__all__ = ["SemanticBenchmark", "SEMANTIC_BENCHMARKS", "get_benchmark", "benchmark_root", "prepared_paths",
           "prepare_command", "SUMMARY_FILE"]

SUMMARY_FILE = "summary.json"  # written last: its presence means the split is fully prepared
PREPARE_SCRIPT = "datasets/prepare_semantic_zero_shot.py"


@dataclass(frozen=True)
class SemanticBenchmark:
    split: str  # name in zsi_d2.data.splits
    title: str
    folder: str  # under $DETECTRON2_DATASETS
    classes: Tuple[str, ...]  # label order: a prepared label is a position in this list (stuff_classes)
    dataset_ids: Tuple[int, ...]  # each class's official id (stuff_dataset_id_to_contiguous_id's keys)
    source_values: Tuple[int, ...]  # each class's value in the source label maps
    unlabelled: Tuple[int, ...]  # source values that are no class (-> ignore_label)
    ignore_label: int
    label_dtype: type  # of the prepared label PNGs
    source_labels: str  # what a legal source label map is (for the error on any other value)
    check_sources: Callable[[str], None]  # root -> None, or an error naming every missing file
    items: Callable[[str, str], list]  # (root, "train" | "val") -> [(stem, source label file)]
    read_label: Callable[[str], np.ndarray]  # module-level: worker processes receive it
    image_dir: Callable[[str, str], str]  # (root, subset) -> folder of <stem>.jpg
    prepare_sources: Optional[Callable] = None  # (root, workers, progress, force): write derived sources first
    published_lists: Optional[Dict[str, Tuple[int, str]]] = None  # subset -> (size, sha256 of the sorted stems)
    published_by: str = ""  # whose lists they are (SPNet's, CaGNet's)
    image_ext: str = ".jpg"


SEMANTIC_BENCHMARKS: Dict[str, SemanticBenchmark] = {
    b.split: b for b in (
        SemanticBenchmark(
            split="voc_15_5", title="Pascal VOC 2012 + SBD", folder=os.path.join("VOCdevkit", "VOC2012"),
            classes=_splits.VOC_CLASSES, dataset_ids=tuple(range(1, len(_splits.VOC_CLASSES) + 1)),
            source_values=tuple(range(1, len(_splits.VOC_CLASSES) + 1)), unlabelled=voc.VOC_UNLABELLED,
            ignore_label=255, label_dtype=np.uint8, source_labels=voc.SOURCE_LABELS,
            check_sources=voc.check_sources, items=voc.items, read_label=voc.read_label, image_dir=voc.image_dir,
            published_lists=voc.PUBLISHED_LISTS, published_by="SPNet",
        ),
        SemanticBenchmark(
            split="pascal_context_29_4", title="Pascal-Context 33 (VOC 2010)", folder=os.path.join("VOCdevkit", "VOC2010"),
            classes=_splits.PASCAL_CONTEXT_CLASSES, dataset_ids=tuple(range(1, len(_splits.PASCAL_CONTEXT_CLASSES) + 1)),
            source_values=tuple(range(1, len(_splits.PASCAL_CONTEXT_CLASSES) + 1)),
            unlabelled=pascal_context.CONTEXT_UNLABELLED, ignore_label=255, label_dtype=np.uint8,
            source_labels=pascal_context.SOURCE_LABELS, check_sources=pascal_context.check_sources,
            items=pascal_context.items, read_label=pascal_context.read_label, image_dir=pascal_context.image_dir,
            published_lists=pascal_context.PUBLISHED_LISTS, published_by="CaGNet",
        ),
        SemanticBenchmark(
            split="ade20k_full_572_275", title="ADE20k-Full 847", folder="ADE20K_2021_17_01",
            classes=_splits.ADE20K_FULL_CLASSES, dataset_ids=_splits.ADE20K_FULL_IDS,
            source_values=tuple(range(len(_splits.ADE20K_FULL_CLASSES))), unlabelled=(ade20k_full.ADE_IGNORE_LABEL,),
            ignore_label=ade20k_full.ADE_IGNORE_LABEL, label_dtype=np.uint16, source_labels=ade20k_full.SOURCE_LABELS,
            check_sources=ade20k_full.check_sources, items=ade20k_full.items, read_label=ade20k_full.read_label,
            image_dir=ade20k_full.image_dir, prepare_sources=ade20k_full.prepare_sources,
        ),
    )
}


def get_benchmark(split_name: str) -> SemanticBenchmark:
    try:
        return SEMANTIC_BENCHMARKS[split_name]
    except KeyError:
        raise InputKeyError(f"'{split_name}' is not a semantic benchmark prepared by {PREPARE_SCRIPT}; choose from "
                            f"{sorted(SEMANTIC_BENCHMARKS)}") from None


def benchmark_root(split_name: str, root: Optional[str] = None) -> str:
    """The benchmark's folder under `root` (default: $DETECTRON2_DATASETS), absolute."""
    return os.path.join(datasets_root(root), get_benchmark(split_name).folder)


def prepare_command(split_name: str, root: Optional[str] = None) -> str:
    return f"python {PREPARE_SCRIPT} --split {split_name} --root {root or benchmark_root(split_name)}"


def prepared_paths(split_name: str, root: str) -> Dict[str, str]:
    """What the preparation writes under the benchmark's folder `root` (and registration reads)."""
    base = os.path.join(root, "zero_shot", split_name)
    return {
        "dir": base,
        "summary": os.path.join(base, SUMMARY_FILE),
        "train_sem_seg": os.path.join(base, "sem_seg_train"),  # labels in `classes` order; unseen = ignore
        "val_sem_seg": os.path.join(base, "sem_seg_val"),  # labels in `classes` order, every class
    }


def list_note(benchmark: SemanticBenchmark, subset: str, stems: List[str]) -> str:
    """Whether the subset's images are exactly the published list the benchmark's numbers are on."""
    size, digest = benchmark.published_lists[subset]
    if hashlib.sha256("\n".join(sorted(stems)).encode()).hexdigest() == digest:
        return f"the published list ({size} images)"
    return (f"NOT the published list: {len(stems)} images where {benchmark.published_by}'s list has {size} "
            "(incomplete or extra label files?); numbers will not be comparable")
