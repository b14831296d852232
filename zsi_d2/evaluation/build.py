"""Pick evaluators from a dataset's metadata, so no evaluation flag is set by hand."""
import logging

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluators

from ..data.metadata import ZERO_SHOT_TASKS
from ..errors import InputValueError

from .instance import ZeroShotInstanceEvaluator
from .panoptic import ZeroShotPanopticEvaluator
from .semantic import ZeroShotSemanticEvaluator

__all__ = ["build_zero_shot_evaluator", "ZERO_SHOT_TASKS"]

logger = logging.getLogger(__name__)



def build_zero_shot_evaluator(cfg, dataset_name, output_folder=None):
    """Evaluators for the tasks the dataset supports (metadata `zero_shot_tasks`) that the config
    asks for (TEST.ZERO_SHOT_TASKS); the ZSI/GZSI mode comes from the metadata too."""
    meta = MetadataCatalog.get(dataset_name)
    if meta.get("evaluator_type", None) != "zero_shot":
        raise InputValueError(
            f"Dataset '{dataset_name}' has evaluator_type={meta.get('evaluator_type', None)!r}, not "
            "'zero_shot': zsi_d2 evaluates only datasets with zero-shot metadata (seen/unseen classes "
            "and mode). Make it zero-shot where it is registered: zsi_d2.data.make_zero_shot(name, split, mode)."
        )
    unknown = [t for t in cfg.TEST.ZERO_SHOT_TASKS if t not in ZERO_SHOT_TASKS]
    if unknown:
        raise InputValueError(f"TEST.ZERO_SHOT_TASKS has unknown tasks {unknown}; choose from {ZERO_SHOT_TASKS}")
    supported = tuple(meta.get("zero_shot_tasks", ("instance",)))
    tasks = [t for t in cfg.TEST.ZERO_SHOT_TASKS if t in supported]
    skipped = [t for t in cfg.TEST.ZERO_SHOT_TASKS if t not in supported]
    if skipped:
        view = f"{dataset_name}_panoptic"
        hint = (f": its panoptic view '{view}' has them" if "panoptic" in skipped and view in DatasetCatalog.list()
                else "")
        logger.warning(f"TEST.ZERO_SHOT_TASKS asks for {', '.join(skipped)}, which '{dataset_name}' has no "
                       f"annotations for: not evaluated{hint}")
    if not tasks:
        raise InputValueError(
            f"Dataset '{dataset_name}' supports {supported}, but TEST.ZERO_SHOT_TASKS asks for "
            f"{list(cfg.TEST.ZERO_SHOT_TASKS)}: nothing to evaluate. Add one of {list(supported)} to "
            "TEST.ZERO_SHOT_TASKS, or test another dataset"
        )
    evaluators = []
    for task in tasks:
        if task == "instance":
            iou_types = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
            evaluators.append(ZeroShotInstanceEvaluator(dataset_name, tasks=iou_types, output_dir=output_folder))
        elif task == "panoptic":
            evaluators.append(ZeroShotPanopticEvaluator(dataset_name, output_dir=output_folder))
        else:
            evaluators.append(ZeroShotSemanticEvaluator(dataset_name, output_dir=output_folder))
    logger.info(f"Evaluating {dataset_name} ({meta.zero_shot_mode}) on: {', '.join(tasks)}")
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)
