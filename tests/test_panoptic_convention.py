"""One panoptic label space, detectron2's standard convention, on every zsi_d2 panoptic dataset.

A segment's category_id indexes metadata.stuff_classes (all classes) and "is it a thing" is a
lookup in thing_dataset_id_to_contiguous_id.values(). Checked against the panoptic json itself and
with a consumer written to that convention (Mask2Former's panoptic mapper and inference rule, in
this file), never with zsi_d2's own reader.
"""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import zsi_d2  # noqa: F401  (compat layer + registrations)
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluators
from detectron2.structures import BitMasks, Instances

from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.data import make_zero_shot
from zsi_d2.data.coco import prepare_coco_split, register_all_coco_zero_shot
from zsi_d2.data.metadata import DatasetSetupError, check_panoptic_convention
from zsi_d2.data.splits import get_split
from zsi_d2.evaluation import ZeroShotPanopticEvaluator, build_zero_shot_evaluator

import coco_fixtures as fx

ZS_PANOPTIC = [f"zs_shapes_tiny_{s}_panoptic" for s in ("train", "val", "val_zsi", "calib", "val_ov", "val_ov_zsi")]


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    """The COCO panoptic 119/14 fixture, prepared and registered for this module only."""
    base = tmp_path_factory.mktemp("d2_datasets")
    coco_dir = fx.build_coco_root(str(base / "coco"))
    prepare_coco_split("coco_panoptic_119_14", coco_dir, progress=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DETECTRON2_DATASETS", str(base))
        register_all_coco_zero_shot()
        yield str(base)
    register_all_coco_zero_shot()


def _json_names(meta):
    """{(image_id, segment id): (name, isthing)} as the panoptic json itself gives them."""
    with open(meta.panoptic_json) as f:
        pan = json.load(f)
    cats = {c["id"]: c for c in pan["categories"]}
    return {(a["image_id"], s["id"]): (cats[s["category_id"]]["name"], bool(cats[s["category_id"]]["isthing"]))
            for a in pan["annotations"] for s in a["segments_info"]}


def _assert_segments_named_as_in_json(name):
    meta = MetadataCatalog.get(name)
    things = set(meta.thing_dataset_id_to_contiguous_id.values())
    got = {}
    for d in DatasetCatalog.get(name):
        for s in d["segments_info"]:
            assert s["isthing"] == (s["category_id"] in things)
            got[(d["image_id"], s["id"])] = (meta.stuff_classes[s["category_id"]], s["isthing"])
    expected = _json_names(meta)
    assert got and got == expected


@pytest.mark.parametrize("name", ZS_PANOPTIC)
def test_every_zs_shapes_segment_is_named_as_in_the_panoptic_json(name):
    _assert_segments_named_as_in_json(name)


def test_the_old_collision_is_present_in_the_data():
    """Not vacuous: val holds unseen things whose index among the things is a stuff class's index
    among all classes (the numbers the previous convention gave them)."""
    split = get_split("zs_shapes")
    meta = MetadataCatalog.get("zs_shapes_tiny_val_panoptic")
    names = {n for n, isthing in _json_names(meta).values() if isthing}
    collide = [n for n in names if n in split.unseen and split.things.index(n) in
               [split.classes.index(s) for s in split.stuff]]
    assert collide, "no unseen thing of zs_shapes_tiny_val shares its thing index with a stuff class"


def test_every_coco_segment_is_named_as_in_the_panoptic_json(coco_root):
    for name in ("coco_2017_zsp_119_14_train_panoptic", "coco_2017_zsp_119_14_val_panoptic"):
        _assert_segments_named_as_in_json(name)


def test_views_follow_detectron2():
    for name in ZS_PANOPTIC:
        meta = MetadataCatalog.get(name)
        check_panoptic_convention(name, meta)
        assert meta.thing_classes == meta.stuff_classes and meta.label_divisor == 1000
        assert not any("annotations" in d for d in DatasetCatalog.get(name)[:5])
    # The instance views keep what the R-CNN family and detectron2's COCOEvaluator read.
    meta = MetadataCatalog.get("zs_shapes_tiny_val")
    assert sorted(meta.thing_dataset_id_to_contiguous_id.values()) == list(range(len(meta.thing_classes)))
    with open(meta.json_file) as f:
        inst = json.load(f)
    cats = {c["id"]: c["name"] for c in inst["categories"]}
    by_image = {}
    for a in inst["annotations"]:
        by_image.setdefault(a["image_id"], []).append(cats[a["category_id"]])
    for d in DatasetCatalog.get("zs_shapes_tiny_val"):
        assert "segments_info" not in d
        assert sorted(meta.thing_classes[a["category_id"]] for a in d["annotations"]) == sorted(by_image.get(d["image_id"], []))


# ---- A consumer written to the convention: Mask2Former's mapper and inference rule ------------
def _rgb2id(path):
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def _standard_mapper(d):
    """As MaskFormerPanopticDatasetMapper: one target per non-crowd segment, class = category_id;
    no metadata read."""
    pan = _rgb2id(d["pan_seg_file_name"])
    segments = [s for s in d["segments_info"] if not s["iscrowd"]]
    return [s["category_id"] for s in segments], [pan == s["id"] for s in segments]


def _oracle_outputs(classes, masks, meta, shape):
    """The ground truth returned in the model's label space: panoptic as Mask2Former's inference
    emits it (thing = lookup in the thing map's values; one segment per stuff class), sem_seg as
    one-hot scores over stuff_classes, instances for the thing segments."""
    things = set(meta.thing_dataset_id_to_contiguous_id.values())
    panoptic = np.zeros(shape, dtype=np.int32)
    segments, stuff_segment = [], {}
    for c, m in zip(classes, masks):
        if c not in things and c in stuff_segment:
            panoptic[m] = stuff_segment[c]
            continue
        segments.append({"id": len(segments) + 1, "isthing": c in things, "category_id": c})
        panoptic[m] = segments[-1]["id"]
        if c not in things:
            stuff_segment[c] = segments[-1]["id"]
    sem = torch.zeros(len(meta.stuff_classes), *shape)
    for c, m in zip(classes, masks):
        sem[c][torch.from_numpy(m)] = 1.0
    thing_idx = [i for i, c in enumerate(classes) if c in things]
    inst = Instances(shape)
    inst.pred_masks = torch.from_numpy(np.stack([masks[i] for i in thing_idx])) if thing_idx else \
        torch.zeros(0, *shape, dtype=torch.bool)
    inst.pred_boxes = BitMasks(inst.pred_masks).get_bounding_boxes()
    inst.scores = torch.ones(len(thing_idx))
    inst.pred_classes = torch.tensor([classes[i] for i in thing_idx], dtype=torch.long)
    return {"panoptic_seg": (torch.from_numpy(panoptic), segments), "sem_seg": sem, "instances": inst}


@pytest.mark.parametrize("name", [f"zs_shapes_tiny_{s}_panoptic" for s in ("val", "val_zsi", "val_ov", "val_ov_zsi")])
def test_oracle_in_the_models_label_space_scores_100(tmp_path, name):
    cfg = get_zsi_d2_cfg()
    cfg.MODEL.MASK_ON = True
    cfg.TEST.ZERO_SHOT_TASKS = ["panoptic", "semantic", "instance"]
    meta = MetadataCatalog.get(name)
    evaluator = build_zero_shot_evaluator(cfg, name, str(tmp_path))
    assert isinstance(evaluator, DatasetEvaluators) and len(evaluator._evaluators) == 3
    evaluator.reset()
    for d in DatasetCatalog.get(name):
        classes, masks = _standard_mapper(d)
        evaluator.process([d], [_oracle_outputs(classes, masks, meta, (d["height"], d["width"]))])
    res = evaluator.evaluate()
    pan, sem = res["panoptic_seg"], res["sem_seg"]
    inst = res["segm"]
    wanted = ["PQ/unseen", "mIoU/unseen", "AP50/unseen"] if meta.zero_shot_mode == "zsi" else \
        ["PQ/seen", "PQ/unseen", "PQ/hm", "mIoU/seen", "mIoU/unseen", "mIoU/hm", "AP50/seen", "AP50/unseen"]
    values = {k: {**pan, **sem, **inst}[k] for k in wanted}
    assert values == {k: pytest.approx(100.0) for k in wanted}
    for key, value in {**pan, **sem}.items():  # every class that is scored at all is perfect
        if (key.startswith(("PQ", "IoU/", "mIoU")) and isinstance(value, float) and not math.isnan(value)):
            assert value == pytest.approx(100.0), key


# ---- Metadata in another convention is refused ------------------------------------------------
@pytest.mark.parametrize("maps", [
    # zs_shapes before: things indexed among the things, stuff among all classes.
    ({1: 0, 4: 1}, {1: 0, 2: 1, 3: 2, 4: 3}),
    # detectron2's "_separated" PanopticFPN metadata: things 0..N-1, stuff 1.. after a "things" class.
    ({1: 0, 4: 1}, {2: 1, 3: 2}),
])
def test_panoptic_metadata_in_another_convention_is_refused(tmp_path, maps):
    thing_map, stuff_map = maps
    name = "__other_convention"
    for catalog in (DatasetCatalog, MetadataCatalog):
        if name in catalog.list():
            catalog.remove(name)
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(
        stuff_classes=["cat", "grass", "sky", "fox"], panoptic_json=str(tmp_path / "p.json"),
        panoptic_root=str(tmp_path), thing_dataset_id_to_contiguous_id=thing_map,
        stuff_dataset_id_to_contiguous_id=stuff_map,
    )
    try:
        with pytest.raises(DatasetSetupError, match="coco_panoptic_metadata") as err:
            make_zero_shot(name, "zs_shapes", "gzsi")
        assert "\n" not in str(err.value)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_panoptic_evaluator_refuses_a_segment_in_the_things_own_space():
    """A prediction whose isthing contradicts the lookup (a thing given its index among the things)."""
    name = "zs_shapes_tiny_val_panoptic"
    meta = MetadataCatalog.get(name)
    evaluator = ZeroShotPanopticEvaluator(name)
    stuff = next(i for i in range(len(meta.stuff_classes)) if i not in meta.thing_dataset_id_to_contiguous_id.values())
    with pytest.raises(ValueError, match="standard panoptic convention"):
        evaluator._convert_category_id({"id": 1, "category_id": stuff, "isthing": True})
    thing = next(iter(meta.thing_dataset_id_to_contiguous_id.values()))
    assert evaluator._convert_category_id({"id": 1, "category_id": thing, "isthing": True})["category_id"] == \
        next(k for k, v in meta.thing_dataset_id_to_contiguous_id.items() if v == thing)
