"""Bad input reached through the public paths a user takes (a config value given to build_model or
train_net.py, a command-line argument of a tool, a file, a registration call) raises a member of
zsi_d2's InputError family, whose message names the config key, argument or file and the fix on
its first line. train_net.py and the tools print such an error as one line with exit status 2;
a builtin ValueError from the same place would end in a traceback instead."""
import json
import os
import sys

import pytest
import torch

from detectron2.modeling import build_model

from conftest import REPO_ROOT, TINY_MASK_FORMER_OPTS, TINY_OPTS, import_tool, tiny_cfg
from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.errors import EXIT_INPUT_ERROR, InputError

MASK_FORMER = os.path.join(REPO_ROOT, "configs/mask_former/zs_shapes/mask_former_embedding.yaml")
BASELINE = os.path.join(REPO_ROOT, "configs/zs_shapes/projection_mask_rcnn.yaml")


def _input_error(call, *names):
    """Run `call`; it must raise an InputError whose first line holds every one of `names`."""
    with pytest.raises(InputError) as info:
        call()
    first = str(info.value).splitlines()[0]
    for name in names:
        assert name in first, first
    return info.value


def _mask_former_cfg(*opts):
    """The small MaskFormer of test_mask_former_model.py (no pretrained weights, attribute embeddings)."""
    cfg = get_zsi_d2_cfg()
    cfg.merge_from_file(MASK_FORMER)
    cfg.merge_from_list([*TINY_MASK_FORMER_OPTS, *opts])
    return cfg


# ---- config values given to build_model -----------------------------------------------------
def test_an_unknown_embedding_source_names_its_config_key():
    error = _input_error(lambda: build_model(tiny_cfg("MODEL.ZERO_SHOT.EMBEDDING.SOURCE", "glove")),
                         "MODEL.ZERO_SHOT.EMBEDDING.SOURCE", "glove", "set it to one of")
    assert isinstance(error, ValueError)  # callers' `except ValueError` still catches it


def test_a_missing_word_vector_file_names_its_config_key(tmp_path):
    missing = str(tmp_path / "no_such_vectors.txt")
    cfg = tiny_cfg("MODEL.ZERO_SHOT.EMBEDDING.SOURCE", "word_vectors", "MODEL.ZERO_SHOT.EMBEDDING.PATH", missing)
    error = _input_error(lambda: build_model(cfg), "MODEL.ZERO_SHOT.EMBEDDING.PATH", missing)
    assert isinstance(error, FileNotFoundError)


def test_an_empty_word_vector_file_names_its_config_key(tmp_path):
    empty = tmp_path / "vectors.txt"
    empty.write_text("")
    cfg = tiny_cfg("MODEL.ZERO_SHOT.EMBEDDING.SOURCE", "word_vectors", "MODEL.ZERO_SHOT.EMBEDDING.PATH", str(empty))
    _input_error(lambda: build_model(cfg), str(empty), "is empty", "MODEL.ZERO_SHOT.EMBEDDING.PATH")


def test_a_backbone_norm_names_its_config_key():
    error = _input_error(lambda: build_model(tiny_cfg("MODEL.EFFICIENTNET.NORM", "GN")),
                         "MODEL.EFFICIENTNET.NORM", "GN")
    assert isinstance(error, ValueError)


def test_backbone_weights_that_are_missing_or_not_efficientnet_name_their_config_key(tmp_path):
    missing = str(tmp_path / "no_such_weights.pth")
    error = _input_error(lambda: build_model(tiny_cfg("MODEL.EFFICIENTNET.WEIGHTS", missing)),
                         "MODEL.EFFICIENTNET.WEIGHTS", missing)
    assert isinstance(error, FileNotFoundError)
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    _input_error(lambda: build_model(tiny_cfg("MODEL.EFFICIENTNET.WEIGHTS", str(other))),
                 str(other), "MODEL.EFFICIENTNET.WEIGHTS", "not an EfficientNet-Lite0 checkpoint")


def test_class_specific_box_regression_names_its_config_key():
    _input_error(lambda: build_model(tiny_cfg("MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "False")),
                 "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG True")


def test_mask_former_sizes_and_costs_name_their_config_keys():
    _input_error(lambda: build_model(_mask_former_cfg("MODEL.SEM_SEG_HEAD.CONVS_DIM", "48")),
                 "MODEL.SEM_SEG_HEAD.CONVS_DIM", "48")
    zero_costs = ("MODEL.MASK_FORMER.CLASS_WEIGHT", "0.0", "MODEL.MASK_FORMER.MASK_WEIGHT", "0.0",
                  "MODEL.MASK_FORMER.DICE_WEIGHT", "0.0")
    _input_error(lambda: build_model(_mask_former_cfg(*zero_costs)), "MODEL.MASK_FORMER.CLASS_WEIGHT")


def test_test_tasks_a_dataset_cannot_score_name_the_config_key():
    from zsi_d2.evaluation import build_zero_shot_evaluator

    cfg = tiny_cfg("TEST.ZERO_SHOT_TASKS", "['panoptic']")  # zs_shapes_tiny_val has no panoptic annotations
    _input_error(lambda: build_zero_shot_evaluator(cfg, "zs_shapes_tiny_val"),
                 "TEST.ZERO_SHOT_TASKS", "nothing to evaluate")


# ---- command-line arguments -----------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU launcher is the one that checks --dist-url")
def test_several_machines_without_a_dist_url_is_one_line(capsys):
    from zsi_d2.engine import launch

    _input_error(lambda: launch(print, 1, num_machines=2, dist_url="auto"), "--dist-url")
    sys.path.insert(0, REPO_ROOT)
    try:
        import train_net
    finally:
        sys.path.pop(0)
    with pytest.raises(SystemExit) as info:
        train_net.invoke_main(["--config-file", BASELINE, "--num-machines", "2", "--dist-url", "auto", *TINY_OPTS])
    assert info.value.code == EXIT_INPUT_ERROR
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("ERROR: --dist-url must name the first machine"), last


def test_visualize_predictions_with_missing_weights_names_the_argument(tmp_path):
    tool = import_tool("visualize_predictions")
    missing = str(tmp_path / "no_such_model.pth")
    argv = ["--config-file", BASELINE, "--weights", missing, "--dataset", "zs_shapes_tiny_val",
            "--output", str(tmp_path / "out.png")]
    error = _input_error(lambda: tool.main(argv), f"--weights {missing} does not exist")
    assert isinstance(error, FileNotFoundError)


def test_summarize_runs_with_a_malformed_group_names_the_argument():
    tool = import_tool("summarize_runs")
    _input_error(lambda: tool._groups(["output/runs/zsi_s*"]), "'output/runs/zsi_s*' is not LABEL=GLOB")
    with pytest.raises(SystemExit, match="is not LABEL=GLOB"):  # the CLI prints it as one line
        tool.main(["output/runs/zsi_s*"])


# ---- files and registrations ----------------------------------------------------------------
def test_a_results_list_given_as_ground_truth_names_the_file(tmp_path):
    from zsi_d2.evaluation import load_coco_gt

    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [0, 0, 1, 1]}]))
    _input_error(lambda: load_coco_gt(str(results)), str(results), "were the ground truth and the predictions swapped")


def test_a_file_that_is_no_exported_model_names_the_file(tmp_path):
    from zsi_d2.export import load_exported

    path = str(tmp_path / "plain.ts")
    torch.jit.save(torch.jit.script(torch.nn.Identity()), path)
    _input_error(lambda: load_exported(path), path, "not written by zsi_d2's export")


def test_registering_a_split_with_a_class_both_seen_and_unseen_names_the_split():
    from zsi_d2.data import ZeroShotSplit, get_split

    _input_error(lambda: ZeroShotSplit("my_bad_split", seen=("cat", "dog"), unseen=("dog",)),
                 "Split 'my_bad_split'", "both seen and unseen", "['dog']")
    error = _input_error(lambda: get_split("my_splt"), "Unknown zero-shot split 'my_splt'")
    assert isinstance(error, KeyError)


def test_the_zs_shapes_command_prints_a_bad_argument_as_one_line(tmp_path):
    """`python -m zsi_d2.data.zs_shapes` (a top level of its own) ends an InputError with one line."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "zsi_d2.data.zs_shapes", "--difficulty", "tiny", "--preview",
         str(tmp_path / "p.png"), "--num-preview", "0"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert done.returncode == EXIT_INPUT_ERROR, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith("ERROR: nothing to preview (--num-preview 0)")
    assert "Traceback" not in done.stderr
