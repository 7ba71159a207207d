"""Geometry encoders: dense 3D maps to tokens aligned one-to-one with a vision encoder's patch tokens.

Each encoder pools its dense input onto the [`PatchGrid`][flowvla.geometry.patches.PatchGrid] of the 2D
encoder (masked, so invalid pixels never count) and returns
[`GeometryTokens`][flowvla.geometry.encoders.GeometryTokens]: ``[B, V*N, D]`` tokens in the 2D tokens' order
(views, then patch rows, then columns) and a ``[B, V*N]`` mask that is ``False`` for patches without valid
geometry (their tokens are 0).

- [`FourierPointEncoder`][flowvla.geometry.encoders.FourierPointEncoder] (SpatialVLA's Ego3D): ``k x k``
  sub-patch points, normalised as ``(xyz - center) / scale``, NeRF frequency features, MLP
  (Linear-LN-ReLU-Linear, small init).
- [`MLPPositionEncoder`][flowvla.geometry.encoders.MLPPositionEncoder] (LLaVA-3D): the patch's mean point,
  normalised, through a learned MLP.
- [`DenseFeatureEncoder`][flowvla.geometry.encoders.DenseFeatureEncoder]: any external per-pixel features
  ``[B, V, h, w, C]`` on any grid (MapAnything outputs, a depth network's features) resampled to the patch
  grid and projected.

einops legend: b = batch, v = views, n = patches, s = sub-patch samples, c = channels, d = width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from flowvla.geometry.patches import PatchGrid, pool_to_patches, sub_patch_samples
from flowvla.typing import Bool, Float, Tensor, typechecked

__all__ = [
    "DenseFeatureEncoder",
    "FourierPointEncoder",
    "GeometryTokens",
    "MLPPositionEncoder",
    "fourier_features",
]


@dataclass(frozen=True)
class GeometryTokens:
    """Output of the geometry encoders.

    Attributes:
        tokens: ``[B, V*N, D]``, aligned with the 2D patch tokens; 0 where ``mask`` is ``False``.
        mask: ``[B, V*N]`` bool, ``True`` where the patch has valid geometry.
    """

    tokens: Tensor
    mask: Tensor


@typechecked
def fourier_features(
    x: Float[Tensor, "*S C"], num_freqs: int, include_input: bool = True
) -> Float[Tensor, "*S F"]:
    """NeRF frequency encoding: ``[x, sin(2^i pi x), cos(2^i pi x)]`` for ``i < num_freqs``.

    Args:
        x: ``[*S, C]`` inputs, best normalised to about ``[-1, 1]``.
        num_freqs: number of octaves ``L``.
        include_input: also return ``x`` itself.

    Returns:
        ``[*S, C * (2 L + include_input)]``.
    """
    freqs = (2.0 ** torch.arange(num_freqs, dtype=x.dtype, device=x.device)) * math.pi
    angles = (x[..., None] * freqs).flatten(-2)  # [*S, C * L]
    parts = [x] if include_input else []
    return torch.cat([*parts, angles.sin(), angles.cos()], dim=-1)


def _tokens(features: Tensor, valid: Tensor) -> GeometryTokens:
    """Zero invalid patches and flatten views: ``[B, V, N, D]`` -> ``[B, V*N, D]``."""
    features = features * valid[..., None].to(features.dtype)
    return GeometryTokens(rearrange(features, "b v n d -> b (v n) d"), rearrange(valid, "b v n -> b (v n)"))


class _PointNormaliser(nn.Module):
    """``(xyz - center) / scale``, as buffers so they follow ``.to()`` and the state dict."""

    def __init__(self, center: Sequence[float], scale: float) -> None:
        super().__init__()
        if len(center) != 3 or scale <= 0:
            raise ValueError(f"center must be 3 floats and scale > 0, got {center!r}, {scale}")
        self.register_buffer("center", torch.tensor([float(c) for c in center]))
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, xyz: Tensor) -> Tensor:
        return (xyz - self.center.to(xyz.dtype)) / self.scale.to(xyz.dtype)


class FourierPointEncoder(nn.Module):
    """Ego3D-style encoder: sub-patch points -> NeRF features -> MLP, one token per patch.

    Sub-cells without valid points take their patch's mean point, so a partly valid patch still gets
    a well-defined code; a patch with no valid point gets a 0 token and ``mask = False``.

    Args:
        dim: output width ``D`` (the 2D tokens' width for additive fusion).
        img_size: the vision encoder's input size (int or ``(H, W)``).
        patch_size: the vision encoder's patch size.
        sub_patches: ``k``: ``k x k`` points per patch (Ego3D: 2).
        num_freqs: NeRF octaves (Ego3D: 8).
        center: subtracted from xyz before encoding (Ego3D, camera frame: ``(0, 0, 2)``).
        scale: divides the centred xyz (Ego3D: 2).
        hidden_dim: MLP hidden width (default ``dim``).
        norm_layer: normalisation after the first linear layer.
        act_layer: MLP activation.
        init_std: std of the output layer's initial weights (small, so adding the tokens to 2D features
            perturbs them little at the start).
    """

    def __init__(
        self,
        dim: int,
        img_size: int | tuple[int, int],
        patch_size: int | tuple[int, int],
        sub_patches: int = 2,
        num_freqs: int = 8,
        center: Sequence[float] = (0.0, 0.0, 2.0),
        scale: float = 2.0,
        hidden_dim: int | None = None,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        act_layer: Callable[[], nn.Module] = nn.ReLU,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.grid = PatchGrid(img_size, patch_size)
        self.sub_patches = sub_patches
        self.num_freqs = num_freqs
        self.normalise = _PointNormaliser(center, scale)
        in_dim = sub_patches**2 * 3 * (2 * num_freqs + 1)
        hidden = hidden_dim or dim
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden), norm_layer(hidden), act_layer(), nn.Linear(hidden, dim)
        )
        nn.init.normal_(self.mlp[-1].weight, std=init_std)
        nn.init.zeros_(self.mlp[-1].bias)

    @typechecked
    def forward(
        self, points: Float[Tensor, "B V H W 3"], valid: Bool[Tensor, "B V H W"] | None = None
    ) -> GeometryTokens:
        """Encode point maps (any resolution covering the encoder's input) into ``[B, V*N, D]`` tokens.

        Args:
            points: ``[B, V, H, W, 3]`` xyz, e.g. ``point_map_from_depth(...).points``.
            valid: ``[B, V, H, W]`` usable points; default: finite ones.
        """
        mean, patch_ok = pool_to_patches(points, self.grid, valid)
        sub, sub_ok = sub_patch_samples(points, self.grid, valid, k=self.sub_patches)
        sub = torch.where(sub_ok[..., None], sub, mean[..., None, :])
        code = fourier_features(self.normalise(sub), self.num_freqs)  # [b, v, n, s, c]
        feats = self.mlp(rearrange(code, "b v n s c -> b v n (s c)"))
        return _tokens(feats, patch_ok)


class MLPPositionEncoder(nn.Module):
    """LLaVA-3D-style learned 3D position encoding: the patch's mean point through an MLP.

    Args:
        dim: output width ``D``.
        img_size: the vision encoder's input size (int or ``(H, W)``).
        patch_size: the vision encoder's patch size.
        center: subtracted from xyz before the MLP.
        scale: divides the centred xyz.
        hidden_dim: MLP hidden width (default ``dim``).
        act_layer: MLP activation.
    """

    def __init__(
        self,
        dim: int,
        img_size: int | tuple[int, int],
        patch_size: int | tuple[int, int],
        center: Sequence[float] = (0.0, 0.0, 0.0),
        scale: float = 1.0,
        hidden_dim: int | None = None,
        act_layer: Callable[[], nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.grid = PatchGrid(img_size, patch_size)
        self.normalise = _PointNormaliser(center, scale)
        hidden = hidden_dim or dim
        self.mlp = nn.Sequential(nn.Linear(3, hidden), act_layer(), nn.Linear(hidden, dim))

    @typechecked
    def forward(
        self, points: Float[Tensor, "B V H W 3"], valid: Bool[Tensor, "B V H W"] | None = None
    ) -> GeometryTokens:
        """Encode point maps into ``[B, V*N, D]`` tokens.

        Args:
            points: ``[B, V, H, W, 3]`` xyz (camera or world frame).
            valid: ``[B, V, H, W]`` usable points; default: finite ones.
        """
        mean, ok = pool_to_patches(points, self.grid, valid)
        return _tokens(self.mlp(self.normalise(mean)), ok)


class DenseFeatureEncoder(nn.Module):
    """External dense geometry features on any grid -> patch-aligned tokens (masked pool, norm, linear).

    Args:
        in_chans: channels ``C`` of the external features.
        dim: output width ``D``.
        img_size: the vision encoder's input size (int or ``(H, W)``).
        patch_size: the vision encoder's patch size.
        norm_layer: normalisation of the pooled features before the projection.
    """

    def __init__(
        self,
        in_chans: int,
        dim: int,
        img_size: int | tuple[int, int],
        patch_size: int | tuple[int, int],
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        self.grid = PatchGrid(img_size, patch_size)
        self.norm = norm_layer(in_chans)
        self.proj = nn.Linear(in_chans, dim)

    @typechecked
    def forward(
        self, features: Float[Tensor, "B V h w C"], valid: Bool[Tensor, "B V h w"] | None = None
    ) -> GeometryTokens:
        """Resample ``[B, V, h, w, C]`` features (any ``h x w`` over the full image) to ``[B, V*N, D]``.

        Args:
            features: ``[B, V, h, w, C]``, e.g. MapAnything's per-pixel outputs stacked on channels.
            valid: ``[B, V, h, w]`` usable samples (e.g. a confidence threshold); default: finite ones.
        """
        pooled, ok = pool_to_patches(features, self.grid, valid)
        return _tokens(self.proj(self.norm(pooled)), ok)
