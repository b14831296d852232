"""Split definitions: sizes, published order, exact coverage of each dataset's categories."""
import json
import os

import pytest

from zsi_d2.data import splits
from zsi_d2.data.coco.categories import SOURCE_TABLES, split_categories
from zsi_d2.data.splits import get_split

from coco_fixtures import SHARED_PANOPTIC

# name -> (seen, unseen, ignored): the sizes the published splits are named after.
SIZES = {
    "coco_48_17": (48, 17, 15),
    "coco_65_15": (65, 15, 0),
    "coco_panoptic_119_14": (119, 14, 0),
    "coco_stuff_156_15": (156, 15, 0),
    "voc_15_5": (15, 5, 0),
    "pascal_context_29_4": (29, 4, 0),
    "zs_shapes": (17, 5, 5),
}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_split_sizes_and_disjointness(name):
    split = get_split(name)
    assert (len(split.seen), len(split.unseen), len(split.ignored)) == SIZES[name]
    groups = [set(split.seen), set(split.unseen), set(split.ignored)]
    assert sum(map(len, groups)) == len(set.union(*groups))
    assert split.classes == split.seen + split.unseen


def test_coco_instance_splits_follow_the_published_lists():
    s48 = get_split("coco_48_17")
    assert s48.seen[:3] == ("person", "bicycle", "car") and s48.seen[-3:] == ("toilet", "mouse", "toaster")
    assert s48.unseen == ("bus", "dog", "cow", "elephant", "umbrella", "tie", "skateboard", "cup", "knife",
                          "cake", "couch", "keyboard", "sink", "scissors", "airplane", "cat", "snowboard")
    assert set(s48.ignored) == {
        "traffic light", "fire hydrant", "stop sign", "parking meter", "sports ball", "baseball bat",
        "baseball glove", "tennis racket", "wine glass", "hot dog", "potted plant", "dining table",
        "cell phone", "teddy bear", "hair drier"}
    s65 = get_split("coco_65_15")
    assert s65.unseen[0] == "airplane" and s65.unseen[-1] == "hair drier"
    assert s65.seen == tuple(c for c in splits.COCO_THING_CLASSES if c not in s65.unseen)  # COCO order


def test_panoptic_119_14_unseen_positions():
    """Positions of the 14 unseen classes in the 133 panoptic categories (shared/data README)."""
    split = get_split("coco_panoptic_119_14")
    positions = sorted(splits.COCO_PANOPTIC_CLASSES.index(c) for c in split.unseen)
    assert positions == [19, 23, 28, 29, 36, 51, 76, 83, 97, 99, 100, 116, 119, 125]
    assert split.unseen[-3:] == ("tree-merged", "sky-other-merged", "grass-merged")
    assert len(split.things) == len(splits.COCO_THING_CLASSES)
    assert set(split.stuff) == set(splits.COCO_PANOPTIC_STUFF_CLASSES)


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
    assert split.unseen == ("cow", "giraffe", "suitcase", "frisbee", "skateboard", "carrot", "scissors",
                            "cardboard", "clouds", "grass", "playingfield", "river", "road", "tree", "wall-concrete")
    assert len(split.stuff) == 91 and len(split.classes) == 171


def test_pascal_splits():
    voc = get_split("voc_15_5")
    assert voc.unseen == ("potted plant", "sheep", "sofa", "train", "tv monitor")
    assert set(voc.classes) == set(splits.VOC_CLASSES)
    ctx = get_split("pascal_context_29_4")
    assert ctx.unseen == ("cow", "motorbike", "sofa", "cat")
    assert ctx.classes[:len(ctx.seen)] == tuple(c for c in splits.PASCAL_CONTEXT_CLASSES if c not in ctx.unseen)
    assert splits.PASCAL_CONTEXT_CLASSES[20:] == (
        "sky", "grass", "ground", "road", "building", "tree", "water", "mountain", "wall", "floor", "track",
        "keyboard", "ceiling")


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
