"""tools/benchmark.py on tiny zs_shapes: the yardstick and the config are stepped alike and in
alternating order, and every ratio is computed from the times of that same run."""
import json
import os
import statistics
import sys

import pytest

from conftest import BASELINE_CONFIG, REPO_ROOT, TINY_MASK_FORMER_OPTS, import_tool

CONFIG = os.path.join(REPO_ROOT, "configs/mask_former/zs_shapes/mask_former_embedding.yaml")
ITERS, WARMUP, IMAGES = 2, 1, 2

YARDSTICK_OPTS = [
    "DATASETS.TRAIN", "('zs_shapes_tiny_train',)", "DATASETS.TEST", "('zs_shapes_tiny_val',)",
    "MODEL.ZERO_SHOT.EMBEDDING.SOURCE", "attributes", "MODEL.EFFICIENTNET.WEIGHTS", "",
]
CONFIG_OPTS = [*TINY_MASK_FORMER_OPTS, "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256"]



def _bench():
    return import_tool("benchmark")


def _argv(json_path, *extra, iters=ITERS, warmup=WARMUP, images=IMAGES):
    return ["--config-file", CONFIG, "--yardstick", BASELINE_CONFIG, "--batch", "2", "--threads", "1",
            "--iters", str(iters), "--warmup", str(warmup), "--inference-images", str(images),
            "--json", str(json_path), *extra, "--yardstick-opts", *YARDSTICK_OPTS, "--opts", *CONFIG_OPTS]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One full run (peak children included), with every train step's model and batch recorded."""
    bench = _bench()
    calls, real_step = [], bench.step

    def recording_step(model, train_step, batch):
        calls.append((type(model).__name__, len(batch)))
        return real_step(model, train_step, batch)

    out = tmp_path_factory.mktemp("benchmark") / "out.json"
    mp = pytest.MonkeyPatch()
    mp.setattr(bench, "step", recording_step)
    try:
        returned = bench.main(_argv(out))
    finally:
        mp.undo()
    with open(out) as f:
        return bench, calls, json.load(f), returned


def test_json_has_the_fields_and_positive_times(run):
    _, _, result, returned = run
    assert result["ratios"] == json.loads(json.dumps(returned["ratios"]))
    for role, arch in (("yardstick", "ZeroShotRCNN"), ("config", "ZeroShotMaskFormer")):
        side = result[role]
        assert side["meta_architecture"] == arch and side["batch"] == 2
        assert side["params"] >= side["trainable_params"] > 0
        assert len(side["train_s"]) == ITERS and len(side["inference_s"]) == IMAGES
        assert all(t > 0 for t in side["train_s"] + side["inference_s"])
        for key in ("median", "q1", "q3"):
            assert side["train"][key] > 0 and side["inference"][key] > 0
    assert result["yardstick"]["mapper"] == "DatasetMapper" and result["config"]["mapper"] == "mask_former_panoptic"
    assert result["config"]["test_dataset"] == "zs_shapes_tiny_val_panoptic"
    m = result["machine"]
    assert m["cpu"] and m["torch_threads"] == 1 and len(m["load_avg_end"]) == 3
    peak = result["peak_rss_mib"]
    assert peak["timing_process"] > 0
    for role in ("yardstick", "config"):  # each model alone in a child: above the imports, below or at its peak
        assert peak["after_imports"] < peak[f"{role}_after_train"] <= peak[role]


def test_both_models_step_equally_often_in_alternating_order(run):
    _, calls, _, _ = run
    names = [name for name, _ in calls]
    assert len(names) == 2 * (WARMUP + ITERS)
    assert names.count("ZeroShotRCNN") == names.count("ZeroShotMaskFormer") == WARMUP + ITERS
    pairs = [names[i:i + 2] for i in range(0, len(names), 2)]
    forward, backward = ["ZeroShotRCNN", "ZeroShotMaskFormer"], ["ZeroShotMaskFormer", "ZeroShotRCNN"]
    assert pairs == [forward if i % 2 == 0 else backward for i in range(WARMUP + ITERS)]
    assert all(size == 2 for _, size in calls)  # --batch for both


def test_ratios_come_from_the_same_run(run):
    bench, _, result, _ = run
    y, c, r = result["yardstick"], result["config"], result["ratios"]
    pairs = [ct / yt for ct, yt in zip(c["train_s"], y["train_s"])]
    assert r["train_pairs"] == pytest.approx(pairs)
    assert r["train"]["median"] == pytest.approx(statistics.median(pairs))
    assert c["train"]["median"] == pytest.approx(statistics.median(c["train_s"]))
    assert r["inference_vs_yardstick_train"]["median"] == pytest.approx(
        statistics.median(c["inference_s"]) / statistics.median(y["train_s"]))
    assert r["inference_vs_yardstick_inference"]["median"] == pytest.approx(
        statistics.median([ci / yi for ci, yi in zip(c["inference_s"], y["inference_s"])]))
    table = bench.format_table(result)
    assert f"{r['train']['median']:.3f}" in table and "yardstick train step" in table


def test_random_inputs_need_no_dataset_images(tmp_path, monkeypatch):
    bench = _bench()
    monkeypatch.setattr(bench, "dataset_train_batches", None)  # would fail if called
    monkeypatch.setattr(bench, "dataset_test_inputs", None)
    result = bench.main(_argv(tmp_path / "r.json", "--data", "random", "--no-peak-children",
                              iters=1, warmup=0, images=1))
    assert result["data"] == "random" and result["peak_rss_mib"]["config"] is None
    assert result["config"]["train_s"][0] > 0 and result["yardstick"]["inference_s"][0] > 0
    (ct,), (yt,) = result["config"]["train_s"], result["yardstick"]["train_s"]
    assert result["ratios"]["train"]["median"] == pytest.approx(ct / yt)


def test_a_folder_that_is_not_a_mask2former_checkout_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _bench().main(["--config-file", CONFIG, "--mask2former", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(tmp_path) in err and "not a Mask2Former checkout" in err and "Traceback" not in err


def test_checkout_imports_without_the_compiled_op(tmp_path, monkeypatch):
    """The checkout's own import of the CUDA op passes (a stand-in without its functions), so the
    reference's deformable attention reaches its pure-PyTorch fallback; nothing else is changed."""
    package = tmp_path / "mask2former"
    package.mkdir()
    (package / "maskformer_model.py").write_text("")
    (package / "__init__.py").write_text(
        "import MultiScaleDeformableAttention as MSDA\nHAS_OP = hasattr(MSDA, 'ms_deform_attn_forward')\n")
    for name in ("mask2former", "MultiScaleDeformableAttention"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    module = import_tool("mask2former_reference").import_mask2former(str(tmp_path))
    assert module.__file__ == str(package / "__init__.py") and module.HAS_OP is False
    for name in ("mask2former", "MultiScaleDeformableAttention"):
        sys.modules.pop(name, None)


def test_reference_config_takes_the_configs_values_and_keeps_its_own_keys():
    from detectron2.config import CfgNode as CN

    ref = CN({"MODEL": {"MASK_FORMER": {"HIDDEN_DIM": 256, "TRANSFORMER_IN_FEATURE": "x"}, "DEVICE": "cuda"}})
    ours = CN({"MODEL": {"MASK_FORMER": {"HIDDEN_DIM": 128, "CLASSIFIER": "embedding"}, "DEVICE": "cpu",
                         "EFFICIENTNET": {"WEIGHTS": "imagenet"}}})
    import_tool("mask2former_reference")._copy_common(ref, ours)
    assert ref.MODEL.MASK_FORMER.HIDDEN_DIM == 128 and ref.MODEL.DEVICE == "cpu"
    assert ref.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE == "x"  # the reference's own key stays
    assert ref.MODEL.EFFICIENTNET.WEIGHTS == "imagenet"  # zsi_d2's backbone keys come along


def test_backends_are_timed_beside_eager_and_match_it(tmp_path):
    """--backends: the config exported once per backend, each timed per image in the same loop, with
    per-pair ratios to the config's eager inference and its outputs compared with eager's."""
    bench = _bench()
    backends = "eager,torchscript,onnxruntime,onnxruntime-int8,onnxruntime:extended"
    result = bench.main(_argv(tmp_path / "b.json", "--backends", backends, "--no-peak-children",
                              iters=1, warmup=1, images=2))
    rows = result["backends"]
    assert list(rows) == ["eager", "torchscript", "onnxruntime", "onnxruntime-int8", "onnxruntime:extended"]
    config_times = result["config"]["inference_s"]
    assert rows["eager"]["inference_s"] == config_times
    for key, row in rows.items():
        assert len(row["inference_s"]) == 2 and all(t > 0 for t in row["inference_s"])
        assert row["vs_config_eager"]["median"] == pytest.approx(
            statistics.median([t / e for t, e in zip(row["inference_s"], config_times)]))
    assert rows["onnxruntime:extended"]["optimization"] == "extended" and rows["onnxruntime"]["optimization"] == "all"
    for key in ("torchscript", "onnxruntime", "onnxruntime:extended"):  # fp32 exports: eager's outputs
        assert rows[key]["images_compared"] == rows[key]["images_discrete_equal"] == 2, rows[key]["first_difference"]
        assert rows[key]["max_scaled_diff"] <= 1e-4
    assert rows["onnxruntime-int8"]["images_compared"] == 2
    with open(tmp_path / "b.json") as f:
        assert set(json.load(f)["backends"]) == set(rows)
    assert "onnxruntime-int8" in bench.format_table(result)


def test_a_mistaken_backend_name_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _bench().main(["--config-file", CONFIG, "--backends", "eager,onnx"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown backend 'onnx'" in err and "onnxruntime-int8" in err and "Traceback" not in err
