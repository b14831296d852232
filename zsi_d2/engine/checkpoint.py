"""Loading checkpoints into zero-shot models: only what fits, and never a silently random model.

Why: fvcore skips every shape mismatch and every missing parameter with a warning, so a checkpoint
built for another architecture, another embedding size or no detectron2 model at all loads
"successfully" and the model is scored with random layers: a random unseen AP looks like a result.
Here, by purpose:

- "eval" (`--eval-only`, resuming): every parameter must come from the checkpoint; a missing or
  mis-shaped one is an error that lists them and says what the checkpoint was made for.
- "train" (starting from MODEL.WEIGHTS): parameters absent from the checkpoint start fresh (new
  modules, e.g. the zero-shot projection of a closed-set Mask R-CNN) and are listed in the log;
  of the parameters the checkpoint does have, only those whose shape depends on the class count
  (closed-set classifier, per-class box regression and mask predictor) may differ; a checkpoint
  that matches nothing is refused; and a closed-set classifier over more classes than the seen
  ones (it has seen unseen classes: the model-zoo COCO Mask R-CNN, say) is refused unless
  MODEL.ZERO_SHOT.ALLOW_UNSEEN_IN_WEIGHTS says otherwise.

Checkpoints saved here carry a "zsi_d2" entry (architecture, embedding, training classes), so a
mismatch can say which config the checkpoint fits and an unseen class in its training set is seen.
"""
import logging
import os
from collections import defaultdict
from typing import Optional, Sequence

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts

from ..errors import CheckpointMismatchError, InputValueError
from ..modeling.class_set import training_class_names

__all__ = ["ZeroShotCheckpointer", "CLASS_COUNT_PARAMETERS", "describe_checkpoint", "checkpoint_summary",
           "read_checkpoint"]

logger = logging.getLogger(__name__)

# Parameters whose shape depends on the class count in a closed-set detectron2 model (and only those).
CLASS_COUNT_PARAMETERS = (
    "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.cls_score.bias",
    "roi_heads.box_predictor.bbox_pred.weight",
    "roi_heads.box_predictor.bbox_pred.bias",
    "roi_heads.mask_head.predictor.weight",
    "roi_heads.mask_head.predictor.bias",
)
_CLOSED_SET_CLASSIFIER = "roi_heads.box_predictor.cls_score.weight"
_PROJECTION = "roi_heads.box_predictor.cls_score.project.weight"
# Buffers detectron2 itself initialises from the config when a checkpoint lacks them.
_FROM_CONFIG = ("pixel_mean", "pixel_std")
_PURPOSES = ("train", "eval")


def _module_of(key, depth=3):
    return ".".join(key.split(".")[:depth])


def _listing(keys, limit=8):
    keys = list(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def checkpoint_summary(cfg) -> dict:
    """What a checkpoint of `cfg`'s model was made for; saved with every zsi_d2 checkpoint."""
    emb = cfg.MODEL.ZERO_SHOT.EMBEDDING
    summary = {
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "backbone": cfg.MODEL.BACKBONE.NAME,
        "rpn_head": cfg.MODEL.RPN.HEAD_NAME,
        "roi_heads": cfg.MODEL.ROI_HEADS.NAME,
        "mask_head": cfg.MODEL.ROI_MASK_HEAD.NAME if cfg.MODEL.MASK_ON else "",
        "embedding": f"{emb.SOURCE}" + (f" ({emb.PATH})" if emb.PATH else ""),
        "train_datasets": list(cfg.DATASETS.TRAIN),
    }
    if cfg.DATASETS.TRAIN:
        summary["trained_classes"] = list(training_class_names(cfg))
    return summary


def describe_checkpoint(checkpoint: dict, path: str = "") -> str:
    """One sentence on what a loaded checkpoint was made for, as far as its contents tell."""
    state = checkpoint.get("model", {})
    info = checkpoint.get("zsi_d2")
    if info:
        parts = [f"{k}={v}" for k, v in info.items() if k not in ("trained_classes",) and v]
        text = "It was saved by zsi_d2 from a model with " + ", ".join(parts)
        if _PROJECTION in state:
            text += f", {tuple(state[_PROJECTION].shape)[0]}-d class embeddings"
        config = os.path.join(os.path.dirname(os.path.abspath(path)), "config.yaml") if path else ""
        if config and os.path.isfile(config):
            text += f"; its training config is {config}"
        return text + "."
    if not any(k.startswith(("backbone.", "proposal_generator.", "roi_heads.")) for k in state):
        sample = _listing(sorted(state)[:3], 3)
        return (
            f"It is not a detectron2 model (keys like {sample}): a bare backbone state_dict, e.g. an ImageNet "
            "classifier, fits MODEL.WEIGHTS only in detectron2's format (.pkl with matching heuristics)."
        )
    if _CLOSED_SET_CLASSIFIER in state:
        num = tuple(state[_CLOSED_SET_CLASSIFIER].shape)[0] - 1
        return f"It is a closed-set detectron2 model with a {num}-class classifier (not a zero-shot one)."
    if _PROJECTION in state:
        return f"It is a zero-shot model with {tuple(state[_PROJECTION].shape)[0]}-d class embeddings."
    return "It is a detectron2 model of another architecture."


def read_checkpoint(path: str) -> dict:
    """A checkpoint file's dict ("model" = its state dict, "zsi_d2" = what it was made for), read
    without loading it into a model; a file that is no checkpoint is one InputValueError."""
    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch.load / pickle on a file that is no checkpoint
        raise InputValueError(
            f"MODEL.WEIGHTS='{path}' is not a readable checkpoint (torch.load: {type(e).__name__}). Give a .pth "
            "saved by detectron2 or torch.save(model.state_dict()), or a detectron2 .pkl."
        ) from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("model", loaded), dict):
        raise InputValueError(f"MODEL.WEIGHTS='{path}' holds no model parameters (found {type(loaded).__name__})")
    return loaded if "model" in loaded else {"model": loaded}


class ZeroShotCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that loads only what fits (see the module docstring).

    Args:
        purpose: "eval" (every parameter must load) or "train" (start from a checkpoint).
        seen_classes: the classes training scores; unseen_classes: the split's unseen ones (for
            the fairness check of a starting checkpoint).
        allow_unseen_in_weights: accept a starting checkpoint trained on unseen classes.
        summary: saved with every checkpoint (`checkpoint_summary(cfg)`).
    """

    def __init__(
        self,
        model,
        save_dir: str = "",
        *,
        purpose: str = "eval",
        seen_classes: Sequence[str] = (),
        unseen_classes: Sequence[str] = (),
        allow_unseen_in_weights: bool = False,
        summary: Optional[dict] = None,
        **checkpointables,
    ):
        super().__init__(model, save_dir, **checkpointables)
        if purpose not in _PURPOSES:
            raise ValueError(f"purpose must be one of {_PURPOSES}, got '{purpose}'")
        self.purpose = purpose
        self.seen_classes = tuple(seen_classes)
        self.unseen_classes = tuple(unseen_classes)
        self.allow_unseen_in_weights = allow_unseen_in_weights
        self.summary = summary
        self._resuming = False
        self._path = ""

    @classmethod
    def from_config(cls, cfg, model, save_dir: str = "", *, purpose: str, **checkpointables):
        """seen = the classes the training set trains (its class set), unseen = its split's unseen."""
        from detectron2.data import MetadataCatalog

        unseen = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("unseen_classes", ()) if cfg.DATASETS.TRAIN else ()
        return cls(
            model, save_dir, purpose=purpose, seen_classes=training_class_names(cfg), unseen_classes=unseen,
            allow_unseen_in_weights=cfg.MODEL.ZERO_SHOT.ALLOW_UNSEEN_IN_WEIGHTS,
            summary=checkpoint_summary(cfg), **checkpointables,
        )

    # -- saving --------------------------------------------------------------------------------
    def save(self, name: str, **kwargs):
        if self.summary is not None:
            kwargs.setdefault("zsi_d2", self.summary)
        super().save(name, **kwargs)

    # -- loading -------------------------------------------------------------------------------
    def resume_or_load(self, path: str, *, resume: bool = True):
        # Resuming reads our own last checkpoint: it must fit exactly, like an evaluation.
        self._resuming = resume and self.has_checkpoint()
        try:
            return super().resume_or_load(path, resume=resume)
        finally:
            self._resuming = False

    def load(self, path: str, checkpointables=None):
        self._path = path
        return super().load(path, checkpointables)

    def _load_file(self, filename):
        try:
            loaded = super()._load_file(filename)
        except Exception as e:  # torch.load / pickle on a file that is no checkpoint
            raise InputValueError(
                f"MODEL.WEIGHTS='{filename}' is not a readable checkpoint (torch.load: {type(e).__name__}). Give a .pth "
                "saved by detectron2 or torch.save(model.state_dict()), or a detectron2 .pkl."
            ) from None
        state = loaded.get("model") if isinstance(loaded, dict) else None
        if not isinstance(state, dict) or not state:
            raise InputValueError(
                f"MODEL.WEIGHTS='{filename}' holds no model parameters (found {type(state).__name__}). Give a .pth "
                "saved by detectron2 or torch.save(model.state_dict()), or a detectron2 .pkl."
            )
        return loaded

    def _load_model(self, checkpoint):
        description = describe_checkpoint(checkpoint, self._path)
        strict = self.purpose == "eval" or self._resuming
        if not strict:
            self._refuse_unseen_classes(checkpoint, description)
            # A model may turn a starting checkpoint into its own start (PADing's stage 2 expands a
            # stage-1 classifier to every class, as its reference code does offline).
            adapt = getattr(self.model, "adapt_starting_checkpoint", None)
            if adapt is not None:
                adapt(checkpoint)
        self._rename_by_heuristics(checkpoint)
        provided = {k[len("module."):] if k.startswith("module.") else k for k in checkpoint["model"]}
        incompatible = super()._load_model(checkpoint)
        wrong = incompatible.incorrect_shapes
        wrong_keys = {k for k, _, _ in wrong}
        # Computed from the checkpoint's keys, not fvcore's report: detectron2's FrozenBatchNorm2d
        # fills absent running statistics with zeros and ones without a word.
        missing = [
            k for k in self.model.state_dict()
            if k not in provided and k not in wrong_keys and k.split(".")[-1] not in _FROM_CONFIG
        ]
        if strict:
            self._require_everything(missing, wrong, description)
        else:
            self._require_fitting_start(missing, wrong, description)
        return incompatible

    def _rename_by_heuristics(self, checkpoint):
        """detectron2 renames Caffe2/pycls/model-zoo weights to the model's names while loading;
        done here first (the same call) so that what loaded can be counted in the model's names."""
        if checkpoint.get("matching_heuristics", False):
            self._convert_ndarray_to_tensor(checkpoint["model"])
            checkpoint["model"] = align_and_update_state_dicts(
                self.model.state_dict(), checkpoint["model"], c2_conversion=checkpoint.get("__author__") == "Caffe2"
            )
            checkpoint["matching_heuristics"] = False

    def _where(self):
        return f"MODEL.WEIGHTS='{self._path}'" if self._path else "The checkpoint"

    def _require_everything(self, missing, wrong, description):
        if not missing and not wrong:
            return
        example = wrong[0][0] if wrong else missing[0]
        lines = [f"  {k}: checkpoint {tuple(c)} vs model {tuple(m)}" for k, c, m in wrong[:10]]
        if missing:
            lines.append(f"  missing from the checkpoint ({len(missing)}): {_listing(missing)}")
        raise CheckpointMismatchError(
            f"{self._where()} does not fit this config ({len(missing)} parameters missing, {len(wrong)} with other "
            f"shapes, e.g. {example}): evaluating it would score randomly initialised layers. {description} "
            "Evaluate it with the config it was trained with.\n" + "\n".join(lines)
        )

    def _require_fitting_start(self, missing, wrong, description):
        bad = [(k, c, m) for k, c, m in wrong if k not in CLASS_COUNT_PARAMETERS]
        if bad:
            lines = "\n".join(f"  {k}: checkpoint {tuple(c)} vs model {tuple(m)}" for k, c, m in bad[:10])
            raise CheckpointMismatchError(
                f"{self._where()} does not fit this config ({len(bad)} parameters with other shapes, e.g. {bad[0][0]}; "
                f"only the class-count-dependent layers may differ). {description} Check MODEL.BACKBONE / FPN / "
                f"heads and MODEL.ZERO_SHOT.EMBEDDING against the model the checkpoint was trained with.\n{lines}"
            )
        if len(missing) + len(wrong) >= len(self.model.state_dict()):
            raise CheckpointMismatchError(
                f"{self._where()} matches no parameter of this model: training would start from random weights "
                f"while claiming a checkpoint. {description}"
            )
        fresh = defaultdict(int)
        for key in missing + [k for k, _, _ in wrong]:
            fresh[_module_of(key)] += 1
        if fresh:
            listing = ", ".join(f"{m} ({n})" for m, n in sorted(fresh.items()))
            logger.info(f"Created fresh (class-specific or new in this model), not loaded: {listing}")

    def _refuse_unseen_classes(self, checkpoint, description):
        """A starting checkpoint trained on unseen classes makes unseen numbers unfair."""
        state = checkpoint.get("model", {})
        info = checkpoint.get("zsi_d2") or {}
        reason = None
        trained = set(info.get("trained_classes", ()))
        if trained & set(self.unseen_classes):
            reason = f"it was trained on unseen classes {sorted(trained & set(self.unseen_classes))}"
        elif not info and _CLOSED_SET_CLASSIFIER in state and self.seen_classes:
            num = tuple(state[_CLOSED_SET_CLASSIFIER].shape)[0] - 1
            if num > len(self.seen_classes):
                reason = (
                    f"its closed-set classifier covers {num} classes, more than the {len(self.seen_classes)} seen "
                    "ones, so it was trained on classes this split treats as unseen (e.g. a COCO model-zoo model)"
                )
        if reason is None:
            return
        if self.allow_unseen_in_weights:
            logger.warning(
                f"!!! {self._where()}: {reason}. MODEL.ZERO_SHOT.ALLOW_UNSEEN_IN_WEIGHTS is True, so it is used: "
                "the unseen-class numbers of this run are NOT zero-shot results. !!!"
            )
            return
        raise CheckpointMismatchError(
            f"{self._where()} is not a fair zero-shot starting point: {reason}. Start from ImageNet weights "
            "(e.g. R-101.pkl) or a checkpoint trained on the seen classes only; to use it anyway (results not "
            "zero-shot), set MODEL.ZERO_SHOT.ALLOW_UNSEEN_IN_WEIGHTS True."
        )
