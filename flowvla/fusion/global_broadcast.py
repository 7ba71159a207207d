"""The seed system's global fusion, kept as the ablation baseline.

``g = mean_{t valid} W_3 y_t`` (one vector per sample), broadcast to every token:
``out_t = W_o [x_t; g]``. Every 2D token receives the same geometry summary, so which patch is near
or far is lost: the output is invariant to any permutation of the 3D tokens (with their mask).
"""

from __future__ import annotations

import torch
from torch import nn

from flowvla.fusion.base import Fusion
from flowvla.typing import Tensor

__all__ = ["GlobalBroadcastFusion"]


class GlobalBroadcastFusion(Fusion):
    """Project, masked mean over tokens, broadcast, concatenate, linear.

    Args:
        dim: width ``D2`` of the 2D tokens (and of the output).
        geo_dim: width ``D3`` of the 3D tokens.
    """

    def __init__(self, dim: int, geo_dim: int) -> None:
        super().__init__(dim, geo_dim)
        self.geo_proj = nn.Linear(geo_dim, dim)
        self.out_proj = nn.Linear(2 * dim, dim)

    def _fuse(self, tokens_2d: Tensor, tokens_3d: Tensor, mask: Tensor) -> Tensor:
        g = self.geo_proj(tokens_3d)
        m = mask[..., None].to(g.dtype)
        pooled = (g * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)  # [b, 1, d]
        return self.out_proj(torch.cat([tokens_2d, pooled.expand_as(tokens_2d)], dim=-1))
