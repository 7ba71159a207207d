"""Point maps from depth: exact back-projection, pose invariance, validity, MuJoCo conventions."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowvla import geometry as geo
from flowvla.typing import TypeCheckError


def random_poses(g: torch.Generator, *batch: int) -> torch.Tensor:
    """Random camera-to-world poses ``[*batch, 4, 4]`` (float64)."""
    q, _ = torch.linalg.qr(torch.randn(*batch, 3, 3, generator=g, dtype=torch.float64))
    q = q * torch.linalg.det(q).sign()[..., None, None]  # proper rotations
    pose = torch.eye(4, dtype=torch.float64).repeat(*batch, 1, 1)
    pose[..., :3, :3] = q
    pose[..., :3, 3] = torch.randn(*batch, 3, generator=g, dtype=torch.float64)
    return pose


def random_intrinsics(g: torch.Generator, b: int, v: int, h: int, w: int) -> torch.Tensor:
    fovy = 30 + 90 * torch.rand(b, v, generator=g, dtype=torch.float64)
    k = torch.stack([geo.intrinsics_from_fovy(float(f), h, w, dtype=torch.float64) for f in fovy.flatten()])
    k = k.reshape(b, v, 3, 3)
    k[..., 0, 0] *= 0.8 + 0.4 * torch.rand(b, v, generator=g, dtype=torch.float64)  # non-square pixels
    k[..., :2, 2] += torch.randn(b, v, 2, generator=g, dtype=torch.float64)  # off-centre
    return k


@given(
    seed=st.integers(0, 2**31 - 1),
    b=st.integers(1, 2),
    v=st.integers(1, 3),
    h=st.integers(1, 24),
    w=st.integers(1, 24),
    kind=st.sampled_from(["z", "ray"]),
    world=st.booleans(),
)
def test_backprojection_recovers_pixel_centres(seed, b, v, h, w, kind, world):
    g = torch.Generator().manual_seed(seed)
    k = random_intrinsics(g, b, v, h, w)
    pose = random_poses(g, b, v) if world else None
    depth = 0.1 + 5 * torch.rand(b, v, h, w, generator=g, dtype=torch.float64)
    pm = geo.point_map_from_depth(depth, k, pose, depth_kind=kind)
    assert pm.points.shape == (b, v, h, w, 3) and pm.valid.all()
    uv, z = geo.project_points(pm.points.flatten(2, 3), k, pose)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    torch.testing.assert_close(uv[..., 0], cols.flatten().double().expand(b, v, -1), atol=1e-8, rtol=0)
    torch.testing.assert_close(uv[..., 1], rows.flatten().double().expand(b, v, -1), atol=1e-8, rtol=0)
    if kind == "z":
        torch.testing.assert_close(z, depth.flatten(2), atol=0, rtol=1e-10)
    else:  # the distance from the camera centre is the depth
        cam = pm.points.flatten(2, 3)
        cam = cam if pose is None else geo.transform_points(cam, torch.linalg.inv(pose))
        dist = torch.linalg.vector_norm(cam.reshape(b, v, h * w, 3), dim=-1)
        torch.testing.assert_close(dist, depth.flatten(2), atol=0, rtol=1e-10)


def render_sphere(k, pose, h, w, center, radius, kind):
    """Ray-cast a sphere: z-depth (or ray distance) per pixel, inf where the ray misses it."""
    rays_cam = geo.pixel_rays(k, h, w)  # unit z
    rays = rays_cam @ pose[..., None, :3, :3].transpose(-1, -2)  # world directions, z-depth parameter
    o = pose[..., None, None, :3, 3]
    oc = o - center
    a = (rays * rays).sum(-1)
    bq = 2 * (rays * oc).sum(-1)
    c = (oc * oc).sum(-1) - radius**2
    disc = bq * bq - 4 * a * c
    t = (-bq - disc.clamp_min(0).sqrt()) / (2 * a)
    t = torch.where((disc > 0) & (t > 0), t, torch.full_like(t, math.inf))
    return t if kind == "z" else t * torch.linalg.vector_norm(rays_cam, dim=-1)


@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(["z", "ray"]))
def test_world_points_do_not_depend_on_the_camera_pose(seed, kind):
    # A fixed scene (a sphere) seen from 4 random cameras looking at it: every valid world point lies on
    # the sphere, whichever camera saw it, and missed rays are invalid.
    g = torch.Generator().manual_seed(seed)
    h, w, v = 12, 16, 4
    center, radius = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64), 0.7
    unit = torch.nn.functional.normalize
    eye = center + 3 * unit(torch.randn(v, 3, generator=g, dtype=torch.float64), dim=-1)
    fwd = unit(center - eye, dim=-1)
    right = unit(torch.linalg.cross(fwd, torch.randn(v, 3, generator=g, dtype=torch.float64)), dim=-1)
    down = torch.linalg.cross(fwd, right)
    pose = torch.eye(4, dtype=torch.float64).repeat(1, v, 1, 1)
    pose[0, :, :3, :3] = torch.stack([right, down, fwd], dim=-1)  # OpenCV: x right, y down, z forward
    pose[0, :, :3, 3] = eye
    k = geo.intrinsics_from_fovy(50.0, h, w, dtype=torch.float64).expand(1, v, 3, 3)
    depth = render_sphere(k, pose, h, w, center, radius, kind)
    pm = geo.point_map_from_depth(depth, k, pose, depth_kind=kind)
    assert pm.valid.any(dim=(2, 3)).all() and not pm.valid.all()  # each camera sees it, not everywhere
    dist = torch.linalg.vector_norm(pm.points[pm.valid] - center, dim=-1)
    torch.testing.assert_close(dist, torch.full_like(dist, radius), atol=1e-9, rtol=0)
    assert (pm.points[~pm.valid] == 0).all()


def test_validity_mask_zero_inf_nan_and_far_plane():
    depth = torch.tensor([[[[1.0, 0.0, math.inf], [math.nan, -1.0, 9.9], [10.0, 12.0, 2.0]]]])
    k = geo.intrinsics_from_fovy(60.0, 3, 3).expand(1, 1, 3, 3)
    pm = geo.point_map_from_depth(depth, k, far=10.0)
    expected = torch.tensor([[True, False, False], [False, False, True], [False, False, True]])
    assert torch.equal(pm.valid[0, 0], expected)
    assert torch.isfinite(pm.points).all() and (pm.points[0, 0][~expected] == 0).all()
    torch.testing.assert_close(pm.points[0, 0, 1, 2, 2], torch.tensor(9.9))


def test_mujoco_camera_conventions():
    # A MuJoCo camera with identity orientation looks down -z with y up: OpenCV z must point to -z_world
    # and y (image down) to -y_world; a point above the optical axis lands in the upper image half.
    pose = geo.camera_to_world_opencv(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    assert pose[:3, 2].tolist() == [0, 0, -1] and pose[:3, 1].tolist() == [0, -1, 0]
    k = geo.intrinsics_from_fovy(60.0, 11, 11, dtype=torch.float64)
    pts = torch.tensor([[0.0, 1.0, -2.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
    uv, z = geo.project_points(pts, k, pose)
    assert z[0] == pytest.approx(2.0) and uv[0, 1] < 5
    assert z[1] < 0  # behind the camera
    # Batched: one pose per (batch, view), same result as one at a time.
    rot = random_poses(torch.Generator().manual_seed(0), 2, 3)[..., :3, :3]
    pos = torch.randn(2, 3, 3, dtype=torch.float64)
    batched = geo.camera_to_world_opencv(pos, rot)
    assert torch.equal(batched[1, 2], geo.camera_to_world_opencv(pos[1, 2], rot[1, 2]))
    assert torch.equal(batched[..., :3, :3], rot @ geo.MUJOCO_TO_OPENCV)


def test_intrinsics_from_fovy_spans_the_image_height():
    k = geo.intrinsics_from_fovy(45.0, 100, 200, dtype=torch.float64)
    assert k[0, 0] == k[1, 1] and k[0, 2] == 99.5 and k[1, 2] == 49.5
    top = torch.tensor([0.0, -math.tan(math.radians(22.5)), 1.0], dtype=torch.float64)
    assert float((k @ top)[1]) == pytest.approx(-0.5)
    assert geo.intrinsics_from_fovy(45.0, 8, 8).dtype == torch.get_default_dtype()
    with pytest.raises(ValueError, match="fovy"):
        geo.intrinsics_from_fovy(180.0, 8, 8)


def test_zbuffer_to_metres_inverts_opengl_depth():
    near, far = 0.05, 50.0
    z = torch.tensor([0.3, 1.0, 2.5], dtype=torch.float64)
    buf = ((far + near) / (far - near) - 2 * far * near / ((far - near) * z) + 1) / 2
    torch.testing.assert_close(geo.zbuffer_to_metres(buf, near, far, dtype=torch.float64), z)
    with pytest.raises(ValueError, match="zbuffer"):
        geo.zbuffer_to_metres(torch.tensor([1.5]), near, far)


def test_wrong_shapes_name_the_argument():
    k = torch.eye(3).expand(2, 1, 3, 3)
    with pytest.raises(TypeCheckError, match="intrinsics"):
        geo.point_map_from_depth(torch.ones(2, 2, 4, 4), k)
    with pytest.raises(TypeCheckError, match="camera_to_world"):
        geo.point_map_from_depth(torch.ones(2, 1, 4, 4), k, torch.zeros(2, 1, 3, 4))
    with pytest.raises(TypeCheckError, match="extrinsics"):
        geo.project_points(torch.ones(5, 3), torch.eye(3), torch.eye(3))
