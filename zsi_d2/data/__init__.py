"""Datasets, splits and their registration in detectron2's catalogs."""
from .splits import ZeroShotSplit, get_split, list_splits, register_split  # noqa: F401
from .metadata import ZERO_SHOT_MODES, set_zero_shot_metadata  # noqa: F401
from .register_modules import import_register_modules  # noqa: F401
from . import zs_shapes  # noqa: E402,F401  (registers zs_shapes_* datasets; generates lazily)
from . import coco  # noqa: E402,F401  (registers the COCO zero-shot datasets; reads no file)
