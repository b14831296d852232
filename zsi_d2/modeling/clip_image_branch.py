"""ZegFormer's CLIP image branch (inference): each predicted mask classified by CLIP's image encoder,
its probabilities fused with the segmenter's.

ZegFormer as released (dingjiansw101/ZegFormer @8cb9e8f, mask_former/mask_former_model.py):
1. masks = sigmoid(mask logits) > 0.5, at the padded input size;
2. the input image normalised with CLIP's mean / std (RGB, 0-255) and padded with 0, so the
   background of a masked image is 0 in normalised space;
3. what CLIP sees (`CLIP_CLS_STYLE`): "cropmask" (default) the masked image cropped to the mask's
   box, "crop" the unmasked image cropped to it, both by `roi_align(..., aligned=True)` to the
   encoder's input size (224 for ViT-B/16); "mask" the whole masked image resized (mask logits and
   image resized bilinearly, then thresholded). The box runs from the first to the last row and
   column of the mask (indices, not +1); an empty mask, or one a single row or column thin (a box of
   zero area), takes the whole padded image as its box: under "cropmask" its content is then all 0;
4. CLIP's logits = CLIP's own logit scale (`logit_scale.exp()`, 100 for OpenAI's weights) x cosine
   with the class names' CLIP text embeddings (32 templates, `IMAGENET_TEMPLATES_SELECT_CLIP`); the
   segmenter's raw "no object" logit is appended, softmax, "no object" dropped: p_clip (Q, K);
5. fusion (`fuse_probabilities`): ENSEMBLING (lambda = 2/3): CLIP's seen probabilities replaced by
   their mean over the seen classes, seen p_seg^lambda * p_clip^(1-lambda), unseen
   p_seg^(1-lambda) * p_clip^lambda; ENSEMBLING_ALL_CLS: p_seg^(1-lambda) * p_clip^lambda for every
   class; neither: p_clip alone. p_seg = softmax(class logits) without "no object". The fused scores
   go into the semantic sum as they are (no second softmax: ZegFormer's `semantic_inference2`);
6. GZERO_CALIBRATE (`gzero_calibrate`): subtracted from the seen channels of the final semantic map
   (after the sum over queries and the resize to the output size), when > 0, with or without the branch.

Differences: CLIP runs in fp32 here (ZegFormer's CLIP weights and logits are fp16); a class name "a; b" is
synonyms too (ZegFormer splits on ", " only); the crop size is the encoder's input size. The CLIP
weights come from a local open_clip checkpoint (MODEL.SEM_SEG_HEAD.CLIP_WEIGHTS) and never from the
network; without one the branch is off. The encoder is no submodule: its weights stay out of the
model's state_dict, parameters, optimizer and train() (it is frozen, in eval mode, without grads).
"""
import logging
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable

from ..errors import InputValueError
from ..utils.open_clip_local import create_local_open_clip, resolve_local_open_clip
from .calibration import subtract_from_seen
from .mask_former.config import add_mask_former_config

from ..embeddings.prompts import IMAGENET_TEMPLATES_SELECT_CLIP

__all__ = [
    "add_clip_image_branch_config",
    "ClipImageBranch",
    "mask_boxes",
    "clip_inputs",
    "normalize_for_clip",
    "clip_probabilities",
    "fuse_probabilities",
    "segmenter_probabilities",
    "gzero_calibrate",
    "CLIP_CLS_STYLES",
]

logger = logging.getLogger(__name__)

CLIP_CLS_STYLES = ("cropmask", "crop", "mask")
WEIGHTS_KEY = "MODEL.SEM_SEG_HEAD.CLIP_WEIGHTS"
ARCH_KEY = "MODEL.SEM_SEG_HEAD.CLIP_PRETRAINED"
ENSEMBLE_LAMBDA = 2.0 / 3.0  # ZegFormer's lambda_balance


def add_clip_image_branch_config(cfg):
    """Add the image branch's keys (ZegFormer's names, where it has them). Safe to call twice."""
    add_mask_former_config(cfg)  # MODEL.MASK_FORMER must be the core's before keys are added to it
    if "CLIP_CLS_STYLE" in cfg.MODEL:
        return cfg
    ssh = cfg.MODEL.SEM_SEG_HEAD
    # Classify each predicted mask with CLIP's image encoder too, at test time (needs CLIP_WEIGHTS).
    ssh.CLIP_CLASSIFICATION = False
    # open_clip architecture of CLIP_WEIGHTS; ZegFormer's "ViT-B/16" is read as open_clip's "ViT-B-16".
    ssh.CLIP_PRETRAINED = "ViT-B-16"
    # Local open_clip checkpoint (file or folder) for the image branch and its class names; "" = branch off.
    ssh.CLIP_WEIGHTS = ""
    # CLIP's pixel mean and std, RGB order, 0-255 (a BGR INPUT.FORMAT image is flipped to RGB first).
    cfg.MODEL.CLIP_PIXEL_MEAN = [122.7709383, 116.7460125, 104.09373615]
    cfg.MODEL.CLIP_PIXEL_STD = [68.5005327, 66.6321579, 70.3231630]
    # What CLIP sees of a mask: "cropmask" (masked image cut to the mask's box), "crop", or "mask" (whole image).
    cfg.MODEL.CLIP_CLS_STYLE = "cropmask"
    mf = cfg.MODEL.MASK_FORMER
    # Fuse CLIP's and the segmenter's probabilities, seen and unseen classes weighted apart; False: CLIP's alone.
    mf.ENSEMBLING = False
    # Fuse with one weight for all classes, p_seg^(1/3) * p_clip^(2/3) (excludes ENSEMBLING).
    mf.ENSEMBLING_ALL_CLS = False
    # When > 0, subtracted from the seen classes' channels of the semantic map at test time.
    mf.GZERO_CALIBRATE = -1.0
    return cfg


# ---- pure functions ---------------------------------------------------------------------------
def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(Q, H, W) boolean masks -> (Q, 4) float boxes (x0, y0, x1, y1) for `roi_align(aligned=True)`.

    ZegFormer's geometry: x0 / x1 = index of the first / last column holding a mask pixel (y alike);
    a box of zero area (empty mask, one row or one column) becomes the whole image (0, 0, W, H).
    """
    if masks.dim() != 3:
        raise ValueError(f"mask_boxes: expected (Q, H, W) masks, got {tuple(masks.shape)}")
    q, h, w = masks.shape
    cols, rows = masks.any(dim=1), masks.any(dim=2)
    ix = torch.arange(w, device=masks.device).expand(q, w)
    iy = torch.arange(h, device=masks.device).expand(q, h)
    x0 = torch.where(cols, ix, w).amin(dim=1)
    x1 = torch.where(cols, ix, -1).amax(dim=1)
    y0 = torch.where(rows, iy, h).amin(dim=1)
    y1 = torch.where(rows, iy, -1).amax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    flat = (x1 <= x0) | (y1 <= y0)  # empty masks too (x1 = -1 < x0 = W)
    whole = torch.tensor([0.0, 0.0, float(w), float(h)], device=masks.device)
    return torch.where(flat[:, None], whole, boxes)


def normalize_for_clip(image: torch.Tensor, padded_size: Tuple[int, int], pixel_mean: torch.Tensor,
                       pixel_std: torch.Tensor, input_format: str = "RGB") -> torch.Tensor:
    """(3, h, w) image in `input_format` ("RGB" or "BGR"), 0-255 -> (3, H, W) float in CLIP's
    normalised space, RGB, zero-padded at the bottom and right to `padded_size` (H >= h, W >= w)."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"normalize_for_clip: expected a (3, h, w) image, got {tuple(image.shape)}")
    x = image.float()
    if input_format == "BGR":
        x = x.flip(0)
    x = (x - pixel_mean.view(-1, 1, 1).to(x)) / pixel_std.view(-1, 1, 1).to(x)
    pad_h, pad_w = padded_size[0] - x.shape[1], padded_size[1] - x.shape[2]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"normalize_for_clip: image {tuple(x.shape[1:])} larger than the masks {tuple(padded_size)}")
    return F.pad(x, (0, pad_w, 0, pad_h))


def clip_inputs(image: torch.Tensor, mask_logits: torch.Tensor, style: str = "cropmask",
                size: int = 224) -> torch.Tensor:
    """CLIP's input per mask, (Q, 3, size, size): `image` (3, H, W) in CLIP's normalised space,
    `mask_logits` (Q, H, W) at the same size; `style` one of CLIP_CLS_STYLES (see the module doc)."""
    from torchvision.ops import roi_align

    if style not in CLIP_CLS_STYLES:
        raise ValueError(f"clip_inputs: style must be one of {CLIP_CLS_STYLES}, got {style!r}")
    if mask_logits.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"clip_inputs: masks {tuple(mask_logits.shape)} and image {tuple(image.shape)} differ in size")
    if style == "mask":
        small = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)
        masks = F.interpolate(mask_logits[None].float(), size=(size, size), mode="bilinear", align_corners=False)[0]
        return small * (masks.sigmoid() > 0.5)[:, None]
    masks = mask_logits.sigmoid() > 0.5
    boxes = mask_boxes(masks)
    if style == "cropmask":
        source = image[None] * masks[:, None]
        index = torch.arange(len(masks), device=image.device, dtype=boxes.dtype)
    else:
        source = image[None]
        index = boxes.new_zeros(len(masks))
    rois = torch.cat([index[:, None], boxes], dim=1)
    return roi_align(source, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def clip_probabilities(image_features: torch.Tensor, text_embeddings: torch.Tensor, logit_scale: float,
                       no_object_logits: torch.Tensor) -> torch.Tensor:
    """(Q, K) p_clip: softmax over [logit_scale x cosine(image, class texts), the segmenter's "no
    object" logit], "no object" dropped (ZegFormer's appended column)."""
    cosine = F.normalize(image_features.float(), dim=-1) @ F.normalize(text_embeddings.float(), dim=-1).t()
    logits = logit_scale * cosine
    logits = torch.cat([logits, no_object_logits.to(logits)[:, None]], dim=1)
    return F.softmax(logits, dim=-1)[:, :-1]


def segmenter_probabilities(class_logits: torch.Tensor) -> torch.Tensor:
    """(Q, K+1) logits, "no object" last -> (Q, K) p_seg: softmax over all, "no object" dropped."""
    return F.softmax(class_logits, dim=-1)[..., :-1]


def fuse_probabilities(p_seg: torch.Tensor, p_clip: torch.Tensor, is_seen: torch.Tensor,
                       lam: float = ENSEMBLE_LAMBDA, all_classes: bool = False) -> torch.Tensor:
    """ZegFormer's fusion of (Q, K) probabilities; `is_seen` (K,) bool.

    Default (ENSEMBLING): CLIP's seen probabilities are replaced by their mean over the seen classes
    (CLIP's preferences among seen classes are ignored), then seen p_seg^lam * p_clip^(1-lam), unseen
    p_seg^(1-lam) * p_clip^lam. `all_classes` (ENSEMBLING_ALL_CLS): p_seg^(1-lam) * p_clip^lam for
    every class, CLIP's seen probabilities kept.
    """
    if p_seg.shape != p_clip.shape or p_seg.shape[-1] != is_seen.numel():
        raise ValueError(f"fuse_probabilities: p_seg {tuple(p_seg.shape)}, p_clip {tuple(p_clip.shape)}, "
                         f"is_seen {tuple(is_seen.shape)} do not agree")
    if all_classes:
        return p_seg.pow(1 - lam) * p_clip.pow(lam)
    seen = is_seen.to(device=p_seg.device, dtype=torch.bool)
    if seen.any():
        seen_mean = p_clip[:, seen].mean(dim=1, keepdim=True)
        p_clip = torch.where(seen, seen_mean, p_clip)
    return torch.where(seen, p_seg.pow(lam) * p_clip.pow(1 - lam), p_seg.pow(1 - lam) * p_clip.pow(lam))


def gzero_calibrate(semseg: torch.Tensor, is_seen: torch.Tensor, value: float) -> torch.Tensor:
    """ZegFormer's GZERO_CALIBRATE: `value` subtracted from the seen channels of a (K, H, W) semantic
    map when value > 0 (its default -1 and 0 change nothing). Applied last, to the map at the output
    size, whether or not the image branch is on."""
    if not value > 0:
        return semseg
    return subtract_from_seen(semseg.movedim(0, -1), is_seen, float(value)).movedim(-1, 0)


class _Frozen:
    """Holds a module outside the nn.Module tree (no state_dict, parameters, .to() or train())."""

    def __init__(self, module: nn.Module):
        self.module = module.eval().requires_grad_(False)

    def on(self, device) -> nn.Module:
        if next(self.module.parameters()).device != torch.device(device):
            self.module.to(device)
        return self.module


class ClipImageBranch(nn.Module):
    """ZegFormer's CLIP image branch at test time. `enabled` only with a CLIP checkpoint.

    Use: `text = branch.class_embeddings(names)` once per vocabulary, then per image
    `probs = branch.classify(image, mask_logits, class_logits, is_seen, text)` (Q, K): the class
    probabilities ZegFormer's semantic sum uses (p_seg alone when the branch is off).
    """

    @configurable
    def __init__(self, *, clip_classification: bool = True, weights: str = "", arch: str = "ViT-B-16",
                 pixel_mean: Sequence[float] = (122.7709383, 116.7460125, 104.09373615),
                 pixel_std: Sequence[float] = (68.5005327, 66.6321579, 70.3231630), input_format: str = "RGB",
                 style: str = "cropmask", ensembling: bool = False, ensembling_all_cls: bool = False,
                 ensemble_lambda: float = ENSEMBLE_LAMBDA, masks_per_batch: int = 32, cache_dir: str = ""):
        """
        clip_classification, weights: the branch is on when both are set (weights: a local open_clip
            checkpoint of architecture `arch`, file or folder; never downloaded).
        pixel_mean, pixel_std: CLIP's, RGB, 0-255. input_format: the images' channel order, RGB or BGR.
        style: one of CLIP_CLS_STYLES. ensembling / ensembling_all_cls: the fusion (at most one; neither:
            CLIP's probabilities alone). masks_per_batch: masks cropped and encoded at once (memory only).
        cache_dir: the text embeddings' cache (MODEL.ZERO_SHOT.EMBEDDING.CACHE_DIR).
        """
        super().__init__()
        if style not in CLIP_CLS_STYLES:
            raise InputValueError(f"MODEL.CLIP_CLS_STYLE={style!r}: set it to one of {list(CLIP_CLS_STYLES)}")
        if ensembling and ensembling_all_cls:
            raise InputValueError("MODEL.MASK_FORMER.ENSEMBLING and ENSEMBLING_ALL_CLS are both True: set at most one")
        self.style, self.ensembling, self.ensembling_all_cls = style, ensembling, ensembling_all_cls
        self.ensemble_lambda = ensemble_lambda
        self.masks_per_batch = max(1, int(masks_per_batch))
        self.cache_dir = cache_dir
        self.register_buffer("clip_pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("clip_pixel_std", torch.tensor(pixel_std, dtype=torch.float32), persistent=False)
        self._encoder: Optional[_Frozen] = None
        self._text_memo: Dict[Tuple[str, ...], torch.Tensor] = {}
        self.checkpoint = None
        if not clip_classification:
            logger.info("CLIP image branch off (MODEL.SEM_SEG_HEAD.CLIP_CLASSIFICATION is False)")
            return
        if not weights:
            logger.warning(f"CLIP image branch off: {WEIGHTS_KEY} is empty (no CLIP weights ship with zsi_d2), "
                           "so masks are classified by the segmenter alone; set it to a local open_clip checkpoint")
            return
        if input_format not in ("RGB", "BGR"):
            raise InputValueError(f"INPUT.FORMAT={input_format!r}: the CLIP image branch reads RGB or BGR images")
        self.input_format, self.arch = input_format, arch
        self.checkpoint = resolve_local_open_clip(weights, arch, path_key=WEIGHTS_KEY, arch_key=ARCH_KEY,
                                                  what="CLIP image branch:")
        model = create_local_open_clip(self.checkpoint)
        self.logit_scale = float(model.logit_scale.detach().exp())
        size = getattr(model.visual, "image_size", 224)
        self.input_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self._encoder = _Frozen(model.visual)  # the text tower is not kept: class_embeddings loads its own
        logger.info(f"CLIP image branch on: '{self.checkpoint.model_name}' from {self.checkpoint.path}, style "
                    f"{style}, {self.input_size}px crops, logit scale {self.logit_scale:.4g}")

    @classmethod
    def from_config(cls, cfg):
        ssh = cfg.MODEL.SEM_SEG_HEAD
        mf = cfg.MODEL.MASK_FORMER
        return {
            "clip_classification": ssh.CLIP_CLASSIFICATION,
            "weights": ssh.CLIP_WEIGHTS,
            "arch": ssh.CLIP_PRETRAINED,
            "pixel_mean": cfg.MODEL.CLIP_PIXEL_MEAN,
            "pixel_std": cfg.MODEL.CLIP_PIXEL_STD,
            "input_format": cfg.INPUT.FORMAT,
            "style": cfg.MODEL.CLIP_CLS_STYLE,
            "ensembling": mf.ENSEMBLING,
            "ensembling_all_cls": mf.ENSEMBLING_ALL_CLS,
            "cache_dir": cfg.MODEL.ZERO_SHOT.EMBEDDING.CACHE_DIR if "ZERO_SHOT" in cfg.MODEL else "",
        }

    @property
    def enabled(self) -> bool:
        return self._encoder is not None

    def class_embeddings(self, class_names: Sequence[str]) -> torch.Tensor:
        """(K, D) CLIP text embeddings of the names with ZegFormer's 32 image-branch templates, from the
        branch's checkpoint (cached on disk like every class embedding; memoised per vocabulary)."""
        if not self.enabled:
            raise RuntimeError("ClipImageBranch.class_embeddings: the branch is off (no CLIP checkpoint)")
        key = tuple(class_names)
        if key not in self._text_memo:
            from ..embeddings import get_class_embeddings

            self._text_memo[key] = get_class_embeddings(
                "clip", key, path=self.checkpoint.path, clip_arch=self.arch,
                templates=IMAGENET_TEMPLATES_SELECT_CLIP, cache_dir=self.cache_dir)
        return self._text_memo[key]

    @torch.no_grad()
    def encode_masks(self, image: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
        """(Q, D) CLIP image features (not normalised) of one image's masks: `image` (3, h, w) in the
        input format, 0-255, unpadded; `mask_logits` (Q, H, W) at the padded size (H >= h, W >= w)."""
        if not self.enabled:
            raise RuntimeError("ClipImageBranch: the branch is off (no CLIP checkpoint)")
        device = mask_logits.device
        encoder = self._encoder.on(device)
        clip_image = normalize_for_clip(image.to(device), tuple(mask_logits.shape[-2:]), self.clip_pixel_mean,
                                        self.clip_pixel_std, self.input_format)
        features = []
        for start in range(0, len(mask_logits), self.masks_per_batch):
            chunk = mask_logits[start : start + self.masks_per_batch]
            features.append(encoder(clip_inputs(clip_image, chunk, self.style, self.input_size)).float())
        return torch.cat(features, 0)

    @torch.no_grad()
    def forward(self, image: torch.Tensor, mask_logits: torch.Tensor, text_embeddings: torch.Tensor,
                no_object_logits: torch.Tensor) -> torch.Tensor:
        """(Q, K) p_clip of one image's masks (see `encode_masks` for the inputs); `text_embeddings`
        (K, D) from `class_embeddings`; `no_object_logits` (Q,) the segmenter's "no object" logits."""
        features = self.encode_masks(image, mask_logits)
        return clip_probabilities(features, text_embeddings.to(features.device), self.logit_scale, no_object_logits)

    def classify(self, image: torch.Tensor, mask_logits: torch.Tensor, class_logits: torch.Tensor,
                 is_seen: torch.Tensor, text_embeddings: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(Q, K) class probabilities for the semantic sum: the segmenter's alone (softmax of
        `class_logits` (Q, K+1), "no object" last, dropped) when the branch is off; otherwise fused
        as configured (ENSEMBLING, ENSEMBLING_ALL_CLS, or CLIP's alone)."""
        p_seg = segmenter_probabilities(class_logits)
        if not self.enabled:
            return p_seg
        p_clip = self(image, mask_logits, text_embeddings, class_logits[:, -1])
        if not (self.ensembling or self.ensembling_all_cls):
            return p_clip
        return fuse_probabilities(p_seg, p_clip, is_seen, self.ensemble_lambda, all_classes=self.ensembling_all_cls)
