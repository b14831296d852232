"""Dataset mappers beyond detectron2's DatasetMapper, chosen by cfg.INPUT.DATASET_MAPPER_NAME."""
from detectron2.data import DatasetMapper

from ...errors import InputValueError

from .mask_former import MaskFormerInstanceMapper, MaskFormerPanopticMapper, MaskFormerSemanticMapper, rgb2id

__all__ = [
    "MaskFormerPanopticMapper",
    "MaskFormerInstanceMapper",
    "MaskFormerSemanticMapper",
    "MAPPERS",
    "build_dataset_mapper",
    "rgb2id",
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
    return MAPPERS[name](cfg, is_train)
