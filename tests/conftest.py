"""Shared test set-up: offline, quiet, and every generated file in a per-session temp folder."""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import zsi_d2  # noqa: E402,F401  (compat layer + registrations before any detectron2 use)

# torch's thread count in a fresh process, read before test modules set theirs at collection:
# commands run in this process (run_in_process) get it, so they compute what a subprocess would.
FRESH_PROCESS_THREADS = torch.get_num_threads()

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory):
    """zs_shapes and embedding caches go to temp folders, shared by all tests of one session."""
    root = tmp_path_factory.mktemp("zsi_d2_session")
    old = {k: os.environ.get(k) for k in ("DETECTRON2_DATASETS", "ZSI_D2_CACHE")}
    os.environ["DETECTRON2_DATASETS"] = str(root / "datasets")
    os.environ["ZSI_D2_CACHE"] = str(root / "cache")
    # zsi_d2 registered zs_shapes at import, under the old root: register again under the new one.
    from zsi_d2.data.zs_shapes import register_all_zs_shapes

    register_all_zs_shapes()
    yield root
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """Class embeddings cached into this test's own folder (its path is returned)."""
    path = tmp_path / "emb_cache"
    monkeypatch.setenv("ZSI_D2_CACHE", str(path))
    return path


@pytest.fixture
def cfg():
    """detectron2's default config with zsi_d2's keys (modules may define their own `cfg`)."""
    from detectron2.config import get_cfg

    from zsi_d2.config import add_zsi_d2_config

    c = get_cfg()
    add_zsi_d2_config(c)
    return c


# train_net.py command-line options for a quick run on the 'tiny' preset (subprocess tests).
TINY_OPTS = [
    "DATASETS.TRAIN", "('zs_shapes_tiny_train',)",
    "DATASETS.TEST", "('zs_shapes_tiny_val', 'zs_shapes_tiny_val_zsi')",
    "MODEL.ZERO_SHOT.EMBEDDING.SOURCE", "attributes",
    "DATALOADER.NUM_WORKERS", "0",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.WARMUP_ITERS", "2",
    "SOLVER.STEPS", "()",
]
BASELINE_CONFIG = os.path.join(REPO_ROOT, "configs/zs_shapes/projection_mask_rcnn.yaml")
# The small ZeroShotMaskFormer the mask-classification tests build (panoptic tiny sets, no
# pretrained weights, attribute embeddings); later options of the same key override these.
TINY_MASK_FORMER_OPTS = [
    "DATASETS.TRAIN", "('zs_shapes_tiny_train_panoptic',)", "DATASETS.TEST", "('zs_shapes_tiny_val_panoptic',)",
    "MODEL.ZERO_SHOT.EMBEDDING.SOURCE", "attributes", "MODEL.EFFICIENTNET.WEIGHTS", "",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32", "MODEL.SEM_SEG_HEAD.MASK_DIM", "32", "MODEL.MASK_FORMER.HIDDEN_DIM", "32",
    "MODEL.MASK_FORMER.NHEADS", "4", "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS", "4",
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD", "64", "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD",
    "64", "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1", "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "10",
]


# A tiny open_clip architecture (random weights; fixture `tiny_clip`) for the CLIP tests.
TINY_CLIP_ARCH = "zsi-d2-test-tiny-clip"
TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A randomly initialised tiny open_clip model registered as TINY_CLIP_ARCH and saved to disk."""
    import json

    import open_clip
    import torch

    folder = tmp_path_factory.mktemp("tiny_clip")
    cfg_file = folder / f"{TINY_CLIP_ARCH}.json"
    cfg_file.write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(str(cfg_file))
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_CLIP_ARCH).eval()
    ckpt = folder / "tiny_clip.pt"
    torch.save(model.state_dict(), ckpt)
    return {"arch": TINY_CLIP_ARCH, "ckpt": str(ckpt), "model": model, "folder": folder}


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket or to use open_clip's downloaders fails the test."""
    import socket

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


def import_tool(name):
    """A script of tools/ as a module (tools/ is not a package)."""
    import importlib
    import sys

    sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def run_in_process(entry, argv):
    """A command's top level (`entry(argv)`, e.g. train_net.invoke_main) called in this process, which
    saves the 9-10 s a subprocess spends importing torch and detectron2: returns (exit status,
    stdout, stderr), with the thread count of a fresh process. The logging handlers detectron2's setup_logger adds during the call write to
    the captured streams; they are removed afterwards so that later tests do not log into them."""
    import contextlib
    import io
    import logging

    from detectron2.utils.logger import setup_logger

    def loggers():
        return [logging.getLogger(), *(x for x in logging.Logger.manager.loggerDict.values() if isinstance(x, logging.Logger))]

    before = {logger: list(logger.handlers) for logger in loggers()}
    out, err, status = io.StringIO(), io.StringIO(), 0
    threads = torch.get_num_threads()
    torch.set_num_threads(FRESH_PROCESS_THREADS)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            entry(argv)
    except SystemExit as e:
        status = 0 if e.code is None else e.code
    finally:
        for logger in loggers():  # including loggers the call created
            kept = before.get(logger, [])
            for handler in logger.handlers:
                if handler not in kept:
                    handler.close()
            logger.handlers[:] = kept
        setup_logger.cache_clear()  # a later call with the same arguments must add its handlers again
        torch.set_num_threads(threads)
    return status, out.getvalue(), err.getvalue()


def tiny_cfg(*opts, config="configs/zs_shapes/projection_mask_rcnn.yaml"):
    """A zs_shapes config on the 'tiny' preset with the fast attribute embeddings."""
    from zsi_d2.config import get_zsi_d2_cfg

    cfg = get_zsi_d2_cfg()
    cfg.merge_from_file(os.path.join(REPO_ROOT, config))
    cfg.merge_from_list([
        "DATASETS.TRAIN", "('zs_shapes_tiny_train',)",
        "DATASETS.TEST", "('zs_shapes_tiny_val', 'zs_shapes_tiny_val_zsi')",
        "MODEL.ZERO_SHOT.EMBEDDING.SOURCE", "attributes",
        "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.IMS_PER_BATCH", "2",
        *opts,
    ])
    return cfg


def assert_checkpoint_round_trip(cfg, batch, tmp_path):
    """Save a model, load it into a differently-initialised one: outputs must be identical."""
    import torch

    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    model = build_model(cfg).eval()
    inputs = [{k: v for k, v in x.items() if k != "instances"} for x in batch]
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("m")
    torch.manual_seed(1)
    other = build_model(cfg).eval()
    DetectionCheckpointer(other).load(str(tmp_path / "m.pth"))
    with torch.no_grad():
        a, b = model(inputs), other(inputs)
    for x, y in zip(a, b):
        torch.testing.assert_close(x["instances"].scores, y["instances"].scores)
        torch.testing.assert_close(x["instances"].pred_boxes.tensor, y["instances"].pred_boxes.tensor)
        if x["instances"].has("pred_masks"):
            torch.testing.assert_close(x["instances"].pred_masks.float(), y["instances"].pred_masks.float())


def assert_class_set_follows_dataset(cfg, batch):
    """ZSI evaluation scores unseen classes only (in dataset ids); GZSI all; afterwards the eval-mode
    default (the config's test set) again, and the training set in training mode."""
    import torch

    from detectron2.data import MetadataCatalog
    from detectron2.modeling import build_model

    from zsi_d2.modeling import use_class_set

    model = build_model(cfg).eval()
    meta = MetadataCatalog.get("zs_shapes_tiny_val_zsi")
    unseen_ids = {i for i, n in enumerate(meta.thing_classes) if n in set(meta.unseen_classes)}
    inputs = [{k: v for k, v in x.items() if k != "instances"} for x in batch]
    with torch.no_grad(), use_class_set(model, "zs_shapes_tiny_val_zsi"):
        assert model.roi_heads.box_predictor.num_classes == len(unseen_ids)
        out = model(inputs)
    predicted = set(torch.cat([o["instances"].pred_classes for o in out]).tolist())
    assert predicted, "no predictions: the class-set check below would pass vacuously"
    assert predicted <= unseen_ids, "ZSI predictions must be unseen classes, in dataset ids"
    assert all(o["instances"].pred_masks.shape[1:] == inputs[0]["image"].shape[1:] for o in out)
    with torch.no_grad(), use_class_set(model, "zs_shapes_tiny_val"):
        assert model.roi_heads.box_predictor.num_classes == len(meta.thing_classes)
    assert model.class_set is model.inference_class_set and model.class_set.mode == "gzsi"
    model.train()
    assert model.class_set.mode == "train"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (CI=true) a test skipped because the shared data is missing fails instead.

    Why: a checkout without ../shared/data would otherwise pass with those tests silently
    skipped. Every such skip names the missing path under SHARED_DATA in its reason (see
    coco_fixtures.SHARED_PANOPTIC_MISSING), which is what is matched here.
    """
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail") or os.environ.get("CI", "").lower() != "true":
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if SHARED_DATA in reason:
        report.outcome = "failed"
        report.longrepr = f"CI=true and the shared data is missing, so this test cannot be skipped: {reason}"


# The pixel-level models' tiny runs (tests/test_pixel_generative.py, tests/test_zs3net.py): once per session.
PIXEL_TINY_OPTS = [
    "DATASETS.TRAIN", "('zs_shapes_tiny_train_panoptic',)", "MODEL.ZERO_SHOT.EMBEDDING.SOURCE", "attributes",
    "MODEL.EFFICIENTNET.WEIGHTS", "", "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS", "32", "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
    "SOLVER.IMS_PER_BATCH", "2", "MODEL.PIXEL_GENERATIVE.PIXELS_PER_CLASS", "16",
    "MODEL.PIXEL_GENERATIVE.GENERATED_PER_CLASS", "16", "MODEL.PIXEL_GENERATIVE.IMAGES_PER_BATCH", "4",
]


def _train_net_main():
    import sys

    sys.path.insert(0, REPO_ROOT)
    try:
        import train_net
    finally:
        sys.path.pop(0)
    return train_net.invoke_main


@pytest.fixture(scope="session")
def pixel_stage1(tmp_path_factory):
    """DeepLab on the seen classes (configs/semantic/zs_shapes/deeplab_seen.yaml), 3 iterations: its checkpoint."""
    out = tmp_path_factory.mktemp("deeplab_seen")
    status, log, err = run_in_process(_train_net_main(), [
        "--config-file", os.path.join(REPO_ROOT, "configs/semantic/zs_shapes/deeplab_seen.yaml"), *PIXEL_TINY_OPTS,
        "DATASETS.TEST", "('zs_shapes_tiny_calib_panoptic',)", "SOLVER.MAX_ITER", "3", "OUTPUT_DIR", str(out)])
    assert status == 0, (log + err)[-3000:]
    return out / "model_final.pth"


@pytest.fixture(scope="session")
def pixel_stage2(pixel_stage1, tmp_path_factory):
    """The pixel second stage (configs/semantic/zs_shapes/gmmn_stage2.yaml) on it, 4 iterations: (folder, log)."""
    out = tmp_path_factory.mktemp("gmmn_stage2")
    status, log, err = run_in_process(_train_net_main(), [
        "--config-file", os.path.join(REPO_ROOT, "configs/semantic/zs_shapes/gmmn_stage2.yaml"), *PIXEL_TINY_OPTS,
        "MODEL.WEIGHTS", str(pixel_stage1), "SOLVER.MAX_ITER", "4", "OUTPUT_DIR", str(out),
        "DATASETS.TEST", "('zs_shapes_tiny_val_panoptic',)"])
    assert status == 0, (log + err)[-3000:]
    return out, log

# CaGNet's and SIGN's networks at test size (tests/test_cagnet.py, tests/test_sign.py).
CAGNET_TINY_OPTS = ["MODEL.CAGNET.CONTEXT_HIDDEN", "8", "MODEL.CAGNET.GENERATOR_HIDDEN", "[16]",
                    "MODEL.CAGNET.GENERATOR_DROPOUT", "[0.1]", "MODEL.CAGNET.DISCRIMINATOR_HIDDEN", "16"]


def project_train_net(project: str):
    """projects/<project>/train_net.py as a module of its own name."""
    from zsi_d2.engine.train_command import load_project_train_net

    return load_project_train_net(os.path.join(REPO_ROOT, "projects", project))
