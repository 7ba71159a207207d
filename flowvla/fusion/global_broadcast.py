"""The seed system's global fusion, kept as the ablation baseline.

``g = W_3 mean_{t valid} y_t`` (one vector per sample; the same as averaging the projected tokens,
but projecting one vector instead of ``T``), broadcast to every token: ``out_t = W_o [x_t; g]``,
computed as ``W_x x_t + W_g g`` so the geometry half of ``W_o`` also runs once per sample.
Every 2D token receives the same geometry summary, so which patch is near
or far is lost: the output is invariant to any permutation of the 3D tokens (with their mask).
"""

from __future__ import annotations

import torch.nn.functional as F
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
        m = mask[..., None].to(tokens_3d.dtype)
        pooled = tokens_3d.sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)  # invalid are 0
        g = self.geo_proj(pooled)  # [b, 1, d]
        w_x, w_g = self.out_proj.weight.split(self.dim, dim=1)
        return F.linear(tokens_2d, w_x, self.out_proj.bias) + F.linear(g, w_g)
