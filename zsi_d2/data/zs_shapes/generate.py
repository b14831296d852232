"""Generate a zs_shapes dataset on disk in standard formats, once, atomically and reproducibly.

Layout of `<DETECTRON2_DATASETS>/zs_shapes/<preset>_<hash>/` (hash of the difficulty, the
generator version and the split, so a changed setting never reuses a stale cache):

    train/images/000001.png      RGB images
    train/panoptic/000001.png    COCO panoptic PNG (id = R + 256 G + 256^2 B, VOID = 0)
    train/sem_seg/000001.png     uint8 index into split.classes, 255 = ignore (distractors)
    val/...                      same for the validation images
    calib/...                    held-out images drawn like train (seen classes only), never
                                 trained on: for choosing test-time settings without unseen labels
    annotations/instances_{train,val,val_zsi,calib}.json   COCO instances, RLE masks (things only)
    annotations/panoptic_{train,val,val_zsi,calib}.json    COCO panoptic
    meta.json                    difficulty, generator version, counts (written last)

Why these rules:
- Train (and calib) images are rendered from *seen* classes only (no unseen thing, no unseen stuff
  pixel), validation from all classes: the zero-shot protocol is enforced by construction.
- calib has as many images as val and its own RNG stream, so it does not change the train and val
  bytes (nor the dataset hash): a cache made before calib existed gets it added in place.
- Distractors (split.ignored) are drawn but never annotated: VOID in panoptic, 255 in semantic.
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
    "SPLIT_NAME", "datasets_root", "dataset_dir", "annotation_paths", "ensure_generated",
    "generate_dataset", "check_split",
]

logger = logging.getLogger(__name__)

SPLIT_NAME = "zs_shapes"
IGNORE_LABEL = 255
_SPLIT_CODES = {"train": 0, "val": 1, "calib": 2}  # part of each image's RNG seed
_SEEN_ONLY = ("train", "calib")  # subsets rendered from seen classes only


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
    """Evaluator-facing paths of one subset ("train", "val" or "val_zsi") under `base`."""
    folder = "val" if subset == "val_zsi" else subset
    return {
        "image_root": os.path.join(base, folder, "images"),
        "panoptic_root": os.path.join(base, folder, "panoptic"),
        "sem_seg_root": os.path.join(base, folder, "sem_seg"),
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


def coco_categories(split, things_only):
    cats = []
    for i, name in enumerate(split.classes):
        isthing = name not in split.stuff
        if things_only and not isthing:
            continue
        cats.append({
            "id": i + 1, "name": name, "isthing": int(isthing),
            "supercategory": "unseen" if split.is_unseen(name) else "seen",
        })
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
    stats = Counter()
    num = difficulty.num_train if subset == "train" else difficulty.num_val  # val and calib
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

        for obj in r.objects:
            if not obj.visible.any():
                continue
            if not obj.labelled:
                stats["distractors"] += 1
                continue  # VOID / 255: already the defaults
            seg_id = len(segments) + 1
            cat_id = class_index[obj.name] + 1
            bbox, area = _bbox(obj.visible), int(obj.visible.sum())
            sem[obj.visible] = class_index[obj.name]
            pan[obj.visible] = seg_id
            segments.append({"id": seg_id, "category_id": cat_id, "iscrowd": 0, "bbox": bbox, "area": area})
            rle = mask_util.encode(np.asfortranarray(obj.visible.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            instances.append({
                "id": len(instances) + 1, "image_id": image_id, "category_id": cat_id,
                "segmentation": rle, "area": area, "bbox": bbox, "iscrowd": 0,
            })
            stats[("thing", obj.name)] += 1

        _write_png(os.path.join(paths["image_root"], file_stem + ".png"), r.image[:, :, ::-1])
        _write_png(os.path.join(paths["sem_seg_root"], file_stem + ".png"), sem)
        pan_rgb = np.stack([pan % 256, (pan // 256) % 256, pan // 65536], axis=-1).astype(np.uint8)
        _write_png(os.path.join(paths["panoptic_root"], file_stem + ".png"), pan_rgb[:, :, ::-1])

        images.append({"id": image_id, "file_name": file_stem + ".png", "height": size, "width": size})
        panoptic.append({"image_id": image_id, "file_name": file_stem + ".png", "segments_info": segments})
        progress.update(1)

    info = {"description": f"zs_shapes {subset}", "generator_version": GENERATOR_VERSION,
            "difficulty": difficulty.to_dict(), "split": split.name}
    _dump(paths["json_file"], {"info": info, "images": images, "annotations": instances,
                               "categories": coco_categories(split, things_only=True)})
    _dump(paths["panoptic_json"], {"info": info, "images": images, "annotations": panoptic,
                                   "categories": coco_categories(split, things_only=False)})
    if subset == "val":
        _write_zsi_variant(out_dir, split, info, images, instances, panoptic)
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
    total = difficulty.num_train + 2 * difficulty.num_val
    summary = {}
    with tqdm(total=total, desc=f"zs_shapes {label}", unit="img", leave=False) as progress:
        for subset in ("train", "val", "calib"):
            summary[subset] = _subset_summary(_generate_subset(subset, difficulty, split, out_dir, progress), split)
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


def _has_calib(path):
    # The instances json is the last file the calib subset writes.
    return os.path.isfile(annotation_paths(path, "calib")["json_file"])


def _add_calib(final, difficulty, split, label):
    """Add the calib subset to a dataset cached before it existed (train/val are untouched)."""
    parent, name = os.path.split(final)
    tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    logger.info("zs_shapes: adding the %d held-out 'calib' images to %s", difficulty.num_val, final)
    try:
        with tqdm(total=difficulty.num_val, desc=f"zs_shapes {label} calib", unit="img", leave=False) as progress:
            _generate_subset("calib", difficulty, split, tmp, progress)
        os.rename(os.path.join(tmp, "calib"), os.path.join(final, "calib"))
        made, target = annotation_paths(tmp, "calib"), annotation_paths(final, "calib")
        for key in ("panoptic_json", "json_file"):  # json_file last: it marks calib complete
            os.replace(made[key], target[key])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_generated(preset: Union[str, ZsShapesDifficulty] = "default", root: Optional[str] = None,
                     split_name: str = SPLIT_NAME) -> str:
    """Return the dataset folder of `preset`, generating it first if it is not cached yet."""
    final = dataset_dir(preset, root, split_name)
    if _is_complete(final) and _has_calib(final):
        return final
    split = get_split(split_name)
    check_split(split)
    difficulty = get_difficulty(preset)
    label = resolve_preset(preset) if isinstance(preset, str) else "custom"
    parent, name = os.path.split(final)
    with _file_lock(os.path.join(parent, f".{name}.lock")):
        if _is_complete(final):  # complete, or another process finished while we waited
            if not _has_calib(final):
                _add_calib(final, difficulty, split, label)
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
