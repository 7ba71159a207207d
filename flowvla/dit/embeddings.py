"""Embeddings of the flow time and of token positions for the action head.

Legend: ``B`` batch (any leading dims ``*B``), ``N`` tokens, ``D`` width, ``E`` head dim.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flowvla.typing import Float, Tensor, typechecked

__all__ = ["RotaryEmbedding", "TimestepEmbedder", "apply_rotary", "sinusoidal_embedding"]


@typechecked
def sinusoidal_embedding(
    t: Float[Tensor, "*B"], dim: int, *, scale: float = 1000.0, max_period: float = 10_000.0
) -> Float[Tensor, "*B F"]:
    """Transformer-style sinusoidal features of a scalar per sample.

    Args:
        t: flow times ``[*B]`` in ``[0, 1]``.
        dim: number of features (even).
        scale: ``t`` is multiplied by it first, so ``[0, 1]`` spans the frequencies the way DiT's
            integer timesteps ``0..1000`` do.
        max_period: the longest period, in units of ``scale * t``.

    Returns:
        ``[*B, dim]``: ``cos`` features then ``sin`` features, in float32 or wider.
    """
    if dim % 2:
        raise ValueError(f"dim: must be even, got {dim}")
    half = dim // 2
    dtype = torch.promote_types(t.dtype, torch.float32)
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=dtype) / half)
    angles = (t.to(dtype) * scale).unsqueeze(-1) * freqs
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class TimestepEmbedder(nn.Module):
    """Flow time -> conditioning vector: sinusoidal features followed by an MLP (DiT's ``t_embedder``).

    Args:
        dim: output width.
        frequency_dim: number of sinusoidal features fed to the MLP.
        scale: multiplier of ``t`` before the sinusoids (see
            [`sinusoidal_embedding`][flowvla.dit.embeddings.sinusoidal_embedding]).
    """

    def __init__(self, dim: int, frequency_dim: int = 256, scale: float = 1000.0) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.scale = scale
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)

    @typechecked
    def forward(self, t: Float[Tensor, "*B"]) -> Float[Tensor, "*B D"]:
        """Embed times ``[*B]`` into ``[*B, dim]`` (in the MLP's dtype)."""
        feats = sinusoidal_embedding(t, self.frequency_dim, scale=self.scale)
        return self.mlp(feats.to(self.mlp[0].weight.dtype))


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE) tables for the token positions ``0..N-1``.

    Args:
        head_dim: per-head width ``E`` (even).
        base: the RoPE frequency base.
    """

    inv_freq: Tensor

    def __init__(self, head_dim: int, base: float = 10_000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"head_dim: rotary embedding needs an even head width, got {head_dim}")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @typechecked
    def forward(
        self, num_tokens: int, *, dtype: torch.dtype | None = None
    ) -> tuple[Float[Tensor, "N E"], Float[Tensor, "N E"]]:
        """``(cos, sin)`` tables, each ``[num_tokens, head_dim]``, in ``dtype`` (default float32)."""
        pos = torch.arange(num_tokens, device=self.inv_freq.device, dtype=torch.float32)
        angles = torch.outer(pos, self.inv_freq)
        angles = torch.cat([angles, angles], dim=-1)
        dtype = dtype or torch.float32
        return angles.cos().to(dtype), angles.sin().to(dtype)


@typechecked
def apply_rotary(
    x: Float[Tensor, "*B N E"], cos: Float[Tensor, "N E"], sin: Float[Tensor, "N E"]
) -> Float[Tensor, "*B N E"]:
    """Rotate query/key features ``x`` ``[*B, N, E]`` by their positions (rotate-half convention).

    Dot products of rotated queries and keys then depend only on the relative position.
    """
    first, second = x.chunk(2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    return x * cos + rotated * sin
