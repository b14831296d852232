"""zs_shapes: the offline, procedurally generated zero-shot segmentation benchmark of zsi_d2.

Classes come from the "zs_shapes" split (zsi_d2/data/splits.py); this package only knows the
attribute words (colours, shapes, tones, patterns). Importing it registers every preset in
detectron2's catalogs without generating anything; the first DatasetCatalog.get generates.
See generate.py for the on-disk layout and register.py for the registered names.
"""
from .difficulty import (  # noqa: F401
    GENERATOR_VERSION, PRESET_ALIASES, PRESETS, ZsShapesDifficulty, difficulty_hash, get_difficulty,
    preset_names,
)
from .generate import dataset_dir, datasets_root, ensure_generated, generate_dataset  # noqa: F401
from .register import dataset_names, load_zs_shapes, register_all_zs_shapes, zs_shapes_metadata  # noqa: F401
from .render import parse_class  # noqa: F401

register_all_zs_shapes()
