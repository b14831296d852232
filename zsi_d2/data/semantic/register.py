"""Register the semantic zero-shot benchmarks (Pascal VOC 15/5, Pascal-Context 29/4, ADE20k-Full 572/275) in
detectron2's catalogs.

Lazy and file-free, as the COCO catalog: metadata comes from the split tables, so names resolve
before the data is prepared, and loading a dataset whose files are missing names the path and the
prepare command. The evaluation mode is part of the name: "_train" holds seen labels only (unseen
pixels are the ignore label), "_val" is scored GZSI (seen + unseen), "_val_zsi" ZSI (unseen only);
"_train_images" is the training images without any label (a self-training pool: transductive
methods read images that show unseen objects, never their labels).
"""
import logging
import os
from typing import Dict, Optional

from detectron2.data import MetadataCatalog

from ..metadata import register_builtin_dataset, require_prepared
from ..zs_shapes import datasets_root
from .benchmarks import benchmark_root, get_benchmark, prepare_command, prepared_paths
from .pipeline import check_images

__all__ = ["SEMANTIC_ZERO_SHOT_DATASETS", "semantic_dataset_names", "semantic_zero_shot_metadata",
           "load_semantic_zero_shot", "register_all_semantic_zero_shot"]

logger = logging.getLogger(__name__)

UNLABELLED = "unlabelled"  # an images-only view: no label file in its records, nothing to evaluate

# registered name -> (split, subset, zero_shot_mode or UNLABELLED)
SEMANTIC_ZERO_SHOT_DATASETS = {
    "voc_zss_15_5_train": ("voc_15_5", "train", "train"),
    "voc_zss_15_5_val": ("voc_15_5", "val", "gzsi"),
    "voc_zss_15_5_val_zsi": ("voc_15_5", "val", "zsi"),
    "voc_zss_15_5_train_images": ("voc_15_5", "train", UNLABELLED),
    "pascal_context_zss_29_4_train": ("pascal_context_29_4", "train", "train"),
    "pascal_context_zss_29_4_val": ("pascal_context_29_4", "val", "gzsi"),
    "pascal_context_zss_29_4_val_zsi": ("pascal_context_29_4", "val", "zsi"),
    "pascal_context_zss_29_4_train_images": ("pascal_context_29_4", "train", UNLABELLED),
    "ade20k_full_zss_572_275_train": ("ade20k_full_572_275", "train", "train"),
    "ade20k_full_zss_572_275_val": ("ade20k_full_572_275", "val", "gzsi"),
    "ade20k_full_zss_572_275_val_zsi": ("ade20k_full_572_275", "val", "zsi"),
}


def semantic_dataset_names(split_name: str) -> Dict[str, str]:
    """{registered name: zero_shot_mode} of one split."""
    return {n: mode for n, (s, _, mode) in SEMANTIC_ZERO_SHOT_DATASETS.items() if s == split_name}


def semantic_zero_shot_metadata(dataset_name: str, root: Optional[str] = None) -> dict:
    """Metadata of one registered dataset (before make_zero_shot adds the split's groups).

    `stuff_classes` is the dataset's label order (a prepared label is a position in it; ADE20k-Full:
    the published trainId order), `ignore_label` 255 (VOC, Pascal-Context) or 65535 (ADE20k-Full's 16-bit labels).
    """
    split_name, subset, mode = SEMANTIC_ZERO_SHOT_DATASETS[dataset_name]
    benchmark = get_benchmark(split_name)
    folder = benchmark_root(split_name, root)
    if mode == UNLABELLED:  # the training view's images (found through its prepared label maps), no labels
        return {**semantic_zero_shot_metadata(dataset_name.replace("_train_images", "_train"), root),
                "zero_shot_tasks": (), "unlabelled": True}
    return {
        "stuff_classes": list(benchmark.classes),
        "stuff_dataset_id_to_contiguous_id": {i: c for c, i in enumerate(benchmark.dataset_ids)},
        "ignore_label": benchmark.ignore_label,
        "zero_shot_mode": mode,
        "zero_shot_tasks": ("semantic",),
        "dataset_root": folder,
        "prepare_command": prepare_command(split_name, folder),
        "sem_seg_root": prepared_paths(split_name, folder)[f"{subset}_sem_seg"],
        "image_root": benchmark.image_dir(folder, subset),
    }


def load_semantic_zero_shot(dataset_name: str) -> list:
    """detectron2 dataset dicts (file_name, sem_seg_file_name) of a registered benchmark dataset."""
    meta = MetadataCatalog.get(dataset_name)
    split_name, subset, _ = SEMANTIC_ZERO_SHOT_DATASETS[dataset_name]
    benchmark = get_benchmark(split_name)
    sem_root = require_prepared(dataset_name, "sem_seg_root", meta.sem_seg_root, meta.prepare_command, datasets_root())
    stems = sorted(f[:-len(".png")] for f in os.listdir(sem_root) if f.endswith(".png"))
    image_root = check_images(benchmark, meta.dataset_root, subset, stems)
    logger.info("Loaded %d images of %s", len(stems), dataset_name)
    if meta.get("unlabelled", False):
        return [{"file_name": os.path.join(image_root, s + benchmark.image_ext)} for s in stems]
    return [{"file_name": os.path.join(image_root, s + benchmark.image_ext),
             "sem_seg_file_name": os.path.join(sem_root, s + ".png")} for s in stems]


def register_all_semantic_zero_shot(root: Optional[str] = None) -> None:
    """Register every benchmark dataset under `root` (default: $DETECTRON2_DATASETS); idempotent,
    and called again after DETECTRON2_DATASETS changed, it registers the new paths."""
    for name, (split_name, _, mode) in SEMANTIC_ZERO_SHOT_DATASETS.items():
        register_builtin_dataset(name, lambda n=name: load_semantic_zero_shot(n),
                                 semantic_zero_shot_metadata(name, root), split_name,
                                 "train" if mode == UNLABELLED else mode, root_key="dataset_root")
