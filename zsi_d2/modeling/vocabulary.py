"""Any class names on a built model: `set_vocabulary(model, names, cfg)`.

Why: a zero-shot model recognises classes through their names, so a user should be able to name the
classes of their own images without registering a dataset. The names are embedded with the source
the config names (MODEL.ZERO_SHOT.EMBEDDING), added to every class-name bank of the model, and the
model then scores exactly these names, in this order: output ids index the vocabulary.

Identity. A name that is one of the model's training classes *is* that class: it keeps its trained
embedding and counts as seen. Every other name (an unseen class of the split, or a name nobody
trained on) counts as unseen: like the split's unseen classes, the model never saw it labelled, so
calibrated stacking (MODEL.ZERO_SHOT.CALIBRATION.GAMMA) lowers the training classes, never these.
Synonyms: an entry "tv, television" is one class whose embedding averages its spellings (the
embedding sources' syntax); an entry any of whose spellings is a training class's name is that
class. Two entries that name one class (a shared spelling, or the same training class) are an error
naming both, as is an entry naming two training classes.
"""
import logging
from typing import Dict, List, Optional, Sequence, Tuple

from detectron2.data.catalog import Metadata

from ..embeddings.base import MissingEmbeddingError, split_synonyms
from ..errors import InputValueError
from ..utils.model import unwrap
from .class_set import ClassSet, ZeroShotMetaArch, ZeroShotModule, apply_class_set

__all__ = ["set_vocabulary", "vocabulary_class_set", "vocabulary_entries", "class_set_metadata"]

logger = logging.getLogger(__name__)


def _spellings(name: str) -> List[str]:
    return [part.casefold() for part in split_synonyms(name)]


def vocabulary_entries(names) -> Tuple[str, ...]:
    """The vocabulary as stripped, non-empty entries; an empty vocabulary is an error."""
    if isinstance(names, str):
        raise InputValueError(f"The vocabulary must be a list of class names, got the single string {names!r}: "
                              f"wrap it in a list, [{names!r}]")
    entries = tuple(str(n).strip() for n in (names or ()))
    if not entries or not all(entries):
        raise InputValueError("Empty vocabulary (or an empty class name): give at least one class name, "
                              "e.g. ['red circle', 'tv, television']")
    return entries


def vocabulary_class_set(names: Sequence[str], trained: ClassSet, known: Optional[ClassSet] = None,
                         stuff: Sequence[str] = (), things_only: bool = False) -> ClassSet:
    """The ClassSet of the vocabulary `names` for a model trained on `trained.names`.

    known: another class set the model knows (its test set): its classes keep their kind (thing or
    stuff) as the training classes do. stuff: entries of `names` that are amorphous regions (a new
    name is a thing unless listed). things_only: the model predicts instances only (R-CNN).
    """
    entries = vocabulary_entries(names)
    stuff_entries = {s.strip() for s in stuff}
    if stuff_entries - set(entries):
        raise InputValueError(f"Stuff names {sorted(stuff_entries - set(entries))} are not in the vocabulary "
                              f"{list(entries)}: list only vocabulary entries as stuff")
    owner: Dict[str, str] = {}  # spelling -> the entry that used it
    by_class: Dict[str, str] = {}  # class name -> the entry that named it
    for entry in entries:
        if entry in by_class.values():
            raise InputValueError(f"Vocabulary entry '{entry}' is given twice: give each class once")
        spellings = _spellings(entry)
        for spelling in spellings:
            if owner.setdefault(spelling, entry) != entry:
                raise InputValueError(f"Vocabulary entries '{owner[spelling]}' and '{entry}' both name '{spelling}': "
                                      "give each class once (spellings of one class go in one entry, 'tv, television')")
        hits = [t for t in trained.names if set(_spellings(t)) & set(spellings)]
        if len(hits) > 1:
            raise InputValueError(f"Vocabulary entry '{entry}' names the training classes {hits}: give each its own entry")
        key = hits[0] if hits else entry
        if key in by_class:
            raise InputValueError(f"Vocabulary entries '{by_class[key]}' and '{entry}' are both the training class "
                                  f"'{key}': give it once (spellings of one class go in one entry, 'tv, television')")
        by_class[key] = entry
    keys = tuple(by_class)
    known_names = set(trained.names) | set(known.names if known else ())
    known_stuff = set(trained.stuff) | set(known.stuff if known else ())
    stuff_keys = () if things_only else tuple(
        k for k in keys if (k in known_stuff if k in known_names else by_class[k] in stuff_entries))
    unseen = tuple(k for k in keys if k not in trained.names)
    mode = "gzsi" if unseen and len(unseen) < len(keys) else ("zsi" if unseen else "train")
    return ClassSet(keys, keys, mode, unseen=unseen, stuff=stuff_keys,
                    thing_classes=tuple(k for k in keys if k not in stuff_keys), source="vocabulary")


def set_vocabulary(model, names: Sequence[str], cfg, stuff: Sequence[str] = ()) -> ClassSet:
    """Score exactly `names` from now on (until another class set is chosen) and return their ClassSet.

    `cfg` is the config the model was built with: its embedding source embeds the names the model
    lacks. Outputs index the vocabulary: instance `pred_classes` index the returned set's
    `thing_classes`, semantic channels and panoptic `category_id`s its `names` (detectron2's
    conventions, as for a dataset); `class_set_metadata` gives the detectron2 Metadata to draw them.
    `stuff`: entries that are amorphous regions (mask-classification models; training classes and
    the split's classes keep their own kind). See the module docstring for identity and synonyms.
    """
    inner = unwrap(model)
    if not isinstance(inner, ZeroShotMetaArch):
        raise InputValueError(f"{type(inner).__name__} is not a zsi_d2 zero-shot model: set_vocabulary needs one "
                              "(MODEL.META_ARCHITECTURE ZeroShotRCNN, ZSIRCNN, ZeroShotMaskFormer, PADing, ...)")
    trained, test = inner.training_class_set, inner.inference_class_set
    class_set = vocabulary_class_set(names, trained, known=test, stuff=stuff,
                                     things_only=getattr(inner, "class_kind", "thing") == "thing")
    modules = [m for m in inner.modules() if isinstance(m, ZeroShotModule)]
    source = cfg.MODEL.ZERO_SHOT.EMBEDDING.SOURCE
    try:
        for module in modules:
            module.add_class_names(class_set.names, cfg)
    except MissingEmbeddingError as e:
        raise MissingEmbeddingError(f"Vocabulary names without an embedding from source '{source}' "
                                    f"(MODEL.ZERO_SHOT.EMBEDDING.SOURCE): {str(e).splitlines()[0]}") from None
    apply_class_set(inner, class_set)
    seen = [n for n in class_set.names if n not in class_set.unseen]
    renamed = [f"'{entry}' is '{key}'" for entry, key in zip(vocabulary_entries(names), class_set.names) if entry != key]
    logger.info(f"{type(inner).__name__} scores a vocabulary of {len(class_set.names)} classes: {len(seen)} training "
                f"classes, {len(class_set.unseen)} unseen ({source} embeddings)"
                + (f"; {', '.join(renamed)}" if renamed else ""))
    return class_set


def class_set_metadata(class_set: ClassSet, name: Optional[str] = None) -> Metadata:
    """detectron2 Metadata for drawing / exporting a model's outputs over `class_set`: thing_classes
    (instance ids), stuff_classes (semantic channels and panoptic category ids: every class of the
    set's label space), seen_classes and unseen_classes (the set's)."""
    meta = Metadata(name=name or f"zsi_d2_{class_set.source or 'class_set'}")
    return meta.set(thing_classes=list(class_set.thing_classes or class_set.dataset_classes),
                    stuff_classes=list(class_set.dataset_classes),
                    seen_classes=[n for n in class_set.names if n not in class_set.unseen],
                    unseen_classes=list(class_set.unseen))
