"""Datasets, splits and their registration in detectron2's catalogs."""
from .splits import ZeroShotSplit, get_split, list_splits, register_split  # noqa: F401
from .metadata import (  # noqa: F401
    ZERO_SHOT_MODES, DatasetSetupError, coco_panoptic_metadata, make_zero_shot, registered_metadata,
    segment_class_name, set_zero_shot_metadata,
)
from .register_modules import import_register_modules  # noqa: F401
from . import zs_shapes  # noqa: E402,F401  (registers zs_shapes_* datasets; generates lazily)
from . import coco  # noqa: E402,F401  (registers the COCO zero-shot datasets; reads no file)
from . import semantic  # noqa: E402,F401  (registers Pascal VOC 15/5 and ADE20k-Full 572/275; reads no file)
