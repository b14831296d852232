"""CaGNet's networks (Gu et al., ACM MM 2020; bcmi/CaGNet-Zero-Shot-Semantic-Segmentation, read
2026-12-07: networks.py, blocks.py, losses.py), sized by the pixel-feature width D of zsi_d2's
segmenter instead of the reference's 600 and by config widths (the reference's are the defaults).

- ContextualModule: the contextual latent code of every pixel from three chained dilated 3x3
  convolutions (dilations 1, 2, 5) over sigmoid(features), a per-pixel context selector weighting
  the three scales, mu / log-variance heads (the log-variance head ends in a ReLU, as released),
  the reparameterisation (mu at test), and the refined feature sigmoid(h + h * sigmoid(z)).
- ContextualGenerator: a per-pixel MLP from [class embedding ; latent] to a pixel feature (the
  reference's 1x1 convolutions, as linear layers over pixel rows): 1024, 960, 864, 784, 720, then D,
  LeakyReLU 0.2, dropout 0.1, 0.1, 0.3, 0.5, 0.5, sigmoid.
- TrunkPixelClassifier + a real/fake head: the discriminator, a shared 1x1 trunk (1024, ReLU,
  dropout 0.5) with a classification head over the classes (the segmenter's classifier) and a
  real/fake head (sigmoid).
"""
from typing import Optional, Sequence

import torch
from torch import nn

from zsi_d2.errors import InputValueError
from zsi_d2.modeling.semantic import LinearPixelClassifier

__all__ = ["SELECTORS", "ContextualModule", "ContextualGenerator", "TrunkPixelClassifier", "masked_kl", "gan_l1_loss"]

# "sigmoid": as released (a 3x3 convolution, ReLU, sigmoid: one weight in [0.5, 1) per scale and
# pixel, independent of the others); "softmax": weights over the three scales that sum to one per pixel.
SELECTORS = ("sigmoid", "softmax")


def _conv(in_channels: int, out_channels: int, kernel: int, dilation: int = 1, relu: bool = True) -> nn.Sequential:
    """A bias-free convolution with 'same' padding and an optional ReLU (CaGNet's _ConvReLU_)."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel, padding=dilation * (kernel // 2), dilation=dilation,
                        bias=False)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ContextualModule(nn.Module):
    """(N, D, h, w) features -> (refined features, latent z, mu, log-variance), all (N, D, h, w).

    `in_dim` (default D) is the width of what the dilated stack reads; without `latent_heads` the
    module only aggregates the scales (`aggregate`): SIGN's spatial branch, reading the features
    concatenated with a positional encoding."""

    def __init__(self, dim: int, hidden: int = 256, dilations: Sequence[int] = (1, 2, 5), selector: str = "sigmoid",
                 in_dim: Optional[int] = None, latent_heads: bool = True):
        super().__init__()
        if selector not in SELECTORS:
            raise InputValueError(f"MODEL.CAGNET.SELECTOR '{selector}' is not one of {list(SELECTORS)}")
        widths = [in_dim or dim] + [hidden] * len(dilations)
        self.context = nn.ModuleList([_conv(widths[i], widths[i + 1], 3, d) for i, d in enumerate(dilations)])
        self.selector_kind = selector
        self.selector = _conv(hidden * len(dilations), len(dilations), 3, relu=selector == "sigmoid")
        self.pool = _conv(hidden * len(dilations), dim, 1)
        if latent_heads:
            self.mu = _conv(dim, dim, 3, relu=False)
            self.logvar = _conv(dim, dim, 3)  # a ReLU, as released: the log-variance is never negative

    def scale_weights(self, scales: Sequence[torch.Tensor]) -> torch.Tensor:
        """(N, len(scales), h, w): the selector's weight of each scale at each pixel."""
        logits = self.selector(torch.cat(list(scales), dim=1))
        return torch.sigmoid(logits) if self.selector_kind == "sigmoid" else logits.softmax(dim=1)

    def aggregate(self, x: torch.Tensor) -> torch.Tensor:
        """What the dilated stack reads (N, in_dim, h, w) -> the selected scales pooled to (N, D, h, w)."""
        scales = []
        for layer in self.context:
            x = layer(x)
            scales.append(x)
        weights = self.scale_weights(scales)
        return self.pool(torch.cat([s * weights[:, i: i + 1] for i, s in enumerate(scales)], dim=1))

    def latent(self, x: torch.Tensor):
        """What the dilated stack reads (N, in_dim, h, w) -> (z, mu, logvar); z = mu at test."""
        pooled = self.aggregate(x)
        mu, logvar = self.mu(pooled), self.logvar(pooled)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        return z, mu, logvar

    def forward(self, h: torch.Tensor):
        z, mu, logvar = self.latent(torch.sigmoid(h))
        return torch.sigmoid(h + h * torch.sigmoid(z)), z, mu, logvar


def masked_kl(mu: torch.Tensor, logvar: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) summed over the valid pixels (N, h, w) and channels, divided
    by their count times the channels (CaGNet's per-element mean over labelled pixels)."""
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())
    mask = valid[:, None].to(kl.dtype)
    count = mask.sum() * mu.shape[1]
    return (kl * mask).sum() / count.clamp_min(1)


class ContextualGenerator(nn.Module):
    """[class embedding (E) ; latent (D)] per pixel row -> a pixel feature (D) in (0, 1)."""

    def __init__(self, embed_dim: int, feature_dim: int, hidden: Sequence[int] = (1024, 960, 864, 784, 720),
                 dropout: Sequence[float] = (0.1, 0.1, 0.3, 0.5, 0.5)):
        super().__init__()
        if len(hidden) != len(dropout):
            raise InputValueError(f"MODEL.CAGNET.GENERATOR_HIDDEN {list(hidden)} and GENERATOR_DROPOUT {list(dropout)} "
                                  "need one dropout rate per hidden layer")
        widths, layers = [embed_dim + feature_dim, *hidden], []
        for i, p in enumerate(dropout):
            layers += [nn.Linear(widths[i], widths[i + 1]), nn.LeakyReLU(0.2), nn.Dropout(p)]
        layers.append(nn.Linear(widths[-1], feature_dim))
        self.net = nn.Sequential(*layers)
        self.embed_dim, self.feature_dim = embed_dim, feature_dim

    def forward(self, embeddings: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """embeddings (n, E) and latent (n, D) -> (n, D)."""
        return torch.sigmoid(self.net(torch.cat([embeddings, latent], dim=1)))


class TrunkPixelClassifier(LinearPixelClassifier):
    """The discriminator's classification path, CaGNet's segmentation classifier: a shared 1x1 trunk
    (ReLU, dropout) then one free 1x1 filter per class. `trunk` is shared with the real/fake head."""

    def __init__(self, feature_dim: int, class_names: Sequence[str], hidden: int = 1024, dropout: float = 0.5,
                 calibration_gamma: float = 0.0):
        super().__init__(hidden, class_names, calibration_gamma)
        self.trunk = nn.Sequential(nn.Conv2d(feature_dim, hidden, 1), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.score_trunk(self.trunk(features))

    def score_trunk(self, trunk_output: torch.Tensor) -> torch.Tensor:
        return super().forward(trunk_output)


def gan_l1_loss(prob: torch.Tensor, real: bool) -> torch.Tensor:
    """CaGNet's "lsgan" as released: |D(x) - target| (an L1 distance, not a square), averaged over
    the (valid) pixels given."""
    return (prob - float(real)).abs().mean()
