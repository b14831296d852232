"""tools/summarize_runs.py on hand-made run folders (every cell computed by hand), and
tools/run_seeds.py on real 2-iteration runs of zs_shapes_tiny (the seed must reach each run)."""
import json
import logging
import os
import shutil

import numpy as np
import pytest
import yaml
from pycocotools import mask as mask_util

from detectron2.data import MetadataCatalog

from conftest import BASELINE_CONFIG, REPO_ROOT, TINY_MASK_FORMER_OPTS, TINY_OPTS, import_tool



# ---------------------------------------------------------------------------------------------
# summarize_runs: two known runs
# ---------------------------------------------------------------------------------------------
GZSI, ZSI = "zsi_d2_test_tools_val", "zsi_d2_test_tools_val_zsi"
SEEN, UNSEEN = ("red square", "blue star"), ("red circle",)
CATEGORY_IDS = {"red square": 1, "blue star": 2, "red circle": 7}  # not contiguous, on purpose
HEADER = ("| run | seeds | GZSI AP50 seen | unseen | HM | GZSI R@100 seen | unseen | HM | ZSI AP50 unseen | "
          "ZSI R@100 unseen | train min |")

# segm results of the two runs (bbox: each value + 1).
RUN_RESULTS = [
    {"gzsi": {"AP50/seen": 40.0, "AP50/unseen": 10.0, "AP50/hm": 16.0,
              "Recall@100/seen": 60.0, "Recall@100/unseen": 30.0, "Recall@100/hm": 40.0},
     "zsi": {"AP50/unseen": 20.0, "Recall@100/unseen": 50.0}},
    {"gzsi": {"AP50/seen": 44.0, "AP50/unseen": 11.0, "AP50/hm": 18.0,
              "Recall@100/seen": 66.0, "Recall@100/unseen": 30.0, "Recall@100/hm": 50.0},
     "zsi": {"AP50/unseen": 23.0, "Recall@100/unseen": 58.0}},
]
RUN_LOGS = [
    "[11/30 10:00:00] d2.engine.hooks INFO: Overall training speed: 98 iterations in 0:12:30 (7.6531 s / it)\n",
    "[11/30 11:00:00] d2.engine.hooks INFO: Overall training speed: 98 iterations in 0:13:54 (8.5102 s / it)\n",
]
# By hand: mean, sample std (|a - b| / sqrt 2 for two runs); minutes (12.5 + 13.9) / 2.
SEGM_CELLS = ["42.0 ± 2.8", "10.5 ± 0.7", "17.0 ± 1.4", "63.0 ± 4.2", "30.0 ± 0.0", "45.0 ± 7.1",
              "21.5 ± 2.1", "54.0 ± 5.7"]
BBOX_CELLS = ["43.0 ± 2.8", "11.5 ± 0.7", "18.0 ± 1.4", "64.0 ± 4.2", "31.0 ± 0.0", "46.0 ± 7.1",
              "22.5 ± 2.1", "55.0 ± 5.7"]
MINUTES = "13.2"

# Ground truth for --confusion: image 1 (20 x 40) holds four unseen objects side by side, U1..U4
# (x 0-10, 10-20, 20-30, 30-40); image 2 (20 x 20) one seen object (x 0-10).
H, W = 20, 40
U = [(0, 10), (10, 20), (20, 30), (30, 40)]


def _rle(x0, x1, width=W):
    mask = np.zeros((H, width), np.uint8, order="F")
    mask[:, x0:x1] = 1
    rle = mask_util.encode(mask)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _det(image_id, name, x0, x1, score, width=W):
    return {"image_id": image_id, "category_id": CATEGORY_IDS[name], "segmentation": _rle(x0, x1, width),
            "bbox": [x0, 0, x1 - x0, H], "score": score}


# Run 0: U1's best overlapping detection is seen (0.9 > 0.5), U2 right, U3 missed, U4 seen: 2 of 4.
# Run 1: U2 seen, the rest right; a higher-scoring seen detection over U3/U4 overlaps each at
# IoU 1/3 < 0.5 and must not count: 1 of 4. Image 2's seen object is not counted either way.
RUN_DETECTIONS = [
    [_det(1, "red square", *U[0], 0.9), _det(1, "red circle", *U[0], 0.5), _det(1, "red circle", *U[1], 0.8),
     _det(1, "blue star", *U[3], 0.7), _det(2, "red circle", 0, 10, 0.9, width=20)],
    [_det(1, "red circle", *U[0], 0.9), _det(1, "red square", *U[1], 0.6), _det(1, "red square", 25, 35, 0.95),
     _det(1, "red circle", *U[2], 0.5), _det(1, "red circle", *U[3], 0.4)],
]
CONFUSION_CELL = "37.5 ± 17.7"  # 50 % and 25 %


@pytest.fixture(scope="module")
def test_sets(tmp_path_factory):
    """The GT json of the runs' GZSI test set, registered the way zsi_d2 datasets are."""
    gt = tmp_path_factory.mktemp("tools_gt") / "instances.json"
    anns = [(1, "red circle", x0, x1, W) for x0, x1 in U] + [(2, "red square", 0, 10, 20)]
    gt.write_text(json.dumps({
        "images": [{"id": 1, "height": H, "width": W, "file_name": "1.png"},
                   {"id": 2, "height": H, "width": 20, "file_name": "2.png"}],
        "annotations": [{"id": i + 1, "image_id": im, "category_id": CATEGORY_IDS[n], "iscrowd": 0,
                         "segmentation": _rle(x0, x1, w), "bbox": [x0, 0, x1 - x0, H], "area": (x1 - x0) * H}
                        for i, (im, n, x0, x1, w) in enumerate(anns)],
        "categories": [{"id": i, "name": n} for n, i in CATEGORY_IDS.items()],
    }))
    for name, mode in ((GZSI, "gzsi"), (ZSI, "zsi")):
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)
        MetadataCatalog.get(name).set(json_file=str(gt), seen_classes=SEEN, unseen_classes=UNSEEN,
                                      zero_shot_mode=mode, thing_classes=list(CATEGORY_IDS))
    yield str(gt)
    for name in (GZSI, ZSI):
        MetadataCatalog.remove(name)


def _write_run(folder, results, log=None, detections=None):
    folder.mkdir(parents=True)
    data = {}
    for mode, name in (("gzsi", GZSI), ("zsi", ZSI)):
        if mode in results:
            segm = {**results[mode], f"AP50/{UNSEEN[0]}": 0.0}  # per-class keys too, as train_net writes
            data[name] = {"segm": segm, "bbox": {k: None if v is None else v + 1.0 for k, v in segm.items()}}
    (folder / "zero_shot_results.json").write_text(json.dumps(data))
    if log is not None:
        (folder / "log.txt").write_text("[11/30 09:00:00] d2.engine.defaults INFO: Starting training\n" + log)
    if detections is not None:
        (folder / "inference" / GZSI).mkdir(parents=True)
        (folder / "inference" / GZSI / "coco_instances_results.json").write_text(json.dumps(detections))
    return folder


@pytest.fixture
def two_runs(tmp_path, test_sets):
    for seed, (res, log, dets) in enumerate(zip(RUN_RESULTS, RUN_LOGS, RUN_DETECTIONS)):
        _write_run(tmp_path / f"zsi_s{seed}", res, log, dets)
    return tmp_path


def _table(capsys, *argv):
    assert import_tool("summarize_runs").main(list(argv)) == 0
    lines = capsys.readouterr().out.splitlines()
    return lines[0], {row.split("|")[1].strip(): [c.strip() for c in row.split("|")[2:-1]] for row in lines[2:]}


def test_summarize_runs_cells_are_mean_and_sample_std(two_runs, capsys):
    header, rows = _table(capsys, f"zsi={two_runs}/zsi_s*")
    assert header == HEADER
    assert rows == {"zsi": ["2", *SEGM_CELLS, MINUTES]}
    _, rows = _table(capsys, f"zsi={two_runs}/zsi_s*", "--task", "bbox")
    assert rows == {"zsi": ["2", *BBOX_CELLS, MINUTES]}


def test_summarize_runs_one_run_and_two_groups(two_runs, capsys):
    _, rows = _table(capsys, f"first={two_runs}/zsi_s0", f"second={two_runs}/zsi_s1")
    assert rows == {"first": ["1", "40.0", "10.0", "16.0", "60.0", "30.0", "40.0", "20.0", "50.0", "12.5"],
                    "second": ["1", "44.0", "11.0", "18.0", "66.0", "30.0", "50.0", "23.0", "58.0", "13.9"]}


def test_summarize_runs_confusion_cell(two_runs, capsys):
    header, rows = _table(capsys, f"zsi={two_runs}/zsi_s*", "--confusion")
    assert header == HEADER.replace(" train min |", " unseen labelled seen % | train min |")
    assert rows == {"zsi": ["2", *SEGM_CELLS, CONFUSION_CELL, MINUTES]}
    _, rows = _table(capsys, f"zsi={two_runs}/zsi_s*", "--confusion", "--task", "bbox")  # boxes = the masks here
    assert rows == {"zsi": ["2", *BBOX_CELLS, CONFUSION_CELL, MINUTES]}


def test_summarize_runs_names_the_gaps(two_runs, capsys, caplog):
    """A third run without a ZSI test set nor a timed log: those cells average the other two."""
    _write_run(two_runs / "zsi_s2", {"gzsi": {**RUN_RESULTS[0]["gzsi"], "AP50/seen": 42.0, "AP50/hm": None}})
    with caplog.at_level(logging.WARNING):
        _, rows = _table(capsys, f"zsi={two_runs}/zsi_s*")
    # By hand over three runs, e.g. AP50/seen 40, 44, 42: mean 42, sample std sqrt((4 + 4 + 0) / 2) = 2;
    # AP50/unseen 10, 11, 10: 10.33, sqrt((1/9 + 4/9 + 1/9) / 2) = 0.58; R@100/hm 40, 50, 40: 43.33,
    # sqrt((100/9 + 400/9 + 100/9) / 2) = 5.77. AP50/hm, ZSI and minutes: runs 0 and 1 only.
    assert rows["zsi"] == ["3", "42.0 ± 2.0", "10.3 ± 0.6", "17.0 ± 1.4 (n=2)", "62.0 ± 3.5", "30.0 ± 0.0",
                           "43.3 ± 5.8", "21.5 ± 2.1 (n=2)", "54.0 ± 5.7 (n=2)", f"{MINUTES} (n=2)"]
    messages = "\n".join(r.getMessage() for r in caplog.records)
    s2 = str(two_runs / "zsi_s2")
    assert f"{s2}: no ZSI test set" in messages and f"{s2}: GZSI segm 'AP50/hm' is missing or null" in messages
    assert f"{s2}: no 'Overall training speed' line in log.txt" in messages
    _, rows = _table(capsys, f"one={s2}")
    assert rows["one"][-3:] == ["n/a", "n/a", "n/a"]


def test_train_minutes_reads_detectron2s_line(tmp_path):
    train_minutes = import_tool("summarize_runs").train_minutes
    assert train_minutes(tmp_path) is None  # no log.txt
    for line, minutes in (("in 0:00:45 (0.4500 s / it)", 0.75), ("in 2:03:30 (1 s / it)", 123.5),
                          ("in 1 day, 2:03:30 (9 s / it)", 1563.5), ("in 3 days, 0:00:00 (9 s / it)", 4320.0)):
        (tmp_path / "log.txt").write_text(f"d2.engine.hooks INFO: Overall training speed: 100 iterations {line}\n")
        assert train_minutes(tmp_path) == pytest.approx(minutes), line
    (tmp_path / "log.txt").write_text("d2.engine.hooks INFO: Total training time: 0:00:00 (0:00:00 on hooks)\n")
    assert train_minutes(tmp_path) is None  # too short for detectron2 to time


def test_summarize_runs_bad_input_is_one_line(two_runs, capsys):
    main = import_tool("summarize_runs").main
    cases = [
        ([str(two_runs / "zsi_s*")], "is not LABEL=GLOB"),
        ([f"x={two_runs}/nothing_s*"], "No finished runs match"),
    ]
    bad = two_runs / "bad_s0"
    bad.mkdir()
    (bad / "zero_shot_results.json").write_text("{not json")
    cases.append(([f"x={bad}"], f"{bad}/zero_shot_results.json is not valid json"))
    twice = two_runs / "twice_s0"
    twice.mkdir()
    (twice / "zero_shot_results.json").write_text(json.dumps({"a_val": {"segm": {}}, "b_val": {"segm": {}}}))
    cases.append(([f"x={twice}"], "holds two GZSI test sets (a_val, b_val)"))
    segm_only = _write_run(two_runs / "segm_only_s0", {"zsi": RUN_RESULTS[0]["zsi"]})
    data = json.loads((segm_only / "zero_shot_results.json").read_text())
    (segm_only / "zero_shot_results.json").write_text(json.dumps({ZSI: {"segm": data[ZSI]["segm"]}}))
    cases.append(([f"x={segm_only}", "--task", "bbox"], f"test set {ZSI} has no 'bbox' results (it has ['segm'])"))
    cases.append(([f"x={segm_only}", "--confusion"], "has no GZSI test set: --confusion reads its detections"))
    no_dets = _write_run(two_runs / "no_dets_s0", RUN_RESULTS[0])
    cases.append(([f"x={no_dets}", "--confusion"], f"saved detections of {GZSI} (written by the GZSI evaluation) "
                                                   f"not found: {no_dets}/inference/{GZSI}/coco_instances_results.json"))
    for argv, message in cases:
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert str(info.value).startswith("summarize_runs: ") and message in str(info.value), argv
        assert "\n" not in str(info.value)
    capsys.readouterr()


def test_summarize_runs_confusion_needs_a_registered_test_set(two_runs, tmp_path):
    run = tmp_path / "elsewhere_s0"
    shutil.copytree(two_runs / "zsi_s0", run)
    data = json.loads((run / "zero_shot_results.json").read_text())
    (run / "zero_shot_results.json").write_text(json.dumps({"not_registered_val": data[GZSI]}))
    with pytest.raises(SystemExit, match="test set 'not_registered_val' is not a registered zero-shot dataset"):
        import_tool("summarize_runs").main([f"x={run}", "--confusion"])


# ---------------------------------------------------------------------------------------------
# run_seeds: real tiny runs
# ---------------------------------------------------------------------------------------------
CONFIG = BASELINE_CONFIG
TINY = TINY_OPTS
SEEDS = (3, 4)


def test_run_seeds_passes_each_seed_to_its_run_and_resumes(tmp_path, capfd):
    from zsi_d2.data.zs_shapes import ensure_generated

    ensure_generated("tiny")  # once, before the two runs start in parallel
    run_seeds = import_tool("run_seeds")
    args = [CONFIG, "--seeds", *map(str, SEEDS), "--parallel", "2", "--root", str(tmp_path),
            "--opts", *TINY, "SOLVER.MAX_ITER", "2"]
    assert run_seeds.main(args) == 0
    out = capfd.readouterr().out
    stamps = {}
    for seed in SEEDS:
        folder = tmp_path / f"projection_mask_rcnn_s{seed}"
        assert f"projection_mask_rcnn_s{seed}: ok" in out
        cfg = yaml.safe_load((folder / "config.yaml").read_text())  # detectron2's dump of the run's config
        assert cfg["SEED"] == seed
        assert cfg["OUTPUT_DIR"] == str(folder) and cfg["SOLVER"]["MAX_ITER"] == 2
        assert cfg["DATASETS"]["TRAIN"] == ["zs_shapes_tiny_train"]
        stamps[seed] = os.stat(folder / "zero_shot_results.json").st_mtime_ns
    assert "| projection_mask_rcnn | 2 |" in out  # the summary table of both runs

    assert run_seeds.main(args) == 0
    out = capfd.readouterr().out
    for seed in SEEDS:
        assert f"projection_mask_rcnn_s{seed}: done before" in out
        assert os.stat(tmp_path / f"projection_mask_rcnn_s{seed}" / "zero_shot_results.json").st_mtime_ns == stamps[seed]


def test_run_seeds_refuses_configs_that_would_share_run_folders(tmp_path, monkeypatch):
    run_seeds = import_tool("run_seeds")

    def started(*args):
        raise AssertionError(f"a run was started: {args}")

    monkeypatch.setattr(run_seeds, "run_one", started)
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(CONFIG, tmp_path / sub / "same.yaml")
    with pytest.raises(SystemExit, match="share a file name"):
        run_seeds.main([str(tmp_path / "a" / "same.yaml"), str(tmp_path / "b" / "same.yaml"), "--root", str(tmp_path)])
    with pytest.raises(SystemExit, match="config file.* not found.*nope.yaml"):
        run_seeds.main([str(tmp_path / "nope.yaml"), "--root", str(tmp_path)])


def test_benchmark_step_times_vanilla_and_zsi_on_the_same_batches(monkeypatch):
    """vanilla = detectron2's own Mask R-CNN on the first config's backbone/data; every model gets
    the same batches; ratios are per iteration against the first entry."""
    bench = import_tool("benchmark_step")
    from detectron2.modeling import build_model
    from detectron2.modeling.meta_arch import GeneralizedRCNN
    from detectron2.modeling.roi_heads import StandardROIHeads

    opts = [*TINY_OPTS, "MODEL.EFFICIENTNET.WEIGHTS", ""]
    zsi = os.path.join(REPO_ROOT, "configs/zsi/zs_shapes/zsi_mask_rcnn.yaml")
    entries, base = bench.parse_entries(["vanilla", f"zsi={zsi}"], opts)
    (label, vanilla, _), (zsi_label, zsi_cfg, _) = entries
    assert (label, zsi_label) == ("vanilla", "zsi")
    model = build_model(vanilla)
    assert type(model) is GeneralizedRCNN and type(model.roi_heads) is StandardROIHeads
    assert vanilla.MODEL.ROI_HEADS.NUM_CLASSES == len(MetadataCatalog.get("zs_shapes_tiny_train").thing_classes)
    assert vanilla.MODEL.BACKBONE.NAME == zsi_cfg.MODEL.BACKBONE.NAME and vanilla.DATASETS.TRAIN == zsi_cfg.DATASETS.TRAIN
    assert vanilla.SOLVER.IMS_PER_BATCH == zsi_cfg.SOLVER.IMS_PER_BATCH
    seen = {}
    real_step = bench.step

    def recording_step(model, train_step, batch):
        seen.setdefault(type(model).__name__, []).append(id(batch))
        return real_step(model, train_step, batch)

    monkeypatch.setattr(bench, "step", recording_step)
    rows = bench.benchmark(entries, base, iters=2, warmup=1)
    assert seen["GeneralizedRCNN"] == seen["ZSIRCNN"] and len(seen["ZSIRCNN"]) == 3
    assert [r["model"] for r in rows] == ["vanilla", "zsi"] and rows[0]["ratio_to_first"] == 1.0
    assert all(r["median_s"] > 0 for r in rows)
    assert "x first" in bench.format_rows(rows, 1, 2)


def test_benchmark_step_steps_a_project_model_with_its_trainer(monkeypatch):
    """A config under projects/ is built with the project's keys and stepped by its Trainer: CaGNet
    beside the SPNet-style projection, each of its three sides (segmenter, discriminator, generator)
    moves in one timed step."""
    import torch

    from conftest import PIXEL_TINY_OPTS

    bench = import_tool("benchmark_step")
    spnet = os.path.join(REPO_ROOT, "configs/semantic/zs_shapes/spnet.yaml")
    cagnet = os.path.join(REPO_ROOT, "projects/CaGNet/configs/zs_shapes/cagnet_train.yaml")
    entries, base = bench.parse_entries([f"spnet={spnet}", f"cagnet={cagnet}"],
                                        [*PIXEL_TINY_OPTS, "MODEL.WEIGHTS", ""])
    assert entries[1][1].MODEL.CAGNET.PHASE == "train" and "CAGNET" not in entries[0][1].MODEL
    built = {}
    real_build = bench.build_trainable

    def recording_build(cfg, seed, path=bench.VANILLA):
        model, train_step = real_build(cfg, seed, path)
        built[type(model).__name__] = (model, {k: v.clone() for k, v in model.state_dict().items()})
        return model, train_step

    monkeypatch.setattr(bench, "build_trainable", recording_build)
    rows = bench.benchmark(entries, base, iters=2, warmup=0)
    assert [r["model"] for r in rows] == ["spnet", "cagnet"] and all(r["median_s"] > 0 for r in rows)
    model, before = built["CaGNet"]
    moved = {k.split(".")[0] for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])}
    assert {"backbone", "contextual", "classifier", "real_fake", "generator"} <= moved, moved


def test_benchmark_step_feeds_mask_formers_their_mapper():
    """Mask-classification entries (the core beside ZegFormer) train on the first config's
    INPUT.DATASET_MAPPER_NAME batches, as train_net.py builds them (detectron2's default mapper
    gives no 'instances' they can read)."""
    bench = import_tool("benchmark_step")
    core = os.path.join(REPO_ROOT, "configs/mask_former/zs_shapes/mask_former_embedding.yaml")
    zegformer = os.path.join(REPO_ROOT, "configs/zegformer/zs_shapes/zegformer.yaml")
    entries, base = bench.parse_entries([f"core={core}", f"zegformer={zegformer}"], TINY_MASK_FORMER_OPTS)
    rows = bench.benchmark(entries, base, iters=2, warmup=0)
    assert [r["model"] for r in rows] == ["core", "zegformer"] and all(r["median_s"] > 0 for r in rows)
