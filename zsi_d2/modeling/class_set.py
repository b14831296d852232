"""Zero-shot class-set switching, written once for every method.

Why: a zero-shot model scores a *set of class names* that changes with the job: the seen classes
in training, seen + unseen in GZSI evaluation, unseen only in ZSI evaluation. The set follows from
the dataset's metadata (`zero_shot_mode`, `seen_classes`, `unseen_classes`), never from a flag
flipped by hand. Model outputs are mapped back to the dataset's own contiguous ids so that
detectron2's evaluators and visualisers work unchanged.
"""
import abc
import contextlib
import functools
import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

import torch

from detectron2.data import MetadataCatalog

from ..data.metadata import ZERO_SHOT_MODES
from ..errors import InputError, InputKeyError, InputValueError
from ..utils.model import unwrap

__all__ = [
    "ClassSet",
    "ZeroShotModule",
    "ZeroShotMetaArch",
    "class_universe",
    "inference_class_set",
    "use_class_set",
    "dataset_class_set",
    "apply_class_set",
    "training_class_names",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassSet:
    """The classes a model scores now, and where each sits in the dataset's class list."""

    names: Tuple[str, ...]
    dataset_classes: Tuple[str, ...]  # the dataset's thing_classes (or stuff_classes)
    mode: str = "gzsi"
    unseen: Tuple[str, ...] = ()  # the names in `names` that are unseen classes
    stuff: Tuple[str, ...] = ()  # the names in `names` that are stuff classes (amorphous regions)
    thing_classes: Tuple[str, ...] = ()  # the dataset's thing_classes: where instance outputs point
    source: str = field(default="", compare=False)  # where the set comes from (a dataset, "vocabulary"), for logs

    # Derived tensors: computed once per class set (a frozen value), read by every module that needs
    # them, so no module keeps its own copy to refresh when the set switches.
    @functools.cached_property
    def is_thing(self) -> torch.Tensor:
        """(len(names),) bool: True where the class is a thing (instances are made of things only)."""
        return torch.tensor([n not in self.stuff for n in self.names], dtype=torch.bool)

    @functools.cached_property
    def thing_ids(self) -> torch.Tensor:
        """local index -> index into the dataset's thing_classes (-1 for stuff): instance labels."""
        return torch.tensor([self.thing_classes.index(n) if n in self.thing_classes and n not in self.stuff else -1
                             for n in self.names], dtype=torch.long)

    @functools.cached_property
    def group_indices(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(seen, unseen) local indices, e.g. for per-group NMS in GZSI."""
        unseen = [i for i, n in enumerate(self.names) if n in self.unseen]
        seen = [i for i, n in enumerate(self.names) if n not in self.unseen]
        return torch.tensor(seen, dtype=torch.long), torch.tensor(unseen, dtype=torch.long)

    @functools.cached_property
    def is_seen(self) -> torch.Tensor:
        """(len(names),) bool: True for the seen classes (the columns calibrated stacking lowers)."""
        return torch.tensor([n not in self.unseen for n in self.names], dtype=torch.bool)

    @functools.cached_property
    def is_seen_dataset(self) -> torch.Tensor:
        """(len(dataset_classes),) bool: True at the dataset ids of the seen classes in `names` (the
        channels of a semantic output that belong to seen classes)."""
        seen = torch.zeros(len(self.dataset_classes), dtype=torch.bool)
        seen[self.dataset_ids[self.is_seen]] = True
        return seen

    def __post_init__(self):
        missing = [n for n in self.names if n not in self.dataset_classes]
        if missing:
            raise KeyError(f"Classes {missing} are not in the dataset's classes {self.dataset_classes}")
        if not self.names:
            raise ValueError(f"Empty class set for mode '{self.mode}': check the dataset metadata")

    @functools.cached_property
    def dataset_ids(self) -> torch.Tensor:
        """local index -> dataset contiguous id."""
        return torch.tensor([self.dataset_classes.index(n) for n in self.names], dtype=torch.long)

    def to_local(self, dataset_labels: torch.Tensor) -> torch.Tensor:
        """dataset contiguous ids -> indices into `names`; a label outside the set is an error.

        In training this is the last line of the leakage guard: an unseen label cannot be
        turned into a training target.
        """
        lookup = torch.full((len(self.dataset_classes),), -1, dtype=torch.long)
        lookup[self.dataset_ids] = torch.arange(len(self.names))
        local = lookup.to(dataset_labels.device)[dataset_labels]
        if (local < 0).any():
            bad = sorted({self.dataset_classes[i] for i in dataset_labels[local < 0].tolist()})
            raise InputValueError(
                f"Labels {bad} are not in the current class set ({self.mode}: {list(self.names)}): audit the data. "
                "In training this means unseen or unknown classes reached the training data: "
                "audit the dataset (python -m zsi_d2.data.audit DATASET)."
            )
        return local

    def to_dataset(self, local_labels: torch.Tensor) -> torch.Tensor:
        return self.dataset_ids.to(local_labels.device)[local_labels]


def _metadata_field(meta, dataset_name, field):
    value = meta.get(field, None)
    if value is None:
        raise InputKeyError(
            f"Dataset '{dataset_name}' has no zero-shot metadata field '{field}'. Zero-shot datasets "
            "carry seen_classes, unseen_classes and zero_shot_mode; make yours zero-shot where it is "
            "registered: zsi_d2.data.make_zero_shot(dataset_name, split_name, mode)."
        )
    return value


def _kind_of(meta, kind: str) -> str:
    """"auto": the dataset's whole label space, stuff_classes when it has them (panoptic and
    semantic data, and zs_shapes' instance views), else thing_classes (instance-only data)."""
    if kind != "auto":
        return kind
    return "stuff" if meta.get("stuff_classes", None) else "thing"


def dataset_class_set(dataset_name: str, kind: str = "thing", mode: Optional[str] = None) -> ClassSet:
    """The class set a dataset asks for: seen (train), seen + unseen (gzsi) or unseen (zsi); `mode`
    overrides the dataset's own (e.g. GZSI scoring on seen-only held-out images). `kind` is
    "thing", "stuff" or "auto" (see `_kind_of`)."""
    meta = MetadataCatalog.get(dataset_name)
    kind = _kind_of(meta, kind)
    mode = mode or _metadata_field(meta, dataset_name, "zero_shot_mode")
    if mode not in ZERO_SHOT_MODES:
        raise InputValueError(f"Dataset '{dataset_name}': zero_shot_mode must be one of {ZERO_SHOT_MODES}, got "
                              f"'{mode}'; set it where the dataset is registered (make_zero_shot(name, split, mode))")
    classes = tuple(_metadata_field(meta, dataset_name, f"{kind}_classes"))
    seen = set(_metadata_field(meta, dataset_name, "seen_classes"))
    unseen = set(_metadata_field(meta, dataset_name, "unseen_classes"))
    wanted = {"train": seen, "gzsi": seen | unseen, "zsi": unseen}[mode]
    names = tuple(c for c in classes if c in wanted)
    if not names:
        group = {"train": "seen", "gzsi": "seen or unseen", "zsi": "unseen"}[mode]
        raise InputValueError(f"Dataset '{dataset_name}' ({mode}) has no {group} class among its {kind}_classes: "
                              "check its seen_classes / unseen_classes where it is registered (make_zero_shot)")
    split_stuff = _split_stuff(meta)
    return ClassSet(names, classes, mode, unseen=tuple(c for c in names if c in unseen),
                    stuff=tuple(c for c in names if c in split_stuff),
                    thing_classes=tuple(meta.get("thing_classes", None) or ()), source=dataset_name)


def _split_stuff(meta):
    """The stuff classes of the dataset's split (a split declares which of its classes are stuff)."""
    from ..data.splits import get_split

    split_name = meta.get("zero_shot_split", None)
    return set(get_split(split_name).stuff) if split_name else set()


def class_universe(cfg, kind: str = "thing") -> Tuple[str, ...]:
    """Every class name any configured dataset may ask for; the model embeds all of them once."""
    datasets = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    _first_dataset(datasets)
    names = []
    for dataset_name in datasets:
        for n in dataset_class_set(dataset_name, kind).dataset_classes:
            if n not in names:
                names.append(n)
    return tuple(names)


def _first_dataset(datasets) -> str:
    if not datasets:
        raise InputValueError("No datasets in DATASETS.TRAIN or DATASETS.TEST to take class names from: "
                              "name at least one")
    return datasets[0]


def default_class_set(cfg, kind: str = "thing") -> ClassSet:
    """The class set a freshly built model starts with: the training set's, else the first test set's."""
    return dataset_class_set(_first_dataset(list(cfg.DATASETS.TRAIN) or list(cfg.DATASETS.TEST)), kind)


def inference_class_set(cfg, kind: str = "thing") -> ClassSet:
    """The class set a model built from `cfg` scores in eval mode until told otherwise: seen + unseen
    (GZSI) of the first test dataset, else of the first training dataset."""
    return dataset_class_set(_first_dataset(list(cfg.DATASETS.TEST) or list(cfg.DATASETS.TRAIN)), kind, mode="gzsi")


def training_class_names(cfg) -> Tuple[str, ...]:
    """The classes a model of `cfg` trains on (the first training set's class set); () without one."""
    return default_class_set(cfg).names if cfg.DATASETS.TRAIN else ()


class ZeroShotModule(abc.ABC):
    """Mixin for modules whose outputs depend on the active class names."""

    @abc.abstractmethod
    def set_class_names(self, names: Tuple[str, ...]):
        """Score exactly `names`, in this order, from now on."""

    def set_class_set(self, class_set: ClassSet):
        """Follow `class_set` from now on. Override when a module needs more than the names (e.g.
        which of them are unseen): what it derives is set here, when the class set switches, never
        per forward pass. Cooperative: a mixin after this one in the bases (SeenCalibrated) is called too."""
        self.set_class_names(class_set.names)
        following = getattr(super(), "set_class_set", None)
        if following is not None:
            following(class_set)

    def add_class_names(self, names: Sequence[str], cfg):
        """Be able to score `names` (some never seen by this module), embedding what it lacks with the
        source `cfg` configures (zsi_d2.set_vocabulary calls it before switching). Default: nothing to
        add; a module keeping per-class state (class-name embeddings) overrides it."""


def apply_class_set(model, class_set: ClassSet):
    """Tell every ZeroShotModule inside `model` which names to score. A module that refuses the set
    (an input error, e.g. a closed-set classifier asked for a class it has no weights for) leaves the
    model on its previous class set."""
    model = unwrap(model)
    previous = getattr(model, "class_set", None)
    modules = [m for m in model.modules() if isinstance(m, ZeroShotModule)]
    if not modules:
        raise TypeError(f"{type(model).__name__} has no zero-shot modules: it cannot switch class sets")
    try:
        for module in modules:
            module.set_class_set(class_set)
    except InputError:
        if previous is not None and previous is not class_set:
            for module in modules:
                module.set_class_set(previous)
        raise
    if hasattr(model, "class_set"):
        model.class_set = class_set


class ZeroShotMetaArch:
    """Mixin of every zsi_d2 meta-architecture (first in the bases): in training mode the model scores
    its training class set (as built), in eval mode its inference class set, the config's test set
    (seen + unseen, `inference_class_set`), so that a model built and put in eval mode as detectron2's
    DefaultPredictor does can name the unseen classes. A class set chosen explicitly (use_class_set,
    apply_class_set, zsi_d2.set_vocabulary) is kept across train() / eval(): only a default follows the mode.
    """

    def init_class_sets(self, training: ClassSet, inference: Optional[ClassSet] = None):
        """Call in __init__, before the class set is applied to the modules."""
        self.class_set = training
        self.training_class_set = training
        self.inference_class_set = inference or training
        self._inference_set_logged = False

    def train(self, mode: bool = True):
        result = super().train(mode)
        if getattr(self, "training_class_set", None) is None:  # still being built
            return result
        leaving, target = ((self.inference_class_set, self.training_class_set) if mode
                           else (self.training_class_set, self.inference_class_set))
        if getattr(self, "class_set", None) is leaving and target is not leaving:
            if mode:
                apply_class_set(self, target)
            else:
                self._enter_inference_class_set(target)
        return result

    def _enter_inference_class_set(self, target: ClassSet):
        name = type(self).__name__
        try:
            apply_class_set(self, target)
        except InputError as e:  # e.g. a closed-set classifier: it scores its training classes only
            self.inference_class_set = self.training_class_set
            logger.info(f"{name} in eval mode scores its {len(self.class_set.names)} training classes: it cannot "
                        f"score the test set of '{target.source}' ({str(e).splitlines()[0]})")
            return
        if not self._inference_set_logged:
            self._inference_set_logged = True
            logger.info(f"{name} in eval mode scores the classes of '{target.source}' ({target.mode}: "
                        f"{len(target.names) - len(target.unseen)} seen + {len(target.unseen)} unseen); "
                        "zsi_d2.set_vocabulary(model, names, cfg) sets any others")


@contextlib.contextmanager
def use_class_set(model, dataset_name: str, kind: str = "thing", mode: Optional[str] = None):
    """Within the block, `model` scores the classes `dataset_name` asks for (or those of `mode`);
    restored afterwards. A model's own `class_kind` (mask classification: "auto", the dataset's whole
    label space) takes precedence over `kind`."""
    inner = unwrap(model)
    previous = getattr(inner, "class_set", None)
    class_set = dataset_class_set(dataset_name, getattr(inner, "class_kind", kind), mode)
    logger.info(f"Class set for '{dataset_name}' ({class_set.mode}): {len(class_set.names)} classes")
    apply_class_set(inner, class_set)
    try:
        yield class_set
    finally:
        if previous is not None:
            apply_class_set(inner, previous)
