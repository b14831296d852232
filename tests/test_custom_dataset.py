"""The "Your own dataset" recipe of docs/GETTING_STARTED.md (the README shows its first part), run
as written, on a small COCO-format dataset made from zs_shapes tiny; make_zero_shot on detectron2's
instance, panoptic and semantic registrations; the audit CLI and the leak refusal for such datasets;
one clear line for each bad name."""
import json
import os
import re
import shlex
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances, register_coco_panoptic
from detectron2.evaluation import DatasetEvaluators

from conftest import REPO_ROOT
from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.data import (
    DatasetSetupError, get_split, import_register_modules, make_zero_shot, segment_class_name,
)
from zsi_d2.data import audit
from zsi_d2.data.metadata import read_json_categories
from zsi_d2.errors import LeakageError
from zsi_d2.data.zs_shapes.generate import annotation_paths, ensure_generated
from zsi_d2.evaluation import build_zero_shot_evaluator
from zsi_d2.evaluation.instance import ZeroShotInstanceEvaluator
from zsi_d2.evaluation.panoptic import ZeroShotPanopticEvaluator
from zsi_d2.evaluation.semantic import ZeroShotSemanticEvaluator

RECIPE_PAGE, SECTION = "docs/GETTING_STARTED.md", "## Your own dataset"
# Test data only: zs_shapes classes standing in for the README's example classes, with dataset ids
# that are not contiguous and put stuff between things (as COCO's do).
STAND_INS = {"red square": "cat", "blue circle": "dog", "red circle": "fox",
             "light checkered ground": "grass", "dark dotted ground": "sand"}
IDS = {"cat": 1, "grass": 2, "dog": 5, "sand": 7, "fox": 9}
THINGS = ("cat", "dog", "fox")
NUM_TRAIN, NUM_VAL = 4, 4
# Appended to the README's train command: a CPU smoke run (the README says any key can follow).
QUICK = ["SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.STEPS", "()",
         "MODEL.ZERO_SHOT.EMBEDDING.SOURCE", "attributes"]


# ---------------------------------------------------------------------------------------------
# The README section, parsed.
# ---------------------------------------------------------------------------------------------
def readme_blocks(page=RECIPE_PAGE):
    """[(language, code)] of the fenced blocks of a page's "Your own dataset" section."""
    with open(os.path.join(REPO_ROOT, page)) as f:
        lines = f.read().splitlines()
    start = lines.index(SECTION)
    blocks, fence, body = [], None, []
    for line in lines[start + 1:]:
        if fence is None and re.match(r"#{1,2} ", line):
            break  # the next section
        if line.startswith("```"):
            if fence is None:
                fence, body = line[3:].strip(), []
            else:
                blocks.append((fence, "\n".join(body) + "\n"))
                fence = None
        elif fence is not None:
            body.append(line)
    return blocks


def readme_module():
    """my_datasets.py as the README writes it: its first python block, then the blocks it says to add."""
    python = [code for lang, code in readme_blocks() if lang == "python"]
    assert python and python[0].startswith("# my_datasets.py\n"), "the README names the file it writes"
    return "\n".join(python)


def test_readme_recipe_is_the_first_part_of_the_full_one():
    """The README's short recipe is the tested one's first file block and first command, verbatim."""
    short, full = readme_blocks("README.md"), readme_blocks()
    assert [lang for lang, _ in short] == ["python", "bash"]
    assert short[0] == next(b for b in full if b[0] == "python")
    full_bash = next(code for lang, code in full if lang == "bash")
    assert full_bash.startswith(short[1][1]) and short[1][1].count(".venv/bin/python") == 1


def readme_commands():
    """The shell commands of the README's bash block (backslash continuations joined)."""
    bash = [code for lang, code in readme_blocks() if lang == "bash"]
    assert len(bash) == 1
    return [shlex.split(c) for c in bash[0].replace("\\\n", " ").splitlines() if c.strip()]


# ---------------------------------------------------------------------------------------------
# A COCO-format dataset from zs_shapes tiny, laid out as the README says.
# ---------------------------------------------------------------------------------------------
def _load(path):
    with open(path) as f:
        return json.load(f)


def _dump(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


def _categories(names):
    """In decreasing id order: detectron2 sorts a custom json's categories by id, and so must we."""
    return [{"id": IDS[n], "name": n, "isthing": int(n in THINGS)} for n in sorted(names, key=IDS.get, reverse=True)]


def _new_id(zs_categories):
    """zs_shapes category id -> the stand-in's dataset id (None: not kept)."""
    return {c["id"]: IDS[STAND_INS[c["name"]]] for c in zs_categories if c["name"] in STAND_INS}


def _copy_images(src_root, dst_root, images):
    os.makedirs(dst_root, exist_ok=True)
    for im in images:
        png = cv2.imread(os.path.join(src_root, im["file_name"]))
        cv2.imwrite(os.path.join(dst_root, im["file_name"].replace(".png", ".jpg")), png)
    return [dict(im, file_name=im["file_name"].replace(".png", ".jpg")) for im in images]


def _instances(zs, images):
    new_id = _new_id(zs["categories"])
    keep = {im["id"] for im in images}
    anns = [dict(a, category_id=new_id[a["category_id"]]) for a in zs["annotations"]
            if a["image_id"] in keep and a["category_id"] in new_id]
    return {"images": images, "annotations": anns, "categories": _categories(THINGS)}


def _write_panoptic(zs_pan, images, src_root, dst_root):
    """Stand-in segments only; the others become VOID (0) in the PNGs."""
    new_id = _new_id(zs_pan["categories"])
    os.makedirs(dst_root, exist_ok=True)
    keep = {im["id"] for im in images}
    annotations = []
    for rec in zs_pan["annotations"]:
        if rec["image_id"] not in keep:
            continue
        rgb = np.asarray(Image.open(os.path.join(src_root, rec["file_name"]))).astype(np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]
        segments = [dict(s, category_id=new_id[s["category_id"]]) for s in rec["segments_info"]
                    if s["category_id"] in new_id]
        ids[~np.isin(ids, [s["id"] for s in segments])] = 0
        out = np.stack([ids % 256, ids // 256 % 256, ids // 256 ** 2], axis=-1).astype(np.uint8)
        Image.fromarray(out).save(os.path.join(dst_root, rec["file_name"]))
        annotations.append(dict(rec, segments_info=segments))
    return {"images": images, "annotations": annotations, "categories": _categories(IDS)}


def _write_semantic(zs_sem_root, images, dst_root, stuff_classes):
    """zs_shapes labels (indices into the zs_shapes split) -> indices into `stuff_classes`, else 255."""
    zs_classes = get_split("zs_shapes").classes
    lut = np.full(256, 255, dtype=np.uint8)
    for zs_name, name in STAND_INS.items():
        lut[zs_classes.index(zs_name)] = stuff_classes.index(name)
    os.makedirs(dst_root, exist_ok=True)
    for im in images:
        png = im["file_name"].replace(".jpg", ".png")
        labels = np.asarray(Image.open(os.path.join(zs_sem_root, png)))
        Image.fromarray(lut[labels]).save(os.path.join(dst_root, png))


def _images_holding(zs, wanted, n):
    """`n` images among those holding an instance of a class in `wanted` (zs_shapes names), with
    each of those classes in at least one of them."""
    ids = {c["name"]: c["id"] for c in zs["categories"]}
    holding = {name: [a["image_id"] for a in zs["annotations"] if a["category_id"] == ids[name]] for name in wanted}
    picked = list(dict.fromkeys(image_ids[0] for image_ids in holding.values()))
    others = [i for i in sorted({i for v in holding.values() for i in v}) if i not in picked]
    picked += others[: max(0, n - len(picked))]
    return [im for im in zs["images"] if im["id"] in picked]


def build_my_data(root):
    """root/my_data as the README's layout: instances train/val, panoptic val, images as .jpg."""
    base = ensure_generated("tiny")
    train_src, val_src = annotation_paths(base, "train"), annotation_paths(base, "val")
    zs_train, zs_val = _load(train_src["json_file"]), _load(val_src["json_file"])
    zs_name = {v: k for k, v in STAND_INS.items()}
    train_images = _copy_images(
        train_src["image_root"], f"{root}/train", _images_holding(zs_train, [zs_name["cat"], zs_name["dog"]], NUM_TRAIN)
    )
    val_images = _copy_images(
        val_src["image_root"], f"{root}/val", _images_holding(zs_val, [zs_name[n] for n in THINGS], NUM_VAL)
    )
    _dump(f"{root}/annotations/instances_train.json", _instances(zs_train, train_images))
    val = _instances(zs_val, val_images)
    assert {a["category_id"] for a in val["annotations"]} == {IDS[n] for n in THINGS}, "val holds every thing"
    _dump(f"{root}/annotations/instances_val.json", val)
    pan = _write_panoptic(_load(val_src["panoptic_json"]), val_images, val_src["panoptic_root"], f"{root}/panoptic_val")
    _dump(f"{root}/annotations/panoptic_val.json", pan)
    return val_src["sem_seg_root"], val_images


def _unregister(names):
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A folder laid out as the README says: train_net.py, configs, .venv/bin/python, my_datasets.py
    (the README's code) and $DETECTRON2_DATASETS/my_data; the module imported in this process too."""
    folder = tmp_path_factory.mktemp("my_project")
    for name in ("train_net.py", "configs"):
        os.symlink(os.path.join(REPO_ROOT, name), folder / name)
    python = folder / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    python.chmod(0o755)
    (folder / "my_datasets.py").write_text(readme_module())
    data = os.path.join(os.environ["DETECTRON2_DATASETS"], "my_data")  # the README's ROOT
    sem_src, val_images = build_my_data(data)

    before = set(DatasetCatalog.list())
    import_register_modules([str(folder / "my_datasets.py")])
    added = sorted(set(DatasetCatalog.list()) - before)
    _write_semantic(sem_src, val_images, f"{data}/sem_seg_val", list(MetadataCatalog.get("my_sem_val").stuff_classes))
    yield folder, data
    _unregister(added)


def _run(argv, cwd, timeout=300):
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))


# ---------------------------------------------------------------------------------------------
# The recipe, end to end.
# ---------------------------------------------------------------------------------------------
def test_readme_recipe_trains_evaluates_and_audits(project):
    folder, _ = project
    train, audit_cmd = readme_commands()
    assert train[:2] == [".venv/bin/python", "train_net.py"] and "DATASETS.REGISTER_MODULES" in train
    proc = _run([*train, *QUICK], folder)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert f"my_train: {NUM_TRAIN} images, no unseen label: OK" in log
    out = folder / train[train.index("OUTPUT_DIR") + 1]
    results = json.loads((out / "zero_shot_results.json").read_text())
    for iou_type in ("bbox", "segm"):
        assert {"AP50/seen", "AP50/unseen", "AP50/hm"} <= set(results["my_val"][iou_type])

    proc = _run(audit_cmd, folder)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"my_train: {NUM_TRAIN} images, no unseen label: OK" in proc.stdout


def test_coco_instances_get_classes_from_the_json(project):
    meta = MetadataCatalog.get("my_train")
    split = get_split("my_split")
    assert meta.thing_classes == list(THINGS)  # json categories in id order, as load_coco_json sets them
    assert meta.thing_dataset_id_to_contiguous_id == {IDS[n]: i for i, n in enumerate(THINGS)}
    assert (meta.evaluator_type, meta.detectron2_evaluator_type) == ("zero_shot", "coco")
    assert (meta.zero_shot_mode, meta.zero_shot_tasks) == ("train", ("instance",))
    assert (meta.seen_classes, meta.unseen_classes) == (split.seen, split.unseen)
    dicts = DatasetCatalog.get("my_train")  # detectron2 sets the same fields again: must be equal
    labels = {meta.thing_classes[a["category_id"]] for d in dicts for a in d["annotations"]}
    assert labels == {"cat", "dog"}
    assert MetadataCatalog.get("my_val").zero_shot_mode == "gzsi"


def test_panoptic_registration_follows_detectron2_standard_convention(project):
    meta = MetadataCatalog.get("my_pan_val")
    by_id = sorted(IDS, key=IDS.get)
    assert meta.stuff_classes == by_id and meta.thing_classes == by_id
    assert meta.thing_dataset_id_to_contiguous_id == {IDS[n]: by_id.index(n) for n in THINGS}
    assert (meta.evaluator_type, meta.detectron2_evaluator_type) == ("zero_shot", "coco_panoptic_seg")
    assert (meta.zero_shot_mode, meta.zero_shot_tasks) == ("gzsi", ("instance", "panoptic"))
    cfg = get_zsi_d2_cfg()
    cfg.TEST.ZERO_SHOT_TASKS = ["instance", "panoptic", "semantic"]
    evaluator = build_zero_shot_evaluator(cfg, "my_pan_val")
    assert isinstance(evaluator, DatasetEvaluators)
    assert [type(e) for e in evaluator._evaluators] == [ZeroShotInstanceEvaluator, ZeroShotPanopticEvaluator]
    # Every segment is named as its category in the panoptic json, and the audit sees the unseen ones.
    names_by_id = {c["id"]: c["name"] for c in _load(meta.panoptic_json)["categories"]}
    json_segments = {(a["image_id"], s["id"]): names_by_id[s["category_id"]]
                     for a in _load(meta.panoptic_json)["annotations"] for s in a["segments_info"]}
    dicts = DatasetCatalog.get("my_pan_val")
    assert {(d["image_id"], s["id"]): segment_class_name(meta, s) for d in dicts for s in d["segments_info"]} \
        == json_segments
    report = audit.audit_dataset("my_pan_val")
    assert {(leak.kind, leak.class_name) for leak in report.leaks} == {("segment", "fox"), ("segment", "sand")}


def test_semantic_folder_registration(project):
    meta = MetadataCatalog.get("my_sem_val")
    assert (meta.evaluator_type, meta.detectron2_evaluator_type) == ("zero_shot", "sem_seg")
    assert (meta.zero_shot_mode, meta.zero_shot_tasks) == ("zsi", ("semantic",))
    assert meta.unseen_classes == get_split("my_split").unseen
    cfg = get_zsi_d2_cfg()
    cfg.TEST.ZERO_SHOT_TASKS = ["instance", "semantic"]
    evaluator = build_zero_shot_evaluator(cfg, "my_sem_val")
    assert isinstance(evaluator, ZeroShotSemanticEvaluator) and evaluator._mode == "zsi"
    assert [meta.stuff_classes[i] for i in evaluator._unseen_index] == ["fox", "sand"]
    report = audit.audit_dataset("my_sem_val")  # an evaluation set: its unseen pixels are found
    assert {(leak.kind, leak.class_name) for leak in report.leaks} == {("pixels", "fox"), ("pixels", "sand")}


def test_segment_names_follow_the_standard_convention():
    """detectron2's standard panoptic convention: a segment's category_id indexes stuff_classes (all
    classes), whatever thing_classes holds (zs_shapes' and COCO's segments: tests/test_panoptic_convention.py)."""
    standard = MetadataCatalog.get("__standard_convention")
    standard.set(thing_classes=["cat", "fox"], stuff_classes=["cat", "grass", "fox"],
                 thing_dataset_id_to_contiguous_id={1: 0, 9: 2}, stuff_dataset_id_to_contiguous_id={2: 1})
    try:
        assert segment_class_name(standard, {"category_id": 2, "isthing": True}) == "fox"
        assert segment_class_name(standard, {"category_id": 1, "isthing": False}) == "grass"
    finally:
        MetadataCatalog.remove("__standard_convention")


# ---------------------------------------------------------------------------------------------
# A leaking custom training set.
# ---------------------------------------------------------------------------------------------
def test_leaking_custom_train_set_is_refused_with_the_audit_command(project):
    """The README's train command on a training json holding one unseen (fox) instance: refused
    with the report and the audit command, which finds the leak when run as printed."""
    folder, data = project
    path = f"{data}/annotations/instances_train.json"
    original = _load(path)
    val = _load(f"{data}/annotations/instances_val.json")
    fox = next(a for a in val["annotations"] if a["category_id"] == IDS["fox"])
    victim = original["images"][0]
    leaky = dict(original, annotations=original["annotations"] + [dict(fox, id=10 ** 6, image_id=victim["id"])])
    train, _ = readme_commands()
    try:
        _dump(path, leaky)
        proc = _run([*train, *QUICK], folder)
        assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
        message = proc.stderr.strip().splitlines()[-1]  # the summary is the last line; the report above it
        assert message.startswith("ERROR: Training set 'my_train' holds 1 unseen-class labels in 1 images; refusing")
        assert f"{victim['file_name']}: instance of unseen class 'fox'" in proc.stderr
        command = message.rsplit("audit it again with: ", 1)[1].strip()
        assert command == "python -m zsi_d2.data.audit my_train --register my_datasets.py"
        proc = _run([".venv/bin/python", *shlex.split(command)[1:]], folder)  # as printed, with the README's python
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert f"my_train: LEAK: 1 unseen labels in 1 of {NUM_TRAIN} images" in proc.stdout
        assert f"{victim['file_name']}: instance of unseen class 'fox'" in proc.stdout
    finally:
        _dump(path, original)
    cfg = get_zsi_d2_cfg()  # in this process too, the module list is part of the command
    cfg.DATASETS.TRAIN = ("my_train",)
    cfg.DATASETS.REGISTER_MODULES = [str(folder / "my_datasets.py"), "my.other_module"]
    try:
        _dump(path, leaky)
        with pytest.raises(LeakageError, match="refusing to train") as err:
            audit.check_training_sets(cfg)
        assert str(err.value).splitlines()[0].endswith(  # the summary line names the command
            f"python -m zsi_d2.data.audit my_train --register {shlex.quote(str(folder / 'my_datasets.py'))} "
            "--register my.other_module"
        )
    finally:
        _dump(path, original)


# ---------------------------------------------------------------------------------------------
# Bad names: one line each.
# ---------------------------------------------------------------------------------------------
def _one_line(err):
    message = str(err.value)
    assert "\n" not in message and not message.startswith(("'", '"')), message
    return message


def test_bad_names_get_one_clear_line(project, tmp_path):
    with pytest.raises(DatasetSetupError) as err:
        make_zero_shot("my_trian", "my_split", "train")
    assert "'my_trian' is not registered" in _one_line(err) and "Close names: my_train" in str(err.value)
    with pytest.raises(DatasetSetupError) as err:
        make_zero_shot("my_val", "my_splt", "gzsi")
    assert "Unknown zero-shot split 'my_splt' (close: 'my_split')" in _one_line(err)
    with pytest.raises(DatasetSetupError) as err:
        make_zero_shot("my_val", "my_split", "test")
    assert "mode must be one of" in _one_line(err)

    bad = _load(os.path.join(project[1], "annotations", "instances_val.json"))
    bad["categories"][2]["name"] = "foxx"
    _dump(str(tmp_path / "bad.json"), bad)
    register_coco_instances("my_bad_classes", {}, str(tmp_path / "bad.json"), str(tmp_path))
    try:
        with pytest.raises(DatasetSetupError) as err:
            make_zero_shot("my_bad_classes", "my_split", "gzsi")
        assert "split 'my_split' does not know: 'foxx' (did you mean 'fox'?)" in _one_line(err)
        assert MetadataCatalog.get("my_bad_classes").evaluator_type == "coco"  # nothing set on failure
        with pytest.raises(DatasetSetupError, match=r"make_zero_shot\('my_bad_classes'"):
            audit.audit_dataset("my_bad_classes")  # registered, but not zero-shot
    finally:
        _unregister(["my_bad_classes"])

    with pytest.raises(DatasetSetupError) as err:
        make_zero_shot("my_val", "my_split", "gzsi", tasks=("instance", "panoptic"))
    assert "'my_val' cannot provide task(s) ['panoptic']: " in _one_line(err)
    register_coco_panoptic("my_pan_no_meta", {}, str(tmp_path), str(tmp_path), str(tmp_path / "pan.json"))
    try:
        with pytest.raises(DatasetSetupError) as err:
            make_zero_shot("my_pan_no_meta", "my_split", "gzsi")
        assert "has no stuff_classes" in _one_line(err) and "coco_panoptic_metadata(panoptic_json)" in str(err.value)
    finally:
        _unregister(["my_pan_no_meta"])


def test_categories_are_read_from_the_end_of_the_json(tmp_path):
    """Without parsing images and annotations (here: not even valid JSON), past the word as a value
    or inside a key, and searching back past a nested "categories" that is no category list; a bad
    file is one line naming it."""
    cats = [{"id": 3, "name": "fox"}, {"id": 1, "name": "cat"}]
    trap = json.dumps([{"id": 9, "name": "trap"}])
    tail = tmp_path / "tail.json"
    tail.write_text('{"images": [NOT JSON], "categories": ' + json.dumps(cats)
                    + ', "info": {"kinds": ["categories", ' + trap + '], "x \\"categories": ' + trap + "}}")
    assert read_json_categories(str(tail)) == cats
    head = tmp_path / "head.json"
    head.write_text(json.dumps({"categories": cats, "annotations": [{"categories": "not a category list"}]}))
    assert read_json_categories(str(head)) == cats
    for content, message in (("", "is empty"), ("[1, 2", "is not a JSON file"), ('{"images": []}', "no COCO 'categories'")):
        bad = tmp_path / "bad.json"
        bad.write_text(content)
        with pytest.raises(ValueError, match=message) as err:
            read_json_categories(str(bad))
        assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_audit_cli_unknown_dataset_names_close_names_and_the_register_fix(project, capsys):
    folder, _ = project
    assert audit.main(["my_trian", "--register", str(folder / "my_datasets.py")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Dataset 'my_trian' is not registered" in err
    assert "Close names: my_train." in err and "--register my_datasets.py" in err
    assert audit.main(["my_train", "--register", str(folder / "no_such_module.py")]) == 2
    assert "no_such_module.py' (DATASETS.REGISTER_MODULES / --register) does not exist" in capsys.readouterr().err
    assert audit.main(["my_train", "--register", "no_such_package.datasets"]) == 2
    assert "'no_such_package.datasets' (DATASETS.REGISTER_MODULES / --register) cannot be imported" \
        in capsys.readouterr().err


def test_audit_cli_reads_register_modules_from_a_config(project, tmp_path, capsys):
    """A module only the config names (not imported before) registers the dataset the audit reads."""
    _, data = project
    module = tmp_path / "cfg_datasets.py"
    module.write_text(
        "from zsi_d2.data import make_zero_shot\n"
        "from detectron2.data.datasets import register_coco_instances\n"
        f"register_coco_instances('my_cfg_train', {{}}, {data + '/annotations/instances_train.json'!r}, {data + '/train'!r})\n"
        "make_zero_shot('my_cfg_train', 'my_split', 'train')\n"
    )
    config = tmp_path / "my_config.yaml"
    config.write_text(f"_BASE_: {os.path.join(REPO_ROOT, 'configs/zs_shapes/projection_mask_rcnn.yaml')}\n"
                      f"DATASETS:\n  REGISTER_MODULES: ['{module}']\n")
    try:
        assert audit.main(["my_cfg_train", "--config-file", str(config)]) == 0
        assert f"my_cfg_train: {NUM_TRAIN} images, no unseen label: OK" in capsys.readouterr().out
    finally:
        _unregister([n for n in ("my_cfg_train",) if n in DatasetCatalog.list()])


# ---------------------------------------------------------------------------------------------
# Registration modules.
# ---------------------------------------------------------------------------------------------
def test_register_modules_same_file_name_in_two_folders_and_a_failed_import(tmp_path):
    calls = tmp_path / "calls.txt"
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "datasets_x.py").write_text(f"open({str(calls)!r}, 'a').write('{folder}')\n")
    paths = [str(tmp_path / f / "datasets_x.py") for f in ("a", "b")]
    import_register_modules(paths)
    import_register_modules(paths)  # a second call imports nothing again
    assert calls.read_text() == "ab"
    failing = tmp_path / "failing.py"
    failing.write_text(f"open({str(calls)!r}, 'a').write('f')\nraise RuntimeError('broken registration')\n")
    for _ in range(2):  # a failed import is not remembered as done
        with pytest.raises(RuntimeError, match="broken registration"):
            import_register_modules([str(failing)])
    assert calls.read_text() == "abff"
