"""Dataset mappers for mask-classification models (Mask2Former-style training targets).

Each mapper reads one detectron2-standard dataset dict and returns what detectron2's
`DatasetMapper` returns ("image" (3, H, W) uint8 in cfg.INPUT.FORMAT, "height", "width",
"file_name", "image_id", "sem_seg" when the dict names a sem_seg file), plus the mask-classification
targets in "instances": `Instances(image_size, gt_classes (n,) long, gt_masks (n, H, W) bool)`,
one binary mask per target, classes in the dataset's contiguous ids (the model maps them to its
local class set). What a target is depends on the task:

- panoptic: a non-crowd segment of `segments_info`, read from `pan_seg_file_name`; category_id
  indexes `metadata.stuff_classes` (detectron2's standard panoptic convention), so the mapper needs
  no metadata. Pixels of no listed segment (VOID) and crowd segments are in no target.
- instance: a non-crowd element of `annotations` (polygons, RLE or a binary array); category_id
  indexes `metadata.thing_classes`.
- semantic: a class present in `sem_seg_file_name` other than the ignore label.

Training augmentations, chosen by cfg.INPUT.AUGMENTATION (`build_mask_former_augmentation`):
- "shortest_edge" (default): detectron2's `DatasetMapper` recipe (RandomCrop when
  cfg.INPUT.CROP.ENABLED, then ResizeShortestEdge and flip).
- "lsj": large-scale jitter, as Mask2Former's COCO "new baseline" mappers: flip, ResizeScale
  (INPUT.MIN_SCALE..MAX_SCALE of an INPUT.IMAGE_SIZE square), FixedSizeCrop to that square, which
  pads smaller images (image 128 at the bottom / right).
- "resize_then_crop": MaskFormer's semantic recipe: ResizeShortestEdge, then a crop that avoids
  one category filling it (RandomCrop_CategoryAreaConstraint, INPUT.CROP.*), SSD colour jitter
  (INPUT.COLOR_AUG_SSD), flip.
In test mode every recipe is ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST), as Mask2Former.

Differences from Mask2Former's mappers, and why:
- Padding added by an augmentation (LSJ) is in no target and is the ignore label in "sem_seg",
  whatever value the pad transform writes into segmentations (0 in detectron2 0.6, 255 later:
  either would read as a class or as mask pixels of RLE annotations). Images otherwise keep their
  size (the model pads the batch), so there is no INPUT.SIZE_DIVISIBILITY padding here.
- A target left with no pixel (a segment lost by resizing or cropping, a listed segment absent
  from the PNG) is dropped: it would ask a query to predict an empty mask.
- The panoptic mapper reads `segments_info` only and ignores other keys (Mask2Former refuses dicts
  that also carry "annotations"); the other mappers raise when the key they read is missing,
  naming the mapper that fits the dict.
- In test mode (is_train=False) the mappers return the image and the dict's metadata like
  `DatasetMapper` (annotations and the sem_seg file name dropped), and read no target.
"""
import abc
import copy
import logging
from typing import List, Optional, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch

from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Instances, polygons_to_bitmask

from ...errors import InputValueError
from ...utils.panoptic_ids import rgb2id

__all__ = [
    "MaskFormerPanopticMapper", "MaskFormerInstanceMapper", "MaskFormerSemanticMapper",
    "AUGMENTATIONS", "build_mask_former_augmentation",
]

logger = logging.getLogger(__name__)


def _read_sem_seg(path: str) -> np.ndarray:
    """(H, W) label map; uint16 PNGs become float64 (detectron2's transforms resize uint8 with PIL)."""
    sem_seg = utils.read_image(path)
    if sem_seg.ndim == 3 and sem_seg.shape[2] == 1:
        sem_seg = sem_seg[:, :, 0]
    if sem_seg.ndim != 2:
        raise InputValueError(f"{path}: a sem_seg file must be a single-channel label PNG, got shape "
                              f"{sem_seg.shape}; save the labels as one channel")
    return sem_seg if sem_seg.dtype == np.uint8 else sem_seg.astype("double")


def _segmentation_to_mask(segm, image_size: Tuple[int, int]) -> np.ndarray:
    """Binary (H, W) uint8 mask of a transformed annotation's segmentation."""
    if isinstance(segm, list):
        return polygons_to_bitmask(segm, *image_size)
    if isinstance(segm, dict):
        return mask_util.decode(segm)
    if isinstance(segm, np.ndarray) and segm.ndim == 2:
        return segm
    raise InputValueError(
        f"cannot convert a segmentation of type {type(segm).__name__} to a mask: expected polygons "
        "(list of flat coordinate lists), COCO RLE (dict) or a binary (H, W) array"
    )


def _targets(image_size: Tuple[int, int], classes: List[int], masks: List[np.ndarray]) -> Instances:
    """Instances(gt_classes, gt_masks bool (n, H, W)); targets without a pixel dropped."""
    keep = [i for i, m in enumerate(masks) if m.any()]
    instances = Instances(image_size)
    instances.gt_classes = torch.tensor([int(classes[i]) for i in keep], dtype=torch.int64)
    if keep:
        instances.gt_masks = torch.stack([torch.from_numpy(np.ascontiguousarray(masks[i])).bool() for i in keep])
    else:
        instances.gt_masks = torch.zeros((0, *image_size), dtype=torch.bool)
    return instances


def _ignore_label(cfg, is_train: bool) -> int:
    """The training set's `ignore_label` metadata (it describes the files), else SEM_SEG_HEAD.IGNORE_VALUE."""
    default = int(cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)
    names = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
    if not names:
        return default
    return int(getattr(MetadataCatalog.get(names[0]), "ignore_label", default))


def _flip(cfg) -> List:
    if cfg.INPUT.RANDOM_FLIP == "none":
        return []
    return [T.RandomFlip(horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal", vertical=cfg.INPUT.RANDOM_FLIP == "vertical")]


def _shortest_edge(cfg, ignore_label: int) -> List:
    augs = utils.build_augmentation(cfg, True)
    if cfg.INPUT.CROP.ENABLED:
        augs.insert(0, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    return augs


def _lsj(cfg, ignore_label: int) -> List:
    size, lo, hi = int(cfg.INPUT.IMAGE_SIZE), float(cfg.INPUT.MIN_SCALE), float(cfg.INPUT.MAX_SCALE)
    if size <= 0 or not 0 < lo <= hi:
        raise InputValueError(
            f"INPUT.AUGMENTATION 'lsj' needs INPUT.IMAGE_SIZE > 0 and 0 < INPUT.MIN_SCALE <= INPUT.MAX_SCALE, "
            f"got {size}, {lo}, {hi}")
    return _flip(cfg) + [
        T.ResizeScale(min_scale=lo, max_scale=hi, target_height=size, target_width=size),
        T.FixedSizeCrop(crop_size=(size, size)),  # pads with 128 (image) when the resized image is smaller
    ]


def _resize_then_crop(cfg, ignore_label: int) -> List:
    augs = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)]
    if cfg.INPUT.CROP.ENABLED:
        augs.append(T.RandomCrop_CategoryAreaConstraint(
            cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE, cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA, ignore_label))
    if cfg.INPUT.COLOR_AUG_SSD:
        from detectron2.projects.point_rend import ColorAugSSDTransform  # imported only when used

        augs.append(ColorAugSSDTransform(img_format=cfg.INPUT.FORMAT))
    return augs + _flip(cfg)


# INPUT.AUGMENTATION -> builder of the training augmentations (the module docstring says what each does).
AUGMENTATIONS = {"shortest_edge": _shortest_edge, "lsj": _lsj, "resize_then_crop": _resize_then_crop}


def build_mask_former_augmentation(cfg, is_train: bool, ignore_label: int = 255) -> List:
    """The augmentations INPUT.AUGMENTATION names (training), or the test resize; a typo fails here."""
    if not is_train:
        return utils.build_augmentation(cfg, False)
    name = cfg.INPUT.AUGMENTATION
    if name not in AUGMENTATIONS:
        raise InputValueError(
            f"unknown INPUT.AUGMENTATION {name!r}; valid: {', '.join(repr(n) for n in AUGMENTATIONS)}")
    return AUGMENTATIONS[name](cfg, ignore_label)


def _padding(transforms: T.TransformList, input_hw: Tuple[int, int]) -> Optional[np.ndarray]:
    """(H, W) bool of the pixels the transforms padded in, or None when none did.

    Found by transforming a constant map twice (ones and zeros), so whatever value the pad
    transform writes into segmentations, it differs from one of the two."""
    if not any(isinstance(t, T.PadTransform) for t in transforms.transforms):
        return None
    return ((transforms.apply_segmentation(np.ones(input_hw, np.uint8)) != 1)
            | (transforms.apply_segmentation(np.zeros(input_hw, np.uint8)) != 0))


class _MaskFormerMapper(abc.ABC):
    """Shared reading, augmentation and output; subclasses build the targets."""

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: List,
        image_format: str,
        ignore_label: int = 255,
    ):
        """
        Args:
            is_train: read targets (True) or only the image (False).
            augmentations: detectron2 augmentations, applied alike to image, masks and polygons.
            image_format: cfg.INPUT.FORMAT, for `detection_utils.read_image`.
            ignore_label: label of unannotated pixels in sem_seg files (never a target).
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.ignore_label = int(ignore_label)
        mode = "training" if is_train else "inference"
        logger.info(f"[{type(self).__name__}] augmentations used in {mode}: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ignore_label = _ignore_label(cfg, is_train)
        return {
            "is_train": is_train,
            "augmentations": build_mask_former_augmentation(cfg, is_train, ignore_label),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": ignore_label,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)  # modified below
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)  # also sets "height"/"width" when absent
        if not self.is_train:
            aug_input = T.AugInput(image)
            self.augmentations(aug_input)
            dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
            dataset_dict.pop("annotations", None)
            dataset_dict.pop("sem_seg_file_name", None)
            return dataset_dict

        self._check_keys(dataset_dict)
        sem_seg = None
        if "sem_seg_file_name" in dataset_dict:
            sem_seg = _read_sem_seg(dataset_dict.pop("sem_seg_file_name"))
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        transforms = self.augmentations(aug_input)
        padding = _padding(transforms, image.shape[:2])
        image, sem_seg = aug_input.image, aug_input.sem_seg
        image_size = tuple(image.shape[:2])

        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg is not None:
            sem_seg = sem_seg.astype("long")
            if padding is not None:
                sem_seg[padding] = self.ignore_label
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg)
        classes, masks = self._read_targets(dataset_dict, transforms, image_size, sem_seg)
        if padding is not None:
            masks = [np.logical_and(m, ~padding) for m in masks]
        dataset_dict["instances"] = _targets(image_size, classes, masks)
        return dataset_dict

    @abc.abstractmethod
    def _check_keys(self, dataset_dict: dict):
        """Raise a one-line ValueError when the dict lacks what this mapper reads (per task)."""

    @abc.abstractmethod
    def _read_targets(
        self, dataset_dict: dict, transforms, image_size: Tuple[int, int], sem_seg: Optional[np.ndarray]
    ) -> Tuple[List[int], List[np.ndarray]]:
        """(classes, binary masks at `image_size`); may pop the keys it consumed (per task)."""


class MaskFormerPanopticMapper(_MaskFormerMapper):
    """Targets = non-crowd segments of `segments_info` (category_id = index into stuff_classes)."""

    def _check_keys(self, dataset_dict):
        missing = [k for k in ("pan_seg_file_name", "segments_info") if k not in dataset_dict]
        if missing:
            raise InputValueError(
                f"{dataset_dict['file_name']}: MaskFormerPanopticMapper needs {missing} (a panoptic dataset "
                "in detectron2's standard convention, e.g. a '*_panoptic' name); for 'annotations' use "
                "INPUT.DATASET_MAPPER_NAME 'mask_former_instance'"
            )

    def _read_targets(self, dataset_dict, transforms, image_size, sem_seg):
        pan_seg = utils.read_image(dataset_dict.pop("pan_seg_file_name"), "RGB")
        pan_seg = rgb2id(transforms.apply_segmentation(pan_seg))  # nearest: ids stay exact
        classes, masks = [], []
        for seg in dataset_dict.pop("segments_info"):
            if seg.get("iscrowd", 0):
                continue
            classes.append(seg["category_id"])
            masks.append(pan_seg == seg["id"])
        return classes, masks


class MaskFormerInstanceMapper(_MaskFormerMapper):
    """Targets = non-crowd `annotations` (category_id = index into thing_classes)."""

    def _check_keys(self, dataset_dict):
        if "annotations" not in dataset_dict:
            raise InputValueError(
                f"{dataset_dict['file_name']}: MaskFormerInstanceMapper needs 'annotations'; for a panoptic "
                "dict (segments_info) use INPUT.DATASET_MAPPER_NAME 'mask_former_panoptic'"
            )

    def _read_targets(self, dataset_dict, transforms, image_size, sem_seg):
        classes, masks = [], []
        for obj in dataset_dict.pop("annotations"):
            if obj.get("iscrowd", 0):
                continue
            obj.pop("keypoints", None)  # keypoint flips need hflip indices; not a mask target
            segm = obj.get("segmentation")
            if segm is None:
                raise InputValueError(f"{dataset_dict['file_name']}: an annotation has no 'segmentation': give "
                                      "every object a mask (polygons or RLE)")
            if isinstance(segm, dict) and isinstance(segm.get("counts"), list):
                obj["segmentation"] = mask_util.frPyObjects(segm, *segm["size"])  # uncompressed RLE
            elif isinstance(segm, np.ndarray) and segm.ndim == 2:  # detectron2 0.6 transforms RLE, not arrays
                obj["segmentation"] = mask_util.encode(np.asfortranarray(segm.astype(np.uint8)))
            obj = utils.transform_instance_annotations(obj, transforms, image_size)
            classes.append(obj["category_id"])
            masks.append(_segmentation_to_mask(obj["segmentation"], image_size))
        return classes, masks


class MaskFormerSemanticMapper(_MaskFormerMapper):
    """Targets = one mask per class present in `sem_seg_file_name`, except the ignore label."""

    def _check_keys(self, dataset_dict):
        if "sem_seg_file_name" not in dataset_dict:
            raise InputValueError(f"{dataset_dict['file_name']}: MaskFormerSemanticMapper needs 'sem_seg_file_name': "
                                  "register the dataset with its label maps, or choose another "
                                  "INPUT.DATASET_MAPPER_NAME")

    def _read_targets(self, dataset_dict, transforms, image_size, sem_seg):
        dataset_dict.pop("annotations", None)
        classes = [int(c) for c in np.unique(sem_seg) if c != self.ignore_label]
        return classes, [sem_seg == c for c in classes]
