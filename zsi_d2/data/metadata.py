"""Zero-shot metadata on detectron2 datasets: what a split means for one registered dataset.

Why: a dataset registered the detectron2 way (`register_coco_instances`, `register_coco_panoptic`,
a semantic folder with `load_sem_seg`) must become zero-shot in one call, `make_zero_shot`, that
fills what detectron2 only fills when the dicts are loaded, replaces detectron2's evaluator_type
and tells, in one line, what is wrong with a name.
"""
import difflib
import json
import logging
import mmap
import os

from detectron2.data import MetadataCatalog

from ..errors import InputFileNotFoundError, InputKeyError, InputValueError
from .catalog import REGISTER_FIX, require_registered
from .splits import get_split, list_splits

__all__ = [
    "ZERO_SHOT_MODES", "DatasetSetupError", "make_zero_shot", "set_zero_shot_metadata", "registered_metadata",
    "coco_panoptic_metadata", "read_json_categories", "segment_class_name", "supported_tasks",
]

logger = logging.getLogger(__name__)

# "train": seen classes only; "gzsi": seen + unseen evaluated together; "zsi": unseen only.
ZERO_SHOT_MODES = ("train", "gzsi", "zsi")

# The detectron2 fields whose meaning depends on the task; (in order) what each registration provides.
_TASK_ORDER = ("instance", "panoptic", "semantic")


class DatasetSetupError(InputKeyError, ValueError):
    """A known mistake in a dataset's zero-shot registration; str() is the one-line message.

    A KeyError (unknown names) and a ValueError (bad values) for callers that catch either; an
    InputError, so train_net.py prints it as one line.
    """


def _close_names(name, candidates, n=5):
    close = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.6)
    return ", ".join(repr(c) for c in close) if close else ""


def registered_metadata(dataset_name, hint=REGISTER_FIX):
    """The dataset's Metadata; a name DatasetCatalog does not know is an error listing close names."""
    require_registered(dataset_name, fix=hint, error=DatasetSetupError)
    return MetadataCatalog.get(dataset_name)


def _get_split(split_name):
    try:
        return get_split(split_name)
    except KeyError:
        close = _close_names(split_name, list_splits())
        close = f" (close: {close})" if close else ""
        raise DatasetSetupError(
            f"Unknown zero-shot split '{split_name}'{close}. Registered splits: {list_splits()}. Register yours "
            "first: zsi_d2.data.register_split(ZeroShotSplit(name, seen=(...), unseen=(...)))."
        ) from None


# ---------------------------------------------------------------------------------------------
# Reading categories without parsing the whole file.
# ---------------------------------------------------------------------------------------------
def _is_category_list(value):
    return isinstance(value, list) and all(isinstance(c, dict) and "id" in c and "name" in c for c in value)


def _categories_at(buf, pos, decoder):
    """The value of the key `"categories"` whose opening quote is at `pos`, or None."""
    if pos > 0 and buf[pos - 1:pos] == b"\\":
        return None  # an escaped quote inside a string, not a key
    end = pos + len(b'"categories"')
    while buf[end:end + 1] in (b" ", b"\t", b"\n", b"\r"):
        end += 1
    if buf[end:end + 1] != b":":
        return None  # the word as a value, not a key
    text = buf[end + 1:].decode("utf-8", errors="replace").lstrip()
    try:
        value, _ = decoder.raw_decode(text)
    except json.JSONDecodeError:
        return None
    return value if _is_category_list(value) else None


def read_json_categories(path):
    """The "categories" list of a COCO json (instances or panoptic).

    Why: COCO (and zs_shapes) write the categories last, so they are read from the end of the file
    without parsing images and annotations, which detectron2 parses anyway when it loads the dataset.
    Falls back to parsing the whole file when no "categories" list is found that way.
    """
    if not os.path.isfile(path):
        raise InputFileNotFoundError(f"COCO json not found: {path}")
    decoder = json.JSONDecoder()
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise InputValueError(f"{path} is empty, not a COCO json")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            pos = buf.rfind(b'"categories"')
            while pos >= 0:
                value = _categories_at(buf, pos, decoder)
                if value is not None:
                    return value
                pos = buf.rfind(b'"categories"', 0, pos)
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputValueError(f"{path} is not a JSON file ({e})") from None
    if not isinstance(data, dict) or not _is_category_list(data.get("categories")):
        raise InputValueError(f"{path} has no COCO 'categories' list (each with 'id' and 'name')")
    return data["categories"]


def _coco_instances_classes(json_file):
    """thing_classes and the id map exactly as detectron2's load_coco_json sets them (ids sorted)."""
    cats = sorted(read_json_categories(json_file), key=lambda c: c["id"])
    return {
        "thing_classes": [c["name"] for c in cats],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
    }


def coco_panoptic_metadata(panoptic_json):
    """Metadata for detectron2's `register_coco_panoptic`, in its standard convention.

    As detectron2's builtin "coco_panoptic_standard": stuff_classes = all categories in id order,
    thing_classes a replica of it, and both id maps point into that one space. detectron2's loader
    reads the id maps from the dict passed at registration, so they must be there from the start.
    """
    cats = sorted(read_json_categories(panoptic_json), key=lambda c: c["id"])
    if any("isthing" not in c for c in cats):
        raise InputValueError(f"{panoptic_json}: every panoptic category needs 'isthing' (1 thing, 0 stuff)")
    names = [c["name"] for c in cats]
    return {
        "thing_classes": list(names),
        "stuff_classes": list(names),
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats) if c["isthing"]},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats) if not c["isthing"]},
    }


# ---------------------------------------------------------------------------------------------
# Panoptic segments: which class list a segment's category_id indexes.
# ---------------------------------------------------------------------------------------------
def _things_share_stuff_space(meta):
    """True under detectron2's standard panoptic convention (thing ids index stuff_classes = all
    classes); False when thing segments index thing_classes (detectron2's "separated" convention,
    zs_shapes and zsi_d2's COCO panoptic registration)."""
    thing_map = meta.get("thing_dataset_id_to_contiguous_id", None)
    stuff_map = meta.get("stuff_dataset_id_to_contiguous_id", None)
    if thing_map and stuff_map:
        return not (set(thing_map.values()) & set(stuff_map.values()))
    return list(meta.get("thing_classes", [])) == list(meta.get("stuff_classes", []))


def segment_class_name(meta, segment):
    """The class name of one panoptic segment of a detectron2 dataset dict (segments_info entry)."""
    cid = segment["category_id"]
    if segment.get("isthing", False) and not _things_share_stuff_space(meta):
        return meta.thing_classes[cid]
    return meta.stuff_classes[cid]


# ---------------------------------------------------------------------------------------------
# Tasks and classes from the registration.
# ---------------------------------------------------------------------------------------------
def supported_tasks(meta):
    """The zero-shot tasks the registration provides ground truth for, from detectron2's fields."""
    provided = {
        "instance": bool(meta.get("json_file", None)),
        "panoptic": bool(meta.get("panoptic_json", None) and meta.get("panoptic_root", None)),
        "semantic": bool(meta.get("stuff_classes", None))
        and (bool(meta.get("sem_seg_root", None)) or meta.get("evaluator_type", None) == "sem_seg"),
    }
    return tuple(t for t in _TASK_ORDER if provided[t])


def _check_tasks(dataset_name, meta, tasks):
    if tasks is None:
        tasks = supported_tasks(meta)
        if not tasks:
            raise DatasetSetupError(
                f"Dataset '{dataset_name}' has no json_file, panoptic_json/panoptic_root or semantic "
                "stuff_classes + sem_seg_root in its metadata, so no zero-shot task can be evaluated on it. "
                "Register it with register_coco_instances / register_coco_panoptic, or set those fields."
            )
        return tasks
    tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
    unknown = [t for t in tasks if t not in _TASK_ORDER]
    if unknown:
        raise DatasetSetupError(f"Unknown zero-shot task(s) {unknown} for '{dataset_name}'; choose from {_TASK_ORDER}")
    missing = [t for t in tasks if t not in supported_tasks(meta)]
    if missing:
        raise DatasetSetupError(
            f"Dataset '{dataset_name}' cannot provide task(s) {missing}: instance needs json_file, panoptic "
            "panoptic_json + panoptic_root, semantic stuff_classes + sem_seg_root (or evaluator_type 'sem_seg')."
        )
    return tasks


def _fill_classes(dataset_name, meta):
    """Fill the class lists detectron2 fills only when the dicts are loaded (or that it replicates)."""
    if not meta.get("thing_classes", None) and meta.get("json_file", None) and not meta.get("stuff_classes", None):
        json_file = meta.json_file
        if not os.path.isfile(json_file):
            raise InputFileNotFoundError(f"Dataset '{dataset_name}': json_file not found: {json_file}")
        meta.set(**_coco_instances_classes(json_file))  # what load_coco_json will set, with equal values
    if meta.get("panoptic_json", None) and not meta.get("stuff_classes", None):
        raise DatasetSetupError(
            f"Panoptic dataset '{dataset_name}' has no stuff_classes (nor the id maps detectron2's loader needs): "
            "register it with register_coco_panoptic(name, zsi_d2.data.coco_panoptic_metadata(panoptic_json), ...)."
        )
    if not meta.get("thing_classes", None) and meta.get("panoptic_json", None) and _things_share_stuff_space(meta):
        meta.set(thing_classes=list(meta.stuff_classes))  # detectron2's standard convention replicates them
    classes = list(meta.get("thing_classes", [])) + list(meta.get("stuff_classes", []))
    if not classes:
        raise DatasetSetupError(
            f"Dataset '{dataset_name}' has no thing_classes/stuff_classes metadata: a semantic dataset must set "
            "stuff_classes (and ignore_label); a COCO one is read from its json_file."
        )
    return list(dict.fromkeys(classes))


def _check_classes_known(dataset_name, classes, split, mode):
    known = set(split.classes) | set(split.ignored)
    unknown = [c for c in classes if c not in known]
    if not unknown:
        ignored = [c for c in classes if c in set(split.ignored)]
        if ignored and mode == "train":
            logger.warning(
                f"Dataset '{dataset_name}': classes {ignored} are ignored by split '{split.name}'; their annotations "
                "must be removed from a training set (training refuses labels outside the seen classes)"
            )
        return
    described = []
    for name in unknown:
        close = _close_names(name, known, n=1)
        described.append(f"{name!r} (did you mean {close}?)" if close else repr(name))
    raise DatasetSetupError(
        f"Dataset '{dataset_name}' has classes that split '{split.name}' does not know: {', '.join(described)}. "
        "Add them to the split's seen, unseen or ignored classes, or correct the names in the dataset."
    )


def _replace(dataset_name, meta, **fields):
    """Metadata.set that may change a value (detectron2's Metadata refuses): logged, never silent."""
    for key, value in fields.items():
        old = meta.get(key, None)
        if old is not None and old != value:
            if key == "evaluator_type" and old != "zero_shot":
                meta.set(detectron2_evaluator_type=old)
                logger.info(f"Dataset '{dataset_name}': evaluator_type '{old}' -> '{value}' (zsi_d2 evaluators)")
            else:
                logger.warning(f"Dataset '{dataset_name}': {key} changed from {old!r} to {value!r}")
            delattr(meta, key)
        meta.set(**{key: value})


def make_zero_shot(dataset_name, split_name, mode, tasks=None):
    """Make a registered detectron2 dataset zero-shot: one call after register_coco_instances,
    register_coco_panoptic or a semantic folder's registration.

    Fills thing_classes from the json_file when detectron2 would only do it on loading, sets the
    split's seen/unseen/ignored classes, the mode ("train", "gzsi" or "zsi") and the tasks the
    registration provides (or `tasks`), and replaces detectron2's evaluator_type with "zero_shot".
    """
    if mode not in ZERO_SHOT_MODES:
        raise DatasetSetupError(f"mode must be one of {ZERO_SHOT_MODES}, got {mode!r} (dataset '{dataset_name}')")
    meta = registered_metadata(
        dataset_name, hint="register it (e.g. with detectron2's register_coco_instances) before make_zero_shot"
    )
    split = _get_split(split_name)
    classes = _fill_classes(dataset_name, meta)
    _check_classes_known(dataset_name, classes, split, mode)
    tasks = _check_tasks(dataset_name, meta, tasks)
    _replace(
        dataset_name, meta,
        seen_classes=split.seen,
        unseen_classes=split.unseen,
        ignored_classes=split.ignored,
        zero_shot_split=split.name,
        zero_shot_mode=mode,
        zero_shot_tasks=tuple(tasks),
        evaluator_type="zero_shot",
    )
    logger.info(f"Dataset '{dataset_name}' is zero-shot: split '{split.name}', mode '{mode}', tasks {tasks}")
    return meta


def set_zero_shot_metadata(dataset_name, split_name, mode, tasks=None):
    """Earlier name of `make_zero_shot`, kept for existing callers (same behaviour)."""
    return make_zero_shot(dataset_name, split_name, mode, tasks=tasks)
