"""Frustum culling's geometry: a geom it calls outside never reaches the image (pure numpy)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowvla.envs.frustum import culling_is_exact, geoms_outside_view, hidden_geoms


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _model(rbound, fovy: float = 90.0, mirror: int | None = None, box_half_height: float = 0.0):
    """Geoms of radius ``rbound``; geom ``mirror`` (if any) is a reflective box."""
    n = len(rbound)
    types = np.full(n, 7)  # meshes: their reflectance mirrors nothing
    if mirror is not None:
        types[mirror] = 6
    return SimpleNamespace(
        ngeom=n,
        ncam=1,
        geom_rbound=np.asarray(rbound, dtype=float),
        geom_type=types,
        geom_matid=np.zeros(n, dtype=int),
        geom_size=np.tile([0.1, 0.1, box_half_height], (n, 1)),
        mat_reflectance=np.array([0.5]),
        cam_fovy=np.array([fovy]),
        cam_sensorsize=np.zeros((1, 2)),
        cam_orthographic=np.zeros(1, dtype=int),
    )


def _scene(rng: np.random.Generator, n: int, fovy: float, with_mirror: bool):
    mirror = 0 if with_mirror else None
    model = _model(rng.uniform(0.01, 0.3, n), fovy, mirror, box_half_height=0.05)
    data = SimpleNamespace(
        geom_xpos=rng.uniform(-2, 2, (n, 3)),
        geom_xmat=np.stack([_rotation(rng).reshape(9) for _ in range(n)]),
        cam_xpos=rng.uniform(-0.5, 0.5, (1, 3)),
        cam_xmat=_rotation(rng).reshape(1, 9),
    )
    return model, data


def _reflect(points: np.ndarray, model, data, g: int) -> np.ndarray:
    normal = data.geom_xmat[g].reshape(3, 3)[:, 2]
    point = data.geom_xpos[g] + model.geom_size[g][2] * normal
    return points - 2.0 * ((points - point) @ normal)[:, None] * normal


def _in_image(model, data, points: np.ndarray, aspect: float) -> np.ndarray:
    """Which points project inside the image rectangle, in front of the camera."""
    rel = (points - data.cam_xpos[0]) @ data.cam_xmat[0].reshape(3, 3)
    z = -rel[:, 2]
    tan_y = math.tan(math.radians(model.cam_fovy[0]) / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (z > 0) & (np.abs(rel[:, 0] / z) <= tan_y * aspect) & (np.abs(rel[:, 1] / z) <= tan_y)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    fovy=st.floats(20, 120),
    aspect=st.floats(0.5, 2.0),
    with_mirror=st.booleans(),
)
def test_no_point_of_a_culled_sphere_lands_in_the_image_directly_or_in_a_mirror(
    seed, fovy, aspect, with_mirror
):
    rng = np.random.default_rng(seed)
    model, data = _scene(rng, 64, fovy, with_mirror)
    outside = geoms_outside_view(model, data, 0, aspect, margin=0.0)
    assert outside.any()  # the property below is about something
    dirs = rng.normal(size=(400, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    radii = rng.uniform(0, 1, (400, 1)) ** (1 / 3)  # uniform in the ball
    for g in np.flatnonzero(outside):
        ball = data.geom_xpos[g] + radii * dirs * model.geom_rbound[g]
        assert not _in_image(model, data, ball, aspect).any()
        if with_mirror:
            assert not _in_image(model, data, _reflect(ball, model, data, 0), aspect).any()
    # Centres in the image are never culled.
    assert not (outside & _in_image(model, data, data.geom_xpos, aspect)).any()


def _looking_down_z(xpos, rbound, mirror=None):
    """Camera at the origin looking down -z (identity frame), 90 degrees field of view."""
    model = _model(rbound, mirror=mirror)
    data = SimpleNamespace(
        geom_xpos=np.asarray(xpos, dtype=float),
        geom_xmat=np.tile(np.eye(3).reshape(9), (len(rbound), 1)),
        cam_xpos=np.zeros((1, 3)),
        cam_xmat=np.eye(3).reshape(1, 9),
    )
    return model, data


def test_culls_what_is_behind_or_beside_and_keeps_unbounded_geoms():
    model, data = _looking_down_z([[0, 0, -1.0], [0, 0, 1.0], [3.0, 0, -1.0], [0, 0, 5.0]], [0.1] * 3 + [0])
    assert geoms_outside_view(model, data, 0, 1.0).tolist() == [False, True, True, False]
    # A projection this module does not model: nothing is culled.
    model.cam_sensorsize = np.ones((1, 2))
    assert not geoms_outside_view(model, data, 0, 1.0).any()


def test_a_geom_behind_the_camera_stays_when_a_mirror_in_view_reflects_it():
    # Geom 0: a mirror (box, top face at z = -1) in view; geom 1 behind the eye, at z = +1: its image
    # in the mirror lies at z = -3, in view. Geom 2 behind and far to the side: culled either way.
    xpos = [[0, 0, -1.05], [0, 0, 1.0], [9.0, 0, 1.0]]
    model, data = _looking_down_z(xpos, [0.2, 0.1, 0.1])
    assert geoms_outside_view(model, data, 0, 1.0).tolist() == [False, True, True]
    model, data = _looking_down_z(xpos, [0.2, 0.1, 0.1], mirror=0)
    model.geom_size[0][2] = 0.05
    assert geoms_outside_view(model, data, 0, 1.0).tolist() == [False, False, True]


def _lights(castshadow: int, active: int = 1):
    return SimpleNamespace(light_castshadow=np.array([0, castshadow]), light_active=np.array([1, active]))


def test_culling_is_exact_only_without_shadow_casting_lights():
    assert culling_is_exact(_lights(0))
    assert not culling_is_exact(_lights(1))
    assert culling_is_exact(_lights(1, active=0))


def test_hidden_geoms_restores_the_groups_after_an_error():
    model = SimpleNamespace(geom_group=np.array([0, 1, 1, 2]))
    with pytest.raises(RuntimeError), hidden_geoms(model, np.array([False, True, False, True]), 5):
        assert model.geom_group.tolist() == [0, 5, 1, 5]
        raise RuntimeError
    assert model.geom_group.tolist() == [0, 1, 1, 2]
