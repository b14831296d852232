"""Pixel rendering of zs_shapes images from class names.

The renderer knows only the *attribute vocabulary* (colour -> RGB, shape -> polygon, tone ->
luminance, pattern -> texture); which classes exist, and which are seen or unseen, comes from the
split (zsi_d2/data/splits.py). A class is drawn from the words in its name ("<colour> <shape>" for
things, "<tone> <pattern> ground" for stuff), so what the name says is what the pixels show.

On top of that, each class gets appearance cues its name does *not* mention (as real classes do):
things carry a stripe texture (orientation + period), stuff a tint. Each cue has two parts, mixed
by the difficulty's `cue_class_share`:
- a class-specific part, assigned by hashing the split's names: arbitrary per class, so a model can
  exploit it on seen classes and it tells nothing about unseen ones (the `default` track: share 1);
- a part composed from the words of the name (stripe angle from the shape, period from the colour;
  tint from the tone plus the pattern), as fur and four legs come with both "cat" and "dog": an
  unseen class's composed part is made of parts its name-mates show in training (the `semantic`
  track).
"""
import functools
import hashlib
import math
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

from ...errors import InputValueError

__all__ = [
    "COLOURS", "SHAPES", "TONES", "PATTERNS", "ThingSpec", "StuffSpec", "parse_class", "parse_thing",
    "parse_stuff", "is_stuff_name", "ClassCues", "class_cues", "composed_stripe", "composed_tint",
    "thing_stripes", "display_colour", "RenderedObject", "RenderedImage", "render_image",
]

# ----------------------------------------------------------------------------------------------
# Attribute vocabulary. Only words, never class names: classes are parsed from the split.
# ----------------------------------------------------------------------------------------------
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (215, 45, 40),
    "green": (40, 170, 65),
    "blue": (45, 90, 225),
    "yellow": (235, 205, 35),
    "purple": (150, 55, 190),
    "white": (240, 240, 240),
    "orange": (240, 135, 30),
    "cyan": (40, 200, 215),
}


def _regular_polygon(n, radius=1.0, phase=0.0):
    t = phase + np.arange(n) * (2 * math.pi / n)
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _star(points=5, outer=1.1, inner=0.45):
    t = -math.pi / 2 + np.arange(2 * points) * (math.pi / points)
    r = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _cross(arm=1.0, half_width=0.34):
    a, w = arm, half_width
    return np.array(
        [(w, a), (w, w), (a, w), (a, -w), (w, -w), (w, -a),
         (-w, -a), (-w, -w), (-a, -w), (-a, w), (-w, w), (-w, a)], dtype=np.float64,
    )


# Unit polygons (object radius 1); sizes chosen so that areas are of the same order.
SHAPES: Dict[str, np.ndarray] = {
    "circle": _regular_polygon(48, 1.0),
    "square": np.array([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)], dtype=np.float64),
    "triangle": _regular_polygon(3, 1.1, -math.pi / 2),
    "star": _star(),
    "cross": _cross(),
    "hexagon": _regular_polygon(6, 0.95),
}

# Base luminance (0..1) of stuff tones.
TONES: Dict[str, float] = {"light": 0.72, "dark": 0.28}
PATTERNS = ("checkered", "dotted", "wavy", "plain")
_STUFF_SUFFIX = "ground"


@dataclass(frozen=True)
class ThingSpec:
    colour: str
    shape: str


@dataclass(frozen=True)
class StuffSpec:
    tone: str
    pattern: str


def _unknown(kind, word, name, known):
    return InputValueError(
        f"zs_shapes: unknown {kind} word '{word}' in class name '{name}'. "
        f"Known {kind} words: {sorted(known)}. Add it to the vocabulary in {__name__}."
    )


def is_stuff_name(name: str) -> bool:
    return name.split()[-1:] == [_STUFF_SUFFIX]


def parse_thing(name: str) -> ThingSpec:
    words = name.split()
    if len(words) != 2:
        raise InputValueError(f"zs_shapes: thing class '{name}' must read '<colour> <shape>'")
    colour, shape = words
    if colour not in COLOURS:
        raise _unknown("colour", colour, name, COLOURS)
    if shape not in SHAPES:
        raise _unknown("shape", shape, name, SHAPES)
    return ThingSpec(colour, shape)


def parse_stuff(name: str) -> StuffSpec:
    words = name.split()
    if len(words) != 3 or words[2] != _STUFF_SUFFIX:
        raise InputValueError(f"zs_shapes: stuff class '{name}' must read '<tone> <pattern> ground'")
    tone, pattern = words[:2]
    if tone not in TONES:
        raise _unknown("tone", tone, name, TONES)
    if pattern not in PATTERNS:
        raise _unknown("pattern", pattern, name, PATTERNS)
    return StuffSpec(tone, pattern)


def parse_class(name: str):
    """ThingSpec or StuffSpec for a class name; a clear ValueError for unknown words."""
    return parse_stuff(name) if is_stuff_name(name) else parse_thing(name)


# ----------------------------------------------------------------------------------------------
# Class-specific cues (not described by the name).
# ----------------------------------------------------------------------------------------------
_STRIPE_ANGLES = tuple(i * math.pi / 8 for i in range(8))
_STRIPE_PERIODS = (5.0, 7.0, 10.0)

# The composition rule of the unnamed cue: one part per attribute word. Every word of the
# vocabulary has its own value, so two classes share a part exactly when they share the word.
SHAPE_STRIPE_ANGLES: Dict[str, float] = {
    "circle": 0.0, "square": math.pi / 4, "triangle": math.pi / 2, "star": 3 * math.pi / 4,
    "cross": math.pi / 8, "hexagon": 5 * math.pi / 8,
}
COLOUR_STRIPE_PERIODS: Dict[str, float] = {
    "red": 5.0, "green": 7.0, "blue": 10.0, "yellow": 14.0,
    "purple": 6.0, "white": 8.5, "orange": 12.0, "cyan": 4.5,
}
# Hue angles of the tint parts; a hue h is the zero-mean RGB direction cos(h - k 2pi/3), k = 0, 1, 2.
TONE_TINT_HUES: Dict[str, float] = {"light": 0.0, "dark": math.pi}
# Chosen so that no tone-pattern pair cancels and the eight composed tints stay apart.
PATTERN_TINT_HUES: Dict[str, float] = {
    "checkered": math.pi / 3, "dotted": 2 * math.pi / 3, "wavy": 4 * math.pi / 3, "plain": 5 * math.pi / 3,
}


def _hue_direction(hue):
    return tuple(math.cos(hue - k * 2 * math.pi / 3) for k in range(3))


def composed_stripe(name: str) -> Tuple[float, float]:
    """(angle rad, period px) of a thing's stripe part composed from its name: angle from the
    shape, period from the colour."""
    spec = parse_thing(name)
    return SHAPE_STRIPE_ANGLES[spec.shape], COLOUR_STRIPE_PERIODS[spec.colour]


def composed_tint(name: str) -> Tuple[float, float, float]:
    """Zero-mean RGB tint of a stuff class composed from its name: the mean of its tone's and its
    pattern's hue directions."""
    spec = parse_stuff(name)
    tone, pattern = _hue_direction(TONE_TINT_HUES[spec.tone]), _hue_direction(PATTERN_TINT_HUES[spec.pattern])
    return tuple((a + b) / 2 for a, b in zip(tone, pattern))


@dataclass(frozen=True)
class ClassCues:
    stripes: Dict[str, Tuple[float, float]]  # thing-like name -> class-specific (angle rad, period px)
    tints: Dict[str, Tuple[float, float, float]]  # stuff name -> class-specific zero-mean RGB direction
    # Share (0..1) of the class-specific part; the rest of each cue is composed from the name.
    class_share: float = 1.0

    def stripe_layers(self, name: str) -> Tuple[Tuple[float, float, float], ...]:
        """(weight, angle, period) of the stripe textures whose weighted sum is the thing's cue."""
        layers = ((self.class_share,) + self.stripes[name], (1.0 - self.class_share,) + composed_stripe(name))
        return tuple(layer for layer in layers if layer[0] > 0)

    def tint(self, name: str) -> Tuple[float, float, float]:
        """The stuff class's tint: class-specific and composed parts mixed by `class_share`."""
        if self.class_share == 1.0:
            return self.tints[name]
        share = self.class_share
        return tuple(share * a + (1.0 - share) * b for a, b in zip(self.tints[name], composed_tint(name)))


def _hash_order(names):
    """Order names by a hash: cue assignment then carries no trace of the attributes."""
    return sorted(names, key=lambda n: hashlib.sha1(n.encode()).hexdigest())


def class_cues(thing_names: Sequence[str], stuff_names: Sequence[str], class_share: float = 1.0) -> ClassCues:
    """Distinct (as far as possible) class-specific stripe parameters per thing and tint per stuff
    class, mixed with the name-composed parts by `class_share` when rendering."""
    stripes = {}
    for i, name in enumerate(_hash_order(set(thing_names))):
        angle = _STRIPE_ANGLES[(3 * i) % len(_STRIPE_ANGLES)]
        period = _STRIPE_PERIODS[(i // len(_STRIPE_ANGLES)) % len(_STRIPE_PERIODS)]
        stripes[name] = (angle, period)
    tints = {}
    ordered = _hash_order(set(stuff_names))
    for i, name in enumerate(ordered):
        hue = 2 * math.pi * i / max(len(ordered), 1)
        tints[name] = tuple(math.cos(hue - k * 2 * math.pi / 3) for k in range(3))
    return ClassCues(stripes, tints, class_share)


def display_colour(name: str) -> Tuple[int, int, int]:
    """A colour for visualisation: the named colour for things, a grey for stuff."""
    spec = parse_class(name)
    if isinstance(spec, ThingSpec):
        return COLOURS[spec.colour]
    lum = int(round(255 * TONES[spec.tone]))
    shift = {"checkered": -12, "dotted": 0, "wavy": 12, "plain": 24}[spec.pattern]
    return (lum + shift, lum, lum - shift)


# ----------------------------------------------------------------------------------------------
# Rendering.
# ----------------------------------------------------------------------------------------------
@dataclass
class RenderedObject:
    name: str
    labelled: bool  # False for distractors (split.ignored)
    visible: np.ndarray  # bool HxW, the pixels this object shows in the final image


@dataclass
class RenderedImage:
    image: np.ndarray  # uint8 HxWx3, RGB
    stuff_map: np.ndarray  # int HxW, index into stuff_names (background regions)
    stuff_names: List[str]
    objects: List[RenderedObject]  # draw order; later ones occlude earlier ones
    dropped: int  # objects that found no placement keeping every visible fraction


@functools.lru_cache(maxsize=4)
def _grid(size):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return xx + 0.5, yy + 0.5


def _partition(rng, size, k):
    """k smooth regions: Voronoi cells of random seeds in a smoothly warped image plane.

    The warp is a gentle sinusoidal displacement (slope < 1/2 per component), hence invertible:
    cells stay connected and their borders become curves instead of straight lines.
    """
    xx, yy = _grid(size)
    if k == 1:
        return np.zeros((size, size), dtype=np.int64)
    for _ in range(20):
        warped = []
        for coord in (xx, yy):
            lam = rng.uniform(0.45, 0.9) * size
            amp = rng.uniform(0.5, 1.0) * 0.45 * lam / (2 * math.pi)
            theta = rng.uniform(0, 2 * math.pi)
            k_x, k_y = 2 * math.pi / lam * math.cos(theta), 2 * math.pi / lam * math.sin(theta)
            warped.append(coord + amp * np.sin(k_x * xx + k_y * yy + rng.uniform(0, 2 * math.pi)))
        seeds = rng.uniform(0, size, size=(k, 2))
        dists = [np.hypot(warped[0] - sx, warped[1] - sy) for sx, sy in seeds]
        labels = np.argmin(np.stack(dists), axis=0)
        counts = np.bincount(labels.ravel(), minlength=k)
        if counts.min() >= 0.06 * size * size:
            return labels
    return labels  # rare: accept a small region rather than loop forever


def _stuff_texture(rng, spec: StuffSpec, size):
    """Luminance (HxW float32) of a stuff pattern, with a random scale, phase and rotation."""
    xx, yy = _grid(size)
    a = rng.uniform(0, math.pi)
    u = xx * math.cos(a) + yy * math.sin(a) + rng.uniform(0, 32)
    v = -xx * math.sin(a) + yy * math.cos(a) + rng.uniform(0, 32)
    base = TONES[spec.tone]
    sign = -1.0 if base > 0.5 else 1.0  # marks go towards mid-grey
    if spec.pattern == "checkered":
        q = rng.uniform(6, 12)
        tex = ((np.floor(u / q) + np.floor(v / q)) % 2) * 2 - 1
        lum = base + 0.11 * tex
    elif spec.pattern == "dotted":
        q = rng.uniform(7, 11)
        du, dv = (u % q) - q / 2, (v % q) - q / 2
        lum = base + sign * 0.24 * (np.hypot(du, dv) < 0.3 * q)
    elif spec.pattern == "wavy":
        q, amp, lam = rng.uniform(7, 11), rng.uniform(1.5, 3.5), rng.uniform(20, 40)
        lum = base + 0.12 * np.sin(2 * math.pi * (v + amp * np.sin(2 * math.pi * u / lam)) / q)
    else:  # plain
        lum = np.full((size, size), base, dtype=np.float32)
    return lum.astype(np.float32)


def _object_mask(rng, shape, size_range, image_size, pad):
    """Rasterise one randomly placed, rotated object; returns (mask on the image, full area)."""
    radius = rng.uniform(size_range[0], size_range[1]) / 2
    cx, cy = rng.uniform(0, image_size, size=2)
    angle = rng.uniform(0, 2 * math.pi)
    c, s = math.cos(angle), math.sin(angle)
    poly = SHAPES[shape] @ np.array([[c, s], [-s, c]]) * radius + (cx + pad, cy + pad)
    canvas = np.zeros((image_size + 2 * pad, image_size + 2 * pad), dtype=np.uint8)
    pts = np.round((poly - 0.5) * 16).astype(np.int32)  # 4 bits of sub-pixel precision
    cv2.fillPoly(canvas, [pts], 1, lineType=cv2.LINE_8, shift=4)
    full_area = int(canvas.sum())
    return canvas[pad:pad + image_size, pad:pad + image_size].astype(bool), full_area


def _stripes(size, angle, period, phase):
    """Flat-topped stripes in 0..1 over the size x size image grid."""
    xx, yy = _grid(size)
    wave = np.cos(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period + phase)
    return np.clip(0.5 + 0.9 * wave, 0.0, 1.0)


def thing_stripes(cues: ClassCues, name: str, size: int, phase: float) -> np.ndarray:
    """A thing's unnamed cue as a 0..1 field over the image: its stripe layers' weighted sum."""
    return sum(weight * _stripes(size, angle, period, phase) for weight, angle, period in cues.stripe_layers(name))


def render_image(
    rng: np.random.Generator,
    difficulty,
    thing_pool: Sequence[str],
    stuff_pool: Sequence[str],
    distractor_pool: Sequence[str],
    cues: ClassCues,
    max_tries: int = 10,
) -> RenderedImage:
    """Render one image: stuff partition, then labelled things and distractors, occluding.

    Every accepted object keeps at least `min_visible_fraction` of its (unclipped) area visible
    after all later objects are drawn, so each annotation shows a recognisable object.
    """
    d = difficulty
    size = d.image_size

    # --- stuff: distinct classes on a smooth random partition --------------------------------
    k = int(rng.integers(d.stuff_regions[0], d.stuff_regions[1] + 1))
    k = min(k, len(stuff_pool))
    stuff_names = [stuff_pool[i] for i in rng.choice(len(stuff_pool), size=k, replace=False)]
    stuff_map = _partition(rng, size, k)
    image = np.empty((size, size, 3), dtype=np.float32)
    for idx, name in enumerate(stuff_names):
        lum = _stuff_texture(rng, parse_stuff(name), size)
        tint = np.asarray(cues.tint(name), dtype=np.float32) * (0.12 * d.stuff_cue_strength)
        region = stuff_map == idx
        image[region] = lum[region][:, None] + tint

    # --- objects: labelled things and distractors interleaved in draw order ------------------
    n_things = int(rng.integers(d.objects_per_image[0], d.objects_per_image[1] + 1))
    n_distractors = int(rng.poisson(d.distractor_rate)) if distractor_pool else 0
    queue = [(thing_pool[i], True) for i in rng.integers(0, len(thing_pool), size=n_things)]
    queue += [(distractor_pool[i], False) for i in rng.integers(0, len(distractor_pool), size=n_distractors)]
    queue = [queue[i] for i in rng.permutation(len(queue))]

    pad = d.object_size[1] // 2 + 2
    owner = np.full((size, size), -1, dtype=np.int64)
    accepted, full_areas, dropped = [], [], 0
    for name, labelled in queue:
        spec = parse_thing(name)
        for _ in range(max_tries):
            mask, full_area = _object_mask(rng, spec.shape, d.object_size, size, pad)
            if full_area == 0:
                continue
            trial = owner.copy()
            trial[mask] = len(accepted)
            visible = np.bincount(trial[trial >= 0], minlength=len(accepted) + 1)
            areas = np.asarray(full_areas + [full_area], dtype=np.float64)
            if np.all(visible >= d.min_visible_fraction * areas):
                owner = trial
                accepted.append((name, labelled, spec))
                full_areas.append(full_area)
                break
        else:
            dropped += 1

    objects = []
    for idx, (name, labelled, spec) in enumerate(accepted):
        visible = owner == idx
        colour = np.asarray(COLOURS[spec.colour], dtype=np.float32) / 255.0
        j = d.colour_jitter
        colour = np.clip((colour + rng.uniform(-j, j, size=3)) * rng.uniform(1 - j, 1 + j), 0, 1)
        phase = rng.uniform(0, 2 * math.pi)
        stripe = thing_stripes(cues, name, size, phase)
        shade = 1.0 - 0.6 * d.cue_strength * stripe[visible]
        image[visible] = shade[:, None] * colour.astype(np.float32)
        objects.append(RenderedObject(name=name, labelled=labelled, visible=visible))

    if d.pixel_noise > 0:
        image += rng.normal(0.0, d.pixel_noise / 255.0, size=image.shape).astype(np.float32)
    image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    return RenderedImage(image, stuff_map, stuff_names, objects, dropped)
