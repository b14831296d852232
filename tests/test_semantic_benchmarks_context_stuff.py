"""Pascal-Context 29/4 (CaGNet) and COCO-Stuff 167/15 (SPNet / CaGNet, 182 classes): preparation from small
raw releases written in their own conventions, then the registered datasets read by detectron2's own
components (DatasetCatalog, MetadataCatalog, DatasetMapper, SemSegEvaluator) and the leakage audit.

Raw conventions written here (see zsi_d2/data/semantic/pascal_context.py, zsi_d2/data/coco/layout.py):
  VOCdevkit/VOC2010/JPEGImages/*.jpg, ImageSets/Main/{train,val}.txt, 33_context_labels/*.png
      (0 = unlabelled, 1..33 = the 33_labels.txt classes), or CaGNet's images/ + annotations/{train,val}/;
  coco/stuffthingmaps/{train,val}2017/*.png (official id - 1, 255 = unlabelled) + coco/{train,val}2017/*.jpg.
"""
import os
import runpy

import numpy as np
import pytest
import torch
from PIL import Image

import zsi_d2  # noqa: F401  (compat layer + registrations)
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.evaluation import SemSegEvaluator

from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.data import audit
from zsi_d2.data.coco import prepare_coco_split, register_all_coco_zero_shot
from zsi_d2.data.coco import prepared_paths as coco_prepared_paths
from zsi_d2.data.semantic import prepare_semantic_split, prepared_paths, register_all_semantic_zero_shot
from zsi_d2.data.splits import COCO_STUFF_182_CLASSES, PASCAL_CONTEXT_CLASSES, get_split
from zsi_d2.errors import InputError, LeakageError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 16, 20
FULL = (0, 0, W, H)

CONTEXT = "pascal_context_29_4"
CONTEXT_NAMES = {"pascal_context_zss_29_4_train": "train", "pascal_context_zss_29_4_val": "gzsi",
                 "pascal_context_zss_29_4_val_zsi": "zsi"}
STUFF = "coco_stuff_167_15"
STUFF_NAMES = {"coco_stuff_zss_167_15_train": "train", "coco_stuff_zss_167_15_val": "gzsi",
               "coco_stuff_zss_167_15_val_zsi": "zsi"}

# stem -> [(class, rectangle)] painted in order over unlabelled (0 for Context, 255 for COCO-Stuff)
CONTEXT_TRAIN = {
    "2008_000008": [("sky", FULL), ("cow", (2, 2, 10, 12)), ("person", (12, 4, 18, 14))],  # cow: unseen
    "2008_000015": [("wall", FULL), ("tv monitor", (3, 3, 9, 9)), ("keyboard", (10, 10, 18, 14))],
}
CONTEXT_VAL = {
    "2008_000002": [("floor", (0, 8, 20, 16)), ("cat", (4, 2, 12, 10)), ("sofa", (12, 0, 20, 8))],
    "2008_000003": [("ceiling", FULL), ("motorbike", (5, 5, 15, 15))],
}
CONTEXT_EXTRA = "2008_000001"  # labelled, in neither list (a VOC 2010 trainval image outside Main/train, val)

STUFF_TRAIN = {  # the never-annotated things (street sign, plate, hair brush) are legal, seen classes
    "000000000009": [("grass", FULL), ("street sign", (1, 1, 6, 6)), ("person", (8, 2, 14, 12))],
    "000000000025": [("wood", (0, 0, 20, 8)), ("cow", (2, 8, 10, 16)), ("plate", (12, 10, 18, 16))],
}
STUFF_VAL = {
    "000000000139": [("tree", FULL), ("hair brush", (2, 2, 8, 8)), ("giraffe", (10, 2, 18, 14))],
    "000000000285": [("sky-other", (0, 0, 20, 10)), ("wall-concrete", (0, 10, 20, 16))],
}


def _paint(design, value_of, background):
    labels = np.full((H, W), background, dtype=np.uint8)
    for name, (x0, y0, x1, y1) in design:
        labels[y0:y1, x0:x1] = value_of(name)
    return labels


def context_value(name):
    return PASCAL_CONTEXT_CLASSES.index(name) + 1  # 33_labels.txt: 1..33, 0 = unlabelled


def context_raw(design):
    raw = _paint(design, context_value, 0)
    raw[-1, :] = 0  # an unlabelled row
    return raw


def stuff_raw(design):
    return _paint(design, COCO_STUFF_182_CLASSES.index, 255)  # official id - 1 = position among the 182


def _jpg(path, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)


def _palette_png(path, labels):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = Image.fromarray(labels, mode="P")
    img.putpalette([v for i in range(256) for v in (i, (3 * i) % 256, 255 - i)])
    img.save(path)


def build_context_root(base, layout="release"):
    """VOCdevkit/VOC2010 under `base`: the release (VOC 2010 + 33_context_labels) or CaGNet's copy."""
    root = os.path.join(base, "VOCdevkit", "VOC2010")
    subsets = {"train": CONTEXT_TRAIN, "val": CONTEXT_VAL}
    for seed, (subset, stem, design) in enumerate((s, k, d) for s, ds in subsets.items() for k, d in ds.items()):
        if layout == "release":
            _jpg(os.path.join(root, "JPEGImages", stem + ".jpg"), seed)
            _palette_png(os.path.join(root, "33_context_labels", stem + ".png"), context_raw(design))
        else:
            _jpg(os.path.join(root, "images", subset, stem + ".jpg"), seed)
            Image.fromarray(context_raw(design)).save(_made(os.path.join(root, "annotations", subset, stem + ".png")))
    if layout == "release":
        _jpg(os.path.join(root, "JPEGImages", CONTEXT_EXTRA + ".jpg"), 99)
        _palette_png(os.path.join(root, "33_context_labels", CONTEXT_EXTRA + ".png"),
                     context_raw([("cat", FULL)]))
        os.makedirs(os.path.join(root, "ImageSets", "Main"))
        for subset, design in subsets.items():
            with open(os.path.join(root, "ImageSets", "Main", subset + ".txt"), "w") as f:
                f.write("".join(s + "\n" for s in design))
    return root


def _made(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def build_coco_stuff_root(base):
    coco = os.path.join(base, "coco")
    for seed, (subset, stem, design) in enumerate(
            (s, k, d) for s, ds in (("train", STUFF_TRAIN), ("val", STUFF_VAL)) for k, d in ds.items()):
        Image.fromarray(stuff_raw(design)).save(_made(os.path.join(coco, "stuffthingmaps", subset + "2017",
                                                                   stem + ".png")))
        _jpg(os.path.join(coco, subset + "2017", stem + ".jpg"), seed)
    return coco


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Both raw trees prepared; the datasets registered under them for this module only."""
    base = str(tmp_path_factory.mktemp("d2_datasets"))
    context_root, coco = build_context_root(base), build_coco_stuff_root(base)
    summaries = {CONTEXT: prepare_semantic_split(CONTEXT, context_root, progress=False),
                 STUFF: prepare_coco_split(STUFF, coco, progress=False)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DETECTRON2_DATASETS", base)
        register_all_semantic_zero_shot()
        register_all_coco_zero_shot()
        yield {"dir": base, "context": context_root, "coco": coco, "summary": summaries}
    register_all_semantic_zero_shot()  # back to the session's DETECTRON2_DATASETS
    register_all_coco_zero_shot()


def _read(path):
    return np.asarray(Image.open(path)).astype(np.int64)


def _expected(raw, classes, first_value, unseen, drop_unseen):
    """By hand: the value of class k (first_value + k) -> k, its position in stuff_classes; unseen classes
    (training) and every other value -> 255."""
    out = np.full(raw.shape, 255, dtype=np.int64)
    for position, name in enumerate(classes):
        if not (drop_unseen and name in unseen):
            out[raw == first_value + position] = position
    return out


# ---------------------------------------------------------------------------------------------
# Pascal-Context 29/4
# ---------------------------------------------------------------------------------------------
def test_context_label_maps_are_contiguous_with_unlabelled_and_unseen_ignored(base):
    paths, unseen = prepared_paths(CONTEXT, base["context"]), get_split(CONTEXT).unseen
    assert sorted(os.listdir(paths["train_sem_seg"])) == sorted(s + ".png" for s in CONTEXT_TRAIN)
    assert sorted(os.listdir(paths["val_sem_seg"])) == sorted(s + ".png" for s in CONTEXT_VAL)
    for subset, designs in (("train", CONTEXT_TRAIN), ("val", CONTEXT_VAL)):
        for stem, design in designs.items():
            got = _read(os.path.join(paths[f"{subset}_sem_seg"], stem + ".png"))
            want = _expected(context_raw(design), PASCAL_CONTEXT_CLASSES, 1, unseen, drop_unseen=subset == "train")
            np.testing.assert_array_equal(got, want)
            assert set(np.unique(got)) <= set(range(33)) | {255}
    keyboard = _read(os.path.join(paths["train_sem_seg"], "2008_000015.png"))[12, 12]
    assert keyboard == 31 == PASCAL_CONTEXT_CLASSES.index("keyboard")  # label 32 of 33_labels.txt
    counts = base["summary"][CONTEXT]["counts"]
    assert counts["train"]["unseen_pixels_set_to_ignore"] == 8 * 10  # the cow box
    assert counts["val"]["unseen_pixels"] == 8 * 8 + 8 * 8 + 10 * 10  # cat, sofa, motorbike kept
    assert counts["train"]["images"].startswith("NOT the published list: 2 images where CaGNet's list has 4998")


def test_context_from_cagnets_copy_gives_the_same_label_maps(base, tmp_path):
    root = build_context_root(str(tmp_path), layout="cagnet")
    prepare_semantic_split(CONTEXT, root, progress=False)
    ours, theirs = prepared_paths(CONTEXT, root), prepared_paths(CONTEXT, base["context"])
    for subset, designs in (("train", CONTEXT_TRAIN), ("val", CONTEXT_VAL)):
        for stem in designs:
            np.testing.assert_array_equal(_read(os.path.join(ours[f"{subset}_sem_seg"], stem + ".png")),
                                          _read(os.path.join(theirs[f"{subset}_sem_seg"], stem + ".png")))


def test_context_missing_raw_folder_is_one_line_naming_the_path_and_the_fix(tmp_path):
    root = str(tmp_path / "VOCdevkit" / "VOC2010")
    with pytest.raises(InputError) as err:
        prepare_semantic_split(CONTEXT, root, progress=False)
    first = str(err.value).splitlines()[0]
    assert first.startswith(f"Cannot prepare '{CONTEXT}': Pascal-Context files missing under {root}")
    assert "33_context_labels/" in first and "datasets/README.md" in first
    assert os.path.join(root, "33_context_labels") in str(err.value) and "33_context_labels.tar.gz" in str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    # A listed image without its label map, and a value that is no 33-class label.
    root = build_context_root(str(tmp_path / "a"))
    os.remove(os.path.join(root, "33_context_labels", "2008_000003.png"))
    with pytest.raises(FileNotFoundError, match=r"1 images of .*val.txt have no label map .*\(e.g. 2008_000003.png\)"):
        prepare_semantic_split(CONTEXT, root, progress=False)
    root = build_context_root(str(tmp_path / "b"))
    bad = context_raw(CONTEXT_TRAIN["2008_000008"])
    bad[0, 0] = 34  # a 34th class: a 59-class map, not the 33-class one
    _palette_png(os.path.join(root, "33_context_labels", "2008_000008.png"), bad)
    with pytest.raises(ValueError, match=r"2008_000008.png: pixel values \[34\] are not labels of a Pascal-Context"):
        prepare_semantic_split(CONTEXT, root, progress=False)


def test_context_cli(base, capsys, tmp_path):
    main = runpy.run_path(os.path.join(REPO, "datasets", "prepare_semantic_zero_shot.py"))["main"]
    assert main(["--root", base["context"], "--split", CONTEXT, "--no-progress"]) == 0
    assert "pascal_context_zss_29_4_val_zsi (zsi)" in capsys.readouterr().out
    assert main(["--root", str(tmp_path), "--split", CONTEXT, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Cannot prepare 'pascal_context_29_4'") and "JPEGImages" in err


# ---------------------------------------------------------------------------------------------
# COCO-Stuff 167/15
# ---------------------------------------------------------------------------------------------
def test_coco_stuff_167_training_maps_drop_unseen_and_val_is_read_in_place(base):
    paths, unseen = coco_prepared_paths(STUFF, base["coco"]), get_split(STUFF).unseen
    for stem, design in STUFF_TRAIN.items():
        got = _read(os.path.join(paths["train_sem_seg"], stem + ".png"))
        np.testing.assert_array_equal(got, _expected(stuff_raw(design), COCO_STUFF_182_CLASSES, 0, unseen, drop_unseen=True))
    assert paths["val_sem_seg"] == os.path.join(base["coco"], "stuffthingmaps", "val2017")
    assert not os.path.exists(os.path.join(paths["dir"], "sem_seg_val2017"))
    counts = base["summary"][STUFF]["counts"]
    assert counts["train"]["unseen_pixels_set_to_ignore"] == (16 * 20 - 5 * 5 - 6 * 10) + 8 * 8  # grass, cow
    assert counts["val"]["unseen_pixels"] == (16 * 20 - 6 * 6) + 20 * 6  # tree + giraffe, wall-concrete
    # The 171-class split reads the same files; its ids differ (no never-annotated things there).
    with pytest.raises(ValueError, match=r"000000000009.png: pixel values \[11\] are not labels of a uint8 COCO-Stuff"):
        prepare_coco_split("coco_stuff_156_15", base["coco"], progress=False)


def test_coco_stuff_167_val_check_refuses_illegal_values(tmp_path):
    coco = build_coco_stuff_root(str(tmp_path))
    path = os.path.join(coco, "stuffthingmaps", "val2017", "000000000285.png")
    raw = stuff_raw(STUFF_VAL["000000000285"])
    raw[0, 0] = 182  # "other" of the stuff-only maps: no label of the 182
    Image.fromarray(raw).save(path)
    with pytest.raises(ValueError, match=r"000000000285.png: pixel values \[182\] are not labels of a uint8 COCO-Stuff"):
        prepare_coco_split(STUFF, coco, progress=False)


# ---------------------------------------------------------------------------------------------
# Both: registration, detectron2's reader and evaluator, audit
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("names,split_name,classes,designs", [
    (CONTEXT_NAMES, CONTEXT, PASCAL_CONTEXT_CLASSES, {"train": CONTEXT_TRAIN, "val": CONTEXT_VAL}),
    (STUFF_NAMES, STUFF, COCO_STUFF_182_CLASSES, {"train": STUFF_TRAIN, "val": STUFF_VAL}),
])
def test_registered_names_and_metadata(base, names, split_name, classes, designs):
    split = get_split(split_name)
    for name, mode in names.items():
        meta = MetadataCatalog.get(name)
        assert (meta.zero_shot_mode, meta.zero_shot_split, meta.evaluator_type) == (mode, split_name, "zero_shot")
        assert meta.stuff_classes == list(classes) and meta.ignore_label == 255
        assert meta.stuff_dataset_id_to_contiguous_id == {i + 1: i for i in range(len(classes))}
        assert (tuple(meta.seen_classes), tuple(meta.unseen_classes)) == (split.seen, split.unseen)
        assert meta.zero_shot_tasks == ("semantic",)
        dicts = DatasetCatalog.get(name)
        subset = "train" if mode == "train" else "val"
        assert sorted(os.path.basename(d["file_name"]) for d in dicts) == sorted(s + ".jpg" for s in designs[subset])
        assert all(d["sem_seg_file_name"].startswith(base["dir"]) for d in dicts)


@pytest.mark.parametrize("train,val", [("pascal_context_zss_29_4_train", "pascal_context_zss_29_4_val"),
                                       ("coco_stuff_zss_167_15_train", "coco_stuff_zss_167_15_val")])
def test_detectron2_reads_seen_only_training_labels_and_the_audit_tells_the_views_apart(base, train, val):
    meta = MetadataCatalog.get(train)
    seen = {meta.stuff_classes.index(c) for c in meta.seen_classes}
    unseen = {meta.stuff_classes.index(c) for c in meta.unseen_classes}
    mapper = DatasetMapper(is_train=False, augmentations=[], image_format="RGB")
    found = set()
    for d in DatasetCatalog.get(train):
        labels = set(mapper(dict(d))["sem_seg"].unique().tolist())
        assert labels <= seen | {255}
        found |= labels
    val_labels = set().union(*(set(mapper(dict(d))["sem_seg"].unique().tolist()) for d in DatasetCatalog.get(val)))
    assert val_labels & unseen and len(found) > 3
    assert audit.audit_dataset(train).ok
    report = audit.audit_dataset(val)  # keeps the unseen labels: a leak if it were trained on
    assert not report.ok and {leak.class_name for leak in report.leaks} <= set(meta.unseen_classes)
    cfg = get_zsi_d2_cfg()
    cfg.DATASETS.TRAIN = (val,)
    with pytest.raises(RuntimeError, match="refusing to train"):
        audit.check_training_sets(cfg)


@pytest.mark.parametrize("name", ["pascal_context_zss_29_4_val", "coco_stuff_zss_167_15_val"])
def test_detectron2_sem_seg_evaluator_scores_the_val_view(base, name):
    """Ground truth as the prediction scores 100 on every present class; unlabelled pixels don't count."""
    meta, dicts = MetadataCatalog.get(name), DatasetCatalog.get(name)
    evaluator = SemSegEvaluator(name, distributed=False)
    evaluator.reset()
    present = set()
    for d in dicts:
        gt = _read(d["sem_seg_file_name"])
        present |= set(np.unique(gt).tolist()) - {255}
        pred = np.where(gt == 255, 0, gt)  # class 0 on the ignored pixels: must not lower its IoU
        scores = torch.zeros(len(meta.stuff_classes), *gt.shape)
        scores.scatter_(0, torch.as_tensor(pred)[None], 1.0)
        evaluator.process([{"file_name": d["file_name"]}], [{"sem_seg": scores}])
    res = evaluator.evaluate()["sem_seg"]
    assert res["mIoU"] == pytest.approx(100) and res["pACC"] == pytest.approx(100)
    assert all(res[f"IoU-{meta.stuff_classes[c]}"] == pytest.approx(100) for c in present)


@pytest.mark.parametrize("pool,train,val", [
    ("pascal_context_zss_29_4_train_images", "pascal_context_zss_29_4_train", "pascal_context_zss_29_4_val"),
    ("coco_stuff_zss_167_15_train_images", "coco_stuff_zss_167_15_train", "coco_stuff_zss_167_15_val")])
def test_training_images_without_labels_are_a_self_training_pool(base, pool, train, val):
    """The `_train_images` view: the training view's images, no label file, nothing to evaluate; it passes
    the check a self-training pool must pass (images only, no image of the test sets)."""
    dicts = DatasetCatalog.get(pool)
    assert [d["file_name"] for d in dicts] == [d["file_name"] for d in DatasetCatalog.get(train)]
    assert all(set(d) == {"file_name"} for d in dicts)
    assert MetadataCatalog.get(pool).zero_shot_tasks == () and MetadataCatalog.get(pool).unlabelled
    audit.check_unlabelled_pool([pool], [val], "MODEL.CAGNET.SELF_TRAINING.DATASETS")
    with pytest.raises(LeakageError, match="carries labels"):
        audit.check_unlabelled_pool([train], [val], "MODEL.CAGNET.SELF_TRAINING.DATASETS")
