"""tools/probe_queries.py: its accuracies on a hand-made case, the oracle probe on separable features,
and one end-to-end run on a tiny untrained model (matched queries, every class of the GZSI set)."""
import os
import sys

import torch

from detectron2.modeling import build_model

from conftest import REPO_ROOT
from zsi_d2.modeling.generative import FeatureBank
from test_mask_former_model import VAL, tiny_mask_former_cfg

sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import probe_queries  # noqa: E402

sys.path.pop(0)


def test_accuracy_table_by_hand():
    unseen = torch.tensor([False, False, True])  # classes 0, 1 seen; 2 unseen
    labels = torch.tensor([0, 1, 1, 2, 2, 2, 2])
    pred = torch.tensor([0, 1, 0, 2, 0, 1, 0])
    t = probe_queries.accuracy_table(pred, labels, unseen)
    assert t["seen_queries"] == 3 and t["unseen_queries"] == 4
    assert abs(t["seen_accuracy"] - 2 / 3) < 1e-6
    assert abs(t["unseen_accuracy"] - 1 / 4) < 1e-6
    assert abs(t["unseen_labelled_seen"] - 3 / 4) < 1e-6


def test_matched_keeps_labelled_queries_with_their_image():
    bank = FeatureBank(torch.arange(12.0).reshape(2, 3, 2), torch.tensor([[-1, 0, -1], [2, -1, 1]]), "abc")
    queries, labels, image = probe_queries.matched(bank)
    assert labels.tolist() == [0, 2, 1] and image.tolist() == [0, 1, 1]
    assert queries.tolist() == [[2.0, 3.0], [6.0, 7.0], [10.0, 11.0]]


def test_linear_probe_separates_separable_classes():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 8, generator=g) * 5
    y = torch.arange(4).repeat(50)
    x = centres[y] + 0.3 * torch.randn(len(y), 8, generator=g)
    predict = probe_queries.fit_linear_probe(x[:100], y[:100], 4)
    assert (predict(x[100:]) == y[100:]).float().mean() > 0.95


def test_probe_runs_on_a_model_and_scores_every_class():
    torch.manual_seed(0)
    cfg = tiny_mask_former_cfg("DATALOADER.NUM_WORKERS", "0")
    model = build_model(cfg)
    result = probe_queries.probe(cfg, model, VAL, folds=2)
    assert result["matched_queries"] > 0 and result["unseen"]
    m = result["model"]
    assert m["seen_queries"] + m["unseen_queries"] == result["matched_queries"]
    assert m["unseen_queries"] > 0 and set(result["unseen"]) <= set(result["classes"])
    assert "oracle linear probe" in probe_queries.format_result(result)


def test_probe_of_a_stage2_model_compares_generated_and_real_unseen_means(tmp_path):
    from test_pading import STAGE2

    torch.manual_seed(0)
    cfg = tiny_mask_former_cfg(*STAGE2, "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path),
                               "MODEL.MASK_FORMER.CLASSIFIER", "linear")
    model = build_model(cfg)
    result = probe_queries.probe(cfg, model, VAL, folds=2)
    means = result["nearest_mean"]
    assert set(means) == {"generated_unseen_means", "real_unseen_means"}
    for table in means.values():
        assert table["unseen_queries"] == result["model"]["unseen_queries"]
    text = probe_queries.format_result(result)
    assert "generated unseen means" in text and "real unseen means" in text


def test_probe_refuses_bad_inputs_in_one_line(tmp_path, monkeypatch):
    import pytest

    cfg_file = os.path.join(REPO_ROOT, "configs/mask_former/zs_shapes/mask_former_embedding.yaml")
    for argv, expected in (
        (["--config-file", cfg_file, "--weights", str(tmp_path / "none.pth")], "--weights '"),
        (["--config-file", str(tmp_path / "none.yaml"), "--weights", cfg_file], "--config-file '"),
        (["--config-file", cfg_file, "--weights", cfg_file, "--dataset", "zs_shapes_tiny_vall"],
         "--dataset 'zs_shapes_tiny_vall' is not registered. Close names: zs_shapes_tiny_val"),
    ):
        monkeypatch.setattr(sys, "argv", ["probe_queries.py", *argv])
        with pytest.raises(SystemExit, match=expected):
            probe_queries.main()
    torch.manual_seed(0)
    cfg = tiny_mask_former_cfg("DATALOADER.NUM_WORKERS", "0")
    with pytest.raises(ValueError, match="scores no unseen class: give a GZSI test set"):
        probe_queries.probe(cfg, build_model(cfg), "zs_shapes_tiny_calib_panoptic", folds=2)
