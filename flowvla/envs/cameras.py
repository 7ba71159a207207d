"""Pinhole-camera geometry for MuJoCo cameras, in the OpenCV convention.

Conventions used everywhere in flowvla (and checked against MuJoCo's own ray caster in the tests):

- **Images are upright**: row 0 is the top of the picture. MuJoCo's ``mjr_readPixels`` (and so
  robosuite / LIBERO observations) returns rows bottom-up; ``upright = raw[::-1]``.
- **Camera frame is OpenCV's**: x right, y down, z forward (into the scene), for the upright image.
  MuJoCo's camera frame is x right, y up, z backward, so ``R_cv = R_mj @ diag(1, -1, -1)``.
- **Pixel coordinates** ``(u, v)`` = (column, row) with integer values at pixel centres, so the
  principal point of a centred camera is ``((W - 1) / 2, (H - 1) / 2)``.
- **Extrinsics are camera-to-world** 4x4 matrices ``T`` with ``x_world = T @ [x_cam, 1]``.
- **Depth is metric z** along the optical axis (not the distance along the ray), in metres.
"""

from __future__ import annotations

import numpy as np

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
MUJOCO_TO_OPENCV = np.diag([1.0, -1.0, -1.0])


@typechecked
def intrinsics_from_fovy(fovy_deg: float, height: int, width: int) -> Float[np.ndarray, "3 3"]:
    """Intrinsics ``K`` of a MuJoCo camera with vertical field of view ``fovy_deg`` (degrees).

    MuJoCo renders square pixels: ``fx = fy = (H / 2) / tan(fovy / 2)``; the principal point is
    the image centre in pixel-centre coordinates, ``((W - 1) / 2, (H - 1) / 2)``.
    """
    if not 0.0 < fovy_deg < 180.0:
        raise ValueError(f"fovy_deg must be in (0, 180), got {fovy_deg}")
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    f = 0.5 * height / np.tan(np.deg2rad(fovy_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


@typechecked
def camera_to_world_opencv(
    position: Float[np.ndarray, " 3"], rotation: Float[np.ndarray, "3 3"]
) -> Float[np.ndarray, "4 4"]:
    """Camera-to-world pose (OpenCV axes) from MuJoCo's ``cam_xpos`` and ``cam_xmat`` (reshaped 3x3)."""
    pose = np.eye(4)
    pose[:3, :3] = rotation @ MUJOCO_TO_OPENCV
    pose[:3, 3] = position
    return pose


@typechecked
def zbuffer_to_metres(
    zbuffer: Shaped[np.ndarray, "*shape"], near: float, far: float
) -> Float[np.ndarray, "*shape"]:
    """Linear depth in metres from OpenGL depth-buffer values in ``[0, 1]``.

    ``near`` / ``far`` are the clip distances in metres (MuJoCo: ``model.vis.map.znear`` /
    ``zfar`` times ``model.stat.extent``). A buffer value of 1 (nothing hit) maps to ``far``.
    """
    if not 0.0 < near < far:
        raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
    z = np.asarray(zbuffer, dtype=np.float64)
    if z.size and (z.min() < 0.0 or z.max() > 1.0):
        raise ValueError("zbuffer values must lie in [0, 1] (raw OpenGL depth)")
    return (near / (1.0 - z * (1.0 - near / far))).astype(np.float32)


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
    world_to_cam = np.linalg.inv(extrinsics)
    cam = points @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (cam[:, :2] / z[:, None]) @ intrinsics[:2, :2].T + intrinsics[:2, 2]
    return uv, z


@typechecked
def backproject_depth(
    depth: Float[np.ndarray, "H W"],
    intrinsics: Float[np.ndarray, "3 3"],
    extrinsics: Float[np.ndarray, "4 4"],
) -> Float[np.ndarray, "H W 3"]:
    """World point of every pixel of an upright metric depth map: ``[H, W]`` -> ``[H, W, 3]``."""
    h, w = depth.shape
    v, u = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    x = (u - intrinsics[0, 2]) / intrinsics[0, 0] * depth
    y = (v - intrinsics[1, 2]) / intrinsics[1, 1] * depth
    cam = np.stack([x, y, depth.astype(np.float64)], axis=-1)
    return cam @ extrinsics[:3, :3].T + extrinsics[:3, 3]
