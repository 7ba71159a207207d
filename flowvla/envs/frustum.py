"""View-frustum culling for MuJoCo's software renderer: the same image, fewer vertices.

With Mesa's llvmpipe a LIBERO frame costs about a millisecond per ~8k mesh vertices, whether the mesh
lands in the image or not: MuJoCo hands every visible-group geom to OpenGL and the clipper drops
off-screen triangles only after their vertices were processed. The wrist camera sees a corner of the
scene, so a quarter of the scene's ~1.2M vertices (most of the arm behind it, the far objects) cost it
time and give it no pixel.

[`geoms_outside_view`][flowvla.envs.frustum.geoms_outside_view] finds the geoms whose bounding sphere
lies wholly outside a camera's four side planes or behind it;
[`hidden_geoms`][flowvla.envs.frustum.hidden_geoms] moves them, for one render, into a geom group the
renderer does not draw. Mirrors (a plane or box with reflectance, such as LIBERO's stove) count: a
geom stays when its mirror image may be in view.
Shadows would make any geom matter (a shadow map sees the whole scene):
[`culling_is_exact`][flowvla.envs.frustum.culling_is_exact] says when no light casts them, and only
then is culling on. The physics never reads ``geom_group``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from flowvla.typing import Bool

__all__ = ["culling_is_exact", "geoms_outside_view", "hidden_geoms"]

_PLANE, _BOX = 0, 6  # mjtGeom


def culling_is_exact(model: Any) -> bool:
    """Whether hiding off-screen geoms leaves every image of ``model`` unchanged: no active light
    casts shadows (a shadow map sees the whole scene). Mirrors are handled by
    [`geoms_outside_view`][flowvla.envs.frustum.geoms_outside_view] itself."""
    return not bool(np.any(model.light_castshadow.astype(bool) & model.light_active.astype(bool)))


def _mirror_planes(model: Any, data: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(point, unit normal)`` of every mirror MuJoCo renders: a plane or box geom with reflectance,
    reflecting about its frame's z = 0 (plane) or its top face (box)."""
    mat = np.asarray(model.geom_matid)
    reflectance = np.where(mat >= 0, np.asarray(model.mat_reflectance)[np.maximum(mat, 0)], 0.0)
    out = []
    for g in np.flatnonzero(np.isin(model.geom_type, (_PLANE, _BOX)) & (reflectance > 0)):
        normal = np.asarray(data.geom_xmat[g]).reshape(3, 3)[:, 2]
        lift = float(model.geom_size[g][2]) if int(model.geom_type[g]) == _BOX else 0.0
        out.append((np.asarray(data.geom_xpos[g]) + lift * normal, normal))
    return out


def _outside_frustum(
    rel: np.ndarray, rot: np.ndarray, tan_x: float, tan_y: float, radius: np.ndarray
) -> np.ndarray:
    """Spheres (centres ``rel`` relative to the eye, world axes) wholly beyond a side plane of the
    frustum with camera-to-world rotation ``rot`` (x right, y up, looking down -z), or behind it."""
    local = rel @ rot
    depth = -local[:, 2]
    out = depth < -radius
    for tan, coord in ((tan_x, local[:, 0]), (tan_y, local[:, 1])):
        # Signed distance beyond the plane through the eye with slope ``tan`` (outward normal).
        out |= (np.abs(coord) - tan * depth) / math.sqrt(1.0 + tan * tan) > radius
    return out


def geoms_outside_view(
    model: Any, data: Any, camera_id: int, aspect: float, margin: float = 0.01
) -> Bool[np.ndarray, " G"]:
    """Geoms that cannot reach a pixel of fixed camera ``camera_id``'s view, directly or in a mirror.

    A geom is outside when its bounding sphere (``geom_rbound`` around ``geom_xpos``, widened by
    ``margin`` metres) lies wholly beyond one of the frustum's four side planes or behind the camera,
    and so does the sphere's mirror image in every mirror of the scene (a reflection is drawn only
    inside the mirror, which is inside the view). Near and far planes are ignored (conservative).
    Planes and other unbounded geoms (``geom_rbound == 0``) are never outside, nor is anything for a
    camera with a sensor-size projection or an orthographic one.

    Args:
        model: ``mujoco.MjModel``.
        data: ``mujoco.MjData`` after forward kinematics (the render's state).
        camera_id: the fixed camera's index.
        aspect: the rendered image's width / height.
        margin: extra radius (m) every sphere gets.

    Returns:
        ``[G]`` bool, one per model geom.
    """
    if (
        float(np.abs(model.cam_sensorsize[camera_id]).sum()) > 0
        or int(getattr(model, "cam_orthographic", np.zeros(model.ncam))[camera_id]) != 0
    ):
        return np.zeros(model.ngeom, dtype=bool)
    rot = np.asarray(data.cam_xmat[camera_id]).reshape(3, 3)
    eye = np.asarray(data.cam_xpos[camera_id])
    centres = np.asarray(data.geom_xpos)
    radius = np.asarray(model.geom_rbound) + margin
    tan_y = math.tan(math.radians(float(model.cam_fovy[camera_id])) / 2)
    outside = _outside_frustum(centres - eye, rot, tan_y * aspect, tan_y, radius)
    for point, normal in _mirror_planes(model, data):
        mirrored = centres - 2.0 * ((centres - point) @ normal)[:, None] * normal
        outside &= _outside_frustum(mirrored - eye, rot, tan_y * aspect, tan_y, radius)
    return outside & (np.asarray(model.geom_rbound) > 0)


@contextlib.contextmanager
def hidden_geoms(model: Any, mask: Bool[np.ndarray, " G"], hidden_group: int) -> Iterator[None]:
    """Within the block, the ``mask`` geoms sit in ``hidden_group`` (a geom group the renderer's
    options leave out); their groups are restored after, also on error."""
    if not mask.any():
        yield
        return
    saved = model.geom_group.copy()
    model.geom_group[mask] = hidden_group
    try:
        yield
    finally:
        model.geom_group[:] = saved
