"""Pinhole cameras in the OpenCV convention, batched in torch; MuJoCo conventions converted.

Conventions used everywhere in flowvla (the simulator tests check them against MuJoCo's ray caster):

- **Images are upright**: row 0 is the top of the picture. MuJoCo's ``mjr_readPixels`` (and so
  robosuite / LIBERO observations) returns rows bottom-up; ``upright = raw[::-1]``.
- **Camera frame is OpenCV's**: x right, y down, z forward (into the scene), for the upright image.
  MuJoCo's (OpenGL's) camera frame is x right, y up, z backward (the camera looks down ``-z``), so
  ``R_cv = R_mj @ diag(1, -1, -1)`` (``MUJOCO_TO_OPENCV``).
- **Pixel coordinates** ``(u, v)`` = (column, row) with integer values at pixel centres, so the
  principal point of a centred camera is ``((W - 1) / 2, (H - 1) / 2)``.
- **Extrinsics are camera-to-world** 4x4 matrices ``T`` with ``x_world = T @ [x_cam, 1]``.
- **Depth is metric z** along the optical axis unless a function says otherwise, in metres.

Every function takes any leading batch dims ``*B`` (e.g. ``B V``) and keeps the input dtype, so
float64 inputs give float64-exact results ([`flowvla.envs.cameras`][flowvla.envs.cameras] wraps these for
numpy)."""

from __future__ import annotations

import math

import torch

from flowvla.typing import Float, Real, Tensor, typechecked

__all__ = [
    "MUJOCO_TO_OPENCV",
    "camera_to_world_opencv",
    "intrinsics_from_fovy",
    "project_points",
    "transform_points",
    "zbuffer_to_metres",
]

#: Right-multiplying a MuJoCo (OpenGL) camera rotation by this gives the OpenCV camera rotation.
MUJOCO_TO_OPENCV: Tensor = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))


@typechecked
def intrinsics_from_fovy(
    fovy_deg: float,
    height: int,
    width: int,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Float[Tensor, "3 3"]:
    """Intrinsics ``K`` ``[3, 3]`` of a camera with vertical field of view ``fovy_deg`` (degrees).

    MuJoCo renders square pixels: ``fx = fy = (H / 2) / tan(fovy / 2)``; the principal point is the
    image centre in pixel-centre coordinates, ``((W - 1) / 2, (H - 1) / 2)``.

    Args:
        fovy_deg: vertical field of view in degrees, in ``(0, 180)`` (MuJoCo's ``cam_fovy``).
        height: image height ``H`` in pixels.
        width: image width ``W`` in pixels.
        dtype: result dtype (default: torch's default dtype).
        device: result device.
    """
    if not 0.0 < fovy_deg < 180.0:
        raise ValueError(f"fovy_deg must be in (0, 180), got {fovy_deg}")
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    f = 0.5 * height / math.tan(math.radians(fovy_deg) / 2.0)
    rows = [[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]]
    return torch.tensor(rows, dtype=dtype or torch.get_default_dtype(), device=device)


@typechecked
def camera_to_world_opencv(
    position: Float[Tensor, "*B 3"], rotation: Float[Tensor, "*B 3 3"]
) -> Float[Tensor, "*B 4 4"]:
    """Camera-to-world pose (OpenCV axes) from MuJoCo's ``cam_xpos`` and ``cam_xmat`` (as 3x3).

    Args:
        position: ``[*B, 3]`` camera centre in the world frame.
        rotation: ``[*B, 3, 3]`` MuJoCo camera-to-world rotation (columns: camera x, y, z axes).
    """
    flip = MUJOCO_TO_OPENCV.to(rotation)
    pose = torch.zeros(*rotation.shape[:-2], 4, 4, dtype=rotation.dtype, device=rotation.device)
    pose[..., :3, :3] = rotation @ flip
    pose[..., :3, 3] = position.to(rotation.dtype)
    pose[..., 3, 3] = 1.0
    return pose


@typechecked
def transform_points(
    points: Float[Tensor, "*B P 3"], transform: Float[Tensor, "*B 4 4"]
) -> Float[Tensor, "*B P 3"]:
    """Apply rigid transforms to point sets: ``x' = R x + t`` for each of the ``*B`` transforms.

    Args:
        points: ``[*B, P, 3]``.
        transform: ``[*B, 4, 4]`` homogeneous transforms (the last row is ignored).
    """
    return points @ transform[..., :3, :3].transpose(-1, -2) + transform[..., None, :3, 3]


@typechecked
def project_points(
    points: Float[Tensor, "*B P 3"],
    intrinsics: Float[Tensor, "*B 3 3"],
    extrinsics: Float[Tensor, "*B 4 4"] | None = None,
) -> tuple[Float[Tensor, "*B P 2"], Float[Tensor, "*B P"]]:
    """Project points into upright images.

    Args:
        points: ``[*B, P, 3]`` world points (camera-frame points if ``extrinsics`` is ``None``).
        intrinsics: ``[*B, 3, 3]`` ``K``.
        extrinsics: ``[*B, 4, 4]`` camera-to-world poses (OpenCV axes), or ``None``.

    Returns:
        ``uv [*B, P, 2]`` pixel coordinates (column, row; pixel centres at integers) and ``z [*B, P]``
        depth (negative: behind the camera, where ``uv`` is meaningless; 0 gives inf/NaN).
    """
    cam = points if extrinsics is None else transform_points(points, torch.linalg.inv(extrinsics))
    z = cam[..., 2]
    uv = (cam[..., :2] / z[..., None]) @ intrinsics[..., :2, :2].transpose(-1, -2)
    return uv + intrinsics[..., None, :2, 2], z


@typechecked
def zbuffer_to_metres(
    zbuffer: Real[Tensor, "*S"], near: float, far: float, *, dtype: torch.dtype = torch.float32
) -> Float[Tensor, "*S"]:
    """Linear depth in metres from OpenGL depth-buffer values in ``[0, 1]`` (computed in float64).

    Args:
        zbuffer: raw depth-buffer values, any shape.
        near: near clip distance in metres (MuJoCo: ``model.vis.map.znear * model.stat.extent``).
        far: far clip distance in metres (``zfar * extent``); a buffer value of 1 maps to ``far``.
        dtype: result dtype.
    """
    if not 0.0 < near < far:
        raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
    z = zbuffer.to(torch.float64)
    if z.numel() and (z.min() < 0.0 or z.max() > 1.0):
        raise ValueError("zbuffer values must lie in [0, 1] (raw OpenGL depth)")
    return (near / (1.0 - z * (1.0 - near / far))).to(dtype)
