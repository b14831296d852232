"""ZeroShotMaskFormer: Mask2Former-style mask classification whose queries are classified by name.

backbone -> pixel decoder -> masked-attention transformer decoder -> query classifier (every
layer's queries) -> set criterion in training; semantic, panoptic and instance inference from the
same outputs at test time, each in the dataset's own label space (detectron2's conventions: sem_seg
channels = stuff_classes, panoptic category_id = index into stuff_classes, instance pred_classes =
index into thing_classes), so detectron2's and zsi_d2's evaluators and visualisers read them.

The class set follows the dataset's metadata like every zsi_d2 model ("auto": stuff_classes, the
whole label space, where the dataset has them): seen classes in training, seen + unseen or unseen
at test; in eval mode, until a set is chosen, the config's test set (seen + unseen). Training
labels become local indices through `ClassSet.to_local`, which refuses any class outside the
training set (the last line of the leakage guard).
"""
from typing import Dict, List, Optional

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import ImageList

from ..class_set import ClassSet, ZeroShotMetaArch, default_class_set, inference_class_set
from .criterion import SetCriterion
from .full_mask_criterion import FullMaskSetCriterion
from ...errors import InputKeyError, InputValueError
from .inference import (
    crop_and_resize, instance_inference, panoptic_inference_tensors, panoptic_segments_info, semantic_inference,
    to_dataset_channels, upsample_to_padded,
)
from .pixel_decoder import build_pixel_decoder
from .query_classifier import build_query_classifier
from .transformer_decoder import TRANSFORMER_DECODER_REGISTRY, build_transformer_decoder

__all__ = ["ZeroShotMaskFormer", "build_set_criterion"]

# MODEL.MASK_FORMER.CRITERION -> criterion class.
SET_CRITERIA = {"point_sampled": SetCriterion, "full_mask": FullMaskSetCriterion}
# MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE values read from the pixel decoder (any other value is a backbone feature).
MULTI_SCALE_INPUT = "multi_scale_pixel_decoder"
PIXEL_DECODER_INPUTS = (MULTI_SCALE_INPUT, "transformer_encoder", "pixel_embedding")


def build_set_criterion(cfg) -> SetCriterion:
    """The criterion named by MODEL.MASK_FORMER.CRITERION."""
    name = cfg.MODEL.MASK_FORMER.CRITERION
    if name not in SET_CRITERIA:
        raise InputValueError(f"MODEL.MASK_FORMER.CRITERION '{name}' is not one of {sorted(SET_CRITERIA)}")
    return SET_CRITERIA[name](cfg)


def decoder_input_channels(cfg, backbone_shape) -> int:
    """Width of the map(s) MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE hands the transformer decoder,
    after checking that the configured decoder takes that input."""
    mf, ssh = cfg.MODEL.MASK_FORMER, cfg.MODEL.SEM_SEG_HEAD
    source = mf.TRANSFORMER_IN_FEATURE
    decoder = TRANSFORMER_DECODER_REGISTRY.get(mf.TRANSFORMER_DECODER_NAME)
    multi_scale = getattr(decoder, "takes_multi_scale_features", True)
    if multi_scale != (source == MULTI_SCALE_INPUT):
        wanted = f"'{MULTI_SCALE_INPUT}'" if multi_scale else f"one map ({PIXEL_DECODER_INPUTS[1:]} or a backbone feature)"
        raise InputValueError(f"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE '{source}' does not suit "
                              f"{mf.TRANSFORMER_DECODER_NAME}, which takes {wanted}")
    if source in (MULTI_SCALE_INPUT, "transformer_encoder"):
        return ssh.CONVS_DIM
    if source == "pixel_embedding":
        return ssh.MASK_DIM
    if source not in backbone_shape:
        raise InputValueError(f"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE '{source}' is neither one of "
                              f"{list(PIXEL_DECODER_INPUTS)} nor a backbone output {sorted(backbone_shape)}")
    return backbone_shape[source].channels


@META_ARCH_REGISTRY.register()
class ZeroShotMaskFormer(ZeroShotMetaArch, nn.Module):
    """Universal zero-shot segmentation: one model, semantic + instance + panoptic outputs."""

    class_kind = "auto"  # use_class_set: the dataset's whole label space (stuff_classes if present)

    @configurable
    def __init__(self, *, backbone, pixel_decoder, transformer_decoder, classifier, criterion, class_set: ClassSet,
                 pixel_mean, pixel_std, transformer_in_feature: str = MULTI_SCALE_INPUT,
                 size_divisibility: int = 32, semantic_on: bool = True,
                 instance_on: bool = True, panoptic_on: bool = True, object_mask_threshold: float = 0.8,
                 overlap_threshold: float = 0.8, detections_per_image: int = 100,
                 inference_class_set: Optional[ClassSet] = None):
        super().__init__()
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.transformer_decoder = transformer_decoder
        self.classifier = classifier
        self.criterion = criterion
        self.transformer_in_feature = transformer_in_feature
        self.size_divisibility = size_divisibility or getattr(backbone, "size_divisibility", 0)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)
        self.semantic_on, self.instance_on, self.panoptic_on = semantic_on, instance_on, panoptic_on
        self.object_mask_threshold = object_mask_threshold
        self.overlap_threshold = overlap_threshold
        self.detections_per_image = detections_per_image
        self.init_class_sets(class_set, inference_class_set)  # eval mode: the test set (ZeroShotMetaArch)
        self.classifier.set_class_set(class_set)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        mf = cfg.MODEL.MASK_FORMER
        return {
            "backbone": backbone,
            "pixel_decoder": build_pixel_decoder(cfg, backbone.output_shape()),
            "transformer_decoder": build_transformer_decoder(cfg, decoder_input_channels(cfg, backbone.output_shape())),
            "transformer_in_feature": mf.TRANSFORMER_IN_FEATURE,
            "classifier": cls.build_classifier(cfg),
            "criterion": build_set_criterion(cfg),
            "class_set": default_class_set(cfg, cls.class_kind),
            "inference_class_set": inference_class_set(cfg, cls.class_kind),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "size_divisibility": mf.SIZE_DIVISIBILITY,
            "semantic_on": mf.TEST.SEMANTIC_ON,
            "instance_on": mf.TEST.INSTANCE_ON,
            "panoptic_on": mf.TEST.PANOPTIC_ON,
            "object_mask_threshold": mf.TEST.OBJECT_MASK_THRESHOLD,
            "overlap_threshold": mf.TEST.OVERLAP_THRESHOLD,
            "detections_per_image": mf.TEST.DETECTIONS_PER_IMAGE or mf.NUM_OBJECT_QUERIES,
        }

    @classmethod
    def build_classifier(cls, cfg) -> nn.Module:
        """The query classifier (MODEL.MASK_FORMER.CLASSIFIER); a method built on the core overrides it."""
        return build_query_classifier(cfg)

    @property
    def device(self):
        return self.pixel_mean.device

    # ---- forward ----------------------------------------------------------------------------
    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, self.size_divisibility)

    def predict(self, images: torch.Tensor) -> Dict:
        """Every layer's class logits (uncalibrated), masks and query embeddings for a padded image batch."""
        features = self.backbone(images)
        mask_features, encoder_features, multi_scale_features = self.pixel_decoder.forward_features(features)
        source = self.transformer_in_feature
        if source == MULTI_SCALE_INPUT:
            decoder_input = multi_scale_features
        elif source == "transformer_encoder":
            decoder_input = encoder_features
        elif source == "pixel_embedding":
            decoder_input = mask_features
        else:
            decoder_input = features[source]
        outputs = self.transformer_decoder(decoder_input, mask_features)
        for layer in [outputs] + list(outputs.get("aux_outputs", [])):
            layer["pred_logits"] = self.classifier(layer["pred_queries"])
        return outputs

    def forward(self, batched_inputs: List[Dict]):
        images = self.preprocess_image(batched_inputs)
        outputs = self.predict(images.tensor)
        if self.training:
            return self.losses(outputs, self.prepare_targets(batched_inputs, images))
        return self.inference(outputs, batched_inputs, images)

    def prepare_targets(self, batched_inputs: List[Dict], images: ImageList) -> List[Dict]:
        """Each image's masks padded to the batch tensor, labels as local indices of the class set."""
        if "instances" not in batched_inputs[0]:
            raise InputKeyError("ZeroShotMaskFormer needs 'instances' in training inputs: set "
                                "INPUT.DATASET_MAPPER_NAME to mask_former_panoptic, mask_former_instance or "
                                "mask_former_semantic")
        h_pad, w_pad = images.tensor.shape[-2:]
        targets = []
        for x in batched_inputs:
            gt = x["instances"].to(self.device)
            masks = gt.gt_masks if isinstance(gt.gt_masks, torch.Tensor) else gt.gt_masks.tensor
            padded = masks.new_zeros((masks.shape[0], h_pad, w_pad))
            padded[:, : masks.shape[1], : masks.shape[2]] = masks
            targets.append({"labels": self.class_set.to_local(gt.gt_classes), "masks": padded})
        return targets

    def losses(self, outputs: Dict, targets: List[Dict]) -> Dict[str, torch.Tensor]:
        return self.criterion(outputs, targets)

    def inference(self, outputs: Dict, batched_inputs: List[Dict], images: ImageList,
                  panoptic_as_tensors: bool = False) -> List[Dict]:
        """Per image: "sem_seg" (stuff_classes channels), "panoptic_seg", "instances" (thing_classes
        ids), in the dataset dict's height x width.

        Mask2Former's order: the mask logits are upsampled to the padded batch size; with panoptic or
        instance outputs on, they are cropped and resized to the output size before every rule (those
        outputs are masks at that size). A semantic-only model takes the semantic sum at the padded
        size and crops and resizes the class probabilities (Mask2Former's
        sem_seg_postprocess_before_inference = False), as its published semantic numbers were made.
        `panoptic_as_tensors`: per-query tensors instead of segments_info (`_panoptic`), for export.
        """
        padded = tuple(images.tensor.shape[-2:])
        resize_masks_first = self.panoptic_on or self.instance_on
        logits = self.classifier.calibrate(outputs["pred_logits"])  # the test-time gamma (0: unchanged)
        results = []
        for mask_cls, mask_pred, x, image_size in zip(logits, outputs["pred_masks"],
                                                      batched_inputs, images.image_sizes):
            size = (x.get("height", image_size[0]), x.get("width", image_size[1]))
            mask_pred = upsample_to_padded(mask_pred, padded)
            class_probs = self.semantic_class_probabilities(mask_cls, mask_pred, x) if self.semantic_on else None
            if resize_masks_first:
                mask_pred = crop_and_resize(mask_pred, image_size, size)
            result = {}
            if self.semantic_on:
                local = semantic_inference(mask_cls, mask_pred, class_probs)
                if not resize_masks_first:
                    local = crop_and_resize(local, image_size, size)
                result["sem_seg"] = to_dataset_channels(local, self.class_set.dataset_ids,
                                                        len(self.class_set.dataset_classes))
            if self.panoptic_on:
                result["panoptic_seg"] = self._panoptic(mask_cls, mask_pred, panoptic_as_tensors)
            if self.instance_on:
                result["instances"] = self._instances(mask_cls, mask_pred)
            results.append(result)
        return results

    def semantic_class_probabilities(self, mask_cls, mask_pred, batched_input):
        """(Q, K) class probabilities for one image's semantic sum instead of softmax(mask_cls), or
        None (the core's rule). A method that re-scores masks at test time (ZegFormer's CLIP image
        branch) overrides it; mask_pred are the mask logits at the padded input size."""
        return None

    def _panoptic(self, mask_cls, mask_pred, as_tensors: bool = False):
        """(panoptic_seg, segments_info) with dataset category ids; `as_tensors`: (panoptic_seg,
        {"segment_ids", "category_ids", "isthing"} per query), the traceable form that
        `panoptic_segments_info` turns into segments_info (export builds it outside the trace)."""
        seg, segment_ids, classes, isthing = panoptic_inference_tensors(
            mask_cls, mask_pred, self.class_set.is_thing, self.object_mask_threshold, self.overlap_threshold)
        dataset_ids = self.class_set.dataset_ids.to(classes.device)
        category_ids = dataset_ids[classes.clamp(max=dataset_ids.numel() - 1)]  # "no object" rows: never read
        if as_tensors:
            return seg, {"segment_ids": segment_ids, "category_ids": category_ids, "isthing": isthing}
        return seg, panoptic_segments_info(segment_ids, category_ids, isthing)

    def _instances(self, mask_cls, mask_pred):
        thing = self.class_set.thing_ids.to(mask_cls.device)
        instances = instance_inference(mask_cls, mask_pred, thing >= 0, self.detections_per_image)
        instances.pred_classes = thing[instances.pred_classes]
        return instances
