"""Semantic label maps from a dataset's own values to zsi_d2's: pure functions, no file access.

A source label map holds one value per class (COCO-Stuff: official id - 1; Pascal VOC: 1..20;
ADE20k-Full: MaskFormer's trainId) and values meaning "no class" (unlabelled, background,
boundaries). A prepared map holds the class's position in the dataset's class list, or the
ignore label; a training map also turns the unseen classes into the ignore label, so an unseen
class is never a training target, not even as "background". Values that are neither a class nor
"no class" are an error, never guessed.
"""
from typing import Sequence, Tuple

import numpy as np

from ..errors import InputValueError

__all__ = ["label_lut", "remap_labels", "pixels_of"]


def label_lut(source_values: Sequence[int], keep: Sequence[bool], ignore_label: int, unlabelled: Sequence[int],
              dtype=np.uint8) -> Tuple[np.ndarray, np.ndarray]:
    """(lut, legal): source value -> position in `source_values` (or `ignore_label` where `keep` is
    False, and for the `unlabelled` values), and which source values may occur at all."""
    size = np.iinfo(dtype).max + 1
    lut = np.full(size, ignore_label, dtype=dtype)
    legal = np.zeros(size, dtype=bool)
    legal[list(unlabelled)] = True
    for position, (value, kept) in enumerate(zip(source_values, keep)):
        legal[value] = True
        if kept:
            lut[value] = position
    return lut, legal


def remap_labels(raw: np.ndarray, lut: np.ndarray, legal: np.ndarray, source: str, expected: str) -> np.ndarray:
    """`lut` applied to a single-channel integer map; `expected` says what a legal map is (for the error)."""
    raw = np.asarray(raw)
    if raw.ndim != 2 or not np.issubdtype(raw.dtype, np.integer):
        raise InputValueError(f"{source}: expected a single-channel {expected}, got shape {raw.shape} dtype "
                              f"{raw.dtype}")
    values = np.unique(raw)
    bad = values[(values < 0) | (values >= len(lut))]
    inside = values[(values >= 0) & (values < len(lut))]
    bad = np.concatenate([bad, inside[~legal[inside]]])
    if bad.size:
        raise InputValueError(f"{source}: pixel values {sorted(bad.tolist())[:10]} are not labels of a {expected}")
    return lut[raw]


def pixels_of(raw: np.ndarray, values: np.ndarray) -> int:
    """How many pixels of `raw` hold one of the flagged values (`values`: a bool table over source values)."""
    return int(values[np.asarray(raw)].sum())
