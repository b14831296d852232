"""The bad inputs a new user meets on a first run, each one line naming the thing and the fix
(docs/bad_inputs.md): a GPU device without a GPU, an unreadable image, a class without a word
vector, export of a missing checkpoint or of an R-CNN, detectron2 imported before zsi_d2, and a
panoptic model scored on a dataset without panoptic annotations."""
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetMapper

from conftest import REPO_ROOT, TINY_OPTS, import_tool, run_in_process, tiny_cfg
from test_train_net import _fails_in_one_line

from zsi_d2.data.mappers import NameUnreadableFiles
from zsi_d2.engine import check_device
from zsi_d2.errors import InputError, InputValueError, exit_on_input_error

MASK_FORMER = os.path.join(REPO_ROOT, "configs/mask_former/zs_shapes/mask_former_embedding.yaml")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_device_without_a_gpu_is_one_line():
    _fails_in_one_line([*TINY_OPTS, "MODEL.DEVICE", "cuda"], "MODEL.DEVICE 'cuda' but this machine has no usable GPU")
    with pytest.raises(InputValueError, match="not a device torch knows"):
        check_device("gpu")
    check_device("cpu")


def test_an_unreadable_image_names_its_file(tmp_path):
    good = np.zeros((32, 32, 3), dtype=np.uint8)
    path = tmp_path / "000001.png"
    Image.fromarray(good).save(path)
    path.write_bytes(path.read_bytes()[:60])  # truncated
    mapper = NameUnreadableFiles(DatasetMapper(tiny_cfg(), is_train=False))
    with pytest.raises(InputValueError, match=f"cannot read {path}.*re-create it or remove its record"):
        mapper({"file_name": str(path), "image_id": 1, "height": 32, "width": 32})
    (tmp_path / "not_an_image.png").write_text("hello")
    with pytest.raises(InputValueError, match="not_an_image.png"):
        mapper({"file_name": str(tmp_path / "not_an_image.png"), "image_id": 2, "height": 32, "width": 32})
    assert mapper.is_train is False  # the wrapped mapper's attributes stay readable
    import copy
    import pickle

    for clone in (pickle.loads(pickle.dumps(mapper)), copy.deepcopy(mapper)):  # loader workers by spawn
        assert isinstance(clone, NameUnreadableFiles) and clone.is_train is False


def test_a_class_without_a_word_vector_is_one_line(tmp_path):
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("background 0.1 0.2 0.3\nred 0.3 0.1 0.2\n")
    _fails_in_one_line([*TINY_OPTS, "MODEL.ZERO_SHOT.EMBEDDING.SOURCE", "word_vectors",
                        "MODEL.ZERO_SHOT.EMBEDDING.PATH", str(vectors), "SOLVER.MAX_ITER", "1"], "circle")


def test_export_of_a_missing_or_unfitting_checkpoint_is_one_line(tmp_path):
    # `python tools/export_model.py` itself: its top level prints the one line and exits 2.
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "export_model.py"), "--config-file",
                           MASK_FORMER, "--weights", "no/such/model.pth", "--dataset", "zs_shapes_tiny_val_panoptic",
                           "--output", str(tmp_path / "m.ts")], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ERROR: ") and "--weights no/such/model.pth does not exist" in last
    # A checkpoint that does not fit the config (an R-CNN's, empty), through the same top level here.
    weights = tmp_path / "w.pth"
    torch.save({"model": {}}, weights)
    export_model = import_tool("export_model")

    def top_level(argv):
        with exit_on_input_error():
            export_model.main(argv)

    status, _, err = run_in_process(top_level, [
        "--config-file", os.path.join(REPO_ROOT, "configs/zs_shapes/projection_mask_rcnn.yaml"), "--weights",
        str(weights), "--dataset", "zs_shapes_tiny_val", "--output", str(tmp_path / "m.ts")])
    last = err.strip().splitlines()[-1]
    assert status == 2 and last.startswith("ERROR: ") and str(weights) in last, err[-2000:]


def test_importing_detectron2_before_zsi_d2_says_what_to_do():
    """tools/install_detectron2.sh leaves a `detectron2/_C.py` whose import error names the fix
    (a detectron2 with compiled ops has no such file and imports as usual)."""
    from zsi_d2 import compat

    if compat.HAS_COMPILED_OPS:
        pytest.skip("detectron2 with compiled ops: importing it first works")
    proc = subprocess.run([sys.executable, "-c", "from detectron2.modeling import build_model"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "import zsi_d2 before detectron2" in proc.stderr.strip().splitlines()[-1]


def test_a_panoptic_task_on_an_instance_only_test_set_is_said(caplog):
    from zsi_d2.data.zs_shapes import ensure_generated
    from zsi_d2.evaluation import build_zero_shot_evaluator

    ensure_generated("tiny")
    cfg = tiny_cfg("TEST.ZERO_SHOT_TASKS", "['panoptic', 'instance']")
    with caplog.at_level(logging.WARNING, logger="zsi_d2.evaluation.build"):
        build_zero_shot_evaluator(cfg, "zs_shapes_tiny_val")
    lines = [r.getMessage() for r in caplog.records if "not evaluated" in r.getMessage()]
    assert len(lines) == 1 and "panoptic" in lines[0] and "'zs_shapes_tiny_val_panoptic' has them" in lines[0]


def test_known_input_errors_are_one_family():
    from zsi_d2.embeddings.base import MissingEmbeddingError

    assert issubclass(MissingEmbeddingError, InputError) and issubclass(MissingEmbeddingError, KeyError)
