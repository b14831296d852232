"""Registration of the COCO zero-shot datasets, their metadata contract and the leakage audit."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import zsi_d2  # noqa: F401  (compat layer + registrations)
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from zsi_d2.config import add_zsi_d2_config
from zsi_d2.data import audit
from zsi_d2.data.coco import (
    COCO_ZERO_SHOT_DATASETS, prepare_coco_split, prepared_paths, register_all_coco_zero_shot,
)
from zsi_d2.data.splits import COCO_THING_CLASSES, COCO_THING_IDS, get_split
from detectron2.evaluation import DatasetEvaluators
from zsi_d2.evaluation import (
    ZeroShotInstanceEvaluator, ZeroShotPanopticEvaluator, ZeroShotSemanticEvaluator, build_zero_shot_evaluator,
)
from zsi_d2.modeling.class_set import dataset_class_set

import coco_fixtures as fx

TRAIN_SETS = ("coco_2014_zsi_48_17_train", "coco_2014_zsi_65_15_train", "coco_2017_zsp_119_14_train",
              "coco_2017_zsp_119_14_train_panoptic", "coco_stuff_zss_156_15_train")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Prepared fixture tree; the COCO datasets registered under it for this module only."""
    base = tmp_path_factory.mktemp("d2_datasets")
    coco_dir = fx.build_coco_root(str(base / "coco"))
    for split_name in ("coco_48_17", "coco_65_15", "coco_panoptic_119_14", "coco_stuff_156_15"):
        prepare_coco_split(split_name, coco_dir, progress=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DETECTRON2_DATASETS", str(base))
        register_all_coco_zero_shot()
        yield str(base)
    register_all_coco_zero_shot()  # back to the session's DETECTRON2_DATASETS


def test_names_resolve_and_mode_follows_the_name(root):
    registered = set(DatasetCatalog.list())
    for name, (split_name, _, mode) in COCO_ZERO_SHOT_DATASETS.items():
        assert name in registered
        meta = MetadataCatalog.get(name)
        assert (meta.zero_shot_mode, meta.evaluator_type, meta.zero_shot_split) == (mode, "zero_shot", split_name)
        assert meta.json_file.startswith(root) if hasattr(meta, "json_file") else meta.sem_seg_root.startswith(root)
    expected = {"coco_2014_zsi_48_17_train": "train", "coco_2014_zsi_48_17_test_unseen": "zsi",
                "coco_2014_gzsi_48_17_test": "gzsi", "coco_2017_zsp_119_14_train": "train",
                "coco_2017_zsp_119_14_val": "gzsi", "coco_stuff_zss_156_15_train": "train",
                "coco_stuff_zss_156_15_val": "gzsi"}
    assert {n: MetadataCatalog.get(n).zero_shot_mode for n in expected} == expected


def test_metadata_contract(root):
    split = get_split("coco_48_17")
    meta = MetadataCatalog.get("coco_2014_zsi_48_17_train")
    assert meta.thing_classes == [c for c in COCO_THING_CLASSES if c in split.classes]  # 65, COCO order
    assert not set(meta.thing_classes) & set(split.ignored)
    ids = dict(zip(COCO_THING_CLASSES, COCO_THING_IDS))
    assert meta.thing_dataset_id_to_contiguous_id == {ids[n]: i for i, n in enumerate(meta.thing_classes)}
    assert (tuple(meta.seen_classes), tuple(meta.unseen_classes)) == (split.seen, split.unseen)
    assert meta.zero_shot_tasks == ("instance",)
    # A panoptic split's instance view: 80 things at 0..79, no panoptic fields.
    inst = MetadataCatalog.get("coco_2017_zsp_119_14_val")
    assert len(inst.stuff_classes) == 133 and len(inst.thing_classes) == 80
    assert sorted(inst.thing_dataset_id_to_contiguous_id.values()) == list(range(80))
    assert set(inst.zero_shot_tasks) == {"instance", "semantic"} and inst.get("panoptic_json", None) is None
    # ... and its "_panoptic" view, detectron2's standard convention (one 133-class space).
    pan = MetadataCatalog.get("coco_2017_zsp_119_14_val_panoptic")
    assert pan.stuff_classes == inst.stuff_classes and pan.thing_classes == pan.stuff_classes
    assert {pan.stuff_classes[v] for v in pan.thing_dataset_id_to_contiguous_id.values()} == set(inst.thing_classes)
    assert set(pan.zero_shot_tasks) == {"panoptic", "instance", "semantic"} and pan.ignore_label == 255
    assert pan.label_divisor == 1000
    stuff = MetadataCatalog.get("coco_stuff_zss_156_15_train")
    assert len(stuff.stuff_classes) == 171 and stuff.zero_shot_tasks == ("semantic",)


def test_class_sets_follow_the_metadata(root):
    split = get_split("coco_48_17")
    assert set(dataset_class_set("coco_2014_zsi_48_17_train").names) == set(split.seen)
    assert set(dataset_class_set("coco_2014_zsi_48_17_test_unseen").names) == set(split.unseen)
    assert set(dataset_class_set("coco_2014_gzsi_48_17_test").names) == set(split.classes)
    pan = get_split("coco_panoptic_119_14")
    assert set(dataset_class_set("coco_2017_zsp_119_14_train", "stuff").names) == set(pan.seen)


def test_loaded_dicts(root):
    split = get_split("coco_48_17")
    meta = MetadataCatalog.get("coco_2014_zsi_48_17_train")
    train = DatasetCatalog.get("coco_2014_zsi_48_17_train")
    assert len(train) == 9 and all(os.path.isfile(d["file_name"]) for d in train)
    assert {meta.thing_classes[a["category_id"]] for d in train for a in d["annotations"]} <= set(split.seen)
    pan = DatasetCatalog.get("coco_2017_zsp_119_14_val_panoptic")
    d = next(d for d in pan if d["image_id"] == 1001)
    assert all(os.path.isfile(d[k]) for k in ("file_name", "pan_seg_file_name", "sem_seg_file_name"))
    assert "annotations" not in d
    pmeta = MetadataCatalog.get("coco_2017_zsp_119_14_val_panoptic")
    assert {pmeta.stuff_classes[s["category_id"]] for s in d["segments_info"]} == {"sky-other-merged", "cow", "person"}
    inst = next(d for d in DatasetCatalog.get("coco_2017_zsp_119_14_val") if d["image_id"] == 1001)
    assert "segments_info" not in inst and inst["sem_seg_file_name"] == d["sem_seg_file_name"]
    imeta = MetadataCatalog.get("coco_2017_zsp_119_14_val")
    assert sorted(imeta.thing_classes[a["category_id"]] for a in inst["annotations"]) == ["cow", "person"]
    assert len(DatasetCatalog.get("coco_stuff_zss_156_15_val")) == len(fx.stuff_design("val"))


def test_evaluators_build_from_the_name(root):
    """Each dataset gets the evaluators of the tasks it supports, in the mode its name says."""
    def _built(cfg, name):
        """[(evaluator class, mode, instance iou types or None)] of what the name builds, in order."""
        built = build_zero_shot_evaluator(cfg, name)
        evaluators = built._evaluators if isinstance(built, DatasetEvaluators) else [built]
        return [(type(e), e._mode, getattr(e, "_tasks", None)) for e in evaluators], evaluators

    cfg = get_cfg()
    add_zsi_d2_config(cfg)
    cfg.MODEL.MASK_ON = True
    cfg.TEST.ZERO_SHOT_TASKS = ("instance", "panoptic", "semantic")
    kinds, (instance,) = _built(cfg, "coco_2014_gzsi_48_17_test")
    assert kinds == [(ZeroShotInstanceEvaluator, "gzsi", ("bbox", "segm"))]
    split = get_split("coco_48_17")
    assert (instance._seen, instance._unseen) == (split.seen, split.unseen)
    assert _built(cfg, "coco_2014_zsi_48_17_test_unseen")[0] == [(ZeroShotInstanceEvaluator, "zsi", ("bbox", "segm"))]

    assert [k[0] for k in _built(cfg, "coco_2017_zsp_119_14_val_zsi")[0]] == [ZeroShotInstanceEvaluator,
                                                                             ZeroShotSemanticEvaluator]
    kinds, (instance, panoptic, semantic) = _built(cfg, "coco_2017_zsp_119_14_val_zsi_panoptic")
    assert kinds == [(ZeroShotInstanceEvaluator, "zsi", ("bbox", "segm")), (ZeroShotPanopticEvaluator, "zsi", None),
                     (ZeroShotSemanticEvaluator, "zsi", None)]
    pan = get_split("coco_panoptic_119_14")
    meta = MetadataCatalog.get("coco_2017_zsp_119_14_val_zsi_panoptic")
    with open(meta.json_file) as f:
        instance_names = {c["name"] for c in json.load(f)["categories"]}
    # Instances are scored on the split's thing classes only; panoptic and semantic on all.
    assert instance._unseen == tuple(n for n in pan.unseen if n in instance_names) != pan.unseen
    assert panoptic._unseen == semantic._unseen == pan.unseen
    assert semantic._class_names == list(meta.stuff_classes)

    assert _built(cfg, "coco_stuff_zss_156_15_val")[0] == [(ZeroShotSemanticEvaluator, "gzsi", None)]
    cfg.MODEL.MASK_ON = False  # no masks: boxes only
    cfg.TEST.ZERO_SHOT_TASKS = ("semantic", "instance")
    assert _built(cfg, "coco_2017_zsp_119_14_val")[0] == [(ZeroShotSemanticEvaluator, "gzsi", None),
                                                        (ZeroShotInstanceEvaluator, "gzsi", ("bbox",))]
    with pytest.raises(ValueError, match="supports .*'instance'.* nothing to evaluate"):
        cfg.TEST.ZERO_SHOT_TASKS = ("semantic",)
        build_zero_shot_evaluator(cfg, "coco_2014_gzsi_48_17_test")
    # A seen-only set named as a test set (how settings are chosen on held-out images) is scored as GZSI.
    assert _built(cfg, "coco_stuff_zss_156_15_train")[0] == [(ZeroShotSemanticEvaluator, "gzsi", None)]


def test_prepared_training_sets_pass_the_audit(root):
    for name in TRAIN_SETS:
        report = audit.audit_dataset(name)
        assert report.ok and report.num_images > 0, report.format()


def test_missing_files_name_the_path_and_the_prepare_command(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    try:
        register_all_coco_zero_shot()
        with pytest.raises(FileNotFoundError) as err:
            DatasetCatalog.get("coco_2014_zsi_65_15_train")
        msg = str(err.value)
        assert os.path.join(str(tmp_path), "coco", "zero_shot", "coco_65_15", "instances_train2014_seen.json") in msg
        assert "python datasets/prepare_coco_zero_shot.py" in msg and "--split coco_65_15" in msg
        # Prepared annotations but no images: the image folder is named, with the prepare command.
        os.makedirs(os.path.join(str(tmp_path), "coco", "zero_shot", "coco_stuff_156_15", "sem_seg_val2017"))
        with pytest.raises(FileNotFoundError, match=r"image_root not found: .*val2017(.|\n)*val2017.zip(.|\n)*--split"):
            DatasetCatalog.get("coco_stuff_zss_156_15_val")
    finally:
        monkeypatch.undo()
        register_all_coco_zero_shot()


# ---------------------------------------------------------------------------------------------
# Planted leaks: the audit (and train_net's check) must catch each kind and name the image.
# ---------------------------------------------------------------------------------------------
def _cfg(train):
    cfg = get_cfg()
    add_zsi_d2_config(cfg)
    cfg.DATASETS.TRAIN = (train,)
    return cfg


def test_planted_leaks_are_caught(root, tmp_path, capsys):
    coco_dir = os.path.join(root, "coco")
    # 1. An unseen instance annotation in the 48/17 training json.
    path = prepared_paths("coco_48_17", coco_dir)["train_json"]
    with open(path) as f:
        original = f.read()
    data = json.loads(original)
    victim = data["images"][0]
    dog = dict(data["annotations"][0], id=10 ** 6, image_id=victim["id"], category_id=18)  # 18 = dog (unseen)
    data["annotations"].append(dog)
    # 2. Unseen pixels (grass) in a COCO-Stuff training label map.
    sem = os.path.join(prepared_paths("coco_stuff_156_15", coco_dir)["train_sem_seg"], "000000300003.png")
    sem_original = np.asarray(Image.open(sem))
    grass = MetadataCatalog.get("coco_stuff_zss_156_15_train").stuff_classes.index("grass")
    # 3. An unseen segment in the panoptic training json.
    pan_path = prepared_paths("coco_panoptic_119_14", coco_dir)["train_json"]
    with open(pan_path) as f:
        pan_original = f.read()
    pan = json.loads(pan_original)
    pan["annotations"][0]["segments_info"][0]["category_id"] = 187  # sky-other-merged (unseen)
    try:
        with open(path, "w") as f:
            json.dump(data, f)
        leaky = sem_original.copy()
        leaky[0, 0] = grass
        Image.fromarray(leaky).save(sem)
        with open(pan_path, "w") as f:
            json.dump(pan, f)

        report = audit.audit_dataset("coco_2014_zsi_48_17_train")
        assert not report.ok and report.leaking_images() == (os.path.join(coco_dir, "train2014", victim["file_name"]),)
        assert audit.audit_dataset("coco_stuff_zss_156_15_train").leaking_images()[0].endswith("000000300003.jpg")
        pan_report = audit.audit_dataset("coco_2017_zsp_119_14_train_panoptic")
        assert [(leak.kind, leak.class_name) for leak in pan_report.leaks] == [("segment", "sky-other-merged")]
        assert audit.audit_dataset("coco_2017_zsp_119_14_train").ok  # its instances and pixels are clean

        assert audit.main(["coco_2014_zsi_48_17_train", "coco_2014_zsi_65_15_train"]) == 1
        out = capsys.readouterr().out
        assert "LEAK" in out and victim["file_name"] in out and "'dog'" in out
        with pytest.raises(RuntimeError, match="refusing to train"):
            audit.check_training_sets(_cfg("coco_stuff_zss_156_15_train"))
    finally:
        with open(path, "w") as f:
            f.write(original)
        Image.fromarray(sem_original).save(sem)
        with open(pan_path, "w") as f:
            f.write(pan_original)
    assert audit.main(list(TRAIN_SETS)) == 0
