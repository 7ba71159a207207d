"""The fusion contract: 2D patch tokens and token-aligned 3D tokens in, 2D-width tokens out.

``fusion(tokens_2d [B, T, D2], tokens_3d [B, T, D3], mask [B, T]) -> [B, T, D2]``

- ``tokens_3d[:, t]`` describes the same image patch as ``tokens_2d[:, t]`` (the geometry encoders in
  ``flowvla.geometry`` produce them in the vision encoder's order: views, patch rows, columns).
- ``mask`` is ``True`` where the 3D token is valid. Invalid 3D tokens are replaced by 0 before any
  fusion sees them, so their values can never reach the output (masking invariance, for every fusion).
- The output keeps the token count, order and width of ``tokens_2d``, so a fusion drops in between a
  vision encoder and a VLM's projector or language model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from flowvla.typing import Bool, Float, Tensor, typechecked

__all__ = ["Fusion"]


class Fusion(nn.Module, ABC):
    """Abstract base of the 2D-3D fusion modules (see module docs); subclasses implement ``_fuse``.

    Args:
        dim: width ``D2`` of the 2D tokens (and of the output).
        geo_dim: width ``D3`` of the 3D tokens.
    """

    def __init__(self, dim: int, geo_dim: int) -> None:
        super().__init__()
        if dim <= 0 or geo_dim <= 0:
            raise ValueError(f"dim and geo_dim must be positive, got {dim}, {geo_dim}")
        self.dim = dim
        self.geo_dim = geo_dim

    @typechecked
    def forward(
        self,
        tokens_2d: Float[Tensor, "B T D2"],
        tokens_3d: Float[Tensor, "B T D3"],
        mask: Bool[Tensor, "B T"] | None = None,
    ) -> Float[Tensor, "B T D2"]:
        """Fuse token-aligned 3D tokens into the 2D tokens.

        Args:
            tokens_2d: ``[B, T, D2]`` vision tokens.
            tokens_3d: ``[B, T, D3]`` geometry tokens, aligned with ``tokens_2d``.
            mask: ``[B, T]``, ``True`` where the 3D token is valid; ``None``: all valid.

        Returns:
            ``[B, T, D2]`` fused tokens, same order as ``tokens_2d``.
        """
        if tokens_2d.shape[-1] != self.dim:
            raise ValueError(f"tokens_2d: expected width {self.dim}, got {tokens_2d.shape[-1]}")
        if tokens_3d.shape[-1] != self.geo_dim:
            raise ValueError(f"tokens_3d: expected width {self.geo_dim}, got {tokens_3d.shape[-1]}")
        if mask is None:
            mask = torch.ones(tokens_3d.shape[:2], dtype=torch.bool, device=tokens_3d.device)
        # where, not multiply: an invalid token may hold NaN/inf, and NaN * 0 is NaN.
        tokens_3d = torch.where(mask[..., None], tokens_3d, 0.0)
        return self._fuse(tokens_2d, tokens_3d.to(tokens_2d.dtype), mask)

    @abstractmethod
    def _fuse(self, tokens_2d: Tensor, tokens_3d: Tensor, mask: Tensor) -> Tensor:
        """The fusion proper: shapes as in [`forward`][flowvla.fusion.base.Fusion.forward]; invalid 3D tokens
        are 0, ``mask`` is given."""
