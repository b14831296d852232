"""Named prompt ensembles (MODEL.ZERO_SHOT.EMBEDDING.PROMPT_ENSEMBLE): ZegFormer's template sets,
the template x synonym average, the cache key, and the default left as it was.

No model is loaded: the prompt encoders' `encode_prompts` is replaced by a lookup table, so every
expected vector is computed by hand.
"""
import logging
import os

import pytest
import torch

import zsi_d2  # noqa: F401  (compat layer for detectron2)
from conftest import TINY_OPTS
from test_train_net import _fails_in_one_line
from zsi_d2.embeddings import (
    EMBEDDING_SOURCE_REGISTRY,
    PromptEncoderSource,
    build_class_embeddings,
    get_class_embeddings,
    get_prompt_ensemble,
    list_prompt_ensembles,
)
from zsi_d2.embeddings import cache as cache_mod
from zsi_d2.embeddings import prompts
from zsi_d2.embeddings.cache import CACHE_FORMAT_VERSION, path_identity
from zsi_d2.embeddings.clip_text import CLIPTextSource
from zsi_d2.embeddings.sentence_encoder import SentenceEncoderSource, default_minilm_path
from zsi_d2.errors import InputValueError


# Every test caches into its own folder (conftest's isolated_cache), never into ~/.cache.
pytestmark = pytest.mark.usefixtures("isolated_cache")


class FakePrompts(PromptEncoderSource):
    """A prompt encoder whose vectors are looked up in TABLE (unit vectors); any other prompt fails,
    so the test also checks which prompts the source formed."""

    TABLE = {}
    seen = []

    def identity(self):
        return {"templates": list(self.templates)}

    def encode_prompts(self, prompt_list):
        FakePrompts.seen.extend(prompt_list)
        return torch.stack([torch.tensor(self.TABLE[p], dtype=torch.float32) for p in prompt_list])


@pytest.fixture
def fake_source(monkeypatch):
    monkeypatch.setitem(EMBEDDING_SOURCE_REGISTRY._obj_map, "fake_prompts", FakePrompts)
    monkeypatch.setattr(FakePrompts, "name", "fake_prompts", raising=False)
    monkeypatch.setattr(FakePrompts, "seen", [])
    return FakePrompts


def _fast_encode(self, prompt_list):
    """Stands in for MiniLM / CLIP: a unit vector per prompt from its characters (deterministic)."""
    out = torch.zeros(len(prompt_list), 8)
    for i, p in enumerate(prompt_list):
        for j, ch in enumerate(p.encode()):
            out[i, (ch + j) % 8] += 1.0
    return torch.nn.functional.normalize(out, dim=1)


# ---------------------------------------------------------------------------------------------
# the named sets, against dingjiansw101/ZegFormer @8cb9e8f mask_former/third_party/imagenet_templates.py
# ---------------------------------------------------------------------------------------------
def test_named_ensembles_are_zegformers():
    assert {"single", "imagenet_select", "imagenet", "imagenet_select_clip"} <= set(list_prompt_ensembles())
    assert get_prompt_ensemble("single") == ("A photo of a {} in the scene",)
    select = get_prompt_ensemble("imagenet_select")
    assert len(select) == 8
    assert select[0] == "itap of a {}." and select[2] == "a origami {}." and select[4] == "a {} in a video game."
    assert select[7] == "A photo of a {} in the scene"
    full = get_prompt_ensemble("ImageNet ")  # the name is case- and space-insensitive
    assert len(full) == 80 == len(set(full))
    assert full[0] == "a bad photo of a {}." and full[10] == "the embroidered {}."
    assert full[35] == "a {} in a video game." and full[79] == "a tattoo of the {}."
    assert "A photo of a {} in the scene." not in full  # commented out in ZegFormer's list
    clip = prompts.IMAGENET_TEMPLATES_SELECT_CLIP
    assert get_prompt_ensemble("imagenet_select_clip") == clip
    assert len(clip) == 32 == len(set(clip))
    assert clip[0] == "a bad photo of the {}." and clip[4] == "This is a photo of a {}"
    assert clip[16] == "A photo of a {} in the scene" and clip[31] == "This is one masked {} in the scene"
    # the select set is a subset of the 80 apart from its own scene template
    assert set(select) - set(full) == {"A photo of a {} in the scene"}


# ---------------------------------------------------------------------------------------------
# template x synonym average
# ---------------------------------------------------------------------------------------------
def test_template_by_synonym_average_by_hand(fake_source, monkeypatch):
    monkeypatch.setitem(prompts._ENSEMBLES, "pair", ("a {}", "the {}"))
    fake_source.TABLE = {
        "a tv": [1.0, 0.0, 0.0], "the tv": [0.0, 1.0, 0.0],
        "a monitor": [0.0, 0.0, 1.0], "the monitor": [1.0, 0.0, 0.0],
    }
    emb = get_class_embeddings("fake_prompts", ["tv, monitor", "tv"], prompt_ensemble="pair", cache_dir="none")
    # "tv, monitor": the four prompts averaged, [2, 1, 1] / 4, renormalised
    torch.testing.assert_close(emb[0], torch.tensor([2.0, 1.0, 1.0]) / 6 ** 0.5)
    # "tv": its two templates averaged, [1, 1, 0] / 2, renormalised
    torch.testing.assert_close(emb[1], torch.tensor([1.0, 1.0, 0.0]) / 2 ** 0.5)


def test_named_ensemble_forms_every_prompt(fake_source):
    names = ["cat", "tv, monitor"]
    select = get_prompt_ensemble("imagenet_select")
    wanted = [t.replace("{}", w) for w in ("cat", "tv", "monitor") for t in select]
    fake_source.TABLE = {p: [1.0, 0.0] for p in wanted}
    get_class_embeddings("fake_prompts", names, prompt_ensemble="imagenet_select", cache_dir="none")
    assert sorted(fake_source.seen) == sorted(wanted) and len(wanted) == 24


def test_cfg_key_reaches_the_source(cfg, fake_source):
    fake_source.TABLE = {"A photo of a red circle in the scene": [0.0, 3.0]}
    cfg.MODEL.ZERO_SHOT.EMBEDDING.SOURCE = "fake_prompts"
    cfg.MODEL.ZERO_SHOT.EMBEDDING.PROMPT_ENSEMBLE = "single"
    cfg.MODEL.ZERO_SHOT.EMBEDDING.CACHE_DIR = "none"
    torch.testing.assert_close(build_class_embeddings(cfg, ["red circle"]), torch.tensor([[0.0, 1.0]]))
    assert fake_source.seen == ["A photo of a red circle in the scene"]


# ---------------------------------------------------------------------------------------------
# cache key and default
# ---------------------------------------------------------------------------------------------
def test_cache_key_follows_the_ensemble(isolated_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(SentenceEncoderSource, "encode_prompts", _fast_encode)
    monkeypatch.setattr(CLIPTextSource, "encode_prompts", _fast_encode)
    ckpt = tmp_path / "clip.pt"
    ckpt.write_bytes(b"weights")  # only its identity is read: encode_prompts is replaced
    for source, path in (("minilm", ""), ("clip", str(ckpt))):
        files = []
        for ensemble in ("", "single", "imagenet_select", "imagenet"):
            get_class_embeddings(source, ["red circle"], path=path, prompt_ensemble=ensemble)
            files.append(set(os.listdir(isolated_cache)))
        assert [len(f) for f in files] == [len(files[0]) + i for i in range(4)], source
        # the same templates typed out hit the named ensemble's entry (the key holds the templates)
        get_class_embeddings(source, ["red circle"], path=path, templates=prompts.IMAGENET_TEMPLATES_SELECT)
        assert set(os.listdir(isolated_cache)) == files[-1]


def test_default_keeps_todays_key_and_prompts(cfg, monkeypatch):
    payloads = []
    real_key = cache_mod.cache_key

    def spy(payload):
        payloads.append(payload)
        return real_key(payload)

    monkeypatch.setattr(cache_mod, "cache_key", spy)
    prompt_lists = []

    def record(self, prompt_list):
        prompt_lists.append(list(prompt_list))
        return _fast_encode(self, prompt_list)

    monkeypatch.setattr(SentenceEncoderSource, "encode_prompts", record)
    assert cfg.MODEL.ZERO_SHOT.EMBEDDING.PROMPT_ENSEMBLE == ""
    build_class_embeddings(cfg, ["red circle", "tv, monitor"])
    assert prompt_lists == [["red circle", "tv", "monitor"]]
    # the payload hashed into the key is exactly the one written before PROMPT_ENSEMBLE existed
    assert payloads[0] == {
        "format": CACHE_FORMAT_VERSION,
        "source": "minilm",
        "identity": {"model": path_identity(default_minilm_path()), "templates": ["{}"]},
        "class_names": ["red circle", "tv, monitor"],
    }


# ---------------------------------------------------------------------------------------------
# sources without prompts, and bad input
# ---------------------------------------------------------------------------------------------
def test_word_vectors_ignore_the_ensemble_with_an_info_line(tmp_path, isolated_cache, caplog):
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("red 1 0 0\ncircle 0 2 0\n")
    plain = get_class_embeddings("word_vectors", ["red circle"], path=str(vectors))
    with caplog.at_level(logging.INFO, logger="zsi_d2.embeddings.build"):
        named = get_class_embeddings("word_vectors", ["red circle"], path=str(vectors), prompt_ensemble="imagenet")
    assert torch.equal(plain, named)
    assert len(os.listdir(isolated_cache)) == 1  # same key: the ensemble changes nothing here
    assert any("PROMPT_ENSEMBLE 'imagenet' is ignored" in r.getMessage() for r in caplog.records)
    attrs = get_class_embeddings("attributes", ["red circle"], prompt_ensemble="single")
    torch.testing.assert_close(attrs, get_class_embeddings("attributes", ["red circle"]))


def test_bad_ensemble_is_one_line(cfg, fake_source):
    with pytest.raises(InputValueError, match=r"Unknown prompt ensemble 'imagenet_selct' "
                       r"\(MODEL\.ZERO_SHOT\.EMBEDDING\.PROMPT_ENSEMBLE\).*'imagenet_select'") as info:
        get_class_embeddings("minilm", ["cat"], prompt_ensemble="imagenet_selct")
    assert "\n" not in str(info.value)
    cfg.MODEL.ZERO_SHOT.EMBEDDING.PROMPT_ENSEMBLE = "clip80"
    with pytest.raises(InputValueError, match="Unknown prompt ensemble 'clip80'"):
        build_class_embeddings(cfg, ["cat"])
    cfg.MODEL.ZERO_SHOT.EMBEDDING.PROMPT_ENSEMBLE = "single"
    cfg.MODEL.ZERO_SHOT.EMBEDDING.PROMPT_TEMPLATES = ["a photo of a {}"]
    with pytest.raises(InputValueError, match=r"PROMPT_ENSEMBLE='single' and .*PROMPT_TEMPLATES=.*keep one") as info:
        build_class_embeddings(cfg, ["cat"])
    assert "\n" not in str(info.value)


def test_train_net_says_a_bad_ensemble_in_one_line():
    _fails_in_one_line([*TINY_OPTS, "MODEL.ZERO_SHOT.EMBEDDING.PROMPT_ENSEMBLE", "imagenet_selct", "SOLVER.MAX_ITER",
                        "1"], "Unknown prompt ensemble 'imagenet_selct' (MODEL.ZERO_SHOT.EMBEDDING.PROMPT_ENSEMBLE)")
