"""Preparing the COCO zero-shot splits from standard files (fixture: tests/coco_fixtures.py).

Checks the protocol on the written files: training sets hold no unseen annotation, segment or
pixel and no image that had one; ZSI test sets hold only unseen annotations; GZSI sets both;
dropped classes vanish; counts match the hand-designed fixture; reruns are safe.
"""
import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util

from zsi_d2.data.coco import prepare_coco_split, prepared_paths, split_categories
from zsi_d2.data.coco.prepare import IGNORE_LABEL, contiguous_ids
from zsi_d2.data.prepare_files import PARTIAL_SUFFIX
from zsi_d2.utils.panoptic_ids import rgb2id
from zsi_d2.data.splits import COCO_THING_CLASSES, get_split

import coco_fixtures as fx

SPLITS = ("coco_48_17", "coco_65_15", "coco_panoptic_119_14", "coco_stuff_156_15")
HAVE_SHARED = os.path.isdir(fx.SHARED_PANOPTIC)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """A fixture COCO tree with all four splits prepared; {split: (paths, summary)}."""
    coco_dir = fx.build_coco_root(str(tmp_path_factory.mktemp("d2") / "coco"), include_shared=HAVE_SHARED)
    out = {s: (prepared_paths(s, coco_dir), prepare_coco_split(s, coco_dir, progress=False)) for s in SPLITS}
    out["dir"] = coco_dir
    return out


def _load(path):
    with open(path) as f:
        return json.load(f)


def _names(coco_json):
    return {c["id"]: c["name"] for c in coco_json["categories"]}


def _by_image(coco_json):
    names, out = _names(coco_json), {im["id"]: [] for im in coco_json["images"]}
    for a in coco_json["annotations"]:
        out[a["image_id"]].append(names[a["category_id"]])
    return out


# ---------------------------------------------------------------------------------------------
# Instance splits
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("split_name", ["coco_48_17", "coco_65_15"])
def test_instance_train_holds_no_unseen_annotation_and_no_image_that_had_one(coco, split_name):
    split, (paths, _) = get_split(split_name), coco[split_name]
    train = _load(paths["train_json"])
    source = _load(os.path.join(coco["dir"], "annotations", "instances_train2014.json"))
    had_unseen = {i for i, names in _by_image(source).items() if set(names) & set(split.unseen)}
    kept = _by_image(train)
    assert had_unseen and not had_unseen & set(kept)
    assert all(set(names) <= set(split.seen) and names for names in kept.values())
    assert {c["name"] for c in train["categories"]} == set(split.classes)  # same class list in every file


def test_instance_48_17_counts_match_the_hand_designed_fixture(coco):
    paths, summary = coco["coco_48_17"]
    train = _by_image(_load(paths["train_json"]))
    # Coverage image 10+k holds classes 4k..4k+3; groups 0, 2, 8, 11, 12, 15, 18 have no unseen class.
    assert set(train) == {2, fx.VOC_IMAGE_ID, 10, 12, 18, 21, 22, 25, 28}
    assert sorted(train[2]) == ["car", "person"]  # the ignored traffic light is dropped
    assert sorted(set(train[fx.VOC_IMAGE_ID])) == ["bottle", "chair", "person"]  # real VOC photo:
    assert len(train[fx.VOC_IMAGE_ID]) == 16  # 19 instances minus 3 dining tables (ignored)
    assert sorted(train[12]) == ["boat"]  # boat + 3 ignored classes
    counts = summary["counts"]["train_json"]
    assert (counts["images"], counts["unseen_annotations"]) == (9, 0)
    assert counts["images_left_out"] == {"holds_unseen": 15, "no_seen": 1}  # images 1, 4 + 13 groups; image 3
    assert counts["annotations"] == sum(map(len, train.values())) == 39


def test_instance_zsi_test_sets_hold_only_unseen_annotations(coco):
    for split_name in ("coco_48_17", "coco_65_15"):
        split, (paths, summary) = get_split(split_name), coco[split_name]
        zsi = _by_image(_load(paths["test_unseen_json"]))
        assert zsi and all(names and set(names) <= set(split.unseen) for names in zsi.values())
        assert summary["counts"]["test_unseen_json"]["annotations"] == sum(map(len, zsi.values()))
    zsi48 = _by_image(_load(coco["coco_48_17"][0]["test_unseen_json"]))
    assert zsi48[101] == ["dog"] and 102 not in zsi48 and 103 not in zsi48
    zsi65 = _by_image(_load(coco["coco_65_15"][0]["test_unseen_json"]))
    assert zsi65[102] == ["hair drier"] and 101 not in zsi65  # dog is seen in 65/15


def test_instance_gzsi_test_sets_hold_seen_and_unseen(coco):
    gzsi48 = _by_image(_load(coco["coco_48_17"][0]["test_gzsi_json"]))
    split = get_split("coco_48_17")
    assert sorted(gzsi48[101]) == ["dog", "person"] and gzsi48[103] == ["person"]
    assert 102 not in gzsi48  # traffic light + hair drier: both dropped in 48/17
    all_names = {n for names in gzsi48.values() for n in names}
    assert all_names == set(split.classes)  # the coverage images put every class of the split in
    gzsi65 = _by_image(_load(coco["coco_65_15"][0]["test_gzsi_json"]))
    assert sorted(gzsi65[102]) == ["hair drier", "traffic light"]
    assert len(gzsi65) == 3 + len(COCO_THING_CLASSES) // fx.COVERAGE_PER_IMAGE


def test_dropped_classes_vanish_from_every_file(coco):
    split = get_split("coco_48_17")
    paths = coco["coco_48_17"][0]
    for key in ("train_json", "test_unseen_json", "test_gzsi_json"):
        data = _load(paths[key])
        names = _names(data)
        assert not set(names.values()) & set(split.ignored)
        assert all(a["category_id"] in names for a in data["annotations"])


# ---------------------------------------------------------------------------------------------
# Panoptic 119/14
# ---------------------------------------------------------------------------------------------
def test_panoptic_train_drops_every_image_with_an_unseen_segment(coco):
    split, (paths, summary) = get_split("coco_panoptic_119_14"), coco["coco_panoptic_119_14"]
    train = _load(paths["train_json"])
    names = _names(train)
    for rec in train["annotations"]:
        assert not {names[s["category_id"]] for s in rec["segments_info"]} & set(split.unseen)
    kept = {rec["image_id"] for rec in train["annotations"]}
    # image 2: unseen sky; 3: ONE pixel of unseen road; 4: unseen cow. Coverage: stuff cycles
    # banner, sand, wall-brick, grass(unseen), river(unseen); groups 2, 3, 4, 6, 9 hold unseen things.
    first = fx.PANOPTIC_TRAIN_COVERAGE_FIRST_ID
    assert kept == {1, fx.VOC_IMAGE_ID, first + 0, first + 1, first + 5, first + 7}
    assert {im["id"] for im in train["images"]} == kept
    assert summary["counts"]["train"]["images"] == len(kept)
    assert summary["counts"]["train"]["images_removed_for_unseen"] == 3 + 6 + 2 * HAVE_SHARED


@pytest.mark.skipif(not HAVE_SHARED, reason=f"shared COCO panoptic sample absent: {fx.SHARED_PANOPTIC}")
def test_panoptic_real_sample_images_are_dropped_from_train_and_kept_in_val(coco):
    paths = coco["coco_panoptic_119_14"][0]
    real = {142238, 439180}
    assert not real & {r["image_id"] for r in _load(paths["train_json"])["annotations"]}
    assert real <= {r["image_id"] for r in _load(paths["val_json"])["annotations"]}


def test_panoptic_val_is_complete_and_label_maps_match_segments(coco):
    paths, summary = coco["coco_panoptic_119_14"]
    source = _load(os.path.join(coco["dir"], "annotations", "panoptic_val2017.json"))
    val = _load(paths["val_json"])
    assert len(val["annotations"]) == len(source["annotations"]) == summary["counts"]["val"]["images"]
    label_of = contiguous_ids("coco_panoptic_119_14")
    for rec in val["annotations"]:
        pan = rgb2id(np.asarray(Image.open(os.path.join(coco["dir"], "panoptic_val2017", rec["file_name"])).convert("RGB")))
        sem = np.asarray(Image.open(os.path.join(paths["val_sem_seg"], rec["file_name"])))
        assert sem.shape == pan.shape and sem.dtype == np.uint8
        for seg in rec["segments_info"]:
            assert (sem[pan == seg["id"]] == label_of[seg["category_id"]]).all()
        assert (sem[pan == 0] == IGNORE_LABEL).all()  # VOID


def test_panoptic_train_label_maps_and_instances(coco):
    split, (paths, summary) = get_split("coco_panoptic_119_14"), coco["coco_panoptic_119_14"]
    label_of = contiguous_ids(split.name)
    unseen_labels = {label_of[i] for i, n in _names(_load(paths["train_json"])).items() if n in split.unseen}
    files = os.listdir(paths["train_sem_seg"])
    assert len(files) == summary["counts"]["train"]["label_maps"] == summary["counts"]["train"]["images"]
    for f in files:
        assert not set(np.unique(np.asarray(Image.open(os.path.join(paths["train_sem_seg"], f))))) & unseen_labels
    # Thing segments become COCO instances; on the real VOC photo they are its 19 real masks.
    inst = _load(paths["train_instances"])
    assert {c["name"] for c in inst["categories"]} == set(split.things)
    voc = [a for a in inst["annotations"] if a["image_id"] == fx.VOC_IMAGE_ID]
    objects, _ = fx.voc_instances()
    assert len(voc) == len(objects) == 19
    for ann, (name, mask) in zip(voc, objects):
        assert _names(inst)[ann["category_id"]] == name
        assert (mask_util.decode(ann["segmentation"]).astype(bool) == mask).all()
        assert ann["area"] == mask.sum()


# ---------------------------------------------------------------------------------------------
# COCO-Stuff 156/15
# ---------------------------------------------------------------------------------------------
def test_stuff_train_maps_never_label_unseen_pixels(coco):
    split, (paths, summary) = get_split("coco_stuff_156_15"), coco["coco_stuff_156_15"]
    label_of_name = {c["name"]: i for i, c in enumerate(split_categories(split.name))}
    unseen_labels = {label_of_name[n] for n in split.unseen}
    n_unseen = 0
    for stem, design in fx.stuff_design("train").items():
        raw = np.asarray(Image.open(os.path.join(coco["dir"], "stuffthingmaps", "train2017", stem + ".png")))
        out = np.asarray(Image.open(os.path.join(paths["train_sem_seg"], stem + ".png")))
        assert not set(np.unique(out)) & unseen_labels
        for name, _ in design:
            where = raw == fx.stuff_raw_value(name)
            expected = IGNORE_LABEL if name in split.unseen else label_of_name[name]
            assert (out[where] == expected).all(), name
            n_unseen += int(where.sum()) if name in split.unseen else 0
        assert (out[raw == 255] == IGNORE_LABEL).all()
    assert summary["counts"]["train"]["unseen_pixels_set_to_ignore"] == n_unseen > 0
    # Validation keeps unseen classes as their own labels.
    val = np.asarray(Image.open(os.path.join(paths["val_sem_seg"], "000000400001.png")))
    assert label_of_name["grass"] in set(np.unique(val))


def test_stuff_voc_photo_labels(coco):
    paths = coco["coco_stuff_156_15"][0]
    objects, _ = fx.voc_instances()
    cats = split_categories("coco_stuff_156_15")
    out = np.asarray(Image.open(os.path.join(paths["train_sem_seg"], f"{900000 + fx.VOC_IMAGE_ID:012d}.png")))
    for name, mask in objects:
        assert (out[mask] == [c["name"] for c in cats].index(name)).all()


# ---------------------------------------------------------------------------------------------
# Refusals, reruns and the CLI
# ---------------------------------------------------------------------------------------------
def test_unknown_category_names_are_refused(tmp_path):
    coco_dir = fx.build_coco_root(str(tmp_path / "coco"), kinds=("instance",))
    path = os.path.join(coco_dir, "annotations", "instances_train2014.json")
    data = _load(path)
    data["categories"][3]["name"] = "motorbike"  # not a COCO name: must not be silently dropped
    with open(path, "w") as f:
        json.dump(data, f)
    with pytest.raises(KeyError, match="instances_train2014.json.*motorbike"):
        prepare_coco_split("coco_48_17", coco_dir, progress=False)


def test_illegal_coco_stuff_values_are_refused(tmp_path):
    coco_dir = fx.build_coco_root(str(tmp_path / "coco"), kinds=("semantic",))
    bad = os.path.join(coco_dir, "stuffthingmaps", "val2017", "000000400001.png")
    raw = np.asarray(Image.open(bad)).copy()
    raw[0, 0] = 183  # "other" of the stuff-only maps: not a stuffthingmaps label
    Image.fromarray(raw).save(bad)
    with pytest.raises(ValueError, match=r"\[183\]"):
        prepare_coco_split("coco_stuff_156_15", coco_dir, progress=False)


def test_missing_source_names_path_and_download(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        prepare_coco_split("coco_panoptic_119_14", str(tmp_path / "coco"), progress=False)
    msg = str(err.value)
    assert os.path.join(str(tmp_path / "coco"), "annotations", "panoptic_train2017.json") in msg
    assert "panoptic_annotations_trainval2017.zip" in msg and "datasets/README.md" in msg


def test_rerun_is_safe_and_force_rebuilds(tmp_path):
    coco_dir = fx.build_coco_root(str(tmp_path / "coco"), kinds=("semantic",))
    paths = prepared_paths("coco_stuff_156_15", coco_dir)
    first = prepare_coco_split("coco_stuff_156_15", coco_dir, progress=False)
    target = os.path.join(paths["train_sem_seg"], "000000300001.png")
    stamp = os.stat(target).st_mtime_ns
    again = prepare_coco_split("coco_stuff_156_15", coco_dir, progress=False)
    assert again["skipped"] and not first["skipped"] and os.stat(target).st_mtime_ns == stamp
    # An interrupted run: summary missing, a half-written partial folder with a stale temp file.
    os.remove(paths["summary"])
    os.rename(paths["val_sem_seg"], paths["val_sem_seg"] + PARTIAL_SUFFIX)
    open(os.path.join(paths["val_sem_seg"] + PARTIAL_SUFFIX, "x.png.tmp-1"), "w").close()
    resumed = prepare_coco_split("coco_stuff_156_15", coco_dir, progress=False)
    assert not resumed["skipped"] and resumed["counts"]["val"] == first["counts"]["val"]
    assert not any(".tmp-" in f for f in os.listdir(paths["val_sem_seg"]))
    assert not os.path.exists(paths["val_sem_seg"] + PARTIAL_SUFFIX)
    assert os.stat(target).st_mtime_ns == stamp  # finished outputs were kept
    forced = prepare_coco_split("coco_stuff_156_15", coco_dir, force=True, progress=False)
    assert not forced["skipped"] and os.stat(target).st_mtime_ns != stamp


def test_cli_prints_counts_and_fails_cleanly(coco, capsys, tmp_path):
    import importlib.util

    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "datasets",
                          "prepare_coco_zero_shot.py")
    spec = importlib.util.spec_from_file_location("prepare_coco_zero_shot", script)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main(["--coco-root", coco["dir"], "--split", "coco_48_17", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "already prepared" in out and "images=9" in out and "coco_2014_gzsi_48_17_test (gzsi)" in out
    assert cli.main(["--coco-root", str(tmp_path), "--split", "coco_65_15", "--no-progress"]) == 2
    assert "instances_train2014.json" in capsys.readouterr().err
