"""zs_shapes' open-vocabulary set (val_ov, val_ov_zsi): val's images with the distractors, which
training images hold unlabelled, annotated under their own names.

Checked: the names and the pixels they cover (against a new rendering), the counts, the groups the
evaluators form, both views through detectron2's own readers, and that nothing else moved: the
training files never name these classes and every file of the other subsets is what it was
before the set existed (a digest taken on the main branch).
"""
import hashlib
import os
import shutil

import numpy as np
import pytest
import torch

import zsi_d2  # noqa: F401  (compat layer + dataset registration)
from conftest import tiny_cfg
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json
from detectron2.modeling import build_model
from detectron2.utils.file_io import PathManager
from pycocotools import mask as mask_util
from test_panoptic_convention import _oracle_outputs, _standard_mapper
from test_zs_shapes import _load, _pan_ids, _png

from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.data import make_zero_shot
from zsi_d2.data.metadata import DatasetSetupError
from zsi_d2.data import splits
from zsi_d2.data.splits import ZeroShotSplit, get_split
from zsi_d2.data.zs_shapes import PRESETS, ensure_generated, get_difficulty
from zsi_d2.data.zs_shapes.generate import OPEN_VOCABULARY_SUBSETS, annotation_paths
from zsi_d2.data.zs_shapes.render import class_cues, render_image
from zsi_d2.errors import InputValueError
from zsi_d2.evaluation import build_zero_shot_evaluator
from zsi_d2.modeling import use_class_set
from zsi_d2.modeling.class_set import dataset_class_set

PRESET = "tiny"
SPLIT = get_split("zs_shapes")
OV = SPLIT.ignored  # the open-vocabulary names
NAMES = {f"zs_shapes_{PRESET}_{subset}{view}": (subset, view) for subset in OPEN_VOCABULARY_SUBSETS
         for view in ("", "_panoptic")}
# Content digest of the tiny preset's files made by the generator before the open-vocabulary set
# existed (main @56ac0b3): JSON bytes and decoded PNG pixels, path by path. The set only adds files.
TINY_DIGEST_BEFORE = "bebea69b186b571f84d557199d2993dc94438426bbba86814da567103a194584"
TINY_FILES_BEFORE = 297


@pytest.fixture(scope="module")
def tiny_base():
    return ensure_generated(PRESET)  # conftest's session DETECTRON2_DATASETS


def _is_open_vocabulary_file(rel):
    return rel.startswith("val_ov" + os.sep) or any(f"_{s}.json" in rel for s in OPEN_VOCABULARY_SUBSETS)


def _is_unlabelled_file(rel):
    """The unlabelled pool, added later with its own RNG stream (tests/test_zs_shapes.py covers it)."""
    return rel.startswith("unlabelled" + os.sep) or "_unlabelled.json" in rel


def content_digest(base, keep=lambda rel: True):
    """(sha256 over every kept file's path and content, number of files): PNGs by their pixels."""
    digest, count = hashlib.sha256(), 0
    for dirpath, _, files in sorted(os.walk(base)):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, base)
            if not keep(rel):
                continue
            if name.endswith(".png"):
                pixels = _png(path)
                data = repr(pixels.shape).encode() + pixels.tobytes()
            else:
                with open(path, "rb") as f:
                    data = f.read()
            digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
            count += 1
    return digest.hexdigest(), count


# ---------------------------------------------------------------------------------------------
# registration and metadata
# ---------------------------------------------------------------------------------------------
def test_registered_like_the_other_subsets():
    for preset in PRESETS:
        for name in NAMES:
            assert name.replace(f"_{PRESET}_", f"_{preset}_") in DatasetCatalog.list()
    for name in ("zs_shapes_val_ov", "zs_shapes_val_ov_panoptic", "zs_shapes_val_ov_zsi",
                 "zs_shapes_val_ov_zsi_panoptic"):
        assert name in DatasetCatalog.list() and MetadataCatalog.get(name).zs_shapes_difficulty == "default"
    val = MetadataCatalog.get(f"zs_shapes_{PRESET}_val")
    for name, (subset, view) in NAMES.items():
        meta = MetadataCatalog.get(name)
        assert meta.zero_shot_split == "zs_shapes" and meta.evaluator_type == "zero_shot"
        assert meta.zero_shot_mode == ("gzsi" if subset == "val_ov" else "zsi")
        # the evaluators' two groups: the open-vocabulary names alone are "unseen"
        assert meta.unseen_classes == OV and meta.open_vocabulary_classes == OV
        assert meta.seen_classes == SPLIT.seen + SPLIT.unseen and meta.ignored_classes == ()
        assert meta.stuff_classes == list(SPLIT.classes + OV)  # the semantic label space: OV after the split's
        assert meta.image_root == val.image_root  # val's images, not a copy
        assert meta.sem_seg_root != val.sem_seg_root and meta.ignore_label == 255
        if view:
            assert meta.thing_classes == meta.stuff_classes and meta.panoptic_root.endswith("val_ov/panoptic")
        else:
            assert meta.thing_classes == list(SPLIT.things + OV)
            assert meta.thing_dataset_id_to_contiguous_id == {
                (SPLIT.classes + OV).index(c) + 1: i for i, c in enumerate(SPLIT.things + OV)}
    # the other subsets keep the split's groups
    assert val.unseen_classes == SPLIT.unseen and val.get("open_vocabulary_classes", None) is None


def test_class_sets_ask_for_the_open_vocabulary_names():
    gzsi = dataset_class_set(f"zs_shapes_{PRESET}_val_ov", "thing")
    assert gzsi.names == SPLIT.things + OV and gzsi.unseen == OV
    assert dataset_class_set(f"zs_shapes_{PRESET}_val_ov_zsi", "thing").names == OV
    assert dataset_class_set(f"zs_shapes_{PRESET}_val_ov_panoptic", "auto").names == SPLIT.classes + OV


# ---------------------------------------------------------------------------------------------
# the annotations
# ---------------------------------------------------------------------------------------------
def test_counts(tiny_base):
    meta_json = _load(os.path.join(tiny_base, "meta.json"))
    n_distractors = meta_json["counts"]["val"]["distractors"]
    assert n_distractors > 0
    val = _load(annotation_paths(tiny_base, "val")["json_file"])
    ov = _load(annotation_paths(tiny_base, "val_ov")["json_file"])
    ov_zsi = _load(annotation_paths(tiny_base, "val_ov_zsi")["json_file"])
    first_ov_id = len(SPLIT.classes) + 1
    assert ov["images"] == val["images"]
    assert len(ov["annotations"]) == len(val["annotations"]) + n_distractors
    assert ov["annotations"][:len(val["annotations"])] == val["annotations"]
    assert sorted(a["id"] for a in ov["annotations"]) == list(range(1, len(ov["annotations"]) + 1))
    assert [a for a in ov["annotations"] if a["category_id"] >= first_ov_id] == ov_zsi["annotations"]
    assert {im["id"] for im in ov_zsi["images"]} == {a["image_id"] for a in ov_zsi["annotations"]}
    assert len(DatasetCatalog.get(f"zs_shapes_{PRESET}_val_ov")) == get_difficulty(PRESET).num_val
    assert len(DatasetCatalog.get(f"zs_shapes_{PRESET}_val_ov_zsi_panoptic")) == len(ov_zsi["images"])
    cats = {c["id"]: c for c in ov["categories"]}
    assert [cats[first_ov_id + j]["name"] for j in range(len(OV))] == list(OV)
    assert {cats[first_ov_id + j]["supercategory"] for j in range(len(OV))} == {"open_vocabulary"}
    per_name = {n: 0 for n in OV}
    for a in ov_zsi["annotations"]:
        per_name[cats[a["category_id"]]["name"]] += 1
    assert sum(per_name.values()) == n_distractors


def test_each_distractor_is_named_where_val_is_void(tiny_base):
    """A new rendering of every val image: each distractor's visible pixels carry its own name in
    val_ov (semantic, panoptic, instance views); every other pixel and segment is val's."""
    d = get_difficulty(PRESET)
    cues = class_cues(SPLIT.things + SPLIT.ignored, SPLIT.stuff, d.cue_class_share)
    meta = MetadataCatalog.get(f"zs_shapes_{PRESET}_val_ov_panoptic")
    inst_meta = MetadataCatalog.get(f"zs_shapes_{PRESET}_val_ov")
    pan_records = {r["image_id"]: r for r in DatasetCatalog.get(f"zs_shapes_{PRESET}_val_ov_panoptic")}
    inst_records = {r["image_id"]: r for r in DatasetCatalog.get(f"zs_shapes_{PRESET}_val_ov")}
    val_records = {r["image_id"]: r for r in DatasetCatalog.get(f"zs_shapes_{PRESET}_val_panoptic")}
    found = 0
    for index in range(d.num_val):
        image_id = index + 1
        r = render_image(np.random.default_rng([d.seed, 1, index]), d, list(SPLIT.things), list(SPLIT.stuff),
                         list(SPLIT.ignored), cues)
        val_sem = _png(val_records[image_id]["sem_seg_file_name"])
        ov_sem = _png(pan_records[image_id]["sem_seg_file_name"])
        val_pan = _pan_ids(val_records[image_id]["pan_seg_file_name"])
        ov_pan = _pan_ids(pan_records[image_id]["pan_seg_file_name"])
        np.testing.assert_array_equal(ov_sem[val_sem != 255], val_sem[val_sem != 255])
        np.testing.assert_array_equal(ov_pan[val_pan != 0], val_pan[val_pan != 0])
        segments = {s["id"]: s for s in pan_records[image_id]["segments_info"]}
        masks = [(inst_meta.thing_classes[a["category_id"]], mask_util.decode(a["segmentation"]).astype(bool))
                 for a in inst_records[image_id]["annotations"]]
        for obj in r.objects:
            if obj.labelled or not obj.visible.any():
                continue
            found += 1
            assert (val_sem[obj.visible] == 255).all()
            assert (ov_sem[obj.visible] == meta.stuff_classes.index(obj.name)).all()
            (seg_id,) = np.unique(ov_pan[obj.visible])
            assert meta.stuff_classes[segments[seg_id]["category_id"]] == obj.name and segments[seg_id]["isthing"]
            assert (ov_pan == seg_id).sum() == obj.visible.sum() == segments[seg_id]["area"]
            assert sum(name == obj.name and np.array_equal(m, obj.visible) for name, m in masks) == 1
        assert not (ov_sem == 255).any()  # nothing is left unnamed
    assert found == sum(len(r["annotations"]) for r in DatasetCatalog.get(f"zs_shapes_{PRESET}_val_ov_zsi"))


# ---------------------------------------------------------------------------------------------
# detectron2's own readers and consumers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("subset", OPEN_VOCABULARY_SUBSETS)
def test_detectron2_coco_loader_reads_the_instance_view(subset):
    name = f"zs_shapes_{PRESET}_{subset}"
    meta = MetadataCatalog.get(name)
    # detectron2's load_coco_json re-derives thing_classes and the id map from the json and sets
    # them on the metadata: Metadata refuses a different value, so equal metadata is checked too.
    theirs = {d["image_id"]: d for d in load_coco_json(meta.json_file, meta.image_root, name)}
    ours = {d["image_id"]: d for d in DatasetCatalog.get(name)}
    assert theirs.keys() == ours.keys()
    for image_id, d in ours.items():
        assert theirs[image_id]["file_name"] == d["file_name"] and os.path.isfile(d["file_name"])
        key = lambda a: (a["category_id"], a["bbox"])  # noqa: E731
        assert sorted(map(key, theirs[image_id]["annotations"])) == sorted(map(key, d["annotations"]))
    mapper = DatasetMapper(tiny_cfg(), is_train=True)  # keeps the annotations, as detectron2's Instances
    record = next(d for d in DatasetCatalog.get(name) if any(
        meta.thing_classes[a["category_id"]] in OV for a in d["annotations"]))
    gt = mapper(record)["instances"]
    assert {meta.thing_classes[c] for c in gt.gt_classes.tolist()} & set(OV)
    assert gt.gt_masks.tensor.shape[0] == len(record["annotations"])


@pytest.mark.parametrize("subset", OPEN_VOCABULARY_SUBSETS)
def test_detectron2_panoptic_loader_reads_the_panoptic_view(subset, monkeypatch):
    name = f"zs_shapes_{PRESET}_{subset}_panoptic"
    meta = MetadataCatalog.get(name)
    # detectron2 0.6's loader names every image "<stem>.jpg" (COCO's) and checks the first exists;
    # zs_shapes images are PNGs, so that one check looks for the .png (as for the other zs_shapes sets).
    isfile = PathManager.isfile
    monkeypatch.setattr(PathManager, "isfile", lambda path: isfile(os.path.splitext(path)[0] + ".png"))
    theirs = {d["image_id"]: d for d in load_coco_panoptic_json(meta.panoptic_json, meta.image_root,
                                                                meta.panoptic_root, meta.as_dict())}
    ours = {d["image_id"]: d for d in DatasetCatalog.get(name)}
    assert theirs.keys() == ours.keys()
    ov_segments = 0
    for image_id, d in ours.items():
        assert os.path.splitext(theirs[image_id]["file_name"])[0] == os.path.splitext(d["file_name"])[0]
        assert theirs[image_id]["pan_seg_file_name"] == d["pan_seg_file_name"]
        assert theirs[image_id]["segments_info"] == d["segments_info"]
        pan = _pan_ids(d["pan_seg_file_name"])
        for s in d["segments_info"]:
            assert (pan == s["id"]).sum() == s["area"] > 0
            ov_segments += meta.stuff_classes[s["category_id"]] in OV
    assert ov_segments > 0


# ---------------------------------------------------------------------------------------------
# evaluation: the open-vocabulary names are a group of their own
# ---------------------------------------------------------------------------------------------
def test_a_model_that_leaves_the_distractors_as_background_scores_zero_on_them(tmp_path):
    """The ground truth as predictions, minus the open-vocabulary segments: seen = 100 (the split's
    classes are untouched by the new names), unseen = the open-vocabulary names = 0."""
    name = f"zs_shapes_{PRESET}_val_ov_panoptic"
    cfg = get_zsi_d2_cfg()
    cfg.MODEL.MASK_ON = True
    cfg.TEST.ZERO_SHOT_TASKS = ["panoptic", "semantic", "instance"]
    meta = MetadataCatalog.get(name)
    ov_ids = {meta.stuff_classes.index(n) for n in OV}
    evaluator = build_zero_shot_evaluator(cfg, name, str(tmp_path))
    evaluator.reset()
    for d in DatasetCatalog.get(name):
        classes, masks = _standard_mapper(d)
        kept = [(c, m) for c, m in zip(classes, masks) if c not in ov_ids]
        outputs = _oracle_outputs([c for c, _ in kept], [m for _, m in kept], meta, (d["height"], d["width"]))
        evaluator.process([d], [outputs])
    res = evaluator.evaluate()
    for task, metric in (("panoptic_seg", "PQ"), ("sem_seg", "mIoU"), ("segm", "AP50")):
        assert res[task][f"{metric}/unseen"] == pytest.approx(0.0), task
        assert res[task][f"{metric}/hm"] == pytest.approx(0.0), task
    assert res["panoptic_seg"]["PQ/seen"] == pytest.approx(100.0) and res["segm"]["AP50/seen"] == pytest.approx(100.0)
    # semantic scores have no "nothing": the omitted pixels go to class 0, the only seen class below 100
    below = [n for n in SPLIT.classes if res["sem_seg"][f"IoU/{n}"] < 100.0 - 1e-6]
    assert below == [meta.stuff_classes[0]]


def test_a_zero_shot_model_scores_the_open_vocabulary_names():
    """A model built with the set among its test sets embeds the new names and, on val_ov_zsi,
    predicts only them, in the dataset's ids."""
    torch.manual_seed(0)
    cfg = tiny_cfg("MODEL.EFFICIENTNET.WEIGHTS", "", "DATASETS.TEST", "('zs_shapes_tiny_val_ov_zsi',)",
                   "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")
    model = build_model(cfg).eval()
    name = "zs_shapes_tiny_val_ov_zsi"
    meta = MetadataCatalog.get(name)
    ov_ids = {meta.thing_classes.index(n) for n in OV}
    mapper = DatasetMapper(cfg, is_train=False)
    inputs = [mapper(d) for d in DatasetCatalog.get(name)[:2]]
    with torch.no_grad(), use_class_set(model, name):
        assert model.roi_heads.box_predictor.num_classes == len(OV)
        out = model(inputs)
    predicted = set(torch.cat([o["instances"].pred_classes for o in out]).tolist())
    assert predicted and predicted <= ov_ids


# ---------------------------------------------------------------------------------------------
# leakage: training data and the other subsets do not move
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("subset", ["train", "calib"])
def test_training_annotations_never_name_the_open_vocabulary_classes(tiny_base, subset):
    paths = annotation_paths(tiny_base, subset)
    for key in ("json_file", "panoptic_json"):
        data = _load(paths[key])
        assert not {c["name"] for c in data["categories"]} & set(OV)
        assert max(c["id"] for c in data["categories"]) <= len(SPLIT.classes)
    pan = _load(paths["panoptic_json"])
    assert max(s["category_id"] for p in pan["annotations"] for s in p["segments_info"]) <= len(SPLIT.classes)
    assert max(a["category_id"] for a in _load(paths["json_file"])["annotations"]) <= len(SPLIT.classes)
    for image in pan["images"]:
        sem = _png(os.path.join(paths["sem_seg_root"], image["file_name"]))
        assert set(np.unique(sem).tolist()) <= set(range(len(SPLIT.classes))) | {255}
    for view in ("", "_panoptic"):
        meta = MetadataCatalog.get(f"zs_shapes_{PRESET}_{subset}{view}")
        assert not set(meta.thing_classes + meta.stuff_classes) & set(OV)
        assert meta.stuff_classes == list(SPLIT.classes)
    assert "val_ov" not in paths["sem_seg_root"] and "val_ov" not in paths["panoptic_root"]


def test_other_subsets_are_byte_for_byte_what_they_were(tiny_base):
    assert content_digest(tiny_base, lambda rel: not (_is_open_vocabulary_file(rel) or _is_unlabelled_file(rel))) \
        == (TINY_DIGEST_BEFORE, TINY_FILES_BEFORE)
    added = [rel for rel in _tree(tiny_base) if _is_open_vocabulary_file(rel)]
    assert len(added) == 4 + 2 * get_difficulty(PRESET).num_val  # 4 json + panoptic and semantic PNGs


def _tree(base):
    return sorted(os.path.relpath(os.path.join(d, n), base) for d, _, files in os.walk(base) for n in files)


def test_added_in_place_to_an_older_cache(tmp_path):
    """A cache made before the set existed gets it in place, identical to a fresh generation; a
    cached val that no longer matches its settings is refused in one line."""
    base = ensure_generated(PRESET, root=str(tmp_path / "a"))
    fresh = content_digest(base)
    shutil.rmtree(os.path.join(base, "val_ov"))
    for subset in OPEN_VOCABULARY_SUBSETS:
        for key in ("json_file", "panoptic_json"):
            os.remove(annotation_paths(base, subset)[key])
    assert content_digest(base, lambda rel: not _is_unlabelled_file(rel))[0] == TINY_DIGEST_BEFORE
    assert ensure_generated(PRESET, root=str(tmp_path / "a")) == base
    assert content_digest(base) == fresh
    shutil.rmtree(os.path.join(base, "val_ov"))
    os.remove(annotation_paths(base, "val_ov_zsi")["json_file"])
    with open(annotation_paths(base, "val")["json_file"], "a") as f:
        f.write(" ")
    with pytest.raises(InputValueError, match=r"instances_val\.json differs from a new rendering.*delete") as info:
        ensure_generated(PRESET, root=str(tmp_path / "a"))
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# make_zero_shot(open_vocabulary=True) on other data
# ---------------------------------------------------------------------------------------------
def test_make_zero_shot_open_vocabulary_refuses_what_makes_no_sense(monkeypatch):
    name = f"zs_shapes_{PRESET}_val"
    with pytest.raises(DatasetSetupError, match="cannot be a training set"):
        make_zero_shot(name, "zs_shapes", "train", open_vocabulary=True)
    # registered for this test only: a second split with zs_shapes' classes would make inference ambiguous
    monkeypatch.setitem(splits._SPLITS, "zsi_d2_test_no_ignored", ZeroShotSplit(
        name="zsi_d2_test_no_ignored", seen=SPLIT.seen, unseen=SPLIT.unseen, stuff=SPLIT.stuff))
    with pytest.raises(DatasetSetupError, match="has no ignored classes"):
        make_zero_shot(name, "zsi_d2_test_no_ignored", "gzsi", open_vocabulary=True)
    assert MetadataCatalog.get(name).unseen_classes == SPLIT.unseen  # refused before any change
