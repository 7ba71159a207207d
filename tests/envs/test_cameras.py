"""Camera geometry without a simulator: projection / back-projection, conventions, depth conversion."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowvla.envs import cameras as cam


def random_pose(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    return cam.camera_to_world_opencv(rng.normal(size=3), q)


@given(seed=st.integers(0, 2**32 - 1), fovy=st.floats(20, 120), h=st.integers(8, 300), w=st.integers(8, 300))
def test_backproject_then_project_is_identity(seed, fovy, h, w):
    rng = np.random.default_rng(seed)
    k = cam.intrinsics_from_fovy(fovy, h, w)
    pose = random_pose(rng)
    depth = rng.uniform(0.1, 5.0, size=(h, w))
    pts = cam.backproject_depth(depth, k, pose)
    uv, z = cam.project_points(pts.reshape(-1, 3), k, pose)
    v, u = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    np.testing.assert_allclose(uv[:, 0], u.ravel(), atol=1e-6)
    np.testing.assert_allclose(uv[:, 1], v.ravel(), atol=1e-6)
    np.testing.assert_allclose(z, depth.ravel(), rtol=1e-9)


def test_intrinsics_match_mujoco_fovy():
    k = cam.intrinsics_from_fovy(45.0, 128, 128)
    # robosuite reports f = 154.5 for LIBERO's agentview at 128 px (fovy 45 degrees).
    assert k[0, 0] == pytest.approx(154.51, abs=0.01) and k[0, 0] == k[1, 1]
    assert k[0, 2] == 63.5 and k[1, 2] == 63.5  # pixel-centre convention
    k2 = cam.intrinsics_from_fovy(45.0, 100, 200)
    assert k2[0, 0] == k2[1, 1] and k2[0, 2] == 99.5 and k2[1, 2] == 49.5
    # The vertical field of view spans the image height exactly.
    top = np.array([0.0, -np.tan(np.deg2rad(22.5)), 1.0])
    assert (k2 @ top)[1] == pytest.approx(-0.5)


def test_opencv_axes_from_mujoco_camera():
    # A MuJoCo camera with identity orientation looks down -z with y up: OpenCV z must point to -z_world
    # and y (image down) to -y_world.
    pose = cam.camera_to_world_opencv(np.zeros(3), np.eye(3))
    np.testing.assert_array_equal(pose[:3, 2], [0, 0, -1])
    np.testing.assert_array_equal(pose[:3, 1], [0, -1, 0])
    k = cam.intrinsics_from_fovy(60.0, 11, 11)
    uv, z = cam.project_points(np.array([[0.0, 1.0, -2.0], [0.0, 0.0, 3.0]]), k, pose)
    assert z[0] == pytest.approx(2.0) and uv[0, 1] < 5  # above the optical axis: upper image half
    assert z[1] < 0  # behind the camera


def test_zbuffer_to_metres():
    near, far = 0.05, 50.0
    d = cam.zbuffer_to_metres(np.array([0.0, 0.5, 1.0]), near, far)
    np.testing.assert_allclose(d[[0, 2]], [near, far], rtol=1e-6)
    assert d.dtype == np.float32
    # OpenGL perspective depth: z_ndc = (f + n) / (f - n) - 2 f n / ((f - n) z), buffer = (z_ndc + 1) / 2.
    z = np.array([0.3, 1.0, 2.5])
    buf = ((far + near) / (far - near) - 2 * far * near / ((far - near) * z) + 1) / 2
    np.testing.assert_allclose(cam.zbuffer_to_metres(buf, near, far), z, rtol=1e-5)
    with pytest.raises(ValueError, match="zbuffer"):
        cam.zbuffer_to_metres(np.array([1.5]), near, far)
    with pytest.raises(ValueError, match="near"):
        cam.zbuffer_to_metres(np.array([0.5]), 1.0, 0.5)


def test_bad_intrinsics_arguments():
    with pytest.raises(ValueError, match="fovy"):
        cam.intrinsics_from_fovy(0.0, 10, 10)
    with pytest.raises(ValueError, match="height"):
        cam.intrinsics_from_fovy(45.0, 0, 10)
