"""Token-aligned fusion: each 2D token is fused with the 3D token of its own patch, and no other.

With ``y = norm(tokens_3d)`` and ``m`` the 3D mask (1 valid, 0 invalid):

- ``"add"``: ``out = x + m * W y`` (LLaVA-3D / Ego3D: geometry added to the vision features).
- ``"concat"``: ``out = W [x; y]``; ``W`` starts as ``[I, W_3]`` so the 2D features pass through
  unchanged plus a geometry term (the pretrained VLM's input distribution is preserved at the start).
- ``"gated"``: ``out = x + m * sigmoid(W_g [norm(x); y]) * W_v y`` with ``W_v = 0`` at init, so the
  output equals ``tokens_2d`` exactly until training moves it (as ControlNet / Flamingo gates do).
  Consequence: at init the output does not depend on the 3D tokens, so their gradient is exactly 0
  for the first step; ``W_v`` gets a gradient, and after one update geometry gradients flow.

All three act per token with shared weights, so permuting the patches (the same permutation for 2D
tokens, 3D tokens and mask) permutes the output the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from flowvla.fusion.base import Fusion
from flowvla.typing import Tensor

__all__ = ["TokenAlignedFusion"]

FusionMode = Literal["add", "concat", "gated"]


class TokenAlignedFusion(Fusion):
    """Per-token add, concat+project, or zero-init sigmoid-gated fusion (see module docs).

    Args:
        dim: width ``D2`` of the 2D tokens (and of the output).
        geo_dim: width ``D3`` of the 3D tokens.
        mode: ``"add"``, ``"concat"`` or ``"gated"``.
        norm_layer: normalisation of the 3D tokens (and, for ``"gated"``, of the 2D tokens in the gate).
    """

    def __init__(
        self,
        dim: int,
        geo_dim: int,
        mode: FusionMode = "gated",
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__(dim, geo_dim)
        if mode not in ("add", "concat", "gated"):
            raise ValueError(f"mode: expected 'add', 'concat' or 'gated', got {mode!r}")
        self.mode = mode
        self.geo_norm = norm_layer(geo_dim)
        if mode == "add":
            self.proj = nn.Linear(geo_dim, dim)
        elif mode == "concat":
            self.proj = nn.Linear(dim + geo_dim, dim)
            with torch.no_grad():
                self.proj.weight[:, :dim].copy_(torch.eye(dim))
                self.proj.bias.zero_()
        else:
            self.norm = norm_layer(dim)
            self.gate = nn.Linear(dim + geo_dim, dim)
            self.value = nn.Linear(geo_dim, dim)
            nn.init.zeros_(self.value.weight)
            nn.init.zeros_(self.value.bias)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, geo_dim={self.geo_dim}, mode={self.mode!r}"

    def _fuse(self, tokens_2d: Tensor, tokens_3d: Tensor, mask: Tensor) -> Tensor:
        y = self.geo_norm(tokens_3d)
        m = mask[..., None].to(y.dtype)
        if self.mode == "concat":
            return self.proj(torch.cat([tokens_2d, y * m], dim=-1))
        if self.mode == "add":
            return tokens_2d + m * self.proj(y)
        gate = torch.sigmoid(self.gate(torch.cat([self.norm(tokens_2d), y], dim=-1)))
        return tokens_2d + m * gate * self.value(y)
