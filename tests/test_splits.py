"""Split definitions: sizes, published order, exact coverage of each dataset's categories."""
import hashlib
import json
import os

import pytest

from zsi_d2.data import splits
from zsi_d2.data.coco.categories import SOURCE_TABLES, split_categories
from zsi_d2.data.splits import get_split

from coco_fixtures import SHARED_PANOPTIC

# The published splits, written out from shared/reference/zero_shot_facts.md section 1 (never
# computed from zsi_d2): their order is the order of the word-vector columns.
SEEN_48 = (
    "person", "bicycle", "car", "motorcycle", "truck", "boat", "bench", "bird", "horse", "sheep", "zebra", "giraffe",
    "backpack", "handbag", "skis", "kite", "surfboard", "bottle", "spoon", "bowl", "banana", "apple", "orange",
    "broccoli", "carrot", "pizza", "donut", "chair", "bed", "tv", "laptop", "remote", "microwave", "oven",
    "refrigerator", "book", "clock", "vase", "toothbrush", "train", "bear", "suitcase", "frisbee", "fork", "sandwich",
    "toilet", "mouse", "toaster",
)
UNSEEN_17 = (
    "bus", "dog", "cow", "elephant", "umbrella", "tie", "skateboard", "cup", "knife", "cake", "couch", "keyboard",
    "sink", "scissors", "airplane", "cat", "snowboard",
)
IGNORED_48_17 = (
    "traffic light", "fire hydrant", "stop sign", "parking meter", "sports ball", "baseball bat", "baseball glove",
    "tennis racket", "wine glass", "hot dog", "potted plant", "dining table", "cell phone", "teddy bear", "hair drier",
)
UNSEEN_15 = (
    "airplane", "train", "parking meter", "cat", "bear", "suitcase", "frisbee", "snowboard", "fork", "sandwich",
    "hot dog", "toilet", "mouse", "toaster", "hair drier",
)
# "the other 65 COCO thing classes, in COCO order"
SEEN_65 = (
    "person", "bicycle", "car", "motorcycle", "bus", "truck", "boat", "traffic light", "fire hydrant", "stop sign",
    "bench", "bird", "dog", "horse", "sheep", "cow", "elephant", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "skis", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "knife", "spoon", "bowl", "banana", "apple", "orange",
    "broccoli", "carrot", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "tv",
    "laptop", "remote", "keyboard", "cell phone", "microwave", "oven", "sink", "refrigerator", "book", "clock",
    "vase", "scissors", "teddy bear", "toothbrush",
)
UNSEEN_14 = (
    "cow", "giraffe", "suitcase", "frisbee", "skateboard", "carrot", "scissors",
    "cardboard", "playingfield", "river", "road", "tree-merged", "sky-other-merged", "grass-merged",
)
UNSEEN_COCO_STUFF_15 = (
    "cow", "giraffe", "suitcase", "frisbee", "skateboard", "carrot", "scissors", "cardboard", "clouds", "grass",
    "playingfield", "river", "road", "tree", "wall-concrete",
)
# Pascal-VOC in label order (names spelled out), seen = the 15 not unseen.
SEEN_VOC_15 = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "dining table", "dog",
    "horse", "motorbike", "person",
)
UNSEEN_VOC_5 = ("potted plant", "sheep", "sofa", "train", "tv monitor")
# Pascal-Context 33 labels (20 VOC, then 13 context classes), seen = the 29 not unseen.
SEEN_CONTEXT_29 = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "chair", "dining table", "dog", "horse",
    "person", "potted plant", "sheep", "train", "tv monitor",
    "sky", "grass", "ground", "road", "building", "tree", "water", "mountain", "wall", "floor", "track", "keyboard",
    "ceiling",
)
UNSEEN_CONTEXT_4 = ("cow", "motorbike", "sofa", "cat")

# name -> (seen, unseen, ignored): the sizes the published splits are named after.
SIZES = {
    "coco_48_17": (48, 17, 15),
    "coco_65_15": (65, 15, 0),
    "coco_panoptic_119_14": (119, 14, 0),
    "coco_stuff_156_15": (156, 15, 0),
    "coco_stuff_167_15": (167, 15, 0),
    "voc_15_5": (15, 5, 0),
    "pascal_context_29_4": (29, 4, 0),
    "ade20k_full_572_275": (572, 275, 0),
    "zs_shapes": (17, 5, 5),
}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_split_sizes_and_disjointness(name):
    split = get_split(name)
    assert (len(split.seen), len(split.unseen), len(split.ignored)) == SIZES[name]
    groups = [set(split.seen), set(split.unseen), set(split.ignored)]
    assert sum(map(len, groups)) == len(set.union(*groups))
    assert split.classes == split.seen + split.unseen


def _detectron2_coco_names(isthing=None):
    """COCO panoptic category names in file order, from detectron2's own table (not zsi_d2's)."""
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    return tuple(c["name"] for c in COCO_CATEGORIES if isthing is None or c["isthing"] == isthing)


def test_coco_48_17_is_the_published_split_in_order():
    s48 = get_split("coco_48_17")
    assert s48.seen == SEEN_48
    assert s48.unseen == UNSEEN_17
    assert s48.ignored == IGNORED_48_17


def test_coco_65_15_is_the_published_split_in_order():
    s65 = get_split("coco_65_15")
    assert s65.unseen == UNSEEN_15
    assert s65.seen == SEEN_65
    assert s65.ignored == ()


def test_coco_thing_order_is_detectron2s():
    """SEEN_65 is "the other 65 in COCO order": the literal above and the code both follow it."""
    assert splits.COCO_THING_CLASSES == _detectron2_coco_names(isthing=1)
    assert SEEN_65 == tuple(c for c in _detectron2_coco_names(isthing=1) if c not in UNSEEN_15)


def test_panoptic_119_14_is_the_published_split_in_order():
    """Positions of the 14 unseen classes in the 133 panoptic categories (shared/data README)."""
    split = get_split("coco_panoptic_119_14")
    assert split.unseen == UNSEEN_14
    official = _detectron2_coco_names()
    assert split.seen == tuple(c for c in official if c not in UNSEEN_14)
    assert sorted(official.index(c) for c in split.unseen) == [19, 23, 28, 29, 36, 51, 76, 83, 97, 99, 100, 116, 119, 125]
    assert split.stuff == _detectron2_coco_names(isthing=0)
    assert set(split.things) == set(_detectron2_coco_names(isthing=1))


@pytest.mark.skipif(not os.path.isdir(SHARED_PANOPTIC), reason=f"shared COCO panoptic sample absent: {SHARED_PANOPTIC}")
def test_panoptic_names_and_ids_match_the_official_categories():
    with open(os.path.join(SHARED_PANOPTIC, "panoptic_coco_categories.json")) as f:
        official = json.load(f)
    assert [c["name"] for c in official] == list(splits.COCO_PANOPTIC_CLASSES)
    assert [c["id"] for c in official] == list(splits.COCO_PANOPTIC_IDS)
    split = get_split("coco_panoptic_119_14")
    assert [bool(c["isthing"]) for c in official] == [c not in split.stuff for c in splits.COCO_PANOPTIC_CLASSES]


def test_coco_stuff_156_15_table():
    split = get_split("coco_stuff_156_15")
    ids = dict(zip(splits.COCO_STUFF_CLASSES, splits.COCO_STUFF_IDS))
    # Spot checks against the COCO-Stuff label list (labels.txt: id: name).
    assert (ids["person"], ids["toothbrush"], ids["banner"], ids["cardboard"], ids["clouds"],
            ids["grass"], ids["tree"], ids["wall-concrete"], ids["wood"]) == (1, 90, 92, 100, 106, 124, 169, 172, 182)
    assert split.unseen == UNSEEN_COCO_STUFF_15
    assert len(split.stuff) == 91 and len(split.classes) == 171
    # Seen: the COCO things (detectron2's order) without the unseen ones, then stuff by label id.
    seen_things = tuple(c for c in _detectron2_coco_names(isthing=1) if c not in UNSEEN_COCO_STUFF_15)
    assert split.seen[:len(seen_things)] == seen_things
    seen_stuff = split.seen[len(seen_things):]
    assert [ids[c] for c in seen_stuff] == sorted(ids[c] for c in seen_stuff)
    assert set(seen_stuff) == set(split.stuff) - set(UNSEEN_COCO_STUFF_15)


# ZegFormer's COCO-Stuff classes (COCO_CATEGORIES_Seen of datasets/coco-stuff/prepare_coco_stuff_sem_seg_val_all.py
# @8cb9e8f, the order of its seen_classnames.json): sha256 of the 156 names joined by "\n".
ZEGFORMER_COCO_STUFF_SEEN_SHA256 = "e3ea3e091a14ed7624a659a23f8aabdac2008aec5a4ff1a7a8e409924947345f"


def test_coco_stuff_156_15_is_zegformers():
    """seen + unseen in ZegFormer's order (its all_classnames.json: the embedding rows of its GZSS evaluation)."""
    split = get_split("coco_stuff_156_15")
    assert _sha256(split.seen) == ZEGFORMER_COCO_STUFF_SEEN_SHA256
    assert split.unseen == UNSEEN_COCO_STUFF_15


# CaGNet's dataset/cocostuff/labels_refined.txt @249305b (line i: label value i, the same 182 names as SPNet's
# data/datasets/cocostuff/labels_2.txt): sha256 of the 182 names joined by "\n".
CAGNET_COCO_STUFF_182_SHA256 = "56bbb9bd51d6ad358221406f214975ca262244e8f215669b91decfaefce76f6a"
# CaGNet's dataset/cocostuff/split/seen_cls.npy and novel_cls.npy (label values; seen = SPNet's seen + val classes).
CAGNET_COCO_STUFF_UNSEEN_VALUES = (20, 24, 32, 33, 40, 56, 86, 99, 105, 123, 144, 147, 148, 168, 171)


def test_coco_stuff_167_15_is_spnets_and_cagnets():
    split = get_split("coco_stuff_167_15")
    assert _sha256(splits.COCO_STUFF_182_CLASSES) == CAGNET_COCO_STUFF_182_SHA256
    assert splits.COCO_STUFF_182_IDS == tuple(range(1, 183))  # a stuffthingmaps pixel holds id - 1 = position
    assert tuple(splits.COCO_STUFF_182_CLASSES[v] for v in CAGNET_COCO_STUFF_UNSEEN_VALUES) == split.unseen
    assert split.unseen == UNSEEN_COCO_STUFF_15 == get_split("coco_stuff_156_15").unseen
    assert split.seen == tuple(c for c in splits.COCO_STUFF_182_CLASSES if c not in UNSEEN_COCO_STUFF_15)
    # The 171 annotated classes keep their official ids; the 11 others are the never-annotated COCO things.
    ids = dict(zip(splits.COCO_STUFF_182_CLASSES, splits.COCO_STUFF_182_IDS))
    assert all(ids[n] == i for n, i in zip(splits.COCO_STUFF_CLASSES, splits.COCO_STUFF_IDS))
    extra = [n for n in splits.COCO_STUFF_182_CLASSES if n not in splits.COCO_STUFF_CLASSES]
    assert [ids[n] for n in extra] == [12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91]
    assert set(extra) <= set(split.seen) and set(split.stuff) == set(splits.COCO_STUFF_STUFF_CLASSES)


def test_pascal_splits():
    voc = get_split("voc_15_5")
    assert (voc.seen, voc.unseen) == (SEEN_VOC_15, UNSEEN_VOC_5)
    ctx = get_split("pascal_context_29_4")
    assert (ctx.seen, ctx.unseen) == (SEEN_CONTEXT_29, UNSEEN_CONTEXT_4)
    assert set(ctx.stuff) == set(SEEN_CONTEXT_29[16:]) - {"keyboard"}


# ADE20k-Full 847, from ADE20K_SEM_SEG_FULL_CATEGORIES of dingjiansw101/ZegFormer @8cb9e8f
# (datasets/ade20k-full-frequency-split/create_ade-frequency_json.py; Mask2Former's table has the same
# names, ids and order): sha256 of its names joined by "\n", and of its "id|frequency|name" rows.
ADE847_NAMES_SHA256 = "ee311c5f3b780a16a58f40726927f6c41149860a5fca6c1116ea1dca129efd8b"
ADE847_ROWS_SHA256 = "15448dd57615934ed5383caad7d9767a6e8f1e3d34dd7c17d1c0a9d4dceac05c"


def _sha256(lines):
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def test_ade20k_full_847_is_the_published_table():
    from zsi_d2.data.ade20k import ADE20K_FULL_CATEGORIES

    assert _sha256(name for _, _, _, name in ADE20K_FULL_CATEGORIES) == ADE847_NAMES_SHA256
    assert _sha256(f"{i}|{f}|{n}" for i, _, f, n in ADE20K_FULL_CATEGORIES) == ADE847_ROWS_SHA256
    # Spot checks at known trainIds (the published file's rows).
    rows = {i: (ade_id, freq, name) for i, (ade_id, _, freq, name) in enumerate(ADE20K_FULL_CATEGORIES)}
    assert rows[0] == (2978, "frequent", "wall")
    assert rows[11] == (1831, "frequent", "person, individual, someone, somebody, mortal, soul")
    assert rows[52] == (2185, "common", "runway")
    assert rows[166][1:] == ("rare", "catwalk")
    assert rows[846][1:] == ("rare", "adding machine, totalizer, totaliser")


def test_ade20k_full_572_275_split():
    """seen = frequency not "rare", unseen = "rare", each in the published order (ZegFormer's json files)."""
    split = get_split("ade20k_full_572_275")
    assert splits.ADE20K_FULL_CLASSES[:3] == split.seen[:3] == ("wall", "building, edifice", "sky")
    assert split.unseen[:3] == ("catwalk", "inflatable bounce game", "confessional booth")
    assert split.unseen[-1] == "adding machine, totalizer, totaliser" and split.seen[-1] == "fire alarm"
    order = {n: i for i, n in enumerate(splits.ADE20K_FULL_CLASSES)}
    for group in (split.seen, split.unseen):
        assert [order[n] for n in group] == sorted(order[n] for n in group)
    assert len(splits.ADE20K_FULL_CLASSES) == len(set(splits.ADE20K_FULL_IDS)) == 847


@pytest.mark.parametrize("name", sorted(SOURCE_TABLES))
def test_coco_splits_cover_their_dataset_exactly(name):
    """Every category of the source file is seen, unseen or ignored; contiguous order = dataset order."""
    split = get_split(name)
    names, ids = SOURCE_TABLES[name]
    assert set(split.classes) | set(split.ignored) == set(names)
    cats = split_categories(name)
    assert [c["name"] for c in cats] == [n for n in names if n in split.classes]
    assert [c["id"] for c in cats] == sorted(c["id"] for c in cats)


def test_unknown_split_and_unknown_class_errors_are_clear():
    with pytest.raises(KeyError, match="coco_48_17"):
        get_split("coco_48_71")
    with pytest.raises(KeyError, match="motorbike"):
        get_split("coco_48_17").check_known(["person", "motorbike"])
