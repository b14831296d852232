"""word2vec binary files (GoogleNews-vectors-negative300.bin layout) read like the text layout."""
import gzip

import numpy as np
import pytest
import torch

from zsi_d2.embeddings import get_class_embeddings

WORDS = {"red": [1.0, 0.0, 0.5], "circle": [0.0, 2.0, 0.0], "traffic_light": [0.25, 0.5, 1.0],
         "background": [0.2, 0.2, 0.2], "green": [0.0, 0.0, 3.0]}


def _binary(path, newline_after_vector, compress=False):
    data = f"{len(WORDS)} 3\n".encode()
    for word, vector in WORDS.items():
        data += word.encode() + b" " + np.asarray(vector, dtype="<f4").tobytes() + (b"\n" if newline_after_vector else b"")
    (gzip.open if compress else open)(path, "wb").write(data)
    return str(path)


def _text(path):
    path.write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in WORDS.items()))
    return str(path)


@pytest.mark.parametrize("newline, compress", [(True, False), (False, False), (True, True)])
def test_binary_file_gives_the_text_files_vectors(tmp_path, newline, compress, monkeypatch):
    monkeypatch.setenv("ZSI_D2_CACHE", str(tmp_path / "cache"))
    names = ["red circle", "traffic light", "background", "green"]
    binary = _binary(tmp_path / ("w.bin.gz" if compress else "w.bin"), newline, compress)
    got = get_class_embeddings("word_vectors", names, path=binary)
    expected = get_class_embeddings("word_vectors", names, path=_text(tmp_path / "w.txt"))
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got[3], torch.nn.functional.normalize(torch.tensor(WORDS["green"]), dim=0))


def test_a_truncated_binary_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSI_D2_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "cut.bin"
    path.write_bytes(open(_binary(tmp_path / "w.bin", True), "rb").read()[:-5])
    with pytest.raises(ValueError, match="ends inside the vector of 'green'"):
        get_class_embeddings("word_vectors", ["green"], path=str(path))
