"""Which classes a results file is scored over: seen / unseen names and semantic label spaces.

The library side of `python -m zsi_d2.evaluation`: the class groups from --unseen or a registered
split, and the classes a semantic label PNG's values stand for (a categories file, or a registered
dataset's `stuff_classes`, as detectron2's label PNGs index them). Input mistakes are the
project's `InputError`s, one line naming the option and the fix.
"""
import logging
from typing import List, Optional, Sequence, Tuple

from ..errors import InputValueError
from .files import read_json

__all__ = ["resolve_classes", "semantic_label_space"]

logger = logging.getLogger(__name__)


def resolve_classes(
    valid_names: Sequence[str], unseen: Optional[str], split: Optional[str]
) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(seen, unseen) names among `valid_names` (the GT's classes, in GT order).

    --unseen: comma-separated names, each must be a GT class; all other GT classes are seen.
    --split: the registered split's seen/unseen, keeping only names that are GT classes (a
    split may cover stuff classes an instance GT does not have), which must leave some class.
    """
    valid = list(valid_names)
    if unseen is not None:
        names = [n.strip() for n in unseen.split(",") if n.strip()]
        if not names:
            raise InputValueError("--unseen is empty")
        unknown = [n for n in names if n not in valid]
        if unknown:
            raise InputValueError(f"Unknown class name(s) in --unseen: {unknown}. Valid names: {valid}")
        unseen_set = set(names)
        return tuple(n for n in valid if n not in unseen_set), tuple(names)
    from ..data.splits import get_split

    try:
        sp = get_split(split)
    except KeyError as e:
        raise InputValueError(e.args[0]) from None
    valid_set = set(valid)
    seen_names = tuple(n for n in sp.seen if n in valid_set)
    unseen_names = tuple(n for n in sp.unseen if n in valid_set)
    skipped = [n for n in sp.classes if n not in valid_set]
    if not seen_names and not unseen_names:
        raise InputValueError(f"Split '{split}' shares no class with the ground truth. GT classes: {valid}")
    if skipped:
        logger.info(f"{len(skipped)} class(es) of split '{split}' are not in the GT and are skipped: {skipped}")
    return seen_names, unseen_names


def categories_file(path: str) -> List[dict]:
    categories = read_json(path, "Categories json (--categories)")
    if not isinstance(categories, list) or not categories or not all(
        isinstance(c, dict) and {"id", "name"} <= set(c) for c in categories
    ):
        raise InputValueError(f"Categories json (--categories) {path} must be a json list of {{\"id\", \"name\"}} objects")
    return categories


def registered_dataset(name: str):
    """The metadata of a registered dataset; an unknown name lists the close registered ones."""
    from detectron2.data import MetadataCatalog

    from ..data.catalog import require_registered

    require_registered(name, "--dataset")
    return MetadataCatalog.get(name)


def label_space_of_split(split: str):
    """(dataset name, metadata) of a registered dataset of `split` with a semantic label space.

    All registered datasets of the split must agree on stuff_classes and ignore_label (they do
    for zs_shapes, the COCO splits, Pascal VOC and ADE20k-Full); otherwise --dataset has to say which one is meant.
    Open-vocabulary sets (`open_vocabulary_classes`: the split's classes plus its ignored ones)
    are left out: the split's own label space is meant; name one with --dataset.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    found = {}
    for name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if meta.get("open_vocabulary_classes", None):
            continue
        if meta.get("zero_shot_split", None) == split and meta.get("stuff_classes", None):
            found.setdefault((tuple(meta.stuff_classes), meta.get("ignore_label", 255)), []).append(name)
    if not found:
        raise InputValueError(f"No registered dataset of split '{split}' has a semantic label space (stuff_classes): "
                       "pass --categories FILE (a json list of {\"id\", \"name\"}) or --dataset NAME")
    if len(found) > 1:
        names = [v[0] for v in found.values()]
        raise InputValueError(f"Registered datasets of split '{split}' use different label spaces ({names}): "
                       "say which with --dataset NAME")
    name = next(iter(found.values()))[0]
    return name, MetadataCatalog.get(name)


def semantic_label_space(categories_path: Optional[str], dataset: Optional[str], split: Optional[str],
                         ignore_label: Optional[int] = None):
    """(categories, ignore label, metadata or None): --categories, else --dataset, else --split.

    A registered dataset's label PNGs hold indices into its `stuff_classes` (detectron2's
    convention, which zs_shapes and the COCO, VOC and ADE20k-Full preparations follow), ignore = `ignore_label`.
    """
    from .semantic import categories_from_metadata

    if categories_path:
        return categories_file(categories_path), 255 if ignore_label is None else ignore_label, None
    if dataset:
        name, meta = dataset, registered_dataset(dataset)
    elif split:
        name, meta = label_space_of_split(split)
    else:
        raise InputValueError("semantic evaluation needs the label values' classes: pass --categories FILE (a json "
                       "list of {\"id\", \"name\"}), --dataset NAME or --split NAME of a registered dataset")
    categories = categories_from_metadata(meta, name)
    ignore = int(meta.get("ignore_label", 255)) if ignore_label is None else ignore_label
    logger.info(f"Label values are indices into stuff_classes of '{name}' ({len(categories)} classes, "
                f"ignore {ignore})")
    return categories, ignore, (meta, name)
