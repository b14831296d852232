"""zs_shapes' semantic track: unnamed cues composed from the name's words, `default` untouched."""
import dataclasses
import hashlib
import math

import numpy as np
import pytest

import zsi_d2  # noqa: F401  (compat layer + dataset registration)
from detectron2.data import MetadataCatalog

from zsi_d2.data.splits import get_split
from zsi_d2.data.zs_shapes import dataset_dir, get_difficulty
from zsi_d2.data.zs_shapes.difficulty import PRESETS, ZsShapesDifficulty, difficulty_hash
from zsi_d2.data.zs_shapes.render import (
    ClassCues, class_cues, composed_stripe, composed_tint, parse_stuff, parse_thing, render_image, thing_stripes,
)

SPLIT = get_split("zs_shapes")
THINGS = [c for c in SPLIT.things]


def test_composed_cue_is_the_rule_applied_to_the_attributes():
    """A hand case: red circle = the circle's angle (0) with the red period (5 px); dark dotted
    ground = the mean of the dark hue (pi) and the dotted hue (2 pi / 3) directions."""
    assert composed_stripe("red circle") == (0.0, 5.0)
    assert composed_stripe("green square") == (math.pi / 4, 7.0)
    dark = [math.cos(math.pi - k * 2 * math.pi / 3) for k in range(3)]
    dotted = [math.cos(2 * math.pi / 3 - k * 2 * math.pi / 3) for k in range(3)]
    np.testing.assert_allclose(composed_tint("dark dotted ground"), [(a + b) / 2 for a, b in zip(dark, dotted)])


def test_classes_sharing_a_word_share_that_part_of_the_cue():
    """Stripes: same colour <=> same period, same shape <=> same angle, over every pair of the
    split's things and distractors. Tints are a sum of a tone part and a pattern part, so the
    tone difference is the same whatever the pattern."""
    names = list(SPLIT.things) + list(SPLIT.ignored)
    for a in names:
        for b in names:
            (angle_a, period_a), (angle_b, period_b) = composed_stripe(a), composed_stripe(b)
            assert (period_a == period_b) == (parse_thing(a).colour == parse_thing(b).colour), (a, b)
            assert (angle_a == angle_b) == (parse_thing(a).shape == parse_thing(b).shape), (a, b)
    tone_step = {p: np.subtract(composed_tint(f"light {p} ground"), composed_tint(f"dark {p} ground"))
                 for p in ("checkered", "dotted", "wavy", "plain")}
    for step in tone_step.values():
        np.testing.assert_allclose(step, tone_step["dotted"], atol=1e-12)
    tints = {c: composed_tint(c) for c in SPLIT.stuff}
    assert len({tuple(np.round(t, 6)) for t in tints.values()}) == len(tints)
    assert min(np.linalg.norm(t) for t in tints.values()) > 0.5  # no tone-pattern pair cancels


def test_unseen_composed_cues_are_made_of_seen_parts():
    """What the track is for: each unseen class's colour and shape (tone and pattern) appear in
    seen classes, so its composed cue is predictable from training images."""
    seen = set(SPLIT.seen)
    for name in SPLIT.unseen:
        if name in SPLIT.stuff:
            spec = parse_stuff(name)
            assert any(parse_stuff(s).tone == spec.tone for s in seen & set(SPLIT.stuff))
            assert any(parse_stuff(s).pattern == spec.pattern for s in seen & set(SPLIT.stuff))
        else:
            angle, period = composed_stripe(name)
            seen_things = [s for s in seen if s not in SPLIT.stuff]
            assert any(composed_stripe(s)[0] == angle for s in seen_things)
            assert any(composed_stripe(s)[1] == period for s in seen_things)


def test_class_share_mixes_the_two_parts():
    cues = class_cues(THINGS, SPLIT.stuff, class_share=0.25)
    layers = cues.stripe_layers("red circle")
    assert [w for w, _, _ in layers] == [0.25, 0.75]
    assert layers[0][1:] == cues.stripes["red circle"] and layers[1][1:] == composed_stripe("red circle")
    assert class_cues(THINGS, SPLIT.stuff, 0.0).stripe_layers("red circle") == ((1.0, 0.0, 5.0),)
    assert class_cues(THINGS, SPLIT.stuff, 1.0).stripe_layers("red circle") == ((1.0,) + cues.stripes["red circle"],)
    np.testing.assert_allclose(
        cues.tint("dark dotted ground"),
        0.25 * np.asarray(cues.tints["dark dotted ground"]) + 0.75 * np.asarray(composed_tint("dark dotted ground")))


def test_stripe_field_is_the_weighted_sum_of_the_two_parts():
    by_share = {s: thing_stripes(class_cues(THINGS, SPLIT.stuff, s), "green square", 64, 0.3) for s in (0.0, 0.25, 1.0)}
    np.testing.assert_allclose(by_share[0.25], 0.25 * by_share[1.0] + 0.75 * by_share[0.0], atol=1e-6)
    assert 0.0 <= by_share[0.25].min() and by_share[0.25].max() <= 1.0
    assert not np.allclose(by_share[0.0], by_share[1.0])


def test_generated_images_follow_the_difficulty_share(tmp_path):
    """The generator passes the preset's share to the renderer (val image 1 re-rendered)."""
    from zsi_d2.data.zs_shapes import generate as gen

    d = dataclasses.replace(get_difficulty("semantic1"), num_train=1, num_val=2)
    base = gen.ensure_generated(d, root=str(tmp_path))
    from PIL import Image
    stored = np.asarray(Image.open(f"{base}/val/images/000001.png"))
    np.testing.assert_array_equal(stored, _render(d, class_cues(SPLIT.things + SPLIT.ignored, SPLIT.stuff, 0.25)))


def _render(difficulty, cues, index=0):
    rng = np.random.default_rng([difficulty.seed, 1, index])
    return render_image(rng, difficulty, THINGS, list(SPLIT.stuff), list(SPLIT.ignored), cues).image


def test_fully_composed_images_ignore_the_class_specific_cues():
    """At share 0 the pixels depend on the names' words only: scrambling the hashed assignment
    changes nothing; at share 0.5 it does."""
    d = dataclasses.replace(get_difficulty("semantic0"), cue_strength=0.9, stuff_cue_strength=0.9)
    cues = class_cues(SPLIT.things + SPLIT.ignored, SPLIT.stuff, 0.0)
    names = sorted(cues.stripes)
    scrambled = ClassCues(
        stripes={n: cues.stripes[names[(i + 1) % len(names)]] for i, n in enumerate(names)},
        tints={n: tuple(-x for x in t) for n, t in cues.tints.items()}, class_share=0.0)
    for index in range(3):
        np.testing.assert_array_equal(_render(d, cues, index), _render(d, scrambled, index))
    half = dataclasses.replace(cues, class_share=0.5)
    assert not np.array_equal(_render(d, half), _render(d, dataclasses.replace(scrambled, class_share=0.5)))


def test_default_pixels_and_hash_unchanged():
    """The semantic track must not move `default`: its parameters' hash and the bytes of its first
    validation images, pinned before the track existed (generator v3)."""
    d = get_difficulty("default")
    assert difficulty_hash(d, SPLIT) == "925a594cba"
    cues = class_cues(SPLIT.things + SPLIT.ignored, SPLIT.stuff, d.cue_class_share)
    digest = hashlib.sha256()
    for index in range(4):
        digest.update(_render(d, cues, index).tobytes())
    assert digest.hexdigest() == "67b8f1fbb40fa57ecf7f624105ff9faff2195944024354ce75737fd9ef53b0d3"


def test_track_presets_and_registration():
    for level in range(4):
        d = get_difficulty(f"semantic{level}")
        assert d.cue_class_share == level / 4
        assert dataclasses.replace(d, cue_class_share=1.0) == PRESETS["default"]  # nothing else differs
        for subset in ("train", "val", "val_zsi", "calib"):
            for suffix in ("", "_panoptic"):
                meta = MetadataCatalog.get(f"zs_shapes_semantic{level}_{subset}{suffix}")
                assert meta.zs_shapes_difficulty == f"semantic{level}"
    assert len({difficulty_hash(get_difficulty(f"semantic{level}"), SPLIT) for level in range(4)}) == 4
    assert dataset_dir("semantic4") == dataset_dir("default")  # share 1 is default: one cache


def test_class_share_must_be_a_fraction():
    with pytest.raises(ValueError, match="cue_class_share"):
        dataclasses.replace(get_difficulty("default"), cue_class_share=1.5)
    assert isinstance(get_difficulty("semantic2"), ZsShapesDifficulty)


def test_semantic_track_is_frozen():
    """The calibrated semantic track must not move: every number measured on it is on these
    parameters. If this fails, a change touched the preset, the renderer's version or the split."""
    d = get_difficulty("semantic")
    assert d.cue_class_share == 0.75 and dataclasses.replace(d, cue_class_share=1.0) == PRESETS["default"]
    assert difficulty_hash(d, SPLIT) == "f4279696a5"
    assert MetadataCatalog.get("zs_shapes_semantic_val_panoptic").zs_shapes_difficulty == "semantic"
