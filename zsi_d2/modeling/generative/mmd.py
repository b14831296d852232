"""Maximum mean discrepancy with a sum of Gaussian kernels: the generative moment-matching loss.

Why: ZS3Net's GMMN and PADing's primitive generator are both trained by matching the distribution
of synthetic features to real ones with this loss; the same estimator serves pixel features
(ZS3Net, CaGNet, SIGN) and query embeddings (PADing).

The reference form (ZS3Net ``zs3/utils/loss.py`` ``GMMNLoss.moment_loss``, copied unchanged into
PADing ``PADing/utils/network_utils.py``)::

    k_v(a, b) = exp(-||a - b||^2 / (2 v))           for v in sigmas = (2, 5, 10, 20, 40, 80)
    MMD^2_v   = mean_ij k_v(x_i, x_j) + mean_ij k_v(y_i, y_j) - 2 mean_ij k_v(x_i, y_j)
    loss      = sqrt(sum_v MMD^2_v)

- "sigma" enters *linearly* (``exp(exponent / v)`` with ``exponent = -||a - b||^2 / 2``): each v
  is a bandwidth squared, not a standard deviation.
- Biased (V-statistic) estimator: the diagonal terms k(x_i, x_i) = 1 are kept, so the value is
  exactly 0 for identical sets and never negative in exact arithmetic.
- One square root of the sum over bandwidths (not a sum of square roots).

Deviations, all of them no-ops where the reference is well defined:
- The reference builds its weight vector as ``[1/N] * N + [-1/M] * M`` for ``cat(x (M), y (N))``,
  which mixes the two sets' weights when M != N (both callers only pass M == N). We weight x by
  1/M and y by 1/N, the textbook estimator; identical for M == N.
- The reference takes ``sqrt`` of a value that rounding can make slightly negative (NaN) and whose
  gradient is infinite at 0; we clamp at 0 and give a zero gradient there.
"""
from typing import Sequence

import torch

__all__ = ["DEFAULT_SIGMAS", "gaussian_kernel_matrix", "mmd_loss", "class_conditional_mmd"]

# ZS3Net's and PADing's bandwidths (both hard-code this list).
DEFAULT_SIGMAS = (2.0, 5.0, 10.0, 20.0, 40.0, 80.0)


def _squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(n, m) squared Euclidean distances, by the same expansion as the reference, clamped at 0."""
    x2 = (x * x).sum(1, keepdim=True)
    y2 = (y * y).sum(1, keepdim=True)
    return (x2 + y2.t() - 2.0 * x @ y.t()).clamp_min(0.0)


def gaussian_kernel_matrix(x: torch.Tensor, y: torch.Tensor, sigmas: Sequence[float] = DEFAULT_SIGMAS) -> torch.Tensor:
    """(n, m) matrix of sum_v exp(-||x_i - y_j||^2 / (2 v)) over the bandwidths v in ``sigmas``."""
    d = _squared_distances(x, y)
    k = torch.zeros_like(d)
    for v in sigmas:
        k = k + torch.exp(-d / (2.0 * float(v)))
    return k


def mmd_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    squared: bool = False,
) -> torch.Tensor:
    """Biased multi-bandwidth MMD between x (n, D) and y (m, D); see the module docstring.

    Returns ``sqrt(sum_v MMD^2_v)`` as ZS3Net/PADing do, or ``sum_v MMD^2_v`` with ``squared=True``.
    The three kernel blocks are computed separately, so ``mmd_loss(x, x)`` is exactly 0.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"mmd_loss needs (n, D) and (m, D) tensors, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] == 0 or y.shape[0] == 0:
        raise ValueError("mmd_loss needs at least one sample on each side")
    mmd2 = (
        gaussian_kernel_matrix(x, x, sigmas).mean()
        + gaussian_kernel_matrix(y, y, sigmas).mean()
        - 2.0 * gaussian_kernel_matrix(x, y, sigmas).mean()
    )
    mmd2 = mmd2.clamp_min(0.0)
    if squared:
        return mmd2
    # sqrt with a finite gradient: where mmd2 == 0 the selected branch is a constant.
    return torch.where(mmd2 > 0, mmd2.clamp_min(1e-30).sqrt(), torch.zeros_like(mmd2))


def class_conditional_mmd(
    fake: torch.Tensor,
    real: torch.Tensor,
    fake_labels: torch.Tensor,
    real_labels: torch.Tensor,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    squared: bool = False,
) -> torch.Tensor:
    """Mean over the classes present in both sets of ``mmd_loss(fake[class c], real[class c])``.

    Why: only same-class samples are compared, so the generator must match each class's own
    distribution, not just the batch mixture.

    Reference forms: ZS3Net is class-conditional (per image and per seen class present, one MMD on
    128 resampled pixels per class, each followed by its own generator step). PADing is *not*: it
    computes one ``mmd_loss(fake, real)`` over the whole batch, where ``fake`` holds one sample per
    matched real query, generated from that query's class embedding (same class composition on
    both sides). Use ``mmd_loss`` directly for PADing's form.

    Returns a 0-d tensor; 0 (still attached to ``fake``'s graph) when no class is shared.
    """
    fake_labels = fake_labels.reshape(-1)
    real_labels = real_labels.reshape(-1)
    if fake_labels.numel() != fake.shape[0] or real_labels.numel() != real.shape[0]:
        raise ValueError("class_conditional_mmd: one label per sample is needed on each side")
    shared = [c for c in torch.unique(fake_labels).tolist() if bool((real_labels == c).any())]
    if not shared:
        return fake.sum() * 0.0
    terms = [mmd_loss(fake[fake_labels == c], real[real_labels == c], sigmas, squared) for c in shared]
    return torch.stack(terms).mean()
