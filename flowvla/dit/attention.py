"""Multi-head self- and cross-attention on ``F.scaled_dot_product_attention``.

Cross-attention splits into
[`CrossAttention.project_context`][flowvla.dit.attention.CrossAttention.project_context] (keys/values of the
context, computed once per context) and
[`CrossAttention.forward`][flowvla.dit.attention.CrossAttention.forward] (queries against cached keys/values),
because a flow head evaluates the same context at every solver step.

Legend: ``B`` batch, ``N`` query tokens, ``T`` context tokens, ``D`` width, ``C`` context width,
``h`` heads, ``E`` head width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from einops import rearrange
from torch import nn

from flowvla.dit.embeddings import apply_rotary
from flowvla.typing import Bool, Float, Tensor, typechecked

__all__ = ["CrossAttention", "KeyValue", "SelfAttention"]


@dataclass(frozen=True)
class KeyValue:
    """Projected context of one cross-attention layer.

    Attributes:
        k: keys ``[B, h, T, E]``.
        v: values ``[B, h, T, E]``.
    """

    k: Tensor
    v: Tensor


class _MultiHeadOutput(nn.Module):
    """What self- and cross-attention share: head layout, q/k norms, SDPA and the output projection."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, attn_drop: float, proj_drop: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads: {num_heads} does not divide dim={dim}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        # Normalising queries and keys per head bounds the attention logits (stable bf16 training).
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop if self.training else 0.0
        )
        return self.proj_drop(self.proj(rearrange(out, "b h n e -> b n (h e)")))


class SelfAttention(_MultiHeadOutput):
    """Multi-head self-attention among the head's own tokens.

    Args:
        dim: token width ``D``.
        num_heads: number of heads ``h``.
        qkv_bias: bias on the query/key/value projection.
        qk_norm: RMS-normalise queries and keys per head.
        attn_drop: dropout on attention weights (training only).
        proj_drop: dropout after the output projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(dim, num_heads, qk_norm, attn_drop, proj_drop)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)

    @typechecked
    def forward(
        self, x: Float[Tensor, "B N D"], rope: tuple[Tensor, Tensor] | None = None
    ) -> Float[Tensor, "B N D"]:
        """Attend ``x`` ``[B, N, D]`` to itself; ``rope``: optional ``(cos, sin)`` ``[N, E]`` tables."""
        q, k, v = rearrange(self.qkv(x), "b n (three h e) -> three b h n e", three=3, h=self.num_heads)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        return self._attend(q, k, v)


class CrossAttention(_MultiHeadOutput):
    """Multi-head cross-attention from the head's tokens to context tokens, with a cacheable context.

    Args:
        dim: query token width ``D``.
        context_dim: context token width ``C``.
        num_heads: number of heads ``h``.
        qkv_bias: bias on the query and key/value projections.
        qk_norm: RMS-normalise queries and keys per head.
        attn_drop: dropout on attention weights (training only).
        proj_drop: dropout after the output projection.
    """

    def __init__(
        self,
        dim: int,
        context_dim: int,
        num_heads: int,
        *,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(dim, num_heads, qk_norm, attn_drop, proj_drop)
        self.context_dim = context_dim
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(context_dim, 2 * dim, bias=qkv_bias)

    @typechecked
    def project_context(self, context: Float[Tensor, "B T C"]) -> KeyValue:
        """Keys and values ``[B, h, T, E]`` of ``context`` ``[B, T, C]`` (reusable across solver steps)."""
        if context.shape[-1] != self.context_dim:
            raise ValueError(
                f"context: last dim is {context.shape[-1]}, this layer expects context_dim={self.context_dim}"
            )
        k, v = rearrange(self.kv(context), "b t (two h e) -> two b h t e", two=2, h=self.num_heads)
        return KeyValue(self.k_norm(k), v)

    @typechecked
    def forward(
        self,
        x: Float[Tensor, "B N D"],
        kv: KeyValue,
        mask: Bool[Tensor, "B T"] | None = None,
    ) -> Float[Tensor, "B N D"]:
        """Attend ``x`` ``[B, N, D]`` to the projected context ``kv``; ``mask`` ``[B, T]``: True = valid.

        Queries never interact, so several query sets per context (repeated time draws, several
        samples) are folded into ``N`` and share one ``kv`` without copying it.
        """
        q = self.q_norm(rearrange(self.q(x), "b n (h e) -> b h n e", h=self.num_heads))
        return self._attend(q, kv.k, kv.v, None if mask is None else mask[:, None, None, :])
