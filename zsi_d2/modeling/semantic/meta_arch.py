"""ZeroShotSemanticSegmentor: a DeepLab-style pixel classifier whose last layer scores pixel features
against class names (SPNet's projection) or is a free per-class convolution (DeepLab; the stage 1
of the pixel-level generative methods ZS3Net, CaGNet and SIGN).

backbone -> detectron2's DeepLabV3PlusHead without its predictor (ASPP on the coarsest of
SEM_SEG_HEAD.IN_FEATURES, the DeepLabV3+ decoder fusing the finer ones) -> pixel features (N, D,
h, w) -> pixel classifier -> (N, K, h, w) scores over the active class set. Training: cross
entropy at the padded image size over the training classes (labels become local indices through
`ClassSet.to_local`, which refuses any class outside the training set); test: the softmax over the
class set, calibrated (SPNet: gamma subtracted from the seen probabilities), cropped and resized to
the image (detectron2's sem_seg_postprocess), written into the dataset's stuff_classes channels so
detectron2's and zsi_d2's semantic evaluators read it.

A generative method builds on `pixel_features` and the classifier (`classify_rows`): its second
stage caches the frozen model's pixel features and re-trains the classifier.
"""
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.projects.deeplab import DeepLabV3PlusHead
from detectron2.structures import ImageList

from ...errors import InputValueError
from ..class_set import ClassSet, ZeroShotMetaArch, default_class_set, inference_class_set
from ..mask_former.inference import to_dataset_channels
from .pixel_classifier import build_pixel_classifier

__all__ = ["ZeroShotSemanticSegmentor", "build_pixel_feature_head", "pixel_feature_dim"]


def build_pixel_feature_head(cfg, input_shape) -> DeepLabV3PlusHead:
    """detectron2's DeepLabV3PlusHead from the DeepLab project's keys, without its predictor (the
    zero-shot pixel classifier takes that place): it returns the decoder's pixel features."""
    missing = [f for f in cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES if f not in input_shape]
    if missing:
        raise InputValueError(f"MODEL.SEM_SEG_HEAD.IN_FEATURES {missing} are not backbone outputs "
                              f"{sorted(input_shape)}")
    args = DeepLabV3PlusHead.from_config(cfg, input_shape)
    args["num_classes"] = None
    # ASPP's image pooling over the whole feature map at any size (DeepLabV3+'s), not detectron2's
    # fixed kernel sized by the training crop, which would tie the model to that crop (and to a crop
    # divisible by the output stride: SPNet's 321, ZS3Net's 312 are not).
    args["train_size"] = None
    return DeepLabV3PlusHead(**args)


def pixel_feature_dim(cfg) -> int:
    """Width of the head's output: the decoder's (CONVS_DIM), or ASPP's when there is no decoder stage."""
    head = cfg.MODEL.SEM_SEG_HEAD
    return head.CONVS_DIM if len(head.IN_FEATURES) > 1 else head.ASPP_CHANNELS


@META_ARCH_REGISTRY.register()
class ZeroShotSemanticSegmentor(ZeroShotMetaArch, nn.Module):
    """Pixel-level zero-shot semantic segmentation (module docstring)."""

    class_kind = "auto"  # use_class_set: the dataset's whole label space (stuff_classes)
    semantic_on = True  # its only output (demo.py reads the *_on flags: no panoptic_on / instance_on here)

    @configurable
    def __init__(self, *, backbone, head, classifier, class_set: ClassSet, pixel_mean, pixel_std,
                 ignore_value: int = 255, size_divisibility: int = 0, loss_weight: float = 1.0,
                 inference_class_set: Optional[ClassSet] = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.classifier = classifier
        self.ignore_value = ignore_value
        self.size_divisibility = size_divisibility or getattr(backbone, "size_divisibility", 0)
        self.loss_weight = loss_weight
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)
        self.init_class_sets(class_set, inference_class_set)  # eval mode: the test set (ZeroShotMetaArch)
        self.classifier.set_class_set(class_set)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        return {
            "backbone": backbone,
            "head": build_pixel_feature_head(cfg, backbone.output_shape()),
            "classifier": cls.build_classifier(cfg, pixel_feature_dim(cfg)),
            "class_set": default_class_set(cfg, cls.class_kind),
            "inference_class_set": inference_class_set(cfg, cls.class_kind),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "loss_weight": cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT,
        }

    @classmethod
    def build_classifier(cls, cfg, feature_dim: int) -> nn.Module:
        """The pixel classifier (MODEL.PIXEL_CLASSIFIER); a method built on this model overrides it."""
        return build_pixel_classifier(cfg, feature_dim)

    @property
    def device(self):
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, self.size_divisibility)

    def pixel_features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images -> (N, D, h, w) pixel features (h = H / the head's stride)."""
        return self.head(self.backbone(images))

    def forward(self, batched_inputs: List[Dict]):
        images = self.preprocess_image(batched_inputs)
        scores = self.classifier(self.pixel_features(images.tensor))
        if self.training:
            return self.losses(scores, self.prepare_targets(batched_inputs, images))
        return self.inference(scores, batched_inputs, images)

    def prepare_targets(self, batched_inputs: List[Dict], images: ImageList) -> torch.Tensor:
        """(N, H_pad, W_pad) labels local to the class set; padding and unlabelled pixels ignored."""
        if "sem_seg" not in batched_inputs[0]:
            raise InputValueError("ZeroShotSemanticSegmentor trains on label maps: the training set's records need "
                                  "'sem_seg_file_name' (detectron2's semantic convention), e.g. a *_panoptic view")
        targets = ImageList.from_tensors([x["sem_seg"].to(self.device) for x in batched_inputs],
                                         self.size_divisibility, pad_value=self.ignore_value).tensor.long()
        labelled = targets != self.ignore_value
        targets[labelled] = self.class_set.to_local(targets[labelled])
        return targets

    def losses(self, scores: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        scores = F.interpolate(scores, size=targets.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(scores, targets, ignore_index=self.ignore_value)
        return {"loss_sem_seg": loss * self.loss_weight}

    def inference(self, scores: torch.Tensor, batched_inputs: List[Dict], images: ImageList) -> List[Dict]:
        """Per image: "sem_seg", the (calibrated) class probabilities in the dataset's stuff_classes
        channels (classes outside the class set: 0), at the dataset dict's height x width."""
        scores = F.interpolate(scores, size=images.tensor.shape[-2:], mode="bilinear", align_corners=False)
        probs = scores.softmax(dim=1)
        # SPNet's calibration: gamma off the seen classes' probabilities (0: unchanged).
        probs = self.classifier.calibrate(probs.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # classes last and back
        results = []
        for prob, x, image_size in zip(probs, batched_inputs, images.image_sizes):
            size = (x.get("height", image_size[0]), x.get("width", image_size[1]))
            local = sem_seg_postprocess(prob, image_size, *size)
            results.append({"sem_seg": to_dataset_channels(local, self.class_set.dataset_ids,
                                                           len(self.class_set.dataset_classes))})
        return results
