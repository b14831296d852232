"""Zero-shot evaluation: every metric per class and summarised as seen / unseen / harmonic mean.

* `ZeroShotInstanceEvaluator` - box/mask AP at IoU 0.4/0.5/0.6 and Recall@100 (pycocotools).
* `ZeroShotPanopticEvaluator` - PQ / SQ / RQ (All, Things, Stuff), in-house PQ following
  panopticapi exactly.
* `ZeroShotSemanticEvaluator` - per-class IoU, mIoU over seen / unseen, hIoU, pixel accuracy.

The evaluators are detectron2 `DatasetEvaluator`s configured by dataset metadata
(`seen_classes`, `unseen_classes`, `zero_shot_mode` = "gzsi" | "zsi", ...). The pure functions
behind them (`evaluate_instance_results`, `pq_compute`, `semantic_metrics`, ...) also back the
CLI, `python -m zsi_d2.evaluation`, which scores result files of any framework.
`build_zero_shot_evaluator` (build.py) picks the evaluators a dataset's metadata asks for.
"""
from .build import ZERO_SHOT_TASKS, build_zero_shot_evaluator
from .instance import ZeroShotInstanceEvaluator, evaluate_instance_results, load_coco_gt
from .metrics import (
    format_per_class_table,
    format_zero_shot_table,
    harmonic_mean,
    nanmean,
    summarize_zero_shot,
)
from .panoptic import (
    PQStat,
    ZeroShotPanopticEvaluator,
    evaluate_panoptic,
    id2rgb,
    pq_compute,
    pq_from_segments,
    rgb2id,
    summarize_panoptic,
)
from .semantic import (
    ZeroShotSemanticEvaluator,
    confusion_matrix,
    evaluate_semantic_folders,
    semantic_metrics,
)

__all__ = [
    "build_zero_shot_evaluator",
    "ZERO_SHOT_TASKS",
    "ZeroShotInstanceEvaluator",
    "ZeroShotPanopticEvaluator",
    "ZeroShotSemanticEvaluator",
    "evaluate_instance_results",
    "load_coco_gt",
    "harmonic_mean",
    "nanmean",
    "summarize_zero_shot",
    "format_zero_shot_table",
    "format_per_class_table",
    "PQStat",
    "pq_from_segments",
    "pq_compute",
    "summarize_panoptic",
    "evaluate_panoptic",
    "rgb2id",
    "id2rgb",
    "confusion_matrix",
    "semantic_metrics",
    "evaluate_semantic_folders",
]
