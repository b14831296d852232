"""MODEL.WEIGHTS: a missing file or a URL is a clear error, never a silent download attempt."""
import pytest

from zsi_d2.engine import check_weights


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        check_weights(str(tmp_path / "nope.pth"))


def test_urls_are_refused():
    with pytest.raises(ValueError, match="never downloads"):
        check_weights("detectron2://ImageNetPretrained/MSRA/R-50.pkl")


def test_empty_and_existing_paths_pass(tmp_path):
    f = tmp_path / "m.pth"
    f.write_bytes(b"")
    check_weights("")
    check_weights(str(f))
