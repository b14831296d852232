"""Pascal VOC 15/5 and ADE20k-Full 572/275: preparation from the standard files, registration, audit,
evaluation with a 16-bit ignore label (fixtures: tests/semantic_fixtures.py)."""
import os
import pickle
import runpy

import numpy as np
import pytest
import torch
from PIL import Image

import zsi_d2  # noqa: F401  (compat layer + registrations)
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import SemSegEvaluator

from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.data import audit
from zsi_d2.data.semantic import (
    SEMANTIC_ZERO_SHOT_DATASETS, prepare_semantic_split, prepared_paths, register_all_semantic_zero_shot,
)
from zsi_d2.data.semantic.ade20k_full import resized_size
from zsi_d2.data.semantic.register import UNLABELLED
from zsi_d2.data.splits import VOC_CLASSES, get_split
from zsi_d2.evaluation import ZeroShotSemanticEvaluator

import semantic_fixtures as fx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(path):
    return np.asarray(Image.open(path)).astype(np.int64)


def _prepared(paths, subset, stem):
    return _read(os.path.join(paths[f"{subset}_sem_seg"], stem + ".png"))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Both fixture trees prepared; the benchmark datasets registered under them for this module only."""
    base = tmp_path_factory.mktemp("d2_datasets")
    voc_root = fx.build_voc_root(str(base), extra_images=("2012_999999",))
    ade_root = fx.build_ade_root(str(base))
    summaries = {"voc_15_5": prepare_semantic_split("voc_15_5", voc_root, progress=False),
                 "ade20k_full_572_275": prepare_semantic_split("ade20k_full_572_275", ade_root, progress=False)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DETECTRON2_DATASETS", str(base))
        register_all_semantic_zero_shot()
        yield {"dir": str(base), "voc": voc_root, "ade": ade_root, "summary": summaries}
    register_all_semantic_zero_shot()  # back to the session's DETECTRON2_DATASETS


# ---------------------------------------------------------------------------------------------
# Pascal VOC 15/5
# ---------------------------------------------------------------------------------------------
def _expected_voc(design, drop_unseen):
    """By hand: class c -> its position in VOC order; unseen (training), background and boundary -> 255."""
    unseen = set(get_split("voc_15_5").unseen)
    raw = fx.voc_labels(design)
    out = np.full(raw.shape, 255, dtype=np.int64)
    for name, _ in design:
        if not (drop_unseen and name in unseen):
            out[raw == fx.voc_value(name)] = VOC_CLASSES.index(name)
    return out


def test_voc_label_maps(base):
    paths = prepared_paths("voc_15_5", base["voc"])
    assert sorted(os.listdir(paths["train_sem_seg"])) == sorted(s + ".png" for s in fx.VOC_TRAIN)
    assert sorted(os.listdir(paths["val_sem_seg"])) == sorted(s + ".png" for s in fx.VOC_VAL)
    for stem, design in fx.VOC_TRAIN.items():
        np.testing.assert_array_equal(_prepared(paths, "train", stem), _expected_voc(design, drop_unseen=True))
    for stem, design in fx.VOC_VAL.items():
        np.testing.assert_array_equal(_prepared(paths, "val", stem), _expected_voc(design, drop_unseen=False))
    counts = base["summary"]["voc_15_5"]["counts"]
    unseen_pixels = sum(int((fx.voc_labels(d) == fx.voc_value(n)).sum()) for d in fx.VOC_TRAIN.values() for n, _ in d
                        if n in get_split("voc_15_5").unseen)
    assert counts["train"]["unseen_pixels_set_to_ignore"] == unseen_pixels > 0
    assert counts["train"]["images_with_unseen_pixels"] == 2
    assert counts["train"]["images"].startswith("NOT the published list: 3 images where SPNet's list has 10582")


def test_voc_from_voc_and_sbd_labels(tmp_path):
    """Without SegmentationClassAug: SBD's .mat labels, VOC's PNG where both label an image."""
    root = fx.build_voc_root(str(tmp_path), labels="sbd")
    prepare_semantic_split("voc_15_5", root, progress=False)
    paths = prepared_paths("voc_15_5", root)
    for stem in fx.SBD_ONLY:
        design = fx.VOC_TRAIN[stem]
        expected = _expected_voc(design, drop_unseen=True)
        expected[fx.voc_labels(design) == 255] = 255  # SBD's own label has no boundary band: read as background
        np.testing.assert_array_equal(_prepared(paths, "train", stem), expected)
    np.testing.assert_array_equal(_prepared(paths, "train", fx.VOC_AND_SBD),
                                  _expected_voc(fx.VOC_TRAIN[fx.VOC_AND_SBD], drop_unseen=True))
    np.testing.assert_array_equal(_prepared(paths, "val", "2007_000042"),
                                  _expected_voc(fx.VOC_VAL["2007_000042"], drop_unseen=False))


def test_voc_refuses_values_that_are_no_voc_label(tmp_path):
    root = fx.build_voc_root(str(tmp_path))
    path = os.path.join(root, "SegmentationClassAug", "2007_000042.png")
    raw = np.asarray(Image.open(path)).copy()
    raw[0, 0] = 21  # a 21st class: not a VOC label
    Image.fromarray(raw).save(path)
    with pytest.raises(ValueError, match=r"2007_000042.png: pixel values \[21\] are not labels of a Pascal VOC"):
        prepare_semantic_split("voc_15_5", root, progress=False)


def test_voc_missing_sources_name_the_path_and_the_download(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        prepare_semantic_split("voc_15_5", str(tmp_path / "VOCdevkit" / "VOC2012"), progress=False)
    msg = str(err.value)
    assert os.path.join(str(tmp_path), "VOCdevkit", "VOC2012", "SegmentationClassAug") in msg
    assert "VOCtrainval_11-May-2012.tar" in msg and "datasets/README.md" in msg.splitlines()[0]


def test_voc_unreadable_sources_are_one_line_errors(tmp_path):
    root = fx.build_voc_root(str(tmp_path / "a"))
    os.remove(os.path.join(root, "JPEGImages", "2008_000123.jpg"))
    with pytest.raises(FileNotFoundError, match=r"'voc_15_5' train: 1 labelled images are missing from .*JPEGImages "
                                                r"\(e.g. 2008_000123.jpg\)"):
        prepare_semantic_split("voc_15_5", root, progress=False)
    root = fx.build_voc_root(str(tmp_path / "b"), labels="sbd")
    bad = os.path.join(os.path.dirname(root), "benchmark_RELEASE", "dataset", "cls", fx.SBD_ONLY[0] + ".mat")
    from scipy.io import savemat

    savemat(bad, {"GTinst": np.zeros((2, 2))})  # SBD's instance file, not its class file
    with pytest.raises(ValueError, match=r"2008_000123.mat is not an SBD class label file \(no GTcls"):
        prepare_semantic_split("voc_15_5", root, progress=False)


# ---------------------------------------------------------------------------------------------
# ADE20k-Full 572/275
# ---------------------------------------------------------------------------------------------
def _expected_ade(design, drop_unseen):
    out = fx.ade_labels(design).astype(np.int64)
    if drop_unseen:
        rare = [fx.ade_train_id(n) for n in get_split("ade20k_full_572_275").unseen]
        out[np.isin(out, rare)] = 65535
    return out


def test_ade_label_maps_are_16_bit_with_rare_pixels_ignored_in_training(base):
    paths = prepared_paths("ade20k_full_572_275", base["ade"])
    for stem, design in fx.ADE_TRAIN.items():
        np.testing.assert_array_equal(_prepared(paths, "train", stem), _expected_ade(design, drop_unseen=True))
    val = _prepared(paths, "val", "ADE_val_00000001")
    np.testing.assert_array_equal(val, _expected_ade(fx.ADE_VAL["ADE_val_00000001"], drop_unseen=False))
    assert 846 in val and 65535 in val  # values above 255 survive the PNG
    counts = base["summary"]["ade20k_full_572_275"]["counts"]
    assert counts["train"]["unseen_pixels_set_to_ignore"] == 14 * 16  # the catwalk box
    assert counts["val"]["unseen_pixels"] == 16 * 12  # the last (rare) class's box, kept


def test_ade_from_the_release(tmp_path):
    """No MaskFormer folders: they are written from index_ade20k.pkl and the _seg.png files first."""
    root = fx.build_ade_root(str(tmp_path), source="release")
    prepare_semantic_split("ade20k_full_572_275", root, progress=False)
    for stem, design in fx.ADE_TRAIN.items():
        written = _read(os.path.join(root, "annotations_detectron2", "training", stem + ".tif"))
        np.testing.assert_array_equal(written, fx.ade_labels(design))
        assert os.path.isfile(os.path.join(root, "images_detectron2", "training", stem + ".jpg"))
    assert os.listdir(os.path.join(root, "images_detectron2", "validation")) == ["ADE_val_00000001.jpg"]
    big = _read(os.path.join(root, "annotations_detectron2", "training", fx.ADE_BIG + ".tif"))
    assert big.shape == resized_size(520, 600) == (512, 591)
    assert (big[:, :290] == fx.ade_train_id(fx.WALL)).all() and (big[:, 300:] == fx.ade_train_id(fx.PERSON)).all()
    with Image.open(os.path.join(root, "images_detectron2", "training", fx.ADE_BIG + ".jpg")) as img:
        assert img.size == (591, 512)
    paths = prepared_paths("ade20k_full_572_275", root)
    np.testing.assert_array_equal(_prepared(paths, "train", "ADE_train_00000001"),
                                  _expected_ade(fx.ADE_TRAIN["ADE_train_00000001"], drop_unseen=True))


def test_ade_index_without_its_lists_is_refused(tmp_path):
    root = fx.build_ade_root(str(tmp_path), source="release")
    with open(os.path.join(root, "index_ade20k.pkl"), "wb") as f:
        pickle.dump({"objectnames": []}, f)
    with pytest.raises(ValueError, match="index_ade20k.pkl has no 'folder' / 'filename' lists"):
        prepare_semantic_split("ade20k_full_572_275", root, progress=False)


def test_ade_missing_sources_name_maskformer_and_the_release(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        prepare_semantic_split("ade20k_full_572_275", str(tmp_path / "ADE20K_2021_17_01"), progress=False)
    msg = str(err.value)
    assert os.path.join("ADE20K_2021_17_01", "annotations_detectron2", "training") in msg
    assert "prepare_ade20k_full_sem_seg.py" in msg.splitlines()[0] and "index_ade20k.pkl" in msg.splitlines()[0]


# ---------------------------------------------------------------------------------------------
# Registration, audit, evaluation
# ---------------------------------------------------------------------------------------------
def test_registered_names_metadata_and_dicts(base):
    for name, (split_name, subset, mode) in SEMANTIC_ZERO_SHOT_DATASETS.items():
        if split_name not in base["summary"]:
            continue  # Pascal-Context: tests/test_semantic_benchmarks_context_stuff.py
        meta = MetadataCatalog.get(name)
        split = get_split(split_name)
        unlabelled = mode == UNLABELLED  # the training images without their labels (a self-training pool)
        assert (meta.zero_shot_mode, meta.evaluator_type, meta.zero_shot_split) == (
            "train" if unlabelled else mode, "zero_shot", split_name)
        assert meta.zero_shot_tasks == (() if unlabelled else ("semantic",)) and meta.sem_seg_root.startswith(base["dir"])
        assert set(meta.stuff_classes) == set(split.classes) and len(meta.stuff_classes) == len(split.classes)
        assert (tuple(meta.seen_classes), tuple(meta.unseen_classes)) == (split.seen, split.unseen)
        design = {"train": fx.VOC_TRAIN, "val": fx.VOC_VAL} if split_name == "voc_15_5" else \
            {"train": fx.ADE_TRAIN, "val": fx.ADE_VAL}
        dicts = DatasetCatalog.get(name)
        assert sorted(os.path.basename(d["file_name"]) for d in dicts) == sorted(s + ".jpg" for s in design[subset])
        assert all(os.path.isfile(d["file_name"]) for d in dicts)
        assert all(("sem_seg_file_name" in d) != unlabelled and set(d) <= {"file_name", "sem_seg_file_name"} for d in dicts)
        if unlabelled:  # what a self-training pool must be: images only, no image of the val views
            audit.check_unlabelled_pool([name], [name.replace("_train_images", "_val")], "pool")
    voc, ade = MetadataCatalog.get("voc_zss_15_5_val"), MetadataCatalog.get("ade20k_full_zss_572_275_train")
    assert (voc.stuff_classes, voc.ignore_label) == (list(VOC_CLASSES), 255)
    assert ade.ignore_label == 65535 and ade.stuff_classes[166] == "catwalk" and len(ade.stuff_classes) == 847


def test_missing_prepared_files_name_the_prepare_command(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    try:
        register_all_semantic_zero_shot()
        with pytest.raises(FileNotFoundError) as err:
            DatasetCatalog.get("ade20k_full_zss_572_275_val")
        msg = str(err.value)
        prepared = os.path.join(str(tmp_path), "ADE20K_2021_17_01", "zero_shot", "ade20k_full_572_275", "sem_seg_val")
        assert prepared in msg
        assert "python datasets/prepare_semantic_zero_shot.py --split ade20k_full_572_275" in msg
    finally:
        monkeypatch.undo()
        register_all_semantic_zero_shot()


@pytest.mark.parametrize("name,stem,unseen", [
    ("voc_zss_15_5_train", "2008_000123", "sofa"),
    ("ade20k_full_zss_572_275_train", "ADE_train_00000002", "adding machine, totalizer, totaliser"),  # label 846
])
def test_prepared_training_sets_pass_the_audit_and_a_planted_unseen_pixel_fails_it(base, name, stem, unseen):
    assert audit.audit_dataset(name).ok
    meta = MetadataCatalog.get(name)
    path = os.path.join(meta.sem_seg_root, stem + ".png")
    original = np.asarray(Image.open(path))
    leaky = original.copy()
    leaky[0, 0] = meta.stuff_classes.index(unseen)
    try:
        Image.fromarray(leaky.astype(original.dtype)).save(path)
        report = audit.audit_dataset(name)
        assert [(os.path.basename(leak.file_name), leak.kind, leak.class_name) for leak in report.leaks] == [
            (stem + ".jpg", "pixels", unseen)]
        cfg = get_zsi_d2_cfg()
        cfg.DATASETS.TRAIN = (name,)
        with pytest.raises(RuntimeError, match="refusing to train"):
            audit.check_training_sets(cfg)
    finally:
        Image.fromarray(original).save(path)
    assert audit.audit_dataset(name).ok


def _run(evaluator, dicts, predictions):
    evaluator.reset()
    for d in dicts:
        evaluator.process([{"file_name": d["file_name"]}], [{"sem_seg": predictions[d["file_name"]]}])
    return evaluator.evaluate()["sem_seg"]


def test_16_bit_ignore_label_in_zsi_d2s_and_detectron2s_evaluators(base):
    """ADE20k-Full's val set (65535 = unlabelled): both evaluators skip those pixels and agree."""
    name = "ade20k_full_zss_572_275_val"
    dicts = DatasetCatalog.get(name)
    num_classes = len(MetadataCatalog.get(name).stuff_classes)
    predictions, ignored_only = {}, fx.ade_train_id(fx.RUNWAY)  # predicted on unlabelled pixels only
    for d in dicts:
        gt = _read(d["sem_seg_file_name"])
        pred = np.where(gt == 65535, ignored_only, gt)
        pred[:, :3] = fx.ade_train_id(fx.WALL)  # a few wrong pixels
        scores = torch.zeros(num_classes, *gt.shape)
        scores.scatter_(0, torch.as_tensor(pred)[None], 1.0)
        predictions[d["file_name"]] = scores
    ours = _run(ZeroShotSemanticEvaluator(name, distributed=False), dicts, predictions)
    theirs = _run(SemSegEvaluator(name, distributed=False), dicts, predictions)
    assert np.isnan(ours[f"IoU/{fx.RUNWAY}"]) and np.isnan(theirs[f"IoU-{fx.RUNWAY}"])  # ignored pixels don't count
    for cls in (fx.SKY, fx.PERSON, fx.LAST):
        assert ours[f"IoU/{cls}"] == pytest.approx(theirs[f"IoU-{cls}"])
    # Predicted but absent from the GT: IoU 0 in zsi_d2's table, nan in detectron2's; both count it in the mean.
    assert ours[f"IoU/{fx.WALL}"] == 0 and np.isnan(theirs[f"IoU-{fx.WALL}"])
    assert 0 < ours["mIoU"] < 100 and ours["mIoU"] == pytest.approx(theirs["mIoU"])
    assert ours["pAcc"] == pytest.approx(theirs["pACC"])
    assert ours["mIoU/unseen"] == pytest.approx(ours[f"IoU/{fx.LAST}"])  # the one rare class in the GT


def test_cli_prints_counts_and_names(base, capsys, tmp_path):
    main = runpy.run_path(os.path.join(REPO, "datasets", "prepare_semantic_zero_shot.py"))["main"]
    assert main(["--root", base["voc"], "--split", "voc_15_5", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "already prepared" in out and "label_maps=3" in out and "voc_zss_15_5_val_zsi (zsi)" in out
    assert main(["--root", str(tmp_path), "--split", "ade20k_full_572_275", "--no-progress"]) == 2
    assert "annotations_detectron2" in capsys.readouterr().err


def test_mask_former_semantic_mapper_reads_16_bit_training_labels(base):
    """The semantic recipe on ADE20k-Full's training set: 65535 is never a target, no rare class is one."""
    from zsi_d2.data.mappers import MaskFormerSemanticMapper

    cfg = get_zsi_d2_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "mask_former", "coco", "semantic_156_15.yaml"))
    cfg.merge_from_list(["DATASETS.TRAIN", "('ade20k_full_zss_572_275_train',)", "INPUT.MIN_SIZE_TRAIN", "(24,)",
                         "INPUT.MAX_SIZE_TRAIN", "64", "INPUT.CROP.SIZE", "(16, 16)"])
    mapper = MaskFormerSemanticMapper(cfg, is_train=True)
    assert mapper.ignore_label == 65535
    rare = {fx.ade_train_id(n) for n in get_split("ade20k_full_572_275").unseen}
    seen_targets = set()
    for _ in range(4):
        for d in DatasetCatalog.get("ade20k_full_zss_572_275_train"):
            out = mapper(d)
            classes = set(out["instances"].gt_classes.tolist())
            assert not classes & rare and 65535 not in classes
            assert set(out["sem_seg"].unique().tolist()) <= classes | {65535}
            seen_targets |= classes
    assert {fx.ade_train_id(fx.WALL), fx.ade_train_id(fx.SKY)} <= seen_targets
