"""Difficulty settings of zs_shapes and their named presets.

Why a frozen dataclass: every field changes the generated pixels, so the whole dataclass (plus
the generator version and the split) is hashed into the cache folder name. Two settings that
differ in any field can never share a cache, and a setting can never be changed after use.
"""
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Dict, Tuple, Union

from ...errors import InputKeyError, InputValueError

__all__ = [
    "ZsShapesDifficulty",
    "PRESETS",
    "PRESET_ALIASES",
    "GENERATOR_VERSION",
    "preset_names",
    "get_difficulty",
    "difficulty_hash",
]

# Bump whenever the renderer or the file layout changes: old caches then stop matching.
GENERATOR_VERSION = 3


@dataclass(frozen=True)
class ZsShapesDifficulty:
    """What makes a zs_shapes dataset hard. All knobs are seeded and deterministic."""

    # Strength (0..1) of the class-specific stripe texture on things: a cue the class name does
    # not mention. It is a shortcut on seen classes and useless for unseen ones.
    cue_strength: float
    # Per-object colour noise (fraction of the 0..255 range per channel, and of brightness), so
    # that the named colour is an attribute to recognise, not an exact RGB value to match.
    colour_jitter: float
    # Mean number (Poisson) of unlabelled distractor objects (split.ignored classes) per image.
    distractor_rate: float
    # Number of labelled thing objects per image (inclusive range, before occlusion rejects).
    objects_per_image: Tuple[int, int]
    # Object diameter in pixels (inclusive range).
    object_size: Tuple[int, int]
    num_train: int = 1600
    num_val: int = 320
    image_size: int = 128
    seed: int = 0
    # Strength (0..1) of the class-specific tint of stuff classes (their name-less cue).
    stuff_cue_strength: float = 0.0
    # Number of stuff regions that partition the background (inclusive range).
    stuff_regions: Tuple[int, int] = (1, 3)
    # An object whose visible part falls below this fraction of its full area is re-sampled
    # (or dropped), so every annotated mask shows a recognisable object.
    min_visible_fraction: float = 0.5
    # Std of per-pixel Gaussian noise, in 0..255 units.
    pixel_noise: float = 0.0
    # Share (0..1) of each class's unnamed cue (stripes, tint) that is class-specific; the rest is
    # composed from the words of its name (render.py), as appearance follows names in real data.
    # 1.0 (the `default` track): wholly class-specific, so an unseen class's cue is unpredictable.
    cue_class_share: float = 1.0

    def __post_init__(self):
        for name in ("objects_per_image", "object_size", "stuff_regions"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise InputValueError(f"ZsShapesDifficulty.{name} must be (min, max) with 0 <= min <= max, got "
                                      f"{(lo, hi)}")
        for name in ("cue_strength", "stuff_cue_strength", "colour_jitter", "min_visible_fraction",
                     "cue_class_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputValueError(f"ZsShapesDifficulty.{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.distractor_rate < 0 or self.pixel_noise < 0:
            raise InputValueError(f"ZsShapesDifficulty.distractor_rate and pixel_noise must be >= 0, got "
                                  f"{self.distractor_rate} and {self.pixel_noise}")
        if self.stuff_regions[0] < 1:
            raise InputValueError(f"ZsShapesDifficulty.stuff_regions must be at least 1, got {self.stuff_regions}")

    def to_dict(self):
        """The parameters; fields added after `default` was frozen are left out at their neutral
        value, so every earlier preset keeps its hash (and its cache folder)."""
        out = dataclasses.asdict(self)
        for name, neutral in _ADDED_FIELDS.items():
            if out[name] == neutral:
                del out[name]
        return out


# Fields added after 2026-11-22, with the value that reproduces the pixels made before them.
_ADDED_FIELDS = {"cue_class_share": 1.0}


_LEVEL0 = ZsShapesDifficulty(
    cue_strength=0.0,
    colour_jitter=0.02,
    distractor_rate=0.0,
    objects_per_image=(2, 3),
    object_size=(18, 40),
    stuff_cue_strength=0.0,
    stuff_regions=(1, 2),
    pixel_noise=0.0,
)

PRESETS: Dict[str, ZsShapesDifficulty] = {
    "level0": _LEVEL0,
    "level1": dataclasses.replace(
        _LEVEL0, cue_strength=0.35, colour_jitter=0.05, distractor_rate=0.5,
        objects_per_image=(2, 4), object_size=(16, 44), stuff_cue_strength=0.3,
        stuff_regions=(1, 3), pixel_noise=2.0,
    ),
    "level2": dataclasses.replace(
        _LEVEL0, cue_strength=0.55, colour_jitter=0.08, distractor_rate=1.0,
        objects_per_image=(2, 5), object_size=(12, 48), stuff_cue_strength=0.45,
        stuff_regions=(1, 3), pixel_noise=4.0,
    ),
    "level3": dataclasses.replace(
        _LEVEL0, cue_strength=0.75, colour_jitter=0.11, distractor_rate=1.5,
        objects_per_image=(2, 6), object_size=(12, 48), stuff_cue_strength=0.6,
        stuff_regions=(1, 3), pixel_noise=6.0,
    ),
    "level4": dataclasses.replace(
        _LEVEL0, cue_strength=0.9, colour_jitter=0.14, distractor_rate=2.0,
        objects_per_image=(3, 6), object_size=(12, 48), stuff_cue_strength=0.75,
        stuff_regions=(1, 3), pixel_noise=8.0, min_visible_fraction=0.4,
    ),
}
# Small dataset of level2 difficulty for fast tests.
PRESETS["tiny"] = dataclasses.replace(PRESETS["level2"], num_train=48, num_val=24)

# The benchmark every method is measured on. Frozen on 2026-11-22 after calibrating the
# projection baseline alone (README, "Calibration"): level2's parameters, copied so that editing
# level2 cannot move it. Changing it invalidates every published zs_shapes number; a test pins
# its hash.
PRESETS["default"] = dataclasses.replace(PRESETS["level2"])

# The semantic track: `default` in every setting except how the unnamed cues are assigned.
# semanticN keeps a share N/4 of each cue class-specific and composes the rest from the class's
# name (render.py), so an unseen class's look is partly predictable from its name-mates', as in
# real data; semantic4 (share 1) is `default` itself.
for _level in range(4):
    PRESETS[f"semantic{_level}"] = dataclasses.replace(PRESETS["default"], cue_class_share=_level / 4)

# The semantic track's benchmark, frozen on 2026-12-07 after calibrating the two projection
# baselines alone (docs/zs_shapes.md): the lowest class share at which both meet default's targets
# (GZSI unseen AP50 <= 0.6 x seen, ZSI unseen AP50 >= 20), semantic3's parameters copied so that
# editing semantic3 cannot move it. A test pins its hash.
PRESETS["semantic"] = dataclasses.replace(PRESETS["semantic3"])

# An alias shares its target's parameters *and* its cache folder (no second generation).
PRESET_ALIASES: Dict[str, str] = {"semantic4": "default"}


def preset_names():
    """Every name accepted by get_difficulty (presets, then aliases)."""
    return tuple(PRESETS) + tuple(PRESET_ALIASES)


def resolve_preset(name: str) -> str:
    """Follow aliases to the preset whose cache folder is used."""
    seen = set()
    while name in PRESET_ALIASES:
        if name in seen:
            raise ValueError(f"zs_shapes preset alias loop at '{name}'")
        seen.add(name)
        name = PRESET_ALIASES[name]
    if name not in PRESETS:
        raise InputKeyError(f"Unknown zs_shapes difficulty '{name}': use one of {list(preset_names())}")
    return name


def get_difficulty(preset: Union[str, ZsShapesDifficulty]) -> ZsShapesDifficulty:
    if isinstance(preset, ZsShapesDifficulty):
        return preset
    return PRESETS[resolve_preset(preset)]


def difficulty_hash(difficulty: ZsShapesDifficulty, split=None) -> str:
    """Short stable hash of the parameters, the generator version and the split's classes."""
    payload = {"difficulty": difficulty.to_dict(), "generator_version": GENERATOR_VERSION}
    if split is not None:
        payload["split"] = {
            "seen": list(split.seen), "unseen": list(split.unseen),
            "ignored": list(split.ignored), "stuff": list(split.stuff),
        }
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha1(blob).hexdigest()[:10]
