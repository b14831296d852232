"""Loading detectron2 checkpoints into zero-shot models.

Why: fine-tuning starts from a standard (closed-set) Mask R-CNN checkpoint. Its class-agnostic
weights (backbone, FPN, RPN conv, box-head FCs) transfer; its class-specific layers (classifier,
per-class box regression, per-class mask predictor) cannot, and are created fresh. fvcore skips
*every* shape mismatch with a warning, which hides a checkpoint built for another architecture;
here any mismatch outside the class-specific layers is an error naming the parameter.
"""
import logging
from collections import defaultdict

from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["ZeroShotCheckpointer", "CLASS_SPECIFIC_PREFIXES"]

logger = logging.getLogger(__name__)

# Parameters whose shape depends on the class count in a closed-set detectron2 model.
CLASS_SPECIFIC_PREFIXES = (
    "roi_heads.box_predictor.",
    "roi_heads.mask_head.predictor.",
)


def _module_of(key, depth=3):
    return ".".join(key.split(".")[:depth])


class ZeroShotCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that refuses architecture mismatches and says what was created fresh."""

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        wrong = [(k, c, m) for k, c, m in incompatible.incorrect_shapes if not k.startswith(CLASS_SPECIFIC_PREFIXES)]
        if wrong:
            lines = "\n".join(f"  {k}: checkpoint {tuple(c)} vs model {tuple(m)}" for k, c, m in wrong[:10])
            raise ValueError(
                f"The checkpoint does not fit this config ({len(wrong)} parameters with other shapes):\n{lines}\n"
                "Check that MODEL.BACKBONE / FPN / heads match the model the checkpoint was trained with."
            )
        fresh = defaultdict(int)
        for key in incompatible.missing_keys:
            fresh[_module_of(key)] += 1
        for key, _, _ in incompatible.incorrect_shapes:
            fresh[_module_of(key)] += 1
        if fresh:
            listing = ", ".join(f"{m} ({n})" for m, n in sorted(fresh.items()))
            logger.info(f"Created fresh (class-specific or new in this model), not loaded: {listing}")
        return incompatible
