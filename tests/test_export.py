"""Export of every model family to ONNX (run by onnxruntime) and TorchScript (zsi_d2.export,
tools/export_model.py).

A trace records one execution; a value read into Python (`.item()`, a branch) stays the example's
forever. So every family is traced on image A and compared with eager mode on A and on a
*different* image B, whose outputs differ from A's in what a trace could freeze (counts of kept
queries / detections, classes): discrete outputs equal, float outputs within 1e-4 (relative where eager's exceed 1), instance mask
pixels equal but for at most 1 in 100,000 (a probability at 0.5 to within 1e-7: compare.py). The panoptic rule
alone (against Mask2Former's loop, traced and not) is tested in test_mask_former_inference.py.
"""
import importlib.util
import json
import os
import sys

import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model

from conftest import CAGNET_TINY_OPTS, PIXEL_TINY_OPTS, REPO_ROOT, TINY_MASK_FORMER_OPTS, TINY_OPTS, import_tool
from test_mask_former_model import VAL, tiny_mask_former_cfg
from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.engine.train_command import load_project_train_net
from zsi_d2.errors import InputError
from zsi_d2.export import METADATA_KEY, compare_outputs, export_model, load_exported, quantize_onnx
from zsi_d2.modeling import use_class_set
from zsi_d2.modeling.vocabulary import set_vocabulary

torch.set_num_threads(1)
# Random weights. Mask classification: seed 2 and these thresholds, so that on images A and B the
# kept queries differ, both have thing and stuff segments, and queries that open a segment on B have
# other classes on A. R-CNN: score threshold 0.5, so that A and B keep different numbers of boxes.
SEED = 2
MASK_FORMER_OPTS = ("MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.5",
                    "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "0.3")
RCNN_OPTS = (*TINY_OPTS, "MODEL.EFFICIENTNET.WEIGHTS", "", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.5")
CAGNET = os.path.join(REPO_ROOT, "projects/CaGNet/configs/zs_shapes/cagnet.yaml")


def _cfg(config, *opts, project=None):
    cfg = get_zsi_d2_cfg()
    if project:
        load_project_train_net(os.path.join(REPO_ROOT, "projects", project)).add_config(cfg)
    cfg.merge_from_file(os.path.join(REPO_ROOT, config))
    cfg.merge_from_list(list(opts))
    return cfg


# family name -> (config builder, dataset, indices of images A and B)
CASES = {
    "core": (lambda: tiny_mask_former_cfg(*MASK_FORMER_OPTS), VAL, (22, 11)),
    "pading": (lambda: _cfg("configs/pading/zs_shapes/pading_stage2.yaml", *TINY_MASK_FORMER_OPTS, *MASK_FORMER_OPTS,
                            "MODEL.PADING.NUM_PRIMITIVES", "16"), VAL, (22, 11)),
    "zegformer": (lambda: _cfg("configs/zegformer/zs_shapes/zegformer.yaml", *TINY_MASK_FORMER_OPTS,
                               *MASK_FORMER_OPTS), VAL, (22, 11)),
    "projection_rcnn": (lambda: _cfg("configs/zs_shapes/projection_mask_rcnn.yaml", *RCNN_OPTS),
                        "zs_shapes_tiny_val", (0, 1)),
    "zsi_rcnn": (lambda: _cfg("configs/zsi/zs_shapes/zsi_mask_rcnn.yaml", *RCNN_OPTS), "zs_shapes_tiny_val", (0, 1)),
    "spnet": (lambda: _cfg("configs/semantic/zs_shapes/spnet.yaml", *PIXEL_TINY_OPTS), "zs_shapes_tiny_val_panoptic",
              (0, 1)),
    "cagnet": (lambda: _cfg(CAGNET, *PIXEL_TINY_OPTS, *CAGNET_TINY_OPTS, project="CaGNet"),
               "zs_shapes_tiny_val_panoptic", (0, 1)),
}


def _build(name):
    make, dataset, (a, b) = CASES[name]
    torch.manual_seed(SEED)
    cfg = make()
    model = build_model(cfg).eval()
    mapper = DatasetMapper(cfg, is_train=False)
    dicts = DatasetCatalog.get(dataset)
    return cfg, model, dataset, [mapper(dicts[i])["image"] for i in (a, b)]


@pytest.fixture(scope="module", params=sorted(CASES))
def family(request):
    cfg, model, dataset, images = _build(request.param)
    with use_class_set(model, dataset), torch.no_grad():
        eager = [model([{"image": im}])[0] for im in images]
        yield request.param, cfg, model, images, eager


def _differ(a, b):
    """Whether two eager outputs differ in what a trace could freeze (semantic: the labels drawn)."""
    if not compare_outputs(a, b)["discrete_equal"]:
        return True
    return "sem_seg" in a and not torch.equal(a["sem_seg"].argmax(0), b["sem_seg"].argmax(0))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_every_family_exports_and_equals_eager_on_another_image(family, fmt, tmp_path):
    name, _, model, images, eager = family
    assert _differ(*eager), f"{name}: images A and B give the same discrete outputs: the test would prove nothing"
    path = str(tmp_path / f"model.{fmt}")
    export_model(model, images[0], fmt, path)
    exported = load_exported(path, threads=1)
    assert exported.format == fmt and exported.input_size == tuple(images[0].shape[-2:])
    for image, expected in zip(images, eager):
        result = compare_outputs(exported(image), expected)
        assert result["discrete_equal"], (name, fmt, result["first_difference"])
        assert result["max_scaled_diff"] <= 1e-4, (name, fmt, result["max_abs_diff"])
        assert result["mask_pixels_differing"] <= 1e-5 * result["mask_pixels"], (name, fmt, result)


def test_metadata_round_trips_and_other_sizes_are_refused(tmp_path):
    cfg, model, dataset, images = _build("core")
    with use_class_set(model, dataset):
        for fmt in ("onnx", "torchscript"):
            path = str(tmp_path / f"core.{fmt}")
            written = export_model(model, images[0], fmt, path, meta={"weights": "w.pth"})
            loaded = load_exported(path)
            assert loaded.meta == written.meta and loaded.meta["format"] == fmt
            assert loaded.meta["family"] == "mask_classification" and loaded.meta["weights"] == "w.pth"
            assert loaded.class_names == list(model.class_set.names)
            assert loaded.meta["dataset_classes"] == list(model.class_set.dataset_classes)
            assert loaded.meta["thing_classes"] == list(model.class_set.thing_classes)
            assert loaded.meta["unseen"] == list(model.class_set.unseen) and loaded.meta["unseen"]
            with pytest.raises(InputError, match="exported for 128x128 images; got 96x128"):
                loaded(torch.zeros(3, 96, 128, dtype=torch.uint8))


def test_a_vocabulary_chosen_at_export_is_the_one_the_file_scores(tmp_path):
    """Any names, set before export (as demo.py sets them): the file's classes and outputs are theirs."""
    cfg, model, dataset, images = _build("core")
    names = ["red circle", "purple star", "green square", "blue background"]
    with use_class_set(model, dataset):
        set_vocabulary(model, names, cfg)
        with torch.no_grad():
            eager = model([{"image": images[1]}])[0]
        export_model(model, images[0], "onnx", str(tmp_path / "vocab.onnx"))
    exported = load_exported(str(tmp_path / "vocab.onnx"))
    assert exported.class_names == names and exported.meta["dataset_classes"] == names
    out = exported(images[1])
    assert out["sem_seg"].shape[0] == len(names)
    result = compare_outputs(out, eager)
    assert result["discrete_equal"] and result["max_scaled_diff"] <= 1e-4, result


def test_files_without_zsi_d2_metadata_name_the_file(tmp_path):
    import onnx

    plain = str(tmp_path / "plain.ts")
    torch.jit.save(torch.jit.script(torch.nn.Identity()), plain)
    with pytest.raises(InputError, match=f"{plain} has no {METADATA_KEY} metadata"):
        load_exported(plain)
    cfg, model, dataset, images = _build("spnet")
    with use_class_set(model, dataset):
        export_model(model, images[0], "onnx", str(tmp_path / "m.onnx"))
    proto = onnx.load(str(tmp_path / "m.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    with pytest.raises(InputError, match=f"bare.onnx has no {METADATA_KEY} metadata"):
        load_exported(str(tmp_path / "bare.onnx"))
    with pytest.raises(InputError, match="exported model '.*nope.onnx' not found"):
        load_exported(str(tmp_path / "nope.onnx"))


def test_missing_onnxruntime_is_one_line(tmp_path, monkeypatch):
    cfg, model, dataset, images = _build("spnet")
    with use_class_set(model, dataset):
        export_model(model, images[0], "onnx", str(tmp_path / "m.onnx"))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(InputError, match="onnxruntime is not installed: pip install onnxruntime") as info:
        load_exported(str(tmp_path / "m.onnx"))
    assert "\n" not in str(info.value)


def test_int8_quantisation_keeps_the_metadata_and_runs(tmp_path):
    cfg, model, dataset, images = _build("core")
    with use_class_set(model, dataset):
        export_model(model, images[0], "onnx", str(tmp_path / "m.onnx"))
    quantised = quantize_onnx(str(tmp_path / "m.onnx"), str(tmp_path / "m.int8.onnx"))
    assert "int8" in quantised.meta["quantization"] and quantised.class_names == list(model.class_set.names)
    assert os.path.getsize(tmp_path / "m.int8.onnx") < os.path.getsize(tmp_path / "m.onnx") / 2
    out = quantised(images[1])
    assert set(out) == {"sem_seg", "panoptic_seg", "instances"} and out["sem_seg"].shape[-2:] == (128, 128)


def test_detectron2_export_imports_without_caffe2():
    if importlib.util.find_spec("caffe2") is not None:
        pytest.skip("caffe2 is installed: detectron2.export loads unchanged")
    import detectron2.export
    from detectron2.export import (  # noqa: F401
        Caffe2Tracer, TracingAdapter, dump_torchscript_IR, scripting_with_instances,
    )

    from detectron2.export.flatten import TracingAdapter as real

    assert TracingAdapter is real
    with pytest.raises(ImportError, match="needs caffe2"):
        Caffe2Tracer(None, None, None)
    assert "TracingAdapter" in detectron2.export.__all__


@pytest.mark.parametrize("name,fmt", [("core", "onnx"), ("zsi_rcnn", "torchscript"), ("cagnet", "onnx")])
def test_export_cli(name, fmt, tmp_path, capsys):
    """tools/export_model.py on a saved checkpoint: writes the file, compares it with eager on another
    image; a config under projects/ is built with its project's keys."""
    cfg, model, dataset, _ = _build(name)
    config = CAGNET if name == "cagnet" else str(tmp_path / "config.yaml")
    if name != "cagnet":
        (tmp_path / "config.yaml").write_text(cfg.dump())
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model")
    export = import_tool("export_model")
    out = str(tmp_path / f"model.{fmt}")
    opts = ["--opts", *PIXEL_TINY_OPTS, *CAGNET_TINY_OPTS] if name == "cagnet" else []
    result = export.main(["--config-file", config, "--weights", str(tmp_path / "model.pth"), "--dataset", dataset,
                          "--format", fmt, "--output", out, *opts])
    assert result["discrete_equal"] and result["max_scaled_diff"] <= 1e-4, result
    assert "max |eager - exported|" in capsys.readouterr().out
    meta = load_exported(out).meta
    assert meta["dataset"] == dataset and meta["input_format"] == cfg.INPUT.FORMAT and json.dumps(meta)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_zegformer_with_its_clip_image_branch_exports_whole(tiny_clip, fmt, tmp_path):
    """ZegFormer's CLIP image branch (masked crops of the image re-scored by CLIP, fused with the
    segment classifier) is inside the same graph: the file equals eager on another image."""
    from test_clip_image_branch import tiny_opts

    torch.manual_seed(SEED)
    cfg = _cfg("configs/zegformer/zs_shapes/zegformer.yaml", *TINY_MASK_FORMER_OPTS, *MASK_FORMER_OPTS,
               *tiny_opts(tiny_clip))
    model = build_model(cfg).eval()
    mapper = DatasetMapper(cfg, is_train=False)
    dicts = DatasetCatalog.get(VAL)
    images = [mapper(dicts[i])["image"] for i in (22, 11)]
    with use_class_set(model, VAL), torch.no_grad():
        eager = [model([{"image": im}])[0] for im in images]
        export_model(model, images[0], fmt, str(tmp_path / "zegformer_clip"))
    assert _differ(*eager)
    exported = load_exported(str(tmp_path / "zegformer_clip"), threads=1)
    for image, expected in zip(images, eager):
        result = compare_outputs(exported(image), expected)
        assert result["discrete_equal"] and result["max_scaled_diff"] <= 1e-4, result
