"""A plain word-vector file without the word "background": the background vector starts random and
is learned (with a warning naming the file), instead of an error that tells the user to rename a class."""
import logging

import torch

from detectron2.modeling import build_model

from conftest import tiny_cfg
from zsi_d2.data import get_split
from zsi_d2.embeddings import build_background_embedding


def _word_file(tmp_path, with_background):
    """3-d vectors for every word of the zs_shapes class names (from the split), background optional."""
    split = get_split("zs_shapes")
    words = sorted({w for name in split.classes + split.ignored for w in name.split()})
    lines = [f"{w} {i % 3 + 1}.0 {i % 5 + 1}.0 {i % 7 + 1}.0" for i, w in enumerate(words)]
    if with_background:
        lines.append("background 0.5 0.5 0.5")
    path = tmp_path / "words.txt"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _cfg(path):
    return tiny_cfg("MODEL.ZERO_SHOT.EMBEDDING.SOURCE", "word_vectors", "MODEL.ZERO_SHOT.EMBEDDING.PATH", path,
                    "MODEL.EFFICIENTNET.WEIGHTS", "")


def test_missing_background_word_falls_back_to_a_learned_unit_vector(tmp_path, caplog):
    cfg = _cfg(_word_file(tmp_path, with_background=False))
    with caplog.at_level(logging.WARNING, logger="zsi_d2.embeddings.build"):
        background = build_background_embedding(cfg)
    assert background.shape == (3,) and abs(float(background.norm()) - 1.0) < 1e-6
    assert "has no word 'background'" in caplog.text and "words.txt" in caplog.text
    model = build_model(cfg)
    bank = model.roi_heads.box_predictor.cls_score.classes
    assert bank.background.requires_grad and bank.background.shape == (3,)


def test_a_background_word_in_the_file_is_used(tmp_path):
    cfg = _cfg(_word_file(tmp_path, with_background=True))
    torch.testing.assert_close(build_background_embedding(cfg), torch.full((3,), 3 ** -0.5))
