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
    MaskFormerInstanceMapper, MaskFormerPanopticMapper, MaskFormerSemanticMapper, build_dataset_mapper,
)
from zsi_d2.utils.panoptic_ids import rgb2id  # noqa: E402
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


# ---- training augmentations (INPUT.AUGMENTATION) ----

def test_augmentation_is_chosen_by_config():
    names = lambda m: [type(getattr(a, "tfm", a)).__name__ for a in m.augmentations.augs]  # noqa: E731
    lsj = build_dataset_mapper(_cfg("mask_former_panoptic", "INPUT.AUGMENTATION", "lsj", "INPUT.RANDOM_FLIP",
                                    "horizontal", "INPUT.IMAGE_SIZE", "96", "INPUT.MIN_SCALE", "0.5",
                                    "INPUT.MAX_SCALE", "1.5"), True)
    assert names(lsj) == ["RandomFlip", "ResizeScale", "FixedSizeCrop"]
    flip, resize, crop = lsj.augmentations.augs
    assert flip.horizontal and not flip.vertical
    assert (resize.min_scale, resize.max_scale, resize.target_height, resize.target_width) == (0.5, 1.5, 96, 96)
    assert tuple(crop.crop_size) == (96, 96) and crop.pad and crop.pad_value == 128
    # test mode: the test resize whatever the training recipe (as Mask2Former's test loader)
    assert names(MaskFormerPanopticMapper(lsj_cfg := _cfg("mask_former_panoptic", "INPUT.AUGMENTATION", "lsj"),
                                          False)) == ["ResizeShortestEdge"]
    assert lsj_cfg.INPUT.AUGMENTATION == "lsj"

    sem = build_dataset_mapper(_cfg("mask_former_semantic", "INPUT.AUGMENTATION", "resize_then_crop",
                                    "INPUT.RANDOM_FLIP", "horizontal", "INPUT.CROP.ENABLED", "True",
                                    "INPUT.CROP.TYPE", "absolute", "INPUT.CROP.SIZE", "(64, 64)",
                                    "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA", "0.75", "INPUT.COLOR_AUG_SSD", "True"), True)
    assert names(sem) == ["ResizeShortestEdge", "RandomCrop_CategoryAreaConstraint", "ColorAugSSDTransform",
                          "RandomFlip"]
    crop = sem.augmentations.augs[1]
    assert (crop.single_category_max_area, crop.ignored_category, tuple(crop.crop_aug.crop_size)) == (0.75, 255, (64, 64))
    # the default keeps detectron2's DatasetMapper order: crop first, then resize
    default = build_dataset_mapper(_cfg("mask_former_panoptic", "INPUT.CROP.ENABLED", "True"), True)
    assert names(default) == ["RandomCrop", "ResizeShortestEdge"]

    with pytest.raises(ValueError, match="'shortest_edge', 'lsj', 'resize_then_crop'"):
        build_dataset_mapper(_cfg("mask_former_panoptic", "INPUT.AUGMENTATION", "LSJ"), True)
    with pytest.raises(ValueError, match="MIN_SCALE <= INPUT.MAX_SCALE"):
        build_dataset_mapper(_cfg("mask_former_panoptic", "INPUT.AUGMENTATION", "lsj", "INPUT.MIN_SCALE", "2.5"), True)


class _PadBottomRight(T.Augmentation):
    """Pads 8 rows and 12 columns, writing `seg_pad_value` into segmentations (detectron2 0.6's
    FixedSizeCrop writes 0, later releases 255)."""

    def __init__(self, seg_pad_value):
        super().__init__()
        self.seg_pad_value = seg_pad_value

    def get_transform(self, image):
        h, w = image.shape[:2]
        return T.PadTransform(0, 0, 12, 8, w, h, pad_value=128, seg_pad_value=self.seg_pad_value)


@pytest.mark.parametrize("seg_pad_value", [0, 1, 255])
def test_padding_is_in_no_target_and_ignored_in_sem_seg(tmp_path, seg_pad_value):
    """Whatever value the pad transform writes into segmentations, the padded pixels are no mask
    pixel (panoptic PNG, RLE and bitmask annotations) and the ignore label in sem_seg."""
    ids, image, sem, paths = _write(tmp_path)
    pad = np.ones((H + 8, W + 12), bool)
    pad[:H, :W] = False
    for ignore_label in (255, 3):
        out = _mapper(MaskFormerPanopticMapper, _PadBottomRight(seg_pad_value), ignore_label=ignore_label)(
            _panoptic_dict(paths))
        assert out["image"].shape == (3, H + 8, W + 12) and (out["image"].permute(1, 2, 0).numpy()[pad] == 128).all()
        assert (out["sem_seg"].numpy()[pad] == ignore_label).all()
        assert (out["sem_seg"].numpy()[~pad].reshape(H, W) == sem).all()
        assert out["instances"].gt_classes.tolist() == [3, 0, 1]
        assert not out["instances"].gt_masks.numpy()[:, pad].any()

    rle_mask = np.zeros((H, W), np.uint8, order="F")
    rle_mask[20:30, 5:9] = 1
    d = {"file_name": paths["image"], "image_id": 1, "height": H, "width": W, "annotations": [
        {"bbox": [5, 20, 4, 10], "bbox_mode": 1, "category_id": 2, "segmentation": mask_util.encode(rle_mask),
         "iscrowd": 0},
        {"bbox": [5, 20, 4, 10], "bbox_mode": 1, "category_id": 4, "segmentation": rle_mask.copy(), "iscrowd": 0},
        {"bbox": [2, 3, 10, 6], "bbox_mode": 1, "category_id": 5, "iscrowd": 0,
         "segmentation": [[2.0, 3.0, 12.0, 3.0, 12.0, 9.0, 2.0, 9.0]]},
    ]}
    inst = _mapper(MaskFormerInstanceMapper, _PadBottomRight(seg_pad_value))(d)["instances"]
    assert inst.gt_classes.tolist() == [2, 4, 5]
    assert not inst.gt_masks.numpy()[:, pad].any()
    assert (inst.gt_masks[0].numpy()[:H, :W] == rle_mask.astype(bool)).all()

    out = _mapper(MaskFormerSemanticMapper, _PadBottomRight(seg_pad_value))(
        {"file_name": paths["image"], "image_id": 1, "sem_seg_file_name": paths["sem"]})
    assert (out["sem_seg"].numpy()[pad] == 255).all() and out["instances"].gt_classes.tolist() == [0, 1, 3]
    assert not out["instances"].gt_masks.numpy()[:, pad].any()


# ---- LSJ on a real COCO panoptic image (../shared/data) ----

def _coco_panoptic_sample(tmp_path):
    """[(photo dict, colour dict)] for the two real COCO images: the colour dict's image is the
    panoptic PNG itself, so a pixel's colour is its segment id (R + 256 G + 256^2 B). A sem_seg PNG
    (category index per pixel, VOID 255) is written next to them."""
    from coco_fixtures import SHARED_PANOPTIC, SHARED_PANOPTIC_MISSING

    if not os.path.isdir(SHARED_PANOPTIC):
        pytest.skip(SHARED_PANOPTIC_MISSING)
    with open(os.path.join(SHARED_PANOPTIC, "panoptic_coco_categories.json")) as f:
        index = {c["id"]: i for i, c in enumerate(json.load(f))}
    with open(os.path.join(SHARED_PANOPTIC, "panoptic_examples.json")) as f:
        sample = json.load(f)
    images = {im["id"]: im for im in sample["images"]}
    pairs = []
    for rec in sample["annotations"]:
        image = images[rec["image_id"]]
        png = os.path.join(SHARED_PANOPTIC, "panoptic_examples", rec["file_name"])
        ids = rgb2id(np.array(Image.open(png).convert("RGB")))
        sem = np.full(ids.shape, 255, np.uint8)
        segments = []
        for s in rec["segments_info"]:
            sem[ids == s["id"]] = index[s["category_id"]]
            segments.append({"id": s["id"], "category_id": index[s["category_id"]], "iscrowd": s["iscrowd"]})
        sem_path = str(tmp_path / rec["file_name"])
        Image.fromarray(sem).save(sem_path)
        photo = {"file_name": os.path.join(SHARED_PANOPTIC, "input_images", image["file_name"]),
                 "image_id": rec["image_id"], "height": image["height"], "width": image["width"],
                 "pan_seg_file_name": png, "sem_seg_file_name": sem_path, "segments_info": segments}
        pairs.append((photo, dict(photo, file_name=png)))
    return pairs


def _panoptic_config_mapper():
    """The training mapper of the shipped COCO panoptic config (its LSJ values, its ignore label)."""
    from conftest import REPO_ROOT
    from zsi_d2.config import get_zsi_d2_cfg

    cfg = get_zsi_d2_cfg()
    cfg.merge_from_file(os.path.join(REPO_ROOT, "configs/mask_former/coco/panoptic_119_14.yaml"))
    return cfg, build_dataset_mapper(cfg, True)


def _stable(ids):
    """Pixels whose 3 x 3 neighbourhood has one id (not a bilinear blend of two colours)."""
    same = np.ones(ids.shape, bool)
    padded = np.pad(ids, 1, mode="edge")
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            same &= padded[dy:dy + ids.shape[0], dx:dx + ids.shape[1]] == ids
    return same


def _check_lsj_draw(mapper, size, colour, photo, seed):
    """One LSJ draw of the colour-coded image (and of the photo, when given, with the same seed):
    the checks of the test below. Returns the visible content's (height, width)."""
    known = {s["id"]: s for s in colour["segments_info"]}
    np.random.seed(seed)
    out = mapper(colour)
    img, inst, sem = out["image"].permute(1, 2, 0).numpy(), out["instances"], out["sem_seg"].numpy()
    assert img.shape == (size, size, 3) and sem.shape == (size, size) and inst.image_size == (size, size)

    # the padding (bottom / right, FixedSizeCrop): grey, in no mask, ignored in sem_seg
    rows, cols = np.nonzero(~(img == 128).all(-1))
    h, w = rows.max() + 1, cols.max() + 1
    pad = np.ones((size, size), bool)
    pad[:h, :w] = False
    masks = inst.gt_masks.numpy()
    assert (img[pad] == 128).all() and (sem[pad] == 255).all() and not masks[:, pad].any()

    # colour test: on unblended pixels, the segment the image's colour names is the one mask covering it
    ids = rgb2id(img)
    ids[pad] = -1
    check = _stable(ids) & np.isin(ids, list(known) + [0])
    assert check.sum() > 0.3 * (~pad).sum()
    for sid, seg in known.items():
        where = check & (ids == sid)
        if seg["iscrowd"] or not where.any():
            continue
        (k,) = [i for i, m in enumerate(masks) if m[where].any()]
        assert inst.gt_classes[k] == seg["category_id"]
        assert (masks[k][check] == (ids[check] == sid)).all()

    # the targets painted by class are the sem_seg map, crowd segments excepted
    painted = np.full((size, size), 255)
    for m, c in zip(masks, inst.gt_classes.tolist()):
        assert (painted[m] == 255).all(), "targets overlap"
        painted[m] = c
    crowd = np.isin(ids, [sid for sid, s in known.items() if s["iscrowd"]])
    assert (painted[check & ~crowd] == sem[check & ~crowd]).all()

    if photo is not None:  # same draw (it depends on the image size only): same targets, grey padding
        np.random.seed(seed)
        out_photo = mapper(photo)
        assert out_photo["image"].shape == (3, size, size)
        assert (out_photo["instances"].gt_masks == inst.gt_masks).all()
        assert (out_photo["image"].permute(1, 2, 0).numpy()[pad] == 128).all()
    return h, w


def test_lsj_on_real_coco_images_gives_fixed_size_aligned_targets(tmp_path):
    """The panoptic config's LSJ mapper on the real COCO sample: every draw is IMAGE_SIZE square;
    where the image's colour names a segment, exactly that segment's mask covers the pixel; the
    padding is grey, in no mask and ignored in sem_seg; painting the targets by class gives sem_seg;
    draws both pad (the whole image visible, at the drawn scale) and crop (no padding)."""
    cfg, mapper = _panoptic_config_mapper()
    size, lo = cfg.INPUT.IMAGE_SIZE, cfg.INPUT.MIN_SCALE
    pairs = _coco_panoptic_sample(tmp_path)
    scales, cropped = [], 0
    for seed in range(20):  # until both kinds of draw were seen (about 6 draws)
        photo, colour = pairs[seed % len(pairs)]
        h, w = _check_lsj_draw(mapper, size, colour, photo if seed < len(pairs) else None, seed)
        if h < size and w < size:  # the whole resized image is visible: its longer side is scale x size
            scales.append(max(h, w) / size)
            assert abs(h / w - colour["height"] / colour["width"]) < 0.05
        cropped += (h, w) == (size, size)
        if cropped and len(scales) >= 2 and max(scales) - min(scales) > 0.2:
            break
    assert cropped and len(scales) >= 2, (cropped, scales)
    # without the resize the visible content would be the original size at every draw
    assert all(lo - 2 / size <= s <= 1 for s in scales) and max(scales) - min(scales) > 0.2


def test_lsj_scale_is_drawn_within_the_configured_range():
    """Over many draws the resize is a random share of IMAGE_SIZE in [MIN_SCALE, MAX_SCALE], reaching
    both ends, and the output is IMAGE_SIZE square (shapes only: no pixel is resized here)."""
    cfg, mapper = _panoptic_config_mapper()
    size, lo, hi = cfg.INPUT.IMAGE_SIZE, cfg.INPUT.MIN_SCALE, cfg.INPUT.MAX_SCALE
    np.random.seed(0)
    scales = []
    for h, w in [(427, 640), (640, 360), (size, size)]:
        for _ in range(300):
            shape = (h, w)
            out_shape = None
            for aug in mapper.augmentations.augs:
                tfm = aug.get_transform(np.empty((*shape, 3), np.uint8))
                for t in getattr(tfm, "transforms", [tfm]):
                    if isinstance(t, T.ResizeTransform):
                        scales.append(max(t.new_h, t.new_w) / size)
                        assert abs(t.new_h / t.new_w - h / w) < 0.05
                        shape = (t.new_h, t.new_w)
                    elif isinstance(t, T.CropTransform):
                        shape = (min(shape[0] - t.y0, t.h), min(shape[1] - t.x0, t.w))  # numpy slicing
                    elif isinstance(t, T.PadTransform):
                        shape = (shape[0] + t.y0 + t.y1, shape[1] + t.x0 + t.x1)
                    else:
                        assert isinstance(t, (T.HFlipTransform, T.NoOpTransform)), t
                out_shape = shape
            assert out_shape == (size, size)
    assert len(scales) == 900
    assert all(lo - 1 / size <= s <= hi + 1 / size for s in scales)
    assert min(scales) < lo + 0.1 and max(scales) > hi - 0.1


def test_resize_then_crop_crops_the_resized_image(tmp_path):
    """MaskFormer's semantic recipe crops after resizing (detectron2's DatasetMapper crops first, where a
    crop as large as the image does nothing); targets and sem_seg follow the image."""
    ids, image, sem, paths = _write(tmp_path)
    opts = ["INPUT.MIN_SIZE_TRAIN", f"({2 * H},)", "INPUT.MAX_SIZE_TRAIN", "1000", "INPUT.CROP.ENABLED", "True",
            "INPUT.CROP.TYPE", "absolute", "INPUT.CROP.SIZE", f"({H}, {H})"]
    d = {"file_name": paths["image"], "image_id": 1, "sem_seg_file_name": paths["sem"]}
    out = MaskFormerSemanticMapper(_cfg("mask_former_semantic", "INPUT.AUGMENTATION", "resize_then_crop", *opts), True)(d)
    assert out["image"].shape == (3, H, H) and out["sem_seg"].shape == (H, H)
    big = np.kron(sem, np.ones((2, 2), np.uint8))  # the 2x nearest resize, of which a H x H window is kept
    windows = [big[y:y + H, x:x + H] for y in range(H + 1) for x in range(2 * W - H + 1)]
    assert any((out["sem_seg"].numpy() == win).all() for win in windows)
    for mask, c in zip(out["instances"].gt_masks.numpy(), out["instances"].gt_classes.tolist()):
        assert (mask == (out["sem_seg"].numpy() == c)).all()
    # the default order: the H x H crop of the original, then the resize to 2H
    out = MaskFormerSemanticMapper(_cfg("mask_former_semantic", *opts), True)(d)
    assert out["image"].shape == (3, 2 * H, 2 * H)
