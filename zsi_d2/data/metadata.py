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

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..errors import InputFileNotFoundError, InputKeyError, InputValueError
from .catalog import REGISTER_FIX, require_registered
from .splits import get_split, list_splits

__all__ = [
    "ZERO_SHOT_MODES", "EVALUATION_MODES", "ZERO_SHOT_TASKS", "DatasetSetupError", "make_zero_shot",
    "set_zero_shot_metadata", "registered_metadata",
    "coco_panoptic_metadata", "panoptic_metadata", "standard_segment", "check_panoptic_convention",
    "read_json_categories", "segment_class_name", "supported_tasks", "zero_shot_groups",
    "register_builtin_dataset", "require_prepared",
]

logger = logging.getLogger(__name__)

# "train": seen classes only; "gzsi": seen + unseen evaluated together; "zsi": unseen only.
ZERO_SHOT_MODES = ("train", "gzsi", "zsi")  # a dataset's zero_shot_mode
EVALUATION_MODES = ("gzsi", "zsi")  # the modes a test set is scored in

# The detectron2 fields whose meaning depends on the task; (in order) what each registration provides.
ZERO_SHOT_TASKS = ("instance", "panoptic", "semantic")  # in the order evaluators run


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


def panoptic_metadata(categories):
    """Panoptic metadata in detectron2's standard convention, from COCO panoptic categories.

    One label space: every category in id order. stuff_classes lists all of them and thing_classes
    is a replica (detectron2's builtin "coco_panoptic_standard", whose Visualizer reads thing
    segments through thing_classes); the thing map sends thing ids into that space and the stuff map
    sends every id there (Mask2Former's, so detectron2's SemSegEvaluator covers every label). A
    segment's category_id is then an index into stuff_classes and "is it a thing" is a lookup in the
    thing map's values. detectron2's panoptic loader reads the maps at registration.
    """
    cats = sorted(categories, key=lambda c: c["id"])
    missing = [c.get("name", c["id"]) for c in cats if "isthing" not in c]
    if missing:
        raise InputValueError(f"panoptic categories {missing[:5]} have no 'isthing' (1 thing, 0 stuff)")
    names = [c["name"] for c in cats]
    return {
        "thing_classes": list(names),
        "stuff_classes": list(names),
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats) if c["isthing"]},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
    }


def coco_panoptic_metadata(panoptic_json):
    """`panoptic_metadata` of a COCO panoptic json, for detectron2's `register_coco_panoptic`."""
    try:
        return panoptic_metadata(read_json_categories(panoptic_json))
    except InputValueError as e:
        raise InputValueError(f"{panoptic_json}: {e}") from None


def standard_segment(segment, meta):
    """One COCO panoptic segment (dataset category id) as detectron2's loader converts it:
    category_id into stuff_classes' space and isthing, the thing map tried first."""
    thing_map, stuff_map = meta.get("thing_dataset_id_to_contiguous_id"), meta.get("stuff_dataset_id_to_contiguous_id")
    cid = segment["category_id"]
    if cid in thing_map:
        return dict(segment, category_id=thing_map[cid], isthing=True)
    if cid in stuff_map:
        return dict(segment, category_id=stuff_map[cid], isthing=False)
    raise InputValueError(f"panoptic segment {segment.get('id')} has category id {cid}, which no category declares")


def check_panoptic_convention(dataset_name, meta):
    """Refuse panoptic metadata outside detectron2's standard convention (one line).

    Why: a thing map into the things' own index space (detectron2's "separated" PanopticFPN
    metadata, or zs_shapes before it followed the standard) makes a standard consumer read thing
    segments as stuff classes of the same number, silently.
    """
    thing_map = meta.get("thing_dataset_id_to_contiguous_id", None)
    stuff_map = meta.get("stuff_dataset_id_to_contiguous_id", None)
    stuff_classes = meta.get("stuff_classes", None)
    fix = ("register it with register_coco_panoptic(name, zsi_d2.data.coco_panoptic_metadata(panoptic_json), ...), "
           "detectron2's standard panoptic convention")
    if not (thing_map is not None and stuff_map and stuff_classes):
        raise DatasetSetupError(f"Panoptic dataset '{dataset_name}' lacks stuff_classes or the id maps: {fix}")
    size = len(stuff_classes)
    outside = sorted(v for v in list(thing_map.values()) + list(stuff_map.values()) if not 0 <= v < size)
    stuff_only = {v for k, v in stuff_map.items() if k not in thing_map}
    clash = sorted(set(thing_map.values()) & stuff_only)
    unequal = sorted(k for k in set(thing_map) & set(stuff_map) if thing_map[k] != stuff_map[k])
    if outside or clash or unequal:
        what = (f"ids map outside stuff_classes ({outside[:5]})" if outside else
                f"thing and stuff categories share contiguous ids {clash[:5]}" if clash else
                f"ids {unequal[:5]} map differently in the thing and stuff maps")
        raise DatasetSetupError(f"Panoptic dataset '{dataset_name}' is not in one label space: {what}. Fix: {fix}")


def segment_class_name(meta, segment):
    """The class name of one panoptic segment of a detectron2 dataset dict (segments_info entry)."""
    return meta.stuff_classes[segment["category_id"]]


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
    return tuple(t for t in ZERO_SHOT_TASKS if provided[t])


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
    unknown = [t for t in tasks if t not in ZERO_SHOT_TASKS]
    if unknown:
        raise DatasetSetupError(
            f"Unknown zero-shot task(s) {unknown} for '{dataset_name}'; choose from {ZERO_SHOT_TASKS}")
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
    if meta.get("panoptic_json", None):
        check_panoptic_convention(dataset_name, meta)
        if not meta.get("thing_classes", None):
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


def zero_shot_groups(split, open_vocabulary=False):
    """The class groups a dataset of `split` is scored in: the split's seen / unseen / ignored ones.

    open_vocabulary: a test set in which the split's ignored classes (never labelled in training)
    are annotated under their own names. They are the names to find, so they form the "unseen"
    group the evaluators report; the split's own classes (its seen and unseen ones) form "seen";
    nothing is ignored. `open_vocabulary_classes` marks such a set.
    """
    if not open_vocabulary:
        return dict(seen_classes=tuple(split.seen), unseen_classes=tuple(split.unseen),
                    ignored_classes=tuple(split.ignored))
    if not split.ignored:
        raise DatasetSetupError(f"Split '{split.name}' has no ignored classes, so it has no open-vocabulary names: "
                                "register the set without open_vocabulary")
    return dict(seen_classes=tuple(split.classes), unseen_classes=tuple(split.ignored), ignored_classes=(),
                open_vocabulary_classes=tuple(split.ignored))


def make_zero_shot(dataset_name, split_name, mode, tasks=None, open_vocabulary=False):
    """Make a registered detectron2 dataset zero-shot: one call after register_coco_instances,
    register_coco_panoptic or a semantic folder's registration.

    Fills thing_classes from the json_file when detectron2 would only do it on loading, sets the
    split's seen/unseen/ignored classes, the mode ("train", "gzsi" or "zsi") and the tasks the
    registration provides (or `tasks`), and replaces detectron2's evaluator_type with "zero_shot".
    `open_vocabulary`: a test set whose annotations name the split's ignored classes too; they are
    scored as their own group (`zero_shot_groups`).
    """
    if mode not in ZERO_SHOT_MODES:
        raise DatasetSetupError(f"mode must be one of {ZERO_SHOT_MODES}, got {mode!r} (dataset '{dataset_name}')")
    if open_vocabulary and mode == "train":
        raise DatasetSetupError(f"Dataset '{dataset_name}': an open-vocabulary set names classes never labelled in "
                                "training, so it cannot be a training set (mode 'train'): use mode 'gzsi' or 'zsi'")
    meta = registered_metadata(
        dataset_name, hint="register it (e.g. with detectron2's register_coco_instances) before make_zero_shot"
    )
    split = _get_split(split_name)
    classes = _fill_classes(dataset_name, meta)
    _check_classes_known(dataset_name, classes, split, mode)
    tasks = _check_tasks(dataset_name, meta, tasks)
    _replace(
        dataset_name, meta,
        **zero_shot_groups(split, open_vocabulary),
        zero_shot_split=split.name,
        zero_shot_mode=mode,
        zero_shot_tasks=tuple(tasks),
        evaluator_type="zero_shot",
    )
    logger.info(f"Dataset '{dataset_name}' is zero-shot: split '{split.name}', mode '{mode}', tasks {tasks}")
    return meta


def set_zero_shot_metadata(dataset_name, split_name, mode, tasks=None, open_vocabulary=False):
    """Earlier name of `make_zero_shot`, kept for existing callers (same behaviour)."""
    return make_zero_shot(dataset_name, split_name, mode, tasks=tasks, open_vocabulary=open_vocabulary)


# ---------------------------------------------------------------------------------------------
# zsi_d2's built-in prepared datasets (COCO, Pascal VOC, ADE20k-Full): lazy registration.
# ---------------------------------------------------------------------------------------------
def register_builtin_dataset(name, loader, metadata, split_name, mode, root_key):
    """Register a built-in dataset without reading a file; again (new paths) when metadata[root_key] changed.

    Why: the catalogs are filled when zsi_d2 is imported, before DETECTRON2_DATASETS may be changed
    (tests, notebooks); calling the benchmark's register-all function again moves its paths.
    """
    if name in DatasetCatalog.list():
        if MetadataCatalog.get(name).get(root_key, None) == metadata[root_key]:
            return  # already registered for this root
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**metadata)
    set_zero_shot_metadata(name, split_name, mode, tasks=metadata["zero_shot_tasks"])


def require_prepared(dataset_name, key, path, prepare_command, datasets_dir, download=None):
    """`path` (a folder when `key` ends in "_root"), or an error with the path and how to make it:
    the prepare command, after downloading `download` when the path is a standard file."""
    if (os.path.isdir if key.endswith("_root") else os.path.isfile)(path):
        return path
    if download:
        how = f"It comes from {download}; then prepare the split with:\n  {prepare_command}"
    else:
        how = f"Prepare it with:\n  {prepare_command}"
    raise InputFileNotFoundError(
        f"Dataset '{dataset_name}': {key} not found: {path}\n{how}\n"
        f"(DETECTRON2_DATASETS resolves to {datasets_dir}; layout and commands: datasets/README.md)"
    )
