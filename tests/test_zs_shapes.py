"""zs_shapes: determinism, zero-shot protocol by construction, honest GT, formats, registration.

Uses the "tiny" preset generated into temporary DETECTRON2_DATASETS folders.
"""
import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

import zsi_d2  # noqa: F401  (compat layer + dataset registration)
from detectron2.data import DatasetCatalog, MetadataCatalog
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from zsi_d2.data.splits import ZeroShotSplit, get_split
from zsi_d2.data.zs_shapes import (
    PRESETS, dataset_dir, ensure_generated, get_difficulty, parse_class, register_all_zs_shapes,
)
from zsi_d2.data.zs_shapes import generate as gen
from zsi_d2.data.zs_shapes.render import class_cues, render_image

PRESET = "tiny"
SPLIT = get_split("zs_shapes")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """One tiny dataset for the read-only tests, registered under a temp DETECTRON2_DATASETS."""
    root = str(tmp_path_factory.mktemp("d2_datasets"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DETECTRON2_DATASETS", root)
        register_all_zs_shapes()
        yield root
    register_all_zs_shapes()  # back to the caller's DETECTRON2_DATASETS


@pytest.fixture(scope="module")
def tiny_base(tiny_root):
    return ensure_generated(PRESET)


def _load(path):
    with open(path) as f:
        return json.load(f)


def _png(path):
    return np.asarray(Image.open(path))


def _pan_ids(path):
    rgb = _png(path).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def _tree_hashes(base):
    out = {}
    for dirpath, _, files in os.walk(base):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, base)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _category_ids(data, names):
    """Ids of `names` read from the file's own category table by name (never from the generator's
    id formula): what pycocotools and detectron2 will take each id to mean."""
    by_name = {c["name"]: c["id"] for c in data["categories"]}
    missing = [n for n in names if n not in by_name]
    assert not missing, f"categories missing from the file: {missing}"
    return {by_name[n] for n in names}


def _sem_labels(names):
    """Semantic label values of `names`: indices into the registered stuff_classes (detectron2's
    sem_seg contract)."""
    stuff_classes = MetadataCatalog.get(f"zs_shapes_{PRESET}_train").stuff_classes
    return [stuff_classes.index(n) for n in names]


# ---------------------------------------------------------------------------------------------
def test_deterministic_across_roots(tmp_path):
    a = ensure_generated(PRESET, root=str(tmp_path / "a"))
    b = ensure_generated(PRESET, root=str(tmp_path / "b"))
    assert os.path.basename(a) == os.path.basename(b)
    ha, hb = _tree_hashes(a), _tree_hashes(b)
    d = get_difficulty(PRESET)
    # 3 PNGs an image of train, val, calib and unlabelled; 2 (panoptic, semantic) an image of the
    # open-vocabulary set
    assert len([p for p in ha if p.endswith(".png")]) == 3 * (d.num_train + 3 * d.num_val) + 2 * d.num_val
    assert ha == hb


@pytest.mark.parametrize("added", [("calib",), ("unlabelled",), ("calib", "unlabelled")])
def test_calib_is_added_to_an_older_cache_without_touching_train_or_val(tmp_path, added):
    """A cache written before the calib (or unlabelled) subset existed gets it in place,
    byte-identical to a fresh generation; train and val (and the folder name, i.e. the hash) are unchanged."""
    import shutil

    base = ensure_generated(PRESET, root=str(tmp_path / "a"))
    fresh = _tree_hashes(base)
    for subset in added:
        shutil.rmtree(os.path.join(base, subset))
        for kind in ("instances", "panoptic"):
            os.remove(os.path.join(base, "annotations", f"{kind}_{subset}.json"))
    older = _tree_hashes(base)
    assert ensure_generated(PRESET, root=str(tmp_path / "a")) == base
    assert _tree_hashes(base) == fresh
    assert {k: v for k, v in fresh.items() if k in older} == older
    train, calib = (_tree_hashes(os.path.join(base, s, "images")) for s in ("train", "calib"))
    assert not set(train.values()) & set(calib.values()), "calib must be new images, not train ones"


@pytest.mark.parametrize("subset", ["train", "calib"])
def test_train_has_no_unseen_instance_segment_or_pixel(tiny_base, subset):
    inst = _load(os.path.join(tiny_base, "annotations", f"instances_{subset}.json"))
    assert inst["annotations"], "train should have instances"
    unseen_thing_ids = _category_ids(inst, [c for c in SPLIT.unseen if c in SPLIT.things])
    leaked = sorted({a["category_id"] for a in inst["annotations"]} & unseen_thing_ids)
    assert not leaked, f"train instances of unseen category ids {leaked}"
    pan = _load(os.path.join(tiny_base, "annotations", f"panoptic_{subset}.json"))
    unseen_ids = _category_ids(pan, SPLIT.unseen)
    segments = [s for p in pan["annotations"] for s in p["segments_info"]]
    leaked = sorted({s["category_id"] for s in segments} & unseen_ids)
    assert segments and not leaked, f"train panoptic segments of unseen category ids {leaked}"
    unseen_labels = _sem_labels(SPLIT.unseen)
    for image in inst["images"]:
        sem = _png(os.path.join(tiny_base, subset, "sem_seg", image["file_name"]))
        assert not np.isin(sem, unseen_labels).any(), image["file_name"]


def test_val_holds_unseen_things_and_stuff(tiny_base):
    inst = _load(os.path.join(tiny_base, "annotations", "instances_val.json"))
    unseen_things = _category_ids(inst, [c for c in SPLIT.unseen if c in SPLIT.things])
    assert any(a["category_id"] in unseen_things for a in inst["annotations"])
    unseen_stuff = _sem_labels([c for c in SPLIT.unseen if c in SPLIT.stuff])
    sems = [_png(os.path.join(tiny_base, "val", "sem_seg", im["file_name"])) for im in inst["images"]]
    assert any(np.isin(s, unseen_stuff).any() for s in sems)


def test_distractors_are_void_and_unannotated(tiny_base):
    difficulty = get_difficulty(PRESET)
    pan_json = _load(os.path.join(tiny_base, "annotations", "panoptic_val.json"))
    inst = COCO(os.path.join(tiny_base, "annotations", "instances_val.json"))
    ignored_pixels = 0
    for entry in pan_json["annotations"]:
        sem = _png(os.path.join(tiny_base, "val", "sem_seg", entry["file_name"]))
        pan = _pan_ids(os.path.join(tiny_base, "val", "panoptic", entry["file_name"]))
        np.testing.assert_array_equal(sem == 255, pan == 0)  # VOID exactly where ignore
        ignored_pixels += int((sem == 255).sum())
        for ann in inst.loadAnns(inst.getAnnIds(imgIds=[entry["image_id"]])):
            assert not (inst.annToMask(ann).astype(bool) & (sem == 255)).any()
    assert ignored_pixels > 0, "tiny val should contain distractors"

    # Re-render image 1 of val: every distractor's visible pixels are ignore/VOID.
    cues = class_cues(SPLIT.things + SPLIT.ignored, SPLIT.stuff)
    found = 0
    for index in range(difficulty.num_val):
        rng = np.random.default_rng([difficulty.seed, 1, index])
        r = render_image(rng, difficulty, list(SPLIT.things), list(SPLIT.stuff), list(SPLIT.ignored), cues)
        sem = _png(os.path.join(tiny_base, "val", "sem_seg", f"{index + 1:06d}.png"))
        image = _png(os.path.join(tiny_base, "val", "images", f"{index + 1:06d}.png"))
        np.testing.assert_array_equal(image, r.image)
        for obj in r.objects:
            if not obj.labelled:
                found += 1
                assert obj.name in SPLIT.ignored
                assert (sem[obj.visible] == 255).all()
    assert found > 0


def test_instance_masks_equal_panoptic_segments(tiny_base):
    for subset in ("train", "val"):
        inst = COCO(os.path.join(tiny_base, "annotations", f"instances_{subset}.json"))
        pan_json = _load(os.path.join(tiny_base, "annotations", f"panoptic_{subset}.json"))
        thing_ids = _category_ids(pan_json, SPLIT.things)
        for entry in pan_json["annotations"]:
            pan = _pan_ids(os.path.join(tiny_base, subset, "panoptic", entry["file_name"]))
            thing_segments = [s for s in entry["segments_info"] if s["category_id"] in thing_ids]
            anns = inst.loadAnns(inst.getAnnIds(imgIds=[entry["image_id"]]))
            assert len(anns) == len(thing_segments)
            for ann, seg in zip(anns, thing_segments):
                mask = inst.annToMask(ann).astype(bool)
                np.testing.assert_array_equal(mask, pan == seg["id"])
                assert ann["category_id"] == seg["category_id"]
                assert ann["bbox"] == seg["bbox"] and ann["area"] == seg["area"] == mask.sum()
            for seg in entry["segments_info"]:
                assert (pan == seg["id"]).sum() == seg["area"] > 0


def test_pycocotools_loads_every_json(tiny_base):
    for subset in ("train", "val", "val_zsi"):
        coco = COCO(os.path.join(tiny_base, "annotations", f"instances_{subset}.json"))
        assert coco.getImgIds() and coco.getAnnIds()
        assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == set(SPLIT.things)
        ann = coco.loadAnns(coco.getAnnIds()[:1])[0]
        assert coco.annToMask(ann).shape == (128, 128)
    zsi = COCO(os.path.join(tiny_base, "annotations", "instances_val_zsi.json"))
    unseen = _category_ids(zsi.dataset, [c for c in SPLIT.unseen if c in SPLIT.things])
    assert all(a["category_id"] in unseen for a in zsi.loadAnns(zsi.getAnnIds()))


def test_registration_metadata_and_dicts(tiny_root):
    # Registration is lazy: the default preset's folder is known but not generated.
    assert not os.path.exists(dataset_dir("default"))
    for name in ("zs_shapes_train", "zs_shapes_val", "zs_shapes_val_zsi", "zs_shapes_default_val"):
        assert name in DatasetCatalog.list()
    for preset in PRESETS:
        for subset in ("train", "val", "val_zsi", "calib"):
            assert f"zs_shapes_{preset}_{subset}" in DatasetCatalog.list()
    assert MetadataCatalog.get("zs_shapes_val").zs_shapes_difficulty == "default"

    train = DatasetCatalog.get("zs_shapes_tiny_train")
    meta = MetadataCatalog.get("zs_shapes_tiny_train")
    assert meta.thing_classes == list(SPLIT.things)
    assert meta.stuff_classes == list(SPLIT.classes)
    assert meta.seen_classes == SPLIT.seen and meta.unseen_classes == SPLIT.unseen
    assert meta.ignored_classes == SPLIT.ignored
    assert meta.zero_shot_split == "zs_shapes" and meta.zero_shot_mode == "train"
    assert meta.evaluator_type == "zero_shot" and meta.ignore_label == 255
    assert set(meta.zero_shot_tasks) == {"instance", "semantic"}  # the instance view
    assert len(meta.thing_colors) == len(meta.thing_classes)
    assert len(meta.stuff_colors) == len(meta.stuff_classes)
    assert meta.json_file.startswith(tiny_root)
    for key in ("json_file", "image_root", "sem_seg_root"):
        assert os.path.exists(getattr(meta, key)), key
    assert meta.get("panoptic_json", None) is None and meta.get("stuff_dataset_id_to_contiguous_id", None) is None
    assert len(train) == get_difficulty(PRESET).num_train

    d = train[0]
    for key in ("file_name", "image_id", "height", "width", "annotations", "sem_seg_file_name"):
        assert key in d
    assert "segments_info" not in d and "pan_seg_file_name" not in d
    for path in (d["file_name"], d["sem_seg_file_name"]):
        assert os.path.isfile(path)
    ann = d["annotations"][0]
    assert ann["iscrowd"] == 0 and isinstance(ann["segmentation"], dict)
    assert 0 <= ann["category_id"] < len(meta.thing_classes)
    assert mask_util.decode(ann["segmentation"]).sum() == ann["area"]

    # The panoptic view of the same images: detectron2's standard convention.
    pan_train = DatasetCatalog.get("zs_shapes_tiny_train_panoptic")
    pan_meta = MetadataCatalog.get("zs_shapes_tiny_train_panoptic")
    assert set(pan_meta.zero_shot_tasks) == {"instance", "panoptic", "semantic"}
    assert pan_meta.stuff_classes == list(SPLIT.classes) and pan_meta.thing_classes == pan_meta.stuff_classes
    for key in ("panoptic_json", "panoptic_root"):
        assert os.path.exists(getattr(pan_meta, key)), key
    p = pan_train[0]
    assert p["file_name"] == d["file_name"] and "annotations" not in p
    pan = _pan_ids(p["pan_seg_file_name"])
    for seg in p["segments_info"]:
        assert pan_meta.stuff_classes[seg["category_id"]] in SPLIT.seen
        assert (pan == seg["id"]).any()

    val = MetadataCatalog.get("zs_shapes_tiny_val")
    zsi_meta = MetadataCatalog.get("zs_shapes_tiny_val_zsi")
    assert val.zero_shot_mode == "gzsi" and zsi_meta.zero_shot_mode == "zsi"
    zsi = DatasetCatalog.get("zs_shapes_tiny_val_zsi")
    assert zsi and all(zsi_meta.thing_classes[a["category_id"]] in SPLIT.unseen
                       for d in zsi for a in d["annotations"])
    assert all(d["annotations"] for d in zsi)


def test_unknown_attribute_word_is_a_clear_error():
    for name, word in (("magenta square", "magenta"), ("red blob", "blob"),
                       ("shiny dotted ground", "shiny"), ("dark furry ground", "furry")):
        with pytest.raises(ValueError, match=f"unknown .* word '{word}'"):
            parse_class(name)
    bad = ZeroShotSplit(name="zs_shapes_bad", seen=("red square", "light dotted ground"),
                        unseen=("teal square",), stuff=("light dotted ground",))
    with pytest.raises(ValueError, match="'teal'"):
        gen.check_split(bad)


def test_interrupted_runs_do_not_break_generation(tmp_path, monkeypatch):
    root = str(tmp_path)
    final = dataset_dir(PRESET, root)
    parent, name = os.path.split(final)
    # Debris of a killed run: a temp folder and a final folder without meta.json.
    stale = os.path.join(parent, f".{name}.tmp-999999-deadbeef")
    os.makedirs(os.path.join(stale, "train", "images"))
    open(os.path.join(stale, "train", "images", "000001.png"), "wb").close()

    # A run that fails halfway leaves neither a final folder nor its temp folder behind.
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gen, "generate_dataset", boom)
    with pytest.raises(KeyboardInterrupt):
        ensure_generated(PRESET, root=root)
    assert not os.path.exists(final)
    monkeypatch.undo()

    assert ensure_generated(PRESET, root=root) == final
    assert os.path.isfile(os.path.join(final, "meta.json"))
    assert not [n for n in os.listdir(parent) if ".tmp-" in n]
    # Cached: a second call does not regenerate.
    mtime = os.path.getmtime(os.path.join(final, "meta.json"))
    assert ensure_generated(PRESET, root=root) == final
    assert os.path.getmtime(os.path.join(final, "meta.json")) == mtime


def test_default_difficulty_is_frozen():
    """The calibrated benchmark must not move: every zs_shapes number in the README is on it.
    If this fails, a change touched the default preset, the generator version or the split."""
    from zsi_d2.data.splits import get_split
    from zsi_d2.data.zs_shapes.difficulty import difficulty_hash, get_difficulty

    assert difficulty_hash(get_difficulty("default"), get_split("zs_shapes")) == "925a594cba"


def test_the_unlabelled_pool_is_images_only_drawn_like_val_and_disjoint_from_it(tiny_root):
    """Transductive self-training reads images, never labels: the registered pool's records carry
    none, its images show unseen objects (so self-training has something to find) and none is a
    validation or training image."""
    records = DatasetCatalog.get("zs_shapes_tiny_unlabelled")
    assert records and all(set(r) == {"file_name", "image_id", "height", "width"} for r in records)
    meta = MetadataCatalog.get("zs_shapes_tiny_unlabelled")
    assert meta.unlabelled and meta.zero_shot_mode == "train" and not meta.get("json_file", None)
    base = ensure_generated("tiny")
    hashes = {s: set(_tree_hashes(os.path.join(base, s, "images")).values()) for s in ("train", "val", "unlabelled")}
    assert len(hashes["unlabelled"]) == len(records)
    assert not hashes["unlabelled"] & (hashes["val"] | hashes["train"])
    labels = [_png(os.path.join(base, "unlabelled", "sem_seg", os.path.basename(r["file_name"]))) for r in records]
    assert any(np.isin(sem, _sem_labels(SPLIT.unseen)).any() for sem in labels)  # drawn like val
    from zsi_d2.data.audit import audit_dataset

    assert audit_dataset("zs_shapes_tiny_unlabelled").ok
