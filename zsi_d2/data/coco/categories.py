"""Category records (official id, name, thing or stuff) of the COCO zero-shot splits.

Why a table and not the files: detectron2 metadata (class lists, id maps) must exist at
registration, before any file is read or even downloaded. The names and ids live in
`zsi_d2.data.splits`; this module only pairs them and checks a file's categories against them.
"""
from typing import Dict, Iterable, List, Mapping

from ...errors import InputKeyError, InputValueError
from .. import splits as _splits
from ..splits import ZeroShotSplit, get_split

__all__ = ["SOURCE_TABLES", "split_categories", "check_source_categories", "category_names_by_id"]

# split name -> (names, official ids) of the standard file the split is prepared from.
SOURCE_TABLES = {
    "coco_48_17": (_splits.COCO_THING_CLASSES, _splits.COCO_THING_IDS),
    "coco_65_15": (_splits.COCO_THING_CLASSES, _splits.COCO_THING_IDS),
    "coco_panoptic_119_14": (_splits.COCO_PANOPTIC_CLASSES, _splits.COCO_PANOPTIC_IDS),
    "coco_stuff_156_15": (_splits.COCO_STUFF_CLASSES, _splits.COCO_STUFF_IDS),
    "coco_stuff_167_15": (_splits.COCO_STUFF_182_CLASSES, _splits.COCO_STUFF_182_IDS),
}


def _table(split_name: str):
    try:
        names, ids = SOURCE_TABLES[split_name]
    except KeyError:
        raise InputKeyError(
            f"No COCO category table for split '{split_name}': use one of the COCO splits, {sorted(SOURCE_TABLES)}"
        ) from None
    if len(names) != len(ids) or len(set(ids)) != len(ids):
        raise ValueError(f"Category table of '{split_name}' is malformed (names/ids do not pair up)")
    split = get_split(split_name)
    covered = set(split.classes) | set(split.ignored)
    if covered != set(names):
        raise ValueError(
            f"Split '{split_name}' does not cover its dataset's categories exactly: "
            f"missing {sorted(set(names) - covered)}, unknown {sorted(covered - set(names))}"
        )
    return split, names, ids


def split_categories(split_name: str) -> List[dict]:
    """The split's classes (seen + unseen, ignored ones left out) in the dataset's own order.

    Contiguous ids everywhere (metadata, label maps) are positions in this list, so they agree
    with detectron2's built-in COCO ids whenever the split keeps every class.
    """
    split, names, ids = _table(split_name)
    keep = set(split.classes)
    return [
        {"id": int(i), "name": n, "isthing": int(n not in split.stuff)}
        for n, i in zip(names, ids)
        if n in keep
    ]


def category_names_by_id(split_name: str) -> Dict[int, str]:
    """Every category of the source file (ignored ones included): official id -> name."""
    _, names, ids = _table(split_name)
    return {int(i): n for n, i in zip(names, ids)}


def check_source_categories(categories: Iterable[Mapping], split: ZeroShotSplit, source: str) -> Dict[int, str]:
    """Refuse a file whose categories the split does not know, or whose ids are not the official ones.

    Returns {id: name} of the file. A renamed class (e.g. "motorbike" for "motorcycle") would
    otherwise be silently dropped or, worse, silently kept on the wrong side of the split.
    """
    cats = list(categories)
    names = [c["name"] for c in cats]
    split.check_known(names, what=f"category names in {source}")
    official = category_names_by_id(split.name)
    wrong = [
        f"id {c['id']} is '{c['name']}' (official: '{official.get(int(c['id']), 'no such id')}')"
        for c in cats
        if official.get(int(c["id"])) != c["name"]
    ]
    if wrong:
        raise InputValueError(
            f"Categories of {source} do not match the official ids of split '{split.name}' (use the "
            "official COCO 2017 annotation files): " + "; ".join(wrong[:10])
        )
    return {int(c["id"]): c["name"] for c in cats}
