"""Semantic zero-shot benchmarks prepared from their standard files: Pascal VOC 15/5 (VOC 2012 + SBD),
Pascal-Context 29/4 (CaGNet's, VOC 2010 + the 33-class Context labels) and ADE20k-Full 572/275
(ZegFormer's frequency split). COCO-Stuff 156/15 and 167/15 are in zsi_d2.data.coco.

benchmarks.py says where each benchmark's files are (its own module, voc.py / pascal_context.py /
ade20k_full.py, lists and reads them), pipeline.py writes a split's label maps
(datasets/prepare_semantic_zero_shot.py is its CLI) and register.py registers the datasets, lazily,
when this package is imported.
"""
from .benchmarks import (  # noqa: F401
    SEMANTIC_BENCHMARKS, benchmark_root, get_benchmark, prepare_command, prepared_paths,
)
from .pipeline import prepare_semantic_split  # noqa: F401
from .register import (  # noqa: F401
    SEMANTIC_ZERO_SHOT_DATASETS, load_semantic_zero_shot, register_all_semantic_zero_shot, semantic_dataset_names,
    semantic_zero_shot_metadata,
)

register_all_semantic_zero_shot()
