"""Generate a zs_shapes dataset on disk in standard formats, once, atomically and reproducibly.

Layout of `<DETECTRON2_DATASETS>/zs_shapes/<preset>_<hash>/` (hash of the difficulty, the
generator version and the split, so a changed setting never reuses a stale cache):

    train/images/000001.png      RGB images
    train/panoptic/000001.png    COCO panoptic PNG (id = R + 256 G + 256^2 B, VOID = 0)
    train/sem_seg/000001.png     uint8 index into split.classes, 255 = ignore (distractors)
    val/...                      same for the validation images
    calib/...                    held-out images drawn like train (seen classes only), never
                                 trained on: for choosing test-time settings without unseen labels
    unlabelled/...               a pool drawn like val (unseen objects included), disjoint from it,
                                 registered as images only: for transductive self-training (its
                                 label files exist for analysis; no registered dataset reads them)
    val_ov/{panoptic,sem_seg}/   the validation labels with the distractors annotated under their
                                 own names (the open-vocabulary set; its images are val's)
    annotations/instances_{train,val,val_zsi,calib}.json   COCO instances, RLE masks (things only)
    annotations/panoptic_{train,val,val_zsi,calib}.json    COCO panoptic
    annotations/{instances,panoptic}_{val_ov,val_ov_zsi}.json   the open-vocabulary set
    meta.json                    difficulty, generator version, counts (written last)

Why these rules:
- Train (and calib) images are rendered from *seen* classes only (no unseen thing, no unseen stuff
  pixel), validation from all classes: the zero-shot protocol is enforced by construction.
- calib and unlabelled have as many images as val and their own RNG streams, so they do not change
  the train and val bytes (nor the dataset hash): a cache made before them gets them added in place.
- Distractors (split.ignored) are drawn but never annotated: VOID in panoptic, 255 in semantic.
  Only the open-vocabulary set (val_ov, val_ov_zsi) names them, in files of its own, with category
  ids after the split's classes; it is written beside val without changing a byte of the other
  subsets, and added in place (like calib) to a cache made before it existed.
- Each image has its own RNG seeded by (seed, split, index): same difficulty -> same bytes.
- Generation goes to a temp folder that is renamed into place, under a file lock, so an
  interrupted or concurrent run never leaves (or reads) a half-written dataset.
"""
import contextlib
import glob
import json
import logging
import os
import shutil
import time
import uuid
from collections import Counter
from typing import Optional, Union

import cv2
import numpy as np
from pycocotools import mask as mask_util
from tqdm import tqdm

from ...errors import InputValueError
from ..splits import ZeroShotSplit, get_split
from .difficulty import (
    GENERATOR_VERSION, ZsShapesDifficulty, difficulty_hash, get_difficulty, resolve_preset,
)
from .render import class_cues, is_stuff_name, parse_class, render_image

__all__ = [
    "SPLIT_NAME", "OPEN_VOCABULARY_SUBSETS", "datasets_root", "dataset_dir", "annotation_paths", "ensure_generated",
    "generate_dataset", "check_split", "open_vocabulary_classes",
]

logger = logging.getLogger(__name__)

SPLIT_NAME = "zs_shapes"
IGNORE_LABEL = 255
_SPLIT_CODES = {"train": 0, "val": 1, "calib": 2, "unlabelled": 3}  # part of each image's RNG seed
# Subsets a cache made before them gets added in place (their own RNG streams leave the rest unchanged).
_ADDED_SUBSETS = ("calib", "unlabelled")
# Subsets counted in meta.json: not the unlabelled pool, so meta.json (and every file that existed before
# the pool) stays byte for byte what it was, in a fresh dataset as in a cache the pool is added to.
_COUNTED = ("train", "val", "calib")
_SEEN_ONLY = ("train", "calib")  # subsets rendered from seen classes only
# subset -> (folder of its images, folder of its panoptic / semantic label PNGs)
_FOLDERS = {"val_zsi": ("val", "val"), "val_ov": ("val", "val_ov"), "val_ov_zsi": ("val", "val_ov")}
OPEN_VOCABULARY_SUBSETS = ("val_ov", "val_ov_zsi")  # val's images, the distractors named


def datasets_root(root: Optional[str] = None) -> str:
    """detectron2's convention: $DETECTRON2_DATASETS, else "datasets" relative to the cwd."""
    return os.path.abspath(root if root is not None else os.environ.get("DETECTRON2_DATASETS", "datasets"))


def _folder_name(preset: Union[str, ZsShapesDifficulty], split: ZeroShotSplit) -> str:
    difficulty = get_difficulty(preset)
    label = resolve_preset(preset) if isinstance(preset, str) else "custom"
    return f"{label}_{difficulty_hash(difficulty, split)}"


def dataset_dir(preset="default", root: Optional[str] = None, split_name: str = SPLIT_NAME) -> str:
    """Where the dataset of `preset` lives (or will live); never generates."""
    split = get_split(split_name)
    return os.path.join(datasets_root(root), "zs_shapes", _folder_name(preset, split))


def annotation_paths(base: str, subset: str) -> dict:
    """Evaluator-facing paths of one subset ("train", "val", "val_zsi", "calib", "val_ov" or
    "val_ov_zsi") under `base`."""
    images, labels = _FOLDERS.get(subset, (subset, subset))
    return {
        "image_root": os.path.join(base, images, "images"),
        "panoptic_root": os.path.join(base, labels, "panoptic"),
        "sem_seg_root": os.path.join(base, labels, "sem_seg"),
        "json_file": os.path.join(base, "annotations", f"instances_{subset}.json"),
        "panoptic_json": os.path.join(base, "annotations", f"panoptic_{subset}.json"),
    }


def check_split(split: ZeroShotSplit):
    """Fail early and clearly if the split cannot be rendered (unknown words, bad structure)."""
    for name in split.classes + split.ignored:
        parse_class(name)  # raises ValueError naming the unknown word
    for name in split.classes:
        if is_stuff_name(name) != (name in split.stuff):
            raise InputValueError(
                f"zs_shapes: class '{name}' reads as {'stuff' if is_stuff_name(name) else 'a thing'} "
                f"but the split says {'stuff' if name in split.stuff else 'thing'}: list stuff classes "
                "('<tone> <pattern> ground') in the split's stuff, and only those"
            )
    for name in split.ignored:
        if is_stuff_name(name):
            raise InputValueError(f"zs_shapes: ignored class '{name}' must be a thing (a distractor object): "
                                  "remove it from the split's ignored classes")
    if len(split.classes) >= IGNORE_LABEL:
        raise InputValueError(f"zs_shapes: too many classes for uint8 semantic labels: use fewer than {IGNORE_LABEL}")
    seen = set(split.seen)
    if not [c for c in split.things if c in seen] or not [c for c in split.stuff if c in seen]:
        raise InputValueError(f"zs_shapes: split '{split.name}' needs at least one seen thing and one seen stuff "
                              "class: add them to its seen classes")


# ----------------------------------------------------------------------------------------------
# Generation.
# ----------------------------------------------------------------------------------------------
def _bbox(mask):
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]


def _write_png(path, array):
    if not cv2.imwrite(path, array):
        raise IOError(f"zs_shapes: could not write {path}")


def open_vocabulary_classes(split) -> tuple:
    """The label space of the open-vocabulary set: the split's classes, then its distractors."""
    return split.classes + split.ignored


def coco_categories(split, things_only, open_vocabulary=False):
    """COCO categories, id = 1 + index in split.classes; `open_vocabulary` appends the distractor
    classes (split.ignored) as things with the ids after them (supercategory "open_vocabulary")."""
    names = open_vocabulary_classes(split) if open_vocabulary else split.classes
    cats = []
    for i, name in enumerate(names):
        isthing = name not in split.stuff
        if things_only and not isthing:
            continue
        group = "open_vocabulary" if name in split.ignored else "unseen" if split.is_unseen(name) else "seen"
        cats.append({"id": i + 1, "name": name, "isthing": int(isthing), "supercategory": group})
    return cats


def _generate_subset(subset, difficulty, split, out_dir, progress):
    classes = split.classes
    class_index = {c: i for i, c in enumerate(classes)}
    if subset in _SEEN_ONLY:
        pool = [c for c in classes if c in set(split.seen)]
    else:
        pool = list(classes)
    thing_pool = [c for c in pool if c not in split.stuff]
    stuff_pool = [c for c in pool if c in split.stuff]
    cues = class_cues(split.things + split.ignored, split.stuff, difficulty.cue_class_share)

    paths = annotation_paths(out_dir, subset)
    for key in ("image_root", "panoptic_root", "sem_seg_root"):
        os.makedirs(paths[key], exist_ok=True)

    images, instances, panoptic = [], [], []
    # val also gets the open-vocabulary set: the same labels plus the distractors under their names.
    open_vocabulary = _OpenVocabularyWriter(out_dir, split) if subset == "val" else None
    stats = Counter()
    num = difficulty.num_train if subset == "train" else difficulty.num_val  # val, calib and unlabelled
    size = difficulty.image_size
    for index in range(num):
        image_id = index + 1
        rng = np.random.default_rng([difficulty.seed, _SPLIT_CODES[subset], index])
        r = render_image(rng, difficulty, thing_pool, stuff_pool, list(split.ignored), cues)
        stats["dropped_objects"] += r.dropped
        file_stem = f"{image_id:06d}"

        sem = np.full((size, size), IGNORE_LABEL, dtype=np.uint8)
        pan = np.zeros((size, size), dtype=np.int64)
        covered = np.zeros((size, size), dtype=bool)
        for obj in r.objects:
            covered |= obj.visible
        segments = []

        for k, name in enumerate(r.stuff_names):
            region = (r.stuff_map == k) & ~covered
            if not region.any():
                continue
            seg_id = len(segments) + 1
            sem[region] = class_index[name]
            pan[region] = seg_id
            segments.append({
                "id": seg_id, "category_id": class_index[name] + 1, "iscrowd": 0,
                "bbox": _bbox(region), "area": int(region.sum()),
            })
            stats[("stuff", name)] += 1

        distractors = []
        for obj in r.objects:
            if not obj.visible.any():
                continue
            if not obj.labelled:
                stats["distractors"] += 1
                distractors.append(obj)
                continue  # VOID / 255: already the defaults
            seg_id = len(segments) + 1
            cat_id = class_index[obj.name] + 1
            bbox, area = _bbox(obj.visible), int(obj.visible.sum())
            sem[obj.visible] = class_index[obj.name]
            pan[obj.visible] = seg_id
            segments.append({"id": seg_id, "category_id": cat_id, "iscrowd": 0, "bbox": bbox, "area": area})
            instances.append({
                "id": len(instances) + 1, "image_id": image_id, "category_id": cat_id,
                "segmentation": _rle(obj.visible), "area": area, "bbox": bbox, "iscrowd": 0,
            })
            stats[("thing", obj.name)] += 1

        _write_png(os.path.join(paths["image_root"], file_stem + ".png"), r.image[:, :, ::-1])
        _write_png(os.path.join(paths["sem_seg_root"], file_stem + ".png"), sem)
        pan_rgb = np.stack([pan % 256, (pan // 256) % 256, pan // 65536], axis=-1).astype(np.uint8)
        _write_png(os.path.join(paths["panoptic_root"], file_stem + ".png"), pan_rgb[:, :, ::-1])

        images.append({"id": image_id, "file_name": file_stem + ".png", "height": size, "width": size})
        panoptic.append({"image_id": image_id, "file_name": file_stem + ".png", "segments_info": segments})
        if open_vocabulary is not None:
            open_vocabulary.add_image(image_id, file_stem, sem, pan, segments, distractors)
        progress.update(1)

    info = {"description": f"zs_shapes {subset}", "generator_version": GENERATOR_VERSION,
            "difficulty": difficulty.to_dict(), "split": split.name}
    _dump(paths["json_file"], {"info": info, "images": images, "annotations": instances,
                               "categories": coco_categories(split, things_only=True)})
    _dump(paths["panoptic_json"], {"info": info, "images": images, "annotations": panoptic,
                                   "categories": coco_categories(split, things_only=False)})
    if subset == "val":
        _write_zsi_variant(out_dir, split, info, images, instances, panoptic)
        open_vocabulary.write(info, images, instances)
    stats["images"] = len(images)
    stats["instances"] = len(instances)
    return stats


def _write_zsi_variant(out_dir, split, info, images, instances, panoptic):
    """ZSI protocol: images holding at least one unseen instance, unseen instances only.

    The panoptic json keeps every segment of those images (panoptic/semantic GT is complete);
    only the instance annotations are restricted to unseen classes.
    """
    unseen_ids = {i + 1 for i, c in enumerate(split.classes) if split.is_unseen(c)}
    anns = [a for a in instances if a["category_id"] in unseen_ids]
    keep = {a["image_id"] for a in anns}
    paths = annotation_paths(out_dir, "val_zsi")
    info = dict(info, description="zs_shapes val (ZSI: unseen instances only)")
    _dump(paths["json_file"], {
        "info": info, "images": [im for im in images if im["id"] in keep], "annotations": anns,
        "categories": coco_categories(split, things_only=True),
    })
    _dump(paths["panoptic_json"], {
        "info": info, "images": [im for im in images if im["id"] in keep],
        "annotations": [p for p in panoptic if p["image_id"] in keep],
        "categories": coco_categories(split, things_only=False),
    })


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


class _OpenVocabularyWriter:
    """The open-vocabulary set of val: val's labels with every distractor annotated under its own
    name (category id len(split.classes) + 1 + its index in split.ignored; semantic label one less).

    It only adds files (val_ov/ and the *_val_ov*.json) and reads val's arrays without changing them,
    so every byte of the other subsets is what it was. val_ov_zsi keeps the images that show a
    distractor and, as val_zsi does, only their distractor instances (its panoptic GT stays complete).
    """

    def __init__(self, out_dir, split):
        self.out_dir, self.split = out_dir, split
        self.paths = annotation_paths(out_dir, "val_ov")
        for key in ("panoptic_root", "sem_seg_root"):
            os.makedirs(self.paths[key], exist_ok=True)
        self.first_id = len(split.classes) + 1  # category id of split.ignored[0]
        self.panoptic, self.distractor_instances = [], []

    def add_image(self, image_id, file_stem, sem, pan, segments, distractors):
        sem, pan, segments = sem.copy(), pan.copy(), list(segments)
        for obj in distractors:
            seg_id = len(segments) + 1
            cat_id = self.first_id + self.split.ignored.index(obj.name)
            bbox, area = _bbox(obj.visible), int(obj.visible.sum())
            sem[obj.visible] = cat_id - 1
            pan[obj.visible] = seg_id
            segments.append({"id": seg_id, "category_id": cat_id, "iscrowd": 0, "bbox": bbox, "area": area})
            self.distractor_instances.append({
                "image_id": image_id, "category_id": cat_id, "segmentation": _rle(obj.visible),
                "area": area, "bbox": bbox, "iscrowd": 0,
            })
        _write_png(os.path.join(self.paths["sem_seg_root"], file_stem + ".png"), sem)
        pan_rgb = np.stack([pan % 256, (pan // 256) % 256, pan // 65536], axis=-1).astype(np.uint8)
        _write_png(os.path.join(self.paths["panoptic_root"], file_stem + ".png"), pan_rgb[:, :, ::-1])
        self.panoptic.append({"image_id": image_id, "file_name": file_stem + ".png", "segments_info": segments})

    def write(self, info, images, instances):
        """The four json files; val_ov_zsi's instances json last (its presence marks the set complete)."""
        extra = [dict(a, id=len(instances) + k + 1) for k, a in enumerate(self.distractor_instances)]
        keep = {a["image_id"] for a in extra}
        thing_cats = coco_categories(self.split, things_only=True, open_vocabulary=True)
        all_cats = coco_categories(self.split, things_only=False, open_vocabulary=True)
        sets = {
            "val_ov": ("zs_shapes val, distractors named (open vocabulary)", images, instances + extra,
                       self.panoptic),
            "val_ov_zsi": ("zs_shapes val, distractors named, distractor instances only (open vocabulary)",
                           [im for im in images if im["id"] in keep], extra,
                           [p for p in self.panoptic if p["image_id"] in keep]),
        }
        for subset, (description, imgs, anns, pan) in sets.items():
            paths, subset_info = annotation_paths(self.out_dir, subset), dict(info, description=description)
            _dump(paths["panoptic_json"], {"info": subset_info, "images": imgs, "annotations": pan,
                                           "categories": all_cats})
            _dump(paths["json_file"], {"info": subset_info, "images": imgs, "annotations": anns,
                                       "categories": thing_cats})


def _dump(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))


def _subset_summary(stats, split):
    per_class = {kind: {c: stats[(kind, c)] for c in split.classes if (kind, c) in stats}
                 for kind in ("thing", "stuff")}
    return {
        "images": stats["images"], "instances": stats["instances"],
        "distractors": stats["distractors"], "dropped_objects": stats["dropped_objects"],
        "things": per_class["thing"], "stuff_segments": per_class["stuff"],
    }


def generate_dataset(difficulty: ZsShapesDifficulty, out_dir: str, split: ZeroShotSplit,
                     label: str = "custom") -> dict:
    """Write a complete dataset into `out_dir` (which should be a fresh folder). Returns stats."""
    check_split(split)
    start = time.perf_counter()
    total = difficulty.num_train + 3 * difficulty.num_val
    summary = {}
    with tqdm(total=total, desc=f"zs_shapes {label}", unit="img", leave=False) as progress:
        for subset in ("train", "val", *_ADDED_SUBSETS):
            stats = _generate_subset(subset, difficulty, split, out_dir, progress)
            if subset in _COUNTED:
                summary[subset] = _subset_summary(stats, split)
    meta = {
        "generator_version": GENERATOR_VERSION, "difficulty": difficulty.to_dict(),
        "difficulty_name": label, "hash": difficulty_hash(difficulty, split), "split": split.name,
        "classes": list(split.classes), "unseen": list(split.unseen), "counts": summary,
    }
    _dump(os.path.join(out_dir, "meta.json"), meta)  # last file: marks a complete dataset
    logger.info("zs_shapes '%s': %d images generated in %.1f s", label, total, time.perf_counter() - start)
    return meta


# ----------------------------------------------------------------------------------------------
# Caching: lock, temp folder, atomic rename.
# ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _file_lock(path):
    try:
        import fcntl
    except ImportError:  # non-POSIX: no lock; the atomic rename still protects readers
        yield
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_complete(path):
    return os.path.isfile(os.path.join(path, "meta.json"))


def _has_subset(path, subset):
    # The instances json is the last file a subset writes.
    return os.path.isfile(annotation_paths(path, subset)["json_file"])


def _has_open_vocabulary(path):
    # The val_ov_zsi instances json is the last file the open-vocabulary set writes.
    return os.path.isfile(annotation_paths(path, "val_ov_zsi")["json_file"])


def _add_open_vocabulary(final, difficulty, split, label):
    """Add the open-vocabulary set to a dataset cached before it existed: val is rendered again into
    a temp folder (same seeds, same bytes: checked on its json), and only the new files move in."""
    parent, name = os.path.split(final)
    tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    logger.info("zs_shapes: adding the open-vocabulary set (val with its distractors named) to %s", final)
    try:
        with tqdm(total=difficulty.num_val, desc=f"zs_shapes {label} val_ov", unit="img", leave=False) as progress:
            _generate_subset("val", difficulty, split, tmp, progress)
        made, cached = annotation_paths(tmp, "val")["json_file"], annotation_paths(final, "val")["json_file"]
        with open(made, "rb") as a, open(cached, "rb") as b:
            if a.read() != b.read():
                raise InputValueError(f"zs_shapes: {cached} differs from a new rendering of the same settings: "
                                      f"delete {final} to generate it again")
        os.rename(os.path.join(tmp, "val_ov"), os.path.join(final, "val_ov"))
        for subset in OPEN_VOCABULARY_SUBSETS:  # val_ov_zsi's json_file last: it marks the set complete
            made, target = annotation_paths(tmp, subset), annotation_paths(final, subset)
            for key in ("panoptic_json", "json_file"):
                os.replace(made[key], target[key])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _add_subset(final, subset, difficulty, split, label):
    """Add `subset` (one of _ADDED_SUBSETS) to a dataset cached before it existed (the others are untouched)."""
    parent, name = os.path.split(final)
    tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    logger.info("zs_shapes: adding the %d '%s' images to %s", difficulty.num_val, subset, final)
    try:
        with tqdm(total=difficulty.num_val, desc=f"zs_shapes {label} {subset}", unit="img", leave=False) as progress:
            _generate_subset(subset, difficulty, split, tmp, progress)
        os.rename(os.path.join(tmp, subset), os.path.join(final, subset))
        made, target = annotation_paths(tmp, subset), annotation_paths(final, subset)
        for key in ("panoptic_json", "json_file"):  # json_file last: it marks the subset complete
            os.replace(made[key], target[key])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_generated(preset: Union[str, ZsShapesDifficulty] = "default", root: Optional[str] = None,
                     split_name: str = SPLIT_NAME) -> str:
    """Return the dataset folder of `preset`, generating it first if it is not cached yet."""
    final = dataset_dir(preset, root, split_name)
    if _is_complete(final) and all(_has_subset(final, s) for s in _ADDED_SUBSETS) and _has_open_vocabulary(final):
        return final
    split = get_split(split_name)
    check_split(split)
    difficulty = get_difficulty(preset)
    label = resolve_preset(preset) if isinstance(preset, str) else "custom"
    parent, name = os.path.split(final)
    with _file_lock(os.path.join(parent, f".{name}.lock")):
        if _is_complete(final):  # complete, or another process finished while we waited
            for subset in _ADDED_SUBSETS:
                if not _has_subset(final, subset):
                    _add_subset(final, subset, difficulty, split, label)
            if not _has_open_vocabulary(final):
                _add_open_vocabulary(final, difficulty, split, label)
            return final
        # We hold the lock: any temp folder or incomplete target is debris of an interrupted run.
        for stale in glob.glob(os.path.join(parent, f".{name}.tmp-*")):
            logger.warning("zs_shapes: removing leftover temp folder %s", stale)
            shutil.rmtree(stale, ignore_errors=True)
        if os.path.exists(final):
            shutil.rmtree(final)
        tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.makedirs(tmp)
        logger.info(
            "zs_shapes: generating '%s' (%d train + %d val images) into %s",
            label, difficulty.num_train, difficulty.num_val, final,
        )
        try:
            generate_dataset(difficulty, tmp, split, label=label)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final
