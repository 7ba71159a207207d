"""Masked pooling of dense per-pixel maps onto a vision encoder's patch grid.

A ViT with patch size ``p`` on an ``H_img x W_img`` input sees a ``gh x gw`` grid
(``gh = H_img // p``; like a stride-``p`` convolution, a remainder strip is dropped). A dense map
``[B, V, h, w, C]`` (points, depth, a MapAnything-style feature) covers the same field of view at
its own resolution ``h x w``, which need not divide, or even exceed, the grid. Each patch (or each of
its ``k x k`` sub-cells) covers a rectangle of the dense map in continuous coordinates; pooling takes
the area-weighted mean of the valid samples under it::

    out[i, j] = sum_rc A[i, r] B[j, c] m[r, c] x[r, c] / sum_rc A[i, r] B[j, c] m[r, c]

where ``A[i, r]`` is the length of the overlap of row ``r`` (``[r, r + 1)``) with patch row ``i``.
The weights are separable, so this is two small matrix products, exact for any resolution ratio
(a finer map is averaged, a coarser one is sampled piecewise-constant), and an invalid pixel (mask
``False``, or non-finite values) never counts: its value is replaced by 0 before the products.

einops legend: b = batch, v = views, h w = dense rows/cols, g k = output rows/cols, c = channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange

from flowvla.typing import Bool, Float, Tensor, typechecked

__all__ = ["PatchGrid", "pool_to_grid", "pool_to_patches", "sub_patch_samples"]


def _pair(x: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (x, x) if isinstance(x, int) else tuple(x)
    if len(pair) != 2 or min(pair) <= 0:
        raise ValueError(f"{name}: expected a positive int or (height, width), got {x!r}")
    return int(pair[0]), int(pair[1])


@dataclass(frozen=True, init=False)
class PatchGrid:
    """The patch grid of a vision encoder.

    Args:
        image_size: encoder input ``(H_img, W_img)`` (or one int for square images).
        patch_size: patch ``(ph, pw)`` (or one int).

    Attributes:
        image_size: ``(H_img, W_img)``.
        patch_size: ``(ph, pw)``.
    """

    image_size: tuple[int, int]
    patch_size: tuple[int, int]

    def __init__(self, image_size: int | tuple[int, int], patch_size: int | tuple[int, int]) -> None:
        img, patch = _pair(image_size, "image_size"), _pair(patch_size, "patch_size")
        if patch[0] > img[0] or patch[1] > img[1]:
            raise ValueError(f"patch_size {patch} is larger than image_size {img}")
        object.__setattr__(self, "image_size", img)
        object.__setattr__(self, "patch_size", patch)

    @property
    def grid_size(self) -> tuple[int, int]:
        """``(gh, gw)``: patches per column and per row."""
        return self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1]

    @property
    def num_patches(self) -> int:
        """``N = gh * gw``."""
        gh, gw = self.grid_size
        return gh * gw

    @property
    def covered_fraction(self) -> tuple[float, float]:
        """Fraction of the image height / width the grid covers (< 1 when a remainder is dropped)."""
        (gh, gw), (ph, pw) = self.grid_size, self.patch_size
        return gh * ph / self.image_size[0], gw * pw / self.image_size[1]


def _overlap_weights(
    n_out: int, n_in: int, covered: float, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """``[n_out, n_in]``: overlap length of input cell ``[r, r + 1)`` with output bin ``i``."""
    step = covered * n_in / n_out
    lo = torch.arange(n_out, dtype=torch.float64, device=device)[:, None] * step
    r = torch.arange(n_in, dtype=torch.float64, device=device)[None, :]
    return (torch.minimum(r + 1, lo + step) - torch.maximum(r, lo)).clamp_min(0).to(dtype)


@typechecked
def pool_to_grid(
    dense: Float[Tensor, "B V h w C"],
    out_size: tuple[int, int],
    valid: Bool[Tensor, "B V h w"] | None = None,
    *,
    covered: tuple[float, float] = (1.0, 1.0),
    min_valid_fraction: float = 0.0,
) -> tuple[Float[Tensor, "B V g k C"], Bool[Tensor, "B V g k"]]:
    """Area-weighted masked mean of a dense map over an ``out_size`` grid of rectangles.

    Args:
        dense: ``[B, V, h, w, C]`` map.
        out_size: ``(g, k)`` output rows and columns.
        valid: ``[B, V, h, w]`` samples that count; default: those with all channels finite.
        covered: fraction of the map's height / width the grid spans, from the top-left corner.
        min_valid_fraction: a cell is valid when more than this fraction of its area is valid.

    Returns:
        ``(pooled [B, V, g, k, C], cell_valid [B, V, g, k])``; invalid cells hold 0.
    """
    h, w = dense.shape[2:4]
    finite = torch.isfinite(dense).all(-1)
    valid = finite if valid is None else valid & finite
    x = torch.where(valid[..., None], dense, 0.0)
    m = valid.to(dense.dtype)
    a = _overlap_weights(out_size[0], h, covered[0], dense.dtype, dense.device)
    b = _overlap_weights(out_size[1], w, covered[1], dense.dtype, dense.device)
    num = torch.einsum("gh,bvhwc,kw->bvgkc", a, x, b)
    den = torch.einsum("gh,bvhw,kw->bvgk", a, m, b)
    area = a.sum(1)[:, None] * b.sum(1)[None, :]
    cell_valid = (den > min_valid_fraction * area) & (den > 0)
    pooled = num / torch.where(cell_valid, den, torch.ones_like(den))[..., None]
    return pooled, cell_valid


@typechecked
def pool_to_patches(
    dense: Float[Tensor, "B V h w C"],
    grid: PatchGrid,
    valid: Bool[Tensor, "B V h w"] | None = None,
    *,
    min_valid_fraction: float = 0.0,
) -> tuple[Float[Tensor, "B V N C"], Bool[Tensor, "B V N"]]:
    """Masked mean of a dense map under each patch, patches in row-major order (``N = gh * gw``).

    The dense map must cover the encoder's whole input image (any resolution); the strip a ViT drops
    when the image size is not a multiple of the patch size is excluded.

    Args:
        dense: ``[B, V, h, w, C]`` map over the full image.
        grid: the encoder's patch grid.
        valid: ``[B, V, h, w]`` samples that count; default: those with all channels finite.
        min_valid_fraction: a patch is valid when more than this fraction of its area is valid.

    Returns:
        ``(patches [B, V, N, C], patch_valid [B, V, N])``; invalid patches hold 0.
    """
    pooled, ok = pool_to_grid(
        dense, grid.grid_size, valid, covered=grid.covered_fraction, min_valid_fraction=min_valid_fraction
    )
    return pooled.flatten(2, 3), ok.flatten(2, 3)


@typechecked
def sub_patch_samples(
    dense: Float[Tensor, "B V h w C"],
    grid: PatchGrid,
    valid: Bool[Tensor, "B V h w"] | None = None,
    *,
    k: int = 2,
    min_valid_fraction: float = 0.0,
) -> tuple[Float[Tensor, "B V N KK C"], Bool[Tensor, "B V N KK"]]:
    """``k x k`` samples per patch (SpatialVLA's Ego3D uses 2 x 2): masked means of its sub-cells.

    Args:
        dense: ``[B, V, h, w, C]`` map over the full image.
        grid: the encoder's patch grid.
        valid: ``[B, V, h, w]`` samples that count; default: those with all channels finite.
        k: sub-cells per patch side.
        min_valid_fraction: a sub-cell is valid when more than this fraction of its area is valid.

    Returns:
        ``(samples [B, V, N, k*k, C], sample_valid [B, V, N, k*k])``, sub-cells in row-major order.
    """
    if k < 1:
        raise ValueError(f"k: must be >= 1, got {k}")
    gh, gw = grid.grid_size
    pooled, ok = pool_to_grid(
        dense, (gh * k, gw * k), valid, covered=grid.covered_fraction, min_valid_fraction=min_valid_fraction
    )
    split = "b v (gh k1) (gw k2) ... -> b v (gh gw) (k1 k2) ..."
    return rearrange(pooled, split, k1=k, k2=k), rearrange(ok, split, k1=k, k2=k)
