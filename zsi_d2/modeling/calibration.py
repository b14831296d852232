"""Calibrated stacking: subtract gamma from the seen classes' scores at test time.

Why: a classifier trained on seen classes only scores them higher on everything, unseen objects
included (on zs_shapes 91-98 % of the unseen objects found get a seen class as their top label).
Lowering every seen score by one constant gamma (Chao et al., ECCV 2016) trades seen for unseen
decisions. It must be chosen without unseen labels: `choose_gamma` takes the largest gamma whose
share of *seen* held-out objects labelled unseen stays at or below a target rate
(zsi_d2.engine.calibration runs it on held-out training images).

Written once for every zero-shot classifier: a classifier mixes in `SeenCalibrated`, learns which
of its score columns are seen when the class set switches, and `calibrate` is applied at test time
to the scores decisions are made from (the R-CNN predictors: the logits before the softmax; a
mask-classification model: the query logits, in its `inference`, so `predict` stays uncalibrated).
The configured gamma is a test-time setting of the model; the gamma search passes each candidate
to `calibrate` as an argument and never changes the model.
"""
import logging
from typing import Mapping, Optional

import torch

from ..errors import InputValueError
from ..utils.model import unwrap

__all__ = ["subtract_from_seen", "SeenCalibrated", "set_calibration_gamma", "choose_gamma", "gamma_grid"]

logger = logging.getLogger(__name__)


def subtract_from_seen(scores: torch.Tensor, seen: torch.Tensor, gamma: float) -> torch.Tensor:
    """`scores` (..., C) with `gamma` subtracted from the columns where `seen` (C,) is True."""
    if scores.shape[-1] != seen.numel():
        raise ValueError(f"{scores.shape[-1]} score columns but a seen mask of {seen.numel()}")
    return scores - gamma * seen.to(device=scores.device, dtype=scores.dtype)


class SeenCalibrated:
    """Mixin of a zero-shot classifier (a ZeroShotModule) with a test-time calibration gamma (0 = off).

    Its seen mask follows the class set when it switches (never per forward pass): the set's seen
    classes, then `calibration_extra_columns` background / no-object columns, which are not lowered.
    """

    calibration_gamma: float = 0.0
    calibration_seen: torch.Tensor = None
    calibration_extra_columns: int = 1

    def set_class_set(self, class_set):
        following = getattr(super(), "set_class_set", None)  # cooperative: any order of the mixins
        if following is not None:
            following(class_set)
        extra = torch.zeros(self.calibration_extra_columns, dtype=torch.bool)
        self.calibration_seen = torch.cat([class_set.is_seen, extra])

    def calibrate(self, scores: torch.Tensor, gamma: Optional[float] = None) -> torch.Tensor:
        """`scores` with `gamma` (None: this classifier's configured `calibration_gamma`) subtracted
        from the seen columns, at test time only."""
        gamma = self.calibration_gamma if gamma is None else gamma
        if self.training or not gamma:
            return scores
        if self.calibration_seen is None:
            raise RuntimeError(f"{type(self).__name__}: calibration needs a class set (use_class_set) first")
        return subtract_from_seen(scores, self.calibration_seen, gamma)


def set_calibration_gamma(model, gamma: float) -> int:
    """Set gamma on every calibrated classifier in `model`; returns how many there are."""
    if not gamma >= 0:
        raise InputValueError(f"MODEL.ZERO_SHOT.CALIBRATION.GAMMA must be >= 0, got {gamma}")
    model = unwrap(model)
    touched = 0
    for module in model.modules():
        if isinstance(module, SeenCalibrated):
            module.calibration_gamma = float(gamma)
            touched += 1
    if touched == 0 and gamma:
        raise InputValueError(
            f"MODEL.ZERO_SHOT.CALIBRATION: {type(model).__name__} has no zero-shot classifier to calibrate"
        )
    return touched


def gamma_grid(maximum: float, step: float) -> list:
    """0, step, 2 step, ... up to maximum (inclusive)."""
    if not (step > 0 and maximum >= 0):
        raise InputValueError(f"MODEL.ZERO_SHOT.CALIBRATION: need SEARCH_STEP > 0 and SEARCH_MAX >= 0, "
                              f"got {step} and {maximum}")
    return [round(i * step, 10) for i in range(int(maximum / step + 1e-9) + 1)]


def choose_gamma(shares: Mapping[float, float], target_rate: float) -> float:
    """The largest gamma of an increasing run from the smallest whose share (of seen held-out
    objects labelled unseen) stays <= target_rate; the smallest gamma if even it exceeds the target.

    Stopping at the first gamma over the target (rather than taking the largest of all under it)
    keeps the choice safe when the share is not monotone in gamma.
    """
    if not shares:
        raise ValueError("choose_gamma needs at least one (gamma, share) pair")
    if not 0 <= target_rate < 1:
        raise InputValueError(f"MODEL.ZERO_SHOT.CALIBRATION.TARGET_RATE must be in [0, 1), got {target_rate}")
    gammas = sorted(shares)
    chosen = gammas[0]
    for gamma in gammas:
        if shares[gamma] > target_rate:
            break
        chosen = gamma
    return chosen
