"""The one source of truth for zero-shot class splits.

Every head, classifier, dataset and evaluator reads its classes from here (or from dataset
metadata built from here). Order matters: class-embedding matrices follow `seen` then `unseen`.
"""
from dataclasses import dataclass, field
from typing import Dict, Tuple

from ..errors import InputKeyError, InputValueError
from .ade20k.categories import ADE20K_FULL_CATEGORIES

__all__ = ["ZeroShotSplit", "get_split", "register_split", "list_splits"]


@dataclass(frozen=True)
class ZeroShotSplit:
    name: str
    seen: Tuple[str, ...]
    unseen: Tuple[str, ...]
    # Classes that belong to neither side: their annotations are dropped, never relabelled.
    ignored: Tuple[str, ...] = ()
    # Names (among seen + unseen) that are "stuff" (amorphous regions) rather than "things".
    stuff: Tuple[str, ...] = ()
    description: str = field(default="", compare=False)

    def __post_init__(self):
        overlap = set(self.seen) & set(self.unseen)
        if overlap:
            raise InputValueError(f"Split '{self.name}': classes both seen and unseen: {sorted(overlap)}; "
                                  "list each class in one group")
        for group in ("seen", "unseen", "ignored"):
            names = getattr(self, group)
            if len(set(names)) != len(names):
                raise InputValueError(f"Split '{self.name}': duplicate names in {group}: list each class once")
        unknown = set(self.stuff) - set(self.classes)
        if unknown:
            raise InputValueError(f"Split '{self.name}': stuff classes not in the split: {sorted(unknown)}; "
                                  "add them to seen or unseen")

    @property
    def classes(self) -> Tuple[str, ...]:
        """All evaluated classes: seen first, then unseen (the embedding-matrix order)."""
        return self.seen + self.unseen

    @property
    def things(self) -> Tuple[str, ...]:
        return tuple(c for c in self.classes if c not in self.stuff)

    def is_unseen(self, name: str) -> bool:
        return name in self.unseen

    def check_known(self, names, what="class names"):
        """Raise a clear error for names that are neither seen, unseen nor ignored."""
        known = set(self.classes) | set(self.ignored)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise InputKeyError(
                f"Unknown {what} for split '{self.name}': {unknown}; use the split's names, or add them to it. "
                f"Known classes: {sorted(known)}"
            )


_SPLITS: Dict[str, ZeroShotSplit] = {}


def register_split(split: ZeroShotSplit) -> ZeroShotSplit:
    if split.name in _SPLITS and _SPLITS[split.name] != split:
        raise InputValueError(f"A different split named '{split.name}' is already registered: give yours "
                              "another name")
    _SPLITS[split.name] = split
    return split


def get_split(name: str) -> ZeroShotSplit:
    try:
        return _SPLITS[name]
    except KeyError:
        raise InputKeyError(f"Unknown zero-shot split '{name}': register it first (register_split) or use one of "
                            f"the registered splits: {list_splits()}") from None


def list_splits():
    return sorted(_SPLITS)


# ---------------------------------------------------------------------------------------------
# zs_shapes: the project's offline synthetic benchmark (zsi_d2/data/zs_shapes).
# Things are "<colour> <shape>", stuff is "<tone> <pattern> ground". Every attribute of every
# unseen class appears in some seen class, so transfer through the class name is possible.
# The ignored classes are the unlabelled distractors: they appear in images and must be background.
# ---------------------------------------------------------------------------------------------
register_split(
    ZeroShotSplit(
        name="zs_shapes",
        seen=(
            "red square", "red triangle", "red star",
            "green circle", "green triangle", "green star",
            "blue circle", "blue square", "blue star",
            "yellow circle", "yellow square", "yellow triangle",
            "light checkered ground", "light dotted ground", "light wavy ground",
            "dark checkered ground", "dark wavy ground",
        ),
        unseen=(
            "red circle", "green square", "blue triangle", "yellow star",
            "dark dotted ground",
        ),
        ignored=("purple circle", "purple square", "purple triangle", "purple star", "white cross"),
        stuff=(
            "light checkered ground", "light dotted ground", "light wavy ground",
            "dark checkered ground", "dark wavy ground", "dark dotted ground",
        ),
        description="Synthetic coloured shapes on patterned ground; see zsi_d2/data/zs_shapes.",
    )
)

# ---------------------------------------------------------------------------------------------
# COCO instance splits (reference: Bansal et al. 48/17, Rahman et al. 65/15).
# ---------------------------------------------------------------------------------------------
COCO_THING_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)

_COCO_48 = (
    "person", "bicycle", "car", "motorcycle", "truck", "boat", "bench", "bird", "horse", "sheep",
    "zebra", "giraffe", "backpack", "handbag", "skis", "kite", "surfboard", "bottle", "spoon",
    "bowl", "banana", "apple", "orange", "broccoli", "carrot", "pizza", "donut", "chair", "bed",
    "tv", "laptop", "remote", "microwave", "oven", "refrigerator", "book", "clock", "vase",
    "toothbrush", "train", "bear", "suitcase", "frisbee", "fork", "sandwich", "toilet", "mouse",
    "toaster",
)
_COCO_17 = (
    "bus", "dog", "cow", "elephant", "umbrella", "tie", "skateboard", "cup", "knife", "cake",
    "couch", "keyboard", "sink", "scissors", "airplane", "cat", "snowboard",
)
register_split(
    ZeroShotSplit(
        name="coco_48_17",
        seen=_COCO_48,
        unseen=_COCO_17,
        ignored=tuple(c for c in COCO_THING_CLASSES if c not in _COCO_48 + _COCO_17),
        description="COCO 2014 instance split of Bansal et al. (ZSI, PADing).",
    )
)

_COCO_15 = (
    "airplane", "train", "parking meter", "cat", "bear", "suitcase", "frisbee", "snowboard",
    "fork", "sandwich", "hot dog", "toilet", "mouse", "toaster", "hair drier",
)
register_split(
    ZeroShotSplit(
        name="coco_65_15",
        seen=tuple(c for c in COCO_THING_CLASSES if c not in _COCO_15),
        unseen=_COCO_15,
        description="COCO 2014 instance split of Rahman et al.",
    )
)

# ---------------------------------------------------------------------------------------------
# Category tables of the standard files (names and official ids). Prepared files keep these ids,
# so detectron2's and pycocotools' tools read them unchanged; registration maps them to
# contiguous ids without opening any file.
# ---------------------------------------------------------------------------------------------
COCO_THING_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
)

# COCO panoptic (2017): the 80 things above, then these stuff categories ("-merged" ones merge
# several COCO-Stuff classes).
COCO_PANOPTIC_STUFF_CLASSES = (
    "banner", "blanket", "bridge", "cardboard", "counter", "curtain", "door-stuff", "floor-wood",
    "flower", "fruit", "gravel", "house", "light", "mirror-stuff", "net", "pillow", "platform",
    "playingfield", "railroad", "river", "road", "roof", "sand", "sea", "shelf", "snow", "stairs",
    "tent", "towel", "wall-brick", "wall-stone", "wall-tile", "wall-wood", "water-other",
    "window-blind", "window-other", "tree-merged", "fence-merged", "ceiling-merged",
    "sky-other-merged", "cabinet-merged", "table-merged", "floor-other-merged", "pavement-merged",
    "mountain-merged", "grass-merged", "dirt-merged", "paper-merged", "food-other-merged",
    "building-other-merged", "rock-merged", "wall-other-merged", "rug-merged",
)
COCO_PANOPTIC_STUFF_IDS = (
    92, 93, 95, 100, 107, 109, 112, 118, 119, 122, 125, 128, 130, 133, 138, 141, 144, 145, 147,
    148, 149, 151, 154, 155, 156, 159, 161, 166, 168, 171, 175, 176, 177, 178, 180, 181, 184, 185,
    186, 187, 188, 189, 190, 191, 192, 193, 194, 195, 196, 197, 198, 199, 200,
)
COCO_PANOPTIC_CLASSES = COCO_THING_CLASSES + COCO_PANOPTIC_STUFF_CLASSES
COCO_PANOPTIC_IDS = COCO_THING_IDS + COCO_PANOPTIC_STUFF_IDS

# COCO-Stuff (2017, stuffthingmaps): the 80 things with their COCO ids, then the stuff classes
# with ids 92, 93, ... in this order. A label-map pixel holds (id - 1); 255 is unlabelled.
COCO_STUFF_STUFF_CLASSES = (
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds",
    "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble",
    "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other",
    "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves",
    "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper",
    "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing",
    "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf",
    "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)
_COCO_STUFF_FIRST_STUFF_ID = 92
COCO_STUFF_CLASSES = COCO_THING_CLASSES + COCO_STUFF_STUFF_CLASSES
COCO_STUFF_IDS = COCO_THING_IDS + tuple(
    range(_COCO_STUFF_FIRST_STUFF_ID, _COCO_STUFF_FIRST_STUFF_ID + len(COCO_STUFF_STUFF_CLASSES))
)

# ---------------------------------------------------------------------------------------------
# COCO panoptic 119/14 (PADing's ZSP split), COCO-Stuff 156/15 (ZegFormer: SPNet's 15 unseen
# classes over the 171 annotated ones) and 167/15 (SPNet, CaGNet: the same 15 over all 182 label
# values). Seen classes keep the dataset order; unseen classes the published order.
# ---------------------------------------------------------------------------------------------
_COCO_PANOPTIC_14 = (
    "cow", "giraffe", "suitcase", "frisbee", "skateboard", "carrot", "scissors",
    "cardboard", "playingfield", "river", "road", "tree-merged", "sky-other-merged", "grass-merged",
)
register_split(
    ZeroShotSplit(
        name="coco_panoptic_119_14",
        seen=tuple(c for c in COCO_PANOPTIC_CLASSES if c not in _COCO_PANOPTIC_14),
        unseen=_COCO_PANOPTIC_14,
        stuff=COCO_PANOPTIC_STUFF_CLASSES,
        description="COCO 2017 panoptic split of PADing (zero-shot panoptic segmentation).",
    )
)

_COCO_STUFF_15 = (
    "cow", "giraffe", "suitcase", "frisbee", "skateboard", "carrot", "scissors", "cardboard",
    "clouds", "grass", "playingfield", "river", "road", "tree", "wall-concrete",
)
register_split(
    ZeroShotSplit(
        name="coco_stuff_156_15",
        seen=tuple(c for c in COCO_STUFF_CLASSES if c not in _COCO_STUFF_15),
        unseen=_COCO_STUFF_15,
        stuff=COCO_STUFF_STUFF_CLASSES,
        description="COCO-Stuff 2017 semantic split of ZegFormer (171 classes).",
    )
)

# COCO-Stuff's full label range, 182 classes (cocostuff's labels.txt; SPNet's and CaGNet's
# labels_refined.txt, whose line i is the class of label value i): COCO's 91 thing ids, the 11
# never annotated included, then the 91 stuff classes. A stuffthingmaps pixel holds (id - 1), so
# here the label value IS the position in this list; 255 is unlabelled.
_COCO_UNANNOTATED_THINGS = {  # official id -> name: COCO ids no COCO annotation uses
    12: "street sign", 26: "hat", 29: "shoe", 30: "eye glasses", 45: "plate", 66: "mirror", 68: "window",
    69: "desk", 71: "door", 83: "blender", 91: "hair brush",
}
_COCO_THINGS_BY_ID = {**dict(zip(COCO_THING_IDS, COCO_THING_CLASSES)), **_COCO_UNANNOTATED_THINGS}
COCO_STUFF_182_CLASSES = tuple(_COCO_THINGS_BY_ID[i] for i in sorted(_COCO_THINGS_BY_ID)) + COCO_STUFF_STUFF_CLASSES
COCO_STUFF_182_IDS = tuple(range(1, len(COCO_STUFF_182_CLASSES) + 1))
register_split(
    ZeroShotSplit(
        name="coco_stuff_167_15",
        seen=tuple(c for c in COCO_STUFF_182_CLASSES if c not in _COCO_STUFF_15),
        unseen=_COCO_STUFF_15,
        stuff=COCO_STUFF_STUFF_CLASSES,
        description="COCO-Stuff 2017 semantic split of SPNet / CaGNet (182 classes, the 11 unannotated things "
                    "among the seen).",
    )
)

# ---------------------------------------------------------------------------------------------
# Pascal splits (semantic segmentation). Names are spelled out ("tv monitor", not "tvmonitor")
# because text encoders embed them.
# ---------------------------------------------------------------------------------------------
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "dining table", "dog", "horse", "motorbike", "person", "potted plant", "sheep", "sofa",
    "train", "tv monitor",
)
_VOC_5 = ("potted plant", "sheep", "sofa", "train", "tv monitor")
register_split(
    ZeroShotSplit(
        name="voc_15_5",
        seen=tuple(c for c in VOC_CLASSES if c not in _VOC_5),
        unseen=_VOC_5,
        description="Pascal VOC 2012 (+SBD) semantic split of SPNet / ZS3Net / CaGNet.",
    )
)

# The 33-class Pascal-Context label set (Mottaghi et al.'s 33_labels.txt) used by CaGNet: the 20
# VOC classes then 13 context classes, in label order.
_PASCAL_CONTEXT_STUFF = (
    "sky", "grass", "ground", "road", "building", "tree", "water", "mountain", "wall", "floor",
    "track", "ceiling",
)
PASCAL_CONTEXT_CLASSES = VOC_CLASSES + (
    "sky", "grass", "ground", "road", "building", "tree", "water", "mountain", "wall", "floor",
    "track", "keyboard", "ceiling",
)
_PASCAL_CONTEXT_4 = ("cow", "motorbike", "sofa", "cat")
register_split(
    ZeroShotSplit(
        name="pascal_context_29_4",
        seen=tuple(c for c in PASCAL_CONTEXT_CLASSES if c not in _PASCAL_CONTEXT_4),
        unseen=_PASCAL_CONTEXT_4,
        stuff=_PASCAL_CONTEXT_STUFF,
        description="Pascal-Context 33-class semantic split of CaGNet.",
    )
)

# ---------------------------------------------------------------------------------------------
# ADE20k-Full 847 (ZegFormer's frequency split): seen = the classes whose published frequency is
# not "rare" (572), unseen = the "rare" ones (275), each in the published order. The table (names,
# ADE ids, frequencies) is in zsi_d2/data/ade20k/categories.py; its order is the label order.
# ---------------------------------------------------------------------------------------------
ADE20K_FULL_CLASSES = tuple(name for _, _, _, name in ADE20K_FULL_CATEGORIES)
ADE20K_FULL_IDS = tuple(ade_id for ade_id, _, _, _ in ADE20K_FULL_CATEGORIES)
_ADE20K_FULL_RARE = frozenset(name for _, _, frequency, name in ADE20K_FULL_CATEGORIES if frequency == "rare")
register_split(
    ZeroShotSplit(
        name="ade20k_full_572_275",
        seen=tuple(c for c in ADE20K_FULL_CLASSES if c not in _ADE20K_FULL_RARE),
        unseen=tuple(c for c in ADE20K_FULL_CLASSES if c in _ADE20K_FULL_RARE),
        description="ADE20k-Full 847 semantic split of ZegFormer: unseen = the 'rare' classes.",
    )
)
