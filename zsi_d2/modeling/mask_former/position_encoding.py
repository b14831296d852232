"""DETR's sine position embedding of a feature map, used by the pixel decoder's deformable encoder
and the transformer decoder's cross-attention."""
import math
from typing import Optional

import torch
from torch import nn

__all__ = ["PositionEmbeddingSine"]


class PositionEmbeddingSine(nn.Module):
    """
    Sine/cosine of the (normalised) row and column index at `num_pos_feats` frequencies each:
    channels [0, num_pos_feats) encode y, [num_pos_feats, 2 * num_pos_feats) encode x, even channels
    sin and odd channels cos, as in DETR. With `normalize`, coordinates are scaled to (0, scale].
    """

    def __init__(
        self,
        num_pos_feats: int = 64,
        temperature: float = 10000,
        normalize: bool = True,
        scale: Optional[float] = None,
    ):
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("scale is only used with normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def _embed(self, y_embed: torch.Tensor, x_embed: torch.Tensor) -> torch.Tensor:
        """(B, H, W) coordinates -> (B, 2 * num_pos_feats, H, W)."""
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=y_embed.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = x_embed[..., None] / dim_t
        pos_y = y_embed[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: (B, C, H, W); only its shape, device and dtype are used.
            mask: optional (B, H, W) bool, True at padding (not counted in the coordinates).
        Returns:
            (B, 2 * num_pos_feats, H, W) in float32 (float64 for a float64 `x`). Without a mask the
            embedding does not depend on the image, so it is computed once and broadcast over the
            batch (an expanded view: do not write into it).
        """
        B, _, H, W = x.shape
        dtype = torch.promote_types(x.dtype, torch.float32)
        if mask is None:
            # Same values as the cumulative sums of an all-valid mask, without a (B, H, W) mask.
            ys = torch.arange(1, H + 1, dtype=torch.float32, device=x.device)
            xs = torch.arange(1, W + 1, dtype=torch.float32, device=x.device)
            y_embed = ys.view(1, H, 1).expand(1, H, W)
            x_embed = xs.view(1, 1, W).expand(1, H, W)
            return self._embed(y_embed, x_embed).to(dtype).expand(B, -1, -1, -1)
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        return self._embed(y_embed, x_embed).to(dtype)

    def extra_repr(self) -> str:
        return (
            f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, "
            f"normalize={self.normalize}, scale={self.scale}"
        )
