"""COCO zero-shot splits (48/17, 65/15, panoptic 119/14, COCO-Stuff 156/15) from the standard files.

layout.py says where files are, prepare.py holds the protocol rules as pure functions,
pipeline.py writes a split to disk (datasets/prepare_coco_zero_shot.py is its CLI) and
register.py registers the datasets, lazily, when this package is imported.
"""
from .categories import split_categories  # noqa: F401
from .layout import COCO_SPLIT_LAYOUTS, coco_root, prepare_command, prepared_paths, source_paths  # noqa: F401
from .pipeline import check_sources, format_summary, prepare_coco_split  # noqa: F401
from .register import (  # noqa: F401
    COCO_ZERO_SHOT_DATASETS, coco_zero_shot_metadata, dataset_names, load_coco_zero_shot,
    register_all_coco_zero_shot,
)

register_all_coco_zero_shot()
