"""Feed-forward layers of a transformer block: GELU MLP and the gated SwiGLU variant.

Legend: ``B`` any leading dims, ``D`` width.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from flowvla.typing import Float, Tensor, typechecked

__all__ = ["GeluMlp", "SwiGLU", "make_mlp"]


class GeluMlp(nn.Module):
    """``Linear -> GELU(tanh) -> Linear``, DiT's feed-forward.

    Args:
        dim: input and output width.
        hidden_dim: inner width.
        drop: dropout after the output projection.
    """

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    @typechecked
    def forward(self, x: Float[Tensor, "*B D"]) -> Float[Tensor, "*B D"]:
        """Map ``[*B, D]`` to ``[*B, D]``."""
        return self.drop(self.fc2(F.gelu(self.fc1(x), approximate="tanh")))


class SwiGLU(nn.Module):
    """Gated feed-forward ``W_2 (SiLU(W_g x) * W_1 x)`` (Shazeer 2020).

    Args:
        dim: input and output width.
        hidden_dim: inner width (use ~2/3 of a GELU MLP's to match its parameter count).
        drop: dropout after the output projection.
    """

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc_in = nn.Linear(dim, 2 * hidden_dim)
        self.fc_out = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    @typechecked
    def forward(self, x: Float[Tensor, "*B D"]) -> Float[Tensor, "*B D"]:
        """Map ``[*B, D]`` to ``[*B, D]``."""
        gate, value = self.fc_in(x).chunk(2, dim=-1)
        return self.drop(self.fc_out(F.silu(gate) * value))


def make_mlp(kind: str, dim: int, mlp_ratio: float, drop: float = 0.0) -> nn.Module:
    """A feed-forward layer by name: ``"gelu"`` (hidden ``mlp_ratio * dim``) or ``"swiglu"``
    (hidden ``2/3 * mlp_ratio * dim``, rounded up to a multiple of 8: the same parameter count)."""
    if kind == "gelu":
        return GeluMlp(dim, int(dim * mlp_ratio), drop)
    if kind == "swiglu":
        hidden = int(2 * dim * mlp_ratio / 3)
        return SwiGLU(dim, -(-hidden // 8) * 8, drop)
    raise ValueError(f"mlp: unknown kind {kind!r}; choose 'gelu' or 'swiglu'")
