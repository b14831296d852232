"""Dataset mappers beyond detectron2's DatasetMapper, chosen by cfg.INPUT.DATASET_MAPPER_NAME."""
from detectron2.data import DatasetMapper

from ...errors import InputValueError

from .mask_former import (
    AUGMENTATIONS, MaskFormerInstanceMapper, MaskFormerPanopticMapper, MaskFormerSemanticMapper,
    build_mask_former_augmentation,
)
from .unreadable import NameUnreadableFiles

__all__ = [
    "MaskFormerPanopticMapper",
    "MaskFormerInstanceMapper",
    "MaskFormerSemanticMapper",
    "MAPPERS",
    "AUGMENTATIONS",
    "build_dataset_mapper",
    "build_mask_former_augmentation",
    "NameUnreadableFiles",
]

# INPUT.DATASET_MAPPER_NAME -> mapper class ("" = detectron2's DatasetMapper, the R-CNN family).
MAPPERS = {
    "mask_former_panoptic": MaskFormerPanopticMapper,
    "mask_former_instance": MaskFormerInstanceMapper,
    "mask_former_semantic": MaskFormerSemanticMapper,
}


def build_dataset_mapper(cfg, is_train: bool = True):
    """The training mapper cfg.INPUT.DATASET_MAPPER_NAME names ("" = detectron2's DatasetMapper); a typo
    fails here, not mid-training."""
    name = cfg.INPUT.get("DATASET_MAPPER_NAME", "")
    if name == "":
        return DatasetMapper(cfg, is_train)
    if name not in MAPPERS:
        valid = ", ".join(repr(n) for n in ["", *MAPPERS])
        raise InputValueError(f"unknown INPUT.DATASET_MAPPER_NAME {name!r}; valid: {valid}")
    if is_train:
        _check_training_sets_provide(cfg, name)
    return MAPPERS[name](cfg, is_train)


# What each mapper reads, as the zero-shot task a dataset's metadata must provide.
_TASK_OF_MAPPER = {"mask_former_panoptic": "panoptic", "mask_former_instance": "instance",
                   "mask_former_semantic": "semantic"}


def _check_training_sets_provide(cfg, name):
    """A panoptic mapper on a dataset without panoptic annotations (e.g. zs_shapes_train, the
    instance view) would fail on the first image: say so before training, with the fix."""
    from detectron2.data import MetadataCatalog

    task = _TASK_OF_MAPPER[name]
    for dataset in cfg.DATASETS.TRAIN:
        tasks = MetadataCatalog.get(dataset).get("zero_shot_tasks", None)
        if tasks is not None and task not in tasks:
            hint = f" (its panoptic view is '{dataset}_panoptic')" if task == "panoptic" else ""
            raise InputValueError(
                f"DATASETS.TRAIN '{dataset}' has no {task} annotations (it provides {', '.join(tasks)}), but "
                f"INPUT.DATASET_MAPPER_NAME '{name}' trains on them: use a dataset with {task} annotations{hint} "
                f"or the mapper of its task")
