"""Zero-shot metadata on detectron2 datasets: what a split means for one registered dataset."""
from detectron2.data import MetadataCatalog

from .splits import get_split

__all__ = ["set_zero_shot_metadata", "ZERO_SHOT_MODES"]

# "train": seen classes only; "gzsi": seen + unseen evaluated together; "zsi": unseen only.
ZERO_SHOT_MODES = ("train", "gzsi", "zsi")


def set_zero_shot_metadata(dataset_name, split_name, mode, tasks=("instance",)):
    """Attach a split to a dataset already registered with thing_classes (and stuff_classes).

    This is all a custom dataset needs to be trained and evaluated by zsi_d2: the class sets,
    evaluators and leakage audit all read these fields.
    """
    if mode not in ZERO_SHOT_MODES:
        raise ValueError(f"mode must be one of {ZERO_SHOT_MODES}, got '{mode}'")
    split = get_split(split_name)
    meta = MetadataCatalog.get(dataset_name)
    classes = list(meta.get("thing_classes", [])) + list(meta.get("stuff_classes", []))
    if not classes:
        raise KeyError(f"Dataset '{dataset_name}' has no thing_classes/stuff_classes metadata yet")
    split.check_known(dict.fromkeys(classes), what=f"classes of dataset '{dataset_name}'")
    meta.set(
        seen_classes=split.seen,
        unseen_classes=split.unseen,
        ignored_classes=split.ignored,
        zero_shot_split=split.name,
        zero_shot_mode=mode,
        evaluator_type="zero_shot",
        zero_shot_tasks=tuple(tasks),
    )
    return meta
