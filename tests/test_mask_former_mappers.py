"""Mask-classification dataset mappers (zsi_d2.data.mappers) on synthetic PNGs and real zs_shapes data.

The synthetic image paints every segment in its own colour, so after an augmentation the image and
the masks can be checked against each other pixel by pixel.
"""
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Instances, polygons_to_bitmask

from zsi_d2.data.mappers import (
    MaskFormerInstanceMapper, MaskFormerPanopticMapper, MaskFormerSemanticMapper, build_dataset_mapper, rgb2id,
)
from zsi_d2.data.zs_shapes.generate import annotation_paths, ensure_generated
from zsi_d2.modeling.mask_former.config import add_mask_former_config
from zsi_d2.modeling.mask_former.inference import masks_to_boxes

torch.set_num_threads(1)
H, W = 32, 40
# segment id -> (category_id = index into stuff_classes, isthing, iscrowd); ids use all 3 channels
SEGMENTS = {7: (3, False, 0), 1: (0, True, 0), 258: (1, True, 0), 65536 * 2 + 5: (0, True, 1), 300: (2, True, 0)}
DISTRACTOR = 99  # painted, not listed: ignored like VOID


def _id_map():
    ids = np.zeros((H, W), np.int64)  # 0 = VOID
    ids[:, 10:] = 7  # stuff
    ids[4:12, 14:22] = 1
    ids[14:20, 14:30] = 258
    ids[22:28, 30:38] = 65536 * 2 + 5  # crowd
    ids[0:4, 0:6] = DISTRACTOR  # 300 is listed but absent: no target
    return ids


_COLOURS = {0: (0, 0, 0), 7: (40, 200, 90), 1: (230, 20, 20), 258: (20, 40, 230), 65536 * 2 + 5: (250, 250, 10),
            DISTRACTOR: (120, 0, 160)}


def _colour(sid):
    return np.array(_COLOURS[sid], np.uint8)


def _write(tmp_path):
    ids = _id_map()
    pan = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    image = np.zeros((H, W, 3), np.uint8)
    for sid in np.unique(ids):
        image[ids == sid] = _colour(sid)
    sem = np.full((H, W), 255, np.uint8)
    for sid, (c, _, crowd) in SEGMENTS.items():
        sem[ids == sid] = c
    paths = {k: str(tmp_path / f"{k}.png") for k in ("image", "pan", "sem")}
    Image.fromarray(image).save(paths["image"])
    Image.fromarray(pan).save(paths["pan"])
    Image.fromarray(sem).save(paths["sem"])
    return ids, image, sem, paths


def _panoptic_dict(paths):
    return {
        "file_name": paths["image"], "image_id": 3, "height": H, "width": W,
        "pan_seg_file_name": paths["pan"], "sem_seg_file_name": paths["sem"],
        "segments_info": [{"id": s, "category_id": c, "isthing": t, "iscrowd": cr}
                          for s, (c, t, cr) in SEGMENTS.items()],
        "annotations": [{"unused": True}],  # ignored by the panoptic mapper (reads segments_info only)
    }


def _mapper(cls, *augs, is_train=True, ignore_label=255):
    return cls(is_train=is_train, augmentations=list(augs), image_format="RGB", ignore_label=ignore_label)


def _as_detectron2_consumer_would(inst: Instances, image_hw):
    """What a detectron2-convention consumer does with targets: index, cat, boxes from masks."""
    assert inst.image_size == tuple(image_hw)
    assert inst.gt_masks.dtype == torch.bool and inst.gt_masks.shape == (len(inst), *image_hw)
    assert inst.gt_classes.dtype == torch.int64
    boxes = BitMasks(inst.gt_masks).get_bounding_boxes()
    torch.testing.assert_close(boxes.tensor, masks_to_boxes(inst.gt_masks))
    both = Instances.cat([inst, inst[: len(inst) // 2]])
    assert len(both) == len(inst) + len(inst) // 2
    return boxes


def test_rgb2id_uses_all_three_channels():
    rgb = np.array([[[1, 2, 3], [255, 255, 255]]], np.uint8)
    assert rgb2id(rgb).tolist() == [[1 + 2 * 256 + 3 * 65536, 256 ** 3 - 1]]


def test_panoptic_targets_are_the_listed_non_crowd_segments(tmp_path):
    ids, image, sem, paths = _write(tmp_path)
    out = _mapper(MaskFormerPanopticMapper)(_panoptic_dict(paths))
    inst = out["instances"]
    # crowd (65541) and the absent 300 give no target; VOID and the distractor are in no mask
    assert inst.gt_classes.tolist() == [3, 0, 1]
    for mask, sid in zip(inst.gt_masks, [7, 1, 258]):
        assert (mask.numpy() == (ids == sid)).all()
    covered = inst.gt_masks.any(0).numpy()
    assert not covered[np.isin(ids, [0, DISTRACTOR, 65536 * 2 + 5])].any()
    assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, H, W)
    assert (out["image"].permute(1, 2, 0).numpy() == image).all()
    assert out["sem_seg"].dtype == torch.int64 and (out["sem_seg"].numpy() == sem).all()
    assert (out["height"], out["width"], out["image_id"], out["file_name"]) == (H, W, 3, paths["image"])
    boxes = _as_detectron2_consumer_would(inst, (H, W))
    assert boxes.tensor[1].tolist() == [14, 4, 22, 12]


def test_flip_and_resize_move_image_and_masks_together(tmp_path):
    ids, image, sem, paths = _write(tmp_path)
    out = _mapper(MaskFormerPanopticMapper, T.ResizeShortestEdge(64, 1000), T.RandomFlip(prob=1.0))(
        _panoptic_dict(paths))
    expected_ids = np.kron(ids, np.ones((2, 2), np.int64))[:, ::-1]  # 2x nearest, then flipped
    inst, img = out["instances"], out["image"].permute(1, 2, 0).numpy()
    assert inst.image_size == (2 * H, 2 * W) and img.shape == (2 * H, 2 * W, 3)
    for mask, sid in zip(inst.gt_masks.numpy(), [7, 1, 258]):
        assert (mask == (expected_ids == sid)).all()
        # the image pixels under a mask are that segment's colour (interior: bilinear edges differ)
        interior = mask.copy()  # 3 x 3 erosion (wrapping at the borders only removes more)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                interior &= np.roll(mask, (dy, dx), (0, 1))
        assert interior.any() and (img[interior] == _colour(sid)).all()
    assert (out["sem_seg"].numpy() == np.kron(sem, np.ones((2, 2), np.uint8))[:, ::-1]).all()
    _as_detectron2_consumer_would(inst, (2 * H, 2 * W))


def test_empty_image_and_test_mode(tmp_path):
    ids, image, sem, paths = _write(tmp_path)
    d = _panoptic_dict(paths)
    d["segments_info"] = [s for s in d["segments_info"] if s["iscrowd"]]
    inst = _mapper(MaskFormerPanopticMapper)(d)["instances"]
    assert len(inst) == 0 and inst.gt_masks.shape == (0, H, W) and inst.gt_classes.shape == (0,)
    _as_detectron2_consumer_would(inst, (H, W))

    out = _mapper(MaskFormerPanopticMapper, T.ResizeShortestEdge(16, 1000), is_train=False)(_panoptic_dict(paths))
    assert "instances" not in out and "sem_seg" not in out and "annotations" not in out
    assert out["image"].shape == (3, 16, 20) and (out["height"], out["width"]) == (H, W)
    with pytest.raises(ValueError, match="pan_seg_file_name"):
        _mapper(MaskFormerPanopticMapper)({"file_name": paths["image"], "annotations": []})


def test_instance_mapper_polygons_rle_and_crowd(tmp_path):
    _, image, _, paths = _write(tmp_path)
    poly = [[2.0, 3.0, 12.0, 3.0, 12.0, 9.0, 2.0, 9.0]]
    rle_mask = np.zeros((H, W), np.uint8, order="F")
    rle_mask[20:30, 5:9] = 1
    rle = mask_util.encode(rle_mask)
    uncompressed = {"size": [H, W], "counts": _uncompressed_counts(rle_mask)}
    d = {"file_name": paths["image"], "image_id": 1, "height": H, "width": W, "annotations": [
        {"bbox": [2, 3, 10, 6], "bbox_mode": 1, "category_id": 4, "segmentation": poly, "iscrowd": 0},
        {"bbox": [5, 20, 4, 10], "bbox_mode": 1, "category_id": 2, "segmentation": rle, "iscrowd": 0},
        {"bbox": [0, 0, 40, 32], "bbox_mode": 1, "category_id": 1, "segmentation": poly, "iscrowd": 1},
        {"bbox": [5, 20, 4, 10], "bbox_mode": 1, "category_id": 5, "segmentation": uncompressed, "iscrowd": 0},
    ]}
    inst = _mapper(MaskFormerInstanceMapper)(d)["instances"]
    assert inst.gt_classes.tolist() == [4, 2, 5]
    assert (inst.gt_masks[0].numpy() == polygons_to_bitmask(poly, H, W)).all()
    assert (inst.gt_masks[1].numpy() == rle_mask.astype(bool)).all()
    assert (inst.gt_masks[2].numpy() == rle_mask.astype(bool)).all()

    flipped = _mapper(MaskFormerInstanceMapper, T.RandomFlip(prob=1.0))(d)["instances"]
    assert (flipped.gt_masks.numpy() == inst.gt_masks.numpy()[:, :, ::-1]).all()
    _as_detectron2_consumer_would(flipped, (H, W))
    with pytest.raises(ValueError, match="mask_former_panoptic"):
        d = _panoptic_dict(paths)
        del d["annotations"]
        _mapper(MaskFormerInstanceMapper)(d)


def _uncompressed_counts(mask):
    """COCO uncompressed RLE counts (column-major runs, starting with zeros)."""
    flat = np.asarray(mask).flatten(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return counts


def test_semantic_mapper_ignores_the_ignore_label(tmp_path):
    _, _, sem, paths = _write(tmp_path)
    d = {"file_name": paths["image"], "image_id": 1, "sem_seg_file_name": paths["sem"]}
    out = _mapper(MaskFormerSemanticMapper)(d)
    assert (out["height"], out["width"]) == (H, W)  # set from the image when the dict lacks them
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [0, 1, 3]  # 255 dropped; crowd pixels are class 0 here
    for mask, c in zip(inst.gt_masks.numpy(), [0, 1, 3]):
        assert (mask == (sem == c)).all()
    assert (out["sem_seg"].numpy() == sem).all()
    # another ignore label: 255 becomes a class, 3 is ignored
    inst = _mapper(MaskFormerSemanticMapper, ignore_label=3)(d)["instances"]
    assert inst.gt_classes.tolist() == [0, 1, 255]
    _as_detectron2_consumer_would(inst, (H, W))


def _cfg(name, *opts):
    cfg = get_cfg()
    add_mask_former_config(cfg)
    cfg.merge_from_list(["INPUT.DATASET_MAPPER_NAME", name, "INPUT.FORMAT", "RGB",
                         "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.RANDOM_FLIP", "none", *opts])
    return cfg


def test_build_dataset_mapper_by_name():
    cfg = _cfg("mask_former_semantic", "DATASETS.TRAIN", "('zs_shapes_tiny_train',)")
    mapper = build_dataset_mapper(cfg, True)
    assert isinstance(mapper, MaskFormerSemanticMapper) and mapper.ignore_label == 255
    assert [type(a).__name__ for a in mapper.augmentations.augs] == ["ResizeShortestEdge"]
    assert isinstance(build_dataset_mapper(_cfg("mask_former_panoptic"), True), MaskFormerPanopticMapper)
    assert isinstance(build_dataset_mapper(_cfg("mask_former_instance"), False), MaskFormerInstanceMapper)
    assert type(build_dataset_mapper(_cfg(""), True)) is DatasetMapper
    with pytest.raises(ValueError, match="'mask_former_panoptic', 'mask_former_instance', 'mask_former_semantic'"):
        build_dataset_mapper(_cfg("mask_former_panoptc"), True)
    flips = build_dataset_mapper(_cfg("mask_former_panoptic", "INPUT.RANDOM_FLIP", "horizontal"), True)
    assert [type(a).__name__ for a in flips.augmentations.augs] == ["ResizeShortestEdge", "RandomFlip"]


# ---- real zs_shapes data (tiny preset, generated once per session under conftest's root) ----

def _standard_panoptic_dicts(subset):
    """detectron2-standard panoptic dicts built here from the generated files (category_id =
    index into stuff_classes = position of the json category in id order)."""
    base = ensure_generated("tiny")
    paths = annotation_paths(base, subset)
    with open(paths["panoptic_json"]) as f:
        pan = json.load(f)
    index = {c["id"]: i for i, c in enumerate(sorted(pan["categories"], key=lambda c: c["id"]))}
    isthing = {c["id"]: c["isthing"] for c in pan["categories"]}
    dicts = []
    for a in pan["annotations"]:
        stem = os.path.splitext(a["file_name"])[0]
        dicts.append({
            "file_name": os.path.join(paths["image_root"], stem + ".png"), "image_id": a["image_id"],
            "pan_seg_file_name": os.path.join(paths["panoptic_root"], a["file_name"]),
            "sem_seg_file_name": os.path.join(paths["sem_seg_root"], stem + ".png"),
            "segments_info": [dict(s, category_id=index[s["category_id"]], isthing=bool(isthing[s["category_id"]]))
                              for s in a["segments_info"]],
        })
    return dicts


def test_zs_shapes_panoptic_targets_paint_the_semantic_labels():
    """Independent check: painting the panoptic targets by class gives the sem_seg PNG (void = 255)."""
    mapper = _mapper(MaskFormerPanopticMapper)
    dicts = _standard_panoptic_dicts("val")[:6]
    kinds = set()
    for d in dicts:
        out = mapper(d)
        inst, sem = out["instances"], out["sem_seg"]
        painted = torch.full_like(sem, 255)
        for mask, c in zip(inst.gt_masks, inst.gt_classes):
            assert not (painted[mask] != 255).any(), "targets overlap"
            painted[mask] = c
        assert (painted == sem).all()
        assert len(inst) == sum(not s["iscrowd"] for s in d["segments_info"])
        kinds |= {s["isthing"] for s in d["segments_info"]}
        _as_detectron2_consumer_would(inst, tuple(sem.shape))
    assert kinds == {True, False}, "the images checked must hold both things and stuff"


def test_zs_shapes_registered_panoptic_view_reads_like_the_files():
    """The registered `_panoptic` name (standard convention) gives the same targets as the files."""
    if "zs_shapes_tiny_val_panoptic" not in DatasetCatalog.list():
        pytest.skip("zs_shapes_tiny_val_panoptic is not registered yet")
    mapper = _mapper(MaskFormerPanopticMapper)
    registered = {d["image_id"]: d for d in DatasetCatalog.get("zs_shapes_tiny_val_panoptic")}
    for d in _standard_panoptic_dicts("val")[:4]:
        a, b = mapper(d)["instances"], mapper(registered[d["image_id"]])["instances"]
        assert a.gt_classes.tolist() == b.gt_classes.tolist()
        assert (a.gt_masks == b.gt_masks).all()


def test_zs_shapes_instance_and_semantic_mappers():
    cfg = _cfg("mask_former_instance", "DATASETS.TRAIN", "('zs_shapes_tiny_train',)")
    instance, semantic = MaskFormerInstanceMapper(cfg, True), MaskFormerSemanticMapper(cfg, True)
    for d in DatasetCatalog.get("zs_shapes_tiny_train")[:4]:
        out = instance(d)
        inst = out["instances"]
        anns = [a for a in d["annotations"] if not a["iscrowd"]]
        assert inst.gt_classes.tolist() == [a["category_id"] for a in anns] and len(anns) > 0
        for mask, a in zip(inst.gt_masks.numpy(), anns):
            assert (mask == mask_util.decode(a["segmentation"]).astype(bool)).all()
        boxes = _as_detectron2_consumer_would(inst, (out["height"], out["width"]))
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32)
        torch.testing.assert_close(boxes.tensor, torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1), atol=1, rtol=0)

        out = semantic(d)
        sem = np.array(Image.open(d["sem_seg_file_name"]))
        assert out["instances"].gt_classes.tolist() == sorted(set(np.unique(sem)) - {255})
        assert (out["instances"].gt_masks.any(0).numpy() == (sem != 255)).all()
        assert "annotations" not in out
