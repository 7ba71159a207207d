"""Region cross-attention fusion: each 2D token attends to the 3D tokens of its own neighbourhood.

Tokens are laid out as ``V`` views of a ``gh x gw`` patch grid (``T = V * gh * gw``, views first,
then rows, then columns: the order of ``flowvla.geometry``'s encoders). The query of patch
``(v, i, j)`` sees the 3D tokens of the ``window x window`` patches centred on ``(i, j)`` in its own
view and, with ``cross_view=True``, the same window in every other view::

    out_t = x_t + W_o softmax(q_t K_t^T / sqrt(d_h) + b + mask_t) V_t,   K_t, V_t: the window's tokens

``b`` is a learned bias per head and window offset (own view / other views kept apart), so a head can
prefer the centre patch or a direction; invalid 3D tokens and the grid border are masked out, and a
token whose whole window is invalid keeps its 2D features unchanged.

Neighbourhoods are gathered through a precomputed ``[T, W]`` index (``W = window^2``, times ``V``
across views) into ``[B, T, W, D]`` keys and values, never a dense ``T x T`` mask: time and memory are
linear in ``T`` for a fixed window. Attention runs in ``F.scaled_dot_product_attention`` with one
query per (batch, token) row.

Cross-view windows pair patches at the same grid position, which suits roughly aligned cameras
(wrist and third-person views do not correspond patch to patch: use ``cross_view=False`` or global
attention there).

einops legend: b = batch, t = tokens, w = window slots, h = heads, e = head width.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from flowvla.fusion.base import Fusion
from flowvla.typing import Int, Tensor, typechecked

__all__ = ["RegionCrossAttentionFusion", "window_index"]


@typechecked
def window_index(
    num_views: int, grid_size: tuple[int, int], window: int, cross_view: bool = False
) -> tuple[Int[Tensor, "T W"], Int[Tensor, " W"]]:
    """Flat token indices of every token's neighbourhood.

    Args:
        num_views: ``V``.
        grid_size: ``(gh, gw)`` patch grid of each view.
        window: odd side of the square window, in patches.
        cross_view: include the same window in the other views.

    Returns:
        ``(index [T, W], slot [W])``: ``index[t, w]`` is a token index or ``T`` for "outside the grid";
        ``slot[w]`` numbers the window offset (own view first, then other views) for the position bias.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window: expected an odd positive size, got {window}")
    gh, gw = grid_size
    r = window // 2
    d = torch.arange(-r, r + 1)
    dy, dx = (a.flatten() for a in torch.meshgrid(d, d, indexing="ij"))  # [kk]
    v, i, j = (
        a[..., None, None] for a in torch.meshgrid(*map(torch.arange, (num_views, gh, gw)), indexing="ij")
    )
    # Own view first, then the others in increasing order, so slot w means the same for every query.
    views = torch.arange(num_views)
    order = torch.stack([torch.cat([views[k : k + 1], views[views != k]]) for k in range(num_views)])
    if not cross_view:
        order = order[:, :1]
    vv = order[v.squeeze(-1).squeeze(-1)][..., None]  # [V, gh, gw, Vn, 1]
    ii, jj = i + dy, j + dx  # [V, gh, gw, 1, kk]
    inside = (ii >= 0) & (ii < gh) & (jj >= 0) & (jj < gw)
    flat = (vv * gh + ii) * gw + jj
    num_tokens = num_views * gh * gw
    index = torch.where(inside, flat, num_tokens).expand(-1, -1, -1, order.shape[1], -1)
    kk = window * window
    slot = torch.arange(order.shape[1] * kk)
    slot = torch.where(slot >= kk, kk + slot % kk, slot)  # the other views share their offsets' biases
    return index.reshape(num_tokens, -1), slot


class RegionCrossAttentionFusion(Fusion):
    """2D tokens query the 3D tokens of a window of patches around them (see module docs).

    Args:
        dim: width ``D2`` of the 2D tokens (and of the output); divisible by ``num_heads``.
        geo_dim: width ``D3`` of the 3D tokens.
        grid_size: ``(gh, gw)`` patch grid of each view (e.g. ``PatchGrid.grid_size``).
        num_views: ``V``; tokens number ``V * gh * gw``.
        window: odd window side in patches (3: the patch and its 8 neighbours).
        cross_view: also attend to the same window in the other views.
        num_heads: attention heads.
        qkv_bias: bias in the query / key / value projections.
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection.
        norm_layer: pre-normalisation of the 2D (query) and 3D (key / value) tokens.
    """

    def __init__(
        self,
        dim: int,
        geo_dim: int,
        grid_size: tuple[int, int],
        num_views: int = 1,
        window: int = 3,
        cross_view: bool = False,
        num_heads: int = 8,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__(dim, geo_dim)
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.num_views = num_views
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        index, slot = window_index(num_views, self.grid_size, window, cross_view)
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("slot", slot, persistent=False)
        self.rel_bias = nn.Parameter(torch.zeros(num_heads, int(slot.max()) + 1))
        self.norm = norm_layer(dim)
        self.geo_norm = norm_layer(geo_dim)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(geo_dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    @property
    def num_tokens(self) -> int:
        """``T = V * gh * gw``."""
        return self.num_views * self.grid_size[0] * self.grid_size[1]

    def _fuse(self, tokens_2d: Tensor, tokens_3d: Tensor, mask: Tensor) -> Tensor:
        b, t, _ = tokens_2d.shape
        if t != self.num_tokens:
            raise ValueError(
                f"tokens_2d: expected {self.num_tokens} tokens ({self.num_views} views x "
                f"{self.grid_size[0]} x {self.grid_size[1]} patches), got {t}"
            )
        q = rearrange(self.q(self.norm(tokens_2d)), "b t (h e) -> (b t) h 1 e", h=self.num_heads)
        kv = self.kv(self.geo_norm(tokens_3d))
        kv = torch.cat([kv, kv.new_zeros(b, 1, kv.shape[-1])], dim=1)  # slot t: outside the grid
        valid = torch.cat([mask, mask.new_zeros(b, 1)], dim=1)[:, self.index]  # [b, t, w]
        k, v = rearrange(kv[:, self.index], "b t w (two h e) -> two (b t) h w e", two=2, h=self.num_heads)
        # A window without any valid token would softmax over nothing (NaN): let it attend anywhere and
        # drop its result below.
        seen = valid.any(-1)
        valid = valid | ~seen[..., None]
        bias = self.rel_bias[:, None, self.slot].to(q.dtype)  # [h, 1, w]
        blocked = torch.zeros(valid.shape, dtype=q.dtype, device=q.device).masked_fill(~valid, -math.inf)
        attn_mask = bias + blocked.flatten(0, 1)[:, None, None, :]  # [(b t), h, 1, w]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop if self.training else 0.0
        )
        out = self.proj_drop(self.proj(rearrange(out, "(b t) h 1 e -> b t (h e)", b=b)))
        return tokens_2d + out * seen[..., None].to(out.dtype)
