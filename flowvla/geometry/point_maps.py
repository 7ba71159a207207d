"""Point maps from depth: back-project every pixel of ``V`` views to camera or world coordinates.

For pixel ``(u, v)`` (pixel centres at integers, upright image, OpenCV camera axes) the ray with unit
z is ``r = K^-1 [u, v, 1] = ((u - cx) / fx, (v - cy) / fy, 1)``. A z-depth ``d`` gives the camera
point ``d r``; a distance along the ray gives ``d r / |r|``. With camera-to-world poses ``T`` the
point is then ``R p + t``.

A pixel is valid when its depth is finite, positive and (if ``far`` is given) below ``far``: zero or
NaN depth marks "no measurement" in most sensors and monocular estimators, and MuJoCo maps missed rays
to the far clip plane. Invalid pixels hold 0 (never NaN), so masked sums downstream stay finite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from flowvla.geometry.cameras import transform_points
from flowvla.typing import Float, Tensor, typechecked

__all__ = ["PointMap", "pixel_rays", "point_map_from_depth"]


@dataclass(frozen=True)
class PointMap:
    """Output of [`point_map_from_depth`][flowvla.geometry.point_maps.point_map_from_depth].

    Attributes:
        points: ``[B, V, H, W, 3]`` xyz in metres (camera or world frame); 0 where invalid.
        valid: ``[B, V, H, W]`` bool, ``True`` where the depth was a usable measurement.
    """

    points: Tensor
    valid: Tensor


@typechecked
def pixel_rays(intrinsics: Float[Tensor, "*B 3 3"], height: int, width: int) -> Float[Tensor, "*B H W 3"]:
    """Camera-frame ray ``K^-1 [u, v, 1]`` (unit z) through every pixel centre.

    Args:
        intrinsics: ``[*B, 3, 3]`` ``K`` (zero skew).
        height: image height ``H``.
        width: image width ``W``.
    """
    kw = {"dtype": intrinsics.dtype, "device": intrinsics.device}
    v, u = torch.meshgrid(torch.arange(height, **kw), torch.arange(width, **kw), indexing="ij")
    k = intrinsics[..., None, None, :, :]  # broadcast over H, W
    x = (u - k[..., 0, 2]) / k[..., 0, 0]
    y = (v - k[..., 1, 2]) / k[..., 1, 1]
    return torch.stack([x, y, torch.ones_like(x)], dim=-1)


@typechecked
def point_map_from_depth(
    depth: Float[Tensor, "B V H W"],
    intrinsics: Float[Tensor, "B V 3 3"],
    camera_to_world: Float[Tensor, "B V 4 4"] | None = None,
    *,
    depth_kind: Literal["z", "ray"] = "z",
    far: float | None = None,
) -> PointMap:
    """Back-project depth maps to a point map and its validity mask.

    Args:
        depth: ``[B, V, H, W]`` metric depth of upright images.
        intrinsics: ``[B, V, 3, 3]`` ``K`` of each view (at the depth map's resolution).
        camera_to_world: ``[B, V, 4, 4]`` poses (OpenCV axes): world-frame points; ``None``: camera frame.
        depth_kind: ``"z"`` (distance along the optical axis, as rendered) or ``"ray"`` (distance from the
            camera centre along the pixel's ray, as some estimators output).
        far: depths at or beyond this (metres) are invalid, e.g. the simulator's far plane or sky.

    Returns:
        [`PointMap`][flowvla.geometry.point_maps.PointMap] with ``points [B, V, H, W, 3]`` and
        ``valid [B, V, H, W]``.
    """
    h, w = depth.shape[-2:]
    valid = torch.isfinite(depth) & (depth > 0)
    if far is not None:
        valid &= depth < far
    d = torch.where(valid, depth, 0.0)
    rays = pixel_rays(intrinsics.to(depth.dtype), h, w)
    if depth_kind == "ray":
        rays = rays / torch.linalg.vector_norm(rays, dim=-1, keepdim=True)
    elif depth_kind != "z":
        raise ValueError(f"depth_kind: expected 'z' or 'ray', got {depth_kind!r}")
    points = rays * d[..., None]
    if camera_to_world is not None:
        flat = transform_points(points.flatten(2, 3), camera_to_world.to(depth.dtype))
        points = torch.where(valid[..., None], flat.unflatten(2, (h, w)), 0.0)
    return PointMap(points=points, valid=valid)
