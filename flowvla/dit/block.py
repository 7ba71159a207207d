"""The DiT block for action tokens: adaLN-Zero, self-attention, cross-attention, MLP.

Each present sublayer ``f`` (self-attention, cross-attention, MLP) is applied pre-norm and
modulated by the conditioning vector ``c`` (flow time, optionally robot state)::

    x <- x + gate(c) * f((1 + scale(c)) * LayerNorm(x) + shift(c))

The modulation layer is zero-initialised (adaLN-Zero), so every gate starts at 0 and a fresh
block is exactly the identity on its residual stream.

Legend: ``R`` repeats (independent query sets sharing one context: time draws or samples),
``B`` batch, ``N`` tokens, ``D`` width, ``T`` context tokens.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from flowvla.dit.attention import CrossAttention, KeyValue, SelfAttention
from flowvla.dit.mlp import make_mlp
from flowvla.typing import Bool, Float, Tensor, typechecked

__all__ = ["DiTBlock", "modulate"]


@typechecked
def modulate(
    x: Float[Tensor, "*B N D"], shift: Float[Tensor, "*B D"], scale: Float[Tensor, "*B D"]
) -> Float[Tensor, "*B N D"]:
    """``x * (1 + scale) + shift`` with per-sample ``shift, scale`` ``[..., D]`` broadcast over tokens."""
    return torch.addcmul(shift.unsqueeze(-2), x, 1 + scale.unsqueeze(-2))


class DiTBlock(nn.Module):
    """One transformer block over action tokens with adaLN-Zero conditioning.

    Args:
        dim: token width ``D``.
        num_heads: attention heads.
        context_dim: width of the context tokens; ``None`` makes a block without cross-attention.
        self_attention: whether the block has self-attention (GR00T-style interleaving alternates
            cross-only and self-only blocks).
        mlp_ratio: MLP hidden width over ``dim``.
        mlp: ``"gelu"`` or ``"swiglu"``.
        qkv_bias: biases on attention projections.
        qk_norm: RMS-normalise queries and keys per head.
        dropout: dropout on attention outputs and the MLP output.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        context_dim: int | None = None,
        self_attention: bool = True,
        mlp_ratio: float = 4.0,
        mlp: str = "gelu",
        qkv_bias: bool = True,
        qk_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.self_attn = (
            SelfAttention(dim, num_heads, qkv_bias=qkv_bias, qk_norm=qk_norm, proj_drop=dropout)
            if self_attention
            else None
        )
        self.cross_attn = (
            CrossAttention(dim, context_dim, num_heads, qkv_bias=qkv_bias, qk_norm=qk_norm, proj_drop=dropout)
            if context_dim is not None
            else None
        )
        self.mlp = make_mlp(mlp, dim, mlp_ratio, dropout)
        self.num_sublayers = 1 + (self.self_attn is not None) + (self.cross_attn is not None)
        # One affine-free LayerNorm serves every sublayer: adaLN supplies the per-sample affine.
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * self.num_sublayers * dim))
        nn.init.zeros_(self.adaLN[1].weight)
        nn.init.zeros_(self.adaLN[1].bias)

    @property
    def has_cross_attention(self) -> bool:
        """Whether this block reads a context."""
        return self.cross_attn is not None

    @typechecked
    def forward(
        self,
        x: Float[Tensor, "R B N D"],
        cond: Float[Tensor, "R B D"],
        kv: KeyValue | None = None,
        context_mask: Bool[Tensor, "B T"] | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
    ) -> Float[Tensor, "R B N D"]:
        """Update tokens ``x`` ``[R, B, N, D]`` given conditioning ``cond`` ``[R, B, D]``.

        Args:
            x: action-side tokens; ``R`` query sets share each sample's context.
            cond: conditioning vector per query set and sample.
            kv: this block's projected context (required iff the block has cross-attention).
            context_mask: ``[B, T]``, True on valid context tokens.
            rope: rotary ``(cos, sin)`` tables ``[N, E]`` for self-attention, or None.
        """
        if (kv is None) == self.has_cross_attention:
            raise ValueError("kv: a cross-attention block needs its projected context, a self-only one none")
        r, b = x.shape[:2]
        mods = self.adaLN(cond).chunk(3 * self.num_sublayers, dim=-1)
        i = 0
        if self.self_attn is not None:
            shift, scale, gate = mods[i : i + 3]
            i += 3
            h = modulate(self.norm(x), shift, scale).flatten(0, 1)
            x = x + gate.unsqueeze(-2) * self.self_attn(h, rope).unflatten(0, (r, b))
        if self.cross_attn is not None:
            shift, scale, gate = mods[i : i + 3]
            i += 3
            # Fold the R query sets into the token axis: one kv per sample serves them all.
            h = rearrange(modulate(self.norm(x), shift, scale), "r b n d -> b (r n) d")
            out = rearrange(self.cross_attn(h, kv, context_mask), "b (r n) d -> r b n d", r=r)
            x = x + gate.unsqueeze(-2) * out
        shift, scale, gate = mods[i : i + 3]
        return x + gate.unsqueeze(-2) * self.mlp(modulate(self.norm(x), shift, scale))
