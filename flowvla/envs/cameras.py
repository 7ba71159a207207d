"""Pinhole-camera geometry for MuJoCo cameras, in the OpenCV convention, for numpy arrays.

Thin numpy wrappers over [`flowvla.geometry.cameras`][flowvla.geometry.cameras] (the one implementation,
batched in torch; its module docs state the conventions): upright images, OpenCV camera axes (x right, y down,
z forward), pixel centres at integer ``(u, v)``, camera-to-world extrinsics, metric z-depth. Everything is
computed in float64."""

from __future__ import annotations

import numpy as np
import torch

from flowvla import geometry
from flowvla.typing import Float, Shaped, typechecked

__all__ = [
    "MUJOCO_TO_OPENCV",
    "backproject_depth",
    "camera_to_world_opencv",
    "intrinsics_from_fovy",
    "project_points",
    "zbuffer_to_metres",
]

#: Right-multiplying a MuJoCo camera rotation by this gives the OpenCV camera rotation.
MUJOCO_TO_OPENCV = geometry.MUJOCO_TO_OPENCV.numpy()


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x, dtype=np.float64))


@typechecked
def intrinsics_from_fovy(fovy_deg: float, height: int, width: int) -> Float[np.ndarray, "3 3"]:
    """Intrinsics ``K`` of a MuJoCo camera with vertical field of view ``fovy_deg`` (degrees).

    ``fx = fy = (H / 2) / tan(fovy / 2)``; principal point ``((W - 1) / 2, (H - 1) / 2)``.
    """
    return geometry.intrinsics_from_fovy(fovy_deg, height, width, dtype=torch.float64).numpy()


@typechecked
def camera_to_world_opencv(
    position: Float[np.ndarray, " 3"], rotation: Float[np.ndarray, "3 3"]
) -> Float[np.ndarray, "4 4"]:
    """Camera-to-world pose (OpenCV axes) from MuJoCo's ``cam_xpos`` and ``cam_xmat`` (reshaped 3x3)."""
    return geometry.camera_to_world_opencv(_t(position), _t(rotation)).numpy()


@typechecked
def zbuffer_to_metres(
    zbuffer: Shaped[np.ndarray, "*shape"], near: float, far: float
) -> Float[np.ndarray, "*shape"]:
    """Linear depth in metres (float32) from OpenGL depth-buffer values in ``[0, 1]``.

    ``near`` / ``far`` are the clip distances in metres (MuJoCo: ``model.vis.map.znear`` /
    ``zfar`` times ``model.stat.extent``). A buffer value of 1 (nothing hit) maps to ``far``.
    """
    return geometry.zbuffer_to_metres(_t(zbuffer), near, far).numpy()


@typechecked
def project_points(
    points: Float[np.ndarray, "N 3"],
    intrinsics: Float[np.ndarray, "3 3"],
    extrinsics: Float[np.ndarray, "4 4"],
) -> tuple[Float[np.ndarray, "N 2"], Float[np.ndarray, " N"]]:
    """Project world points into an upright image.

    Args:
        points: ``[N, 3]`` world coordinates in metres.
        intrinsics: ``[3, 3]`` ``K``.
        extrinsics: ``[4, 4]`` camera-to-world pose (OpenCV axes).

    Returns:
        ``uv [N, 2]`` pixel coordinates (column, row; pixel centres at integers) and ``z [N]`` depth
        in metres (negative: behind the camera, where ``uv`` is meaningless).
    """
    uv, z = geometry.project_points(_t(points), _t(intrinsics), _t(extrinsics))
    return uv.numpy(), z.numpy()


@typechecked
def backproject_depth(
    depth: Float[np.ndarray, "H W"],
    intrinsics: Float[np.ndarray, "3 3"],
    extrinsics: Float[np.ndarray, "4 4"],
) -> Float[np.ndarray, "H W 3"]:
    """World point of every pixel of an upright metric depth map: ``[H, W]`` -> ``[H, W, 3]``.

    Unlike [`flowvla.geometry.point_map_from_depth`][flowvla.geometry.point_maps.point_map_from_depth] (which
    zeroes invalid pixels and returns a mask), every pixel is back-projected as is, whatever its depth."""
    rays = geometry.pixel_rays(_t(intrinsics), *depth.shape)
    cam = rays * _t(depth)[..., None]
    return geometry.transform_points(cam.flatten(0, 1), _t(extrinsics)).reshape(*depth.shape, 3).numpy()
