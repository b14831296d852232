"""SIGN's positional encoding and annealed self-training weights (Cheng et al., ICCV 2021;
cplusx/SIGN blocks.py `positionalencoding2d`, tools.py `construct_gt_st_softmax`, read 2026-12-07).

Why a fixed length: positions are spread over [0, length - 1] whatever the feature map's size, so
the same relative place in a small and a large map gets the same code (the model is not tied to a
training crop's size).
"""
import functools
import math

import torch

from zsi_d2.errors import InputValueError

__all__ = ["positional_encoding_2d", "cached_positional_encoding", "annealed_weights"]


def positional_encoding_2d(channels: int, height: int, width: int, length: int = 512) -> torch.Tensor:
    """(channels, height, width): the first half of the channels encode the column, the second the
    row, alternating sin / cos of position * 10000 ** (-2i / (channels / 2)), positions
    linspace(0, length - 1) over the map's width and height."""
    if channels % 4:
        raise InputValueError(f"SIGN's positional encoding needs a multiple of 4 channels (2 axes x sin / cos), "
                              f"got {channels}: set MODEL.SEM_SEG_HEAD.CONVS_DIM to one")
    half = channels // 2
    div = torch.exp(torch.arange(0, half, 2, dtype=torch.float32) * -(math.log(10000.0) / half))  # (half / 2,)
    pos_w = torch.linspace(0, length - 1, width)[:, None] * div  # (W, half / 2)
    pos_h = torch.linspace(0, length - 1, height)[:, None] * div  # (H, half / 2)
    code = torch.zeros(channels, height, width)
    code[0:half:2] = torch.sin(pos_w).t()[:, None, :].expand(-1, height, -1)
    code[1:half:2] = torch.cos(pos_w).t()[:, None, :].expand(-1, height, -1)
    code[half::2] = torch.sin(pos_h).t()[:, :, None].expand(-1, -1, width)
    code[half + 1::2] = torch.cos(pos_h).t()[:, :, None].expand(-1, -1, width)
    return code


@functools.lru_cache(maxsize=8)
def cached_positional_encoding(channels: int, height: int, width: int, length: int = 512) -> torch.Tensor:
    """positional_encoding_2d computed once per map size (a model reads it, never writes it)."""
    return positional_encoding_2d(channels, height, width, length)


def annealed_weights(confidence: torch.Tensor, pseudo: torch.Tensor, labelled: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """SIGN's annealed self-training weights, per image (N, h, w): p = the confidence of a
    pseudo-labelled pixel (0 elsewhere), w = softmax over the image's pixels of temperature * p,
    divided by its maximum (the most confident pixel weighs 1); labelled pixels weigh 1."""
    p = torch.where(pseudo, confidence, torch.zeros_like(confidence))
    w = (temperature * p).flatten(1).softmax(dim=1)
    w = (w / w.max(dim=1, keepdim=True).values.clamp_min(1e-12)).view_as(p)
    return torch.where(labelled, torch.ones_like(w), w)
