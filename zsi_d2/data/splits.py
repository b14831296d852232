"""The one source of truth for zero-shot class splits.

Every head, classifier, dataset and evaluator reads its classes from here (or from dataset
metadata built from here). Order matters: class-embedding matrices follow `seen` then `unseen`.
"""
from dataclasses import dataclass, field
from typing import Dict, Tuple

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
            raise ValueError(f"Split '{self.name}': classes both seen and unseen: {sorted(overlap)}")
        for group in ("seen", "unseen", "ignored"):
            names = getattr(self, group)
            if len(set(names)) != len(names):
                raise ValueError(f"Split '{self.name}': duplicate names in {group}")
        unknown = set(self.stuff) - set(self.classes)
        if unknown:
            raise ValueError(f"Split '{self.name}': stuff classes not in the split: {sorted(unknown)}")

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
            raise KeyError(
                f"Unknown {what} for split '{self.name}': {unknown}. "
                f"Known classes: {sorted(known)}"
            )


_SPLITS: Dict[str, ZeroShotSplit] = {}


def register_split(split: ZeroShotSplit) -> ZeroShotSplit:
    if split.name in _SPLITS and _SPLITS[split.name] != split:
        raise ValueError(f"A different split named '{split.name}' is already registered")
    _SPLITS[split.name] = split
    return split


def get_split(name: str) -> ZeroShotSplit:
    try:
        return _SPLITS[name]
    except KeyError:
        raise KeyError(f"Unknown zero-shot split '{name}'. Registered splits: {list_splits()}") from None


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
