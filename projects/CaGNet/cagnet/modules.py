"""CaGNet's networks (Gu et al., ACM MM 2020; bcmi/CaGNet-Zero-Shot-Semantic-Segmentation, read
2026-12-07: networks.py, blocks.py, losses.py), sized by the pixel-feature width D of zsi_d2's
segmenter instead of the reference's 600.

- ContextualModule: the contextual latent code of every pixel from three chained dilated 3x3
  convolutions (dilations 1, 2, 5) over sigmoid(features), a per-pixel selector over the three
  scales, mu / log-variance heads (the log-variance head ends in a ReLU, as released), the
  reparameterisation (mu at test), and the refined feature sigmoid(h + h * sigmoid(z)).
- ContextualGenerator: a per-pixel MLP (1x1 convolutions) from [class embedding ; latent] to a pixel
  feature: 1024, 960, 864, 784, 720, then D, LeakyReLU 0.2, dropout 0.1, 0.1, 0.3, 0.5, 0.5, sigmoid.
- Discriminator: a shared 1x1 trunk (1024, ReLU, dropout 0.5) with a classification head over the
  classes (the segmenter's classifier) and a real/fake head (sigmoid).
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ContextualModule", "ContextualGenerator", "Discriminator", "masked_kl", "gan_l1_loss"]


def _conv(in_channels: int, out_channels: int, kernel: int, dilation: int = 1, relu: bool = True) -> nn.Sequential:
    """A bias-free convolution with 'same' padding and an optional ReLU (CaGNet's _ConvReLU_)."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel, padding=dilation * (kernel // 2), dilation=dilation,
                        bias=False)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ContextualModule(nn.Module):
    """(N, D, h, w) features -> (refined features, latent z, mu, log-variance)."""

    def __init__(self, dim: int, hidden: int = 256, dilations: Sequence[int] = (1, 2, 5)):
        super().__init__()
        widths = [dim] + [hidden] * len(dilations)
        self.context = nn.ModuleList([_conv(widths[i], widths[i + 1], 3, d) for i, d in enumerate(dilations)])
        self.selector = _conv(hidden * len(dilations), len(dilations), 3)
        self.pool = _conv(hidden * len(dilations), dim, 1)
        self.mu = _conv(dim, dim, 3, relu=False)
        self.logvar = _conv(dim, dim, 3)  # a ReLU, as released: the log-variance is never negative

    def forward(self, h: torch.Tensor):
        x, scales = torch.sigmoid(h), []
        for layer in self.context:
            x = layer(x)
            scales.append(x)
        stacked = torch.cat(scales, dim=1)
        weights = torch.sigmoid(self.selector(stacked))  # (N, 3, h, w): one weight per scale and pixel
        selected = torch.cat([s * weights[:, i: i + 1] for i, s in enumerate(scales)], dim=1)
        pooled = self.pool(selected)
        mu, logvar = self.mu(pooled), self.logvar(pooled)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        return torch.sigmoid(h + h * torch.sigmoid(z)), z, mu, logvar


def masked_kl(mu: torch.Tensor, logvar: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) summed over the valid pixels (N, h, w) and channels, divided
    by their count times the channels (CaGNet's per-element mean over labelled pixels)."""
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())
    mask = valid[:, None].to(kl.dtype)
    count = mask.sum() * mu.shape[1]
    return (kl * mask).sum() / count.clamp_min(1)


class ContextualGenerator(nn.Module):
    """[class embedding (E) ; latent (D)] per pixel -> a pixel feature (D) in (0, 1)."""

    def __init__(self, embed_dim: int, feature_dim: int, hidden: Sequence[int] = (1024, 960, 864, 784, 720),
                 dropout: Sequence[float] = (0.1, 0.1, 0.3, 0.5, 0.5)):
        super().__init__()
        if len(hidden) != len(dropout):
            raise ValueError("one dropout rate per hidden layer")
        widths, layers = [embed_dim + feature_dim, *hidden], []
        for i, p in enumerate(dropout):
            layers += [nn.Conv2d(widths[i], widths[i + 1], 1), nn.LeakyReLU(0.2), nn.Dropout(p)]
        layers.append(nn.Conv2d(widths[-1], feature_dim, 1))
        self.net = nn.Sequential(*layers)
        self.embed_dim, self.feature_dim = embed_dim, feature_dim

    def forward(self, embeddings: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """embeddings (N, E, h, w) and latent (N, D, h, w) -> (N, D, h, w)."""
        return torch.sigmoid(self.net(torch.cat([embeddings, latent], dim=1)))


class Discriminator(nn.Module):
    """(N, D, h, w) features -> (class logits (N, K, h, w), real-or-fake probability (N, 1, h, w))."""

    def __init__(self, feature_dim: int, num_classes: int, hidden: int = 1024, dropout: float = 0.5):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(feature_dim, hidden, 1), nn.ReLU(), nn.Dropout(dropout))
        self.cls = nn.Conv2d(hidden, num_classes, 1)
        self.pred = nn.Conv2d(hidden, 1, 1)

    def forward(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.trunk(features)
        return self.cls(x), torch.sigmoid(self.pred(x))


def gan_l1_loss(prob: torch.Tensor, real: bool, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """CaGNet's "lsgan" as released: |D(x) - target| (an L1 distance, not a square), averaged over
    the valid pixels."""
    distance = (prob[:, 0] - float(real)).abs()
    if valid is None:
        return distance.mean()
    return (distance * valid).sum() / valid.sum().clamp_min(1)
