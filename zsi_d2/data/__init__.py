"""Datasets, splits and their registration in detectron2's catalogs."""
from .splits import ZeroShotSplit, get_split, list_splits, register_split  # noqa: F401
