"""Grasp and pose maths for scripted experts: top-down gripper frames, rotation errors, footprints.

Pure numpy, no simulator. Conventions (robosuite's Panda on LIBERO's OSC_POSE controller):

- The end-effector frame's ``x`` axis is the axis along which the fingers close, its ``z`` axis
  points out of the palm (down, for a top-down grasp).
- A top-down grasp is fixed by one angle, the *grasp yaw*: the world-frame heading of the closing
  axis in the table plane. The gripper is symmetric under a half turn, so yaws are taken modulo pi.
- Objects are described by ``[N, 3]`` world-frame points (corners of their collision geoms' boxes).
"""

from __future__ import annotations

import math

import numpy as np

from flowvla.typing import Float, typechecked

__all__ = [
    "clearing_shift",
    "closest_equivalent_yaw",
    "footprint_widths",
    "rect_overlap_area",
    "rotation_error",
    "shift_overlap",
    "top_down_rotation",
    "wrap_half_turn",
]

# Separating axes tried between two footprints: with 72 headings two convex sets closer than about
# 1e-4 of their size count as overlapping (the test errs on the side of "in the way").
_HEADINGS = np.linspace(0.0, math.pi, 72, endpoint=False)
_AXES = np.stack([np.cos(_HEADINGS), np.sin(_HEADINGS)], axis=1)


def wrap_half_turn(yaw: float) -> float:
    """``yaw`` mapped into ``[-pi/2, pi/2)``: the gripper cannot tell ``yaw`` from ``yaw + pi``."""
    return (yaw + math.pi / 2) % math.pi - math.pi / 2


def closest_equivalent_yaw(yaw: float, reference: float) -> float:
    """The yaw among ``yaw + k * pi`` nearest to ``reference``, so the wrist turns the short way."""
    return reference + wrap_half_turn(yaw - reference)


@typechecked
def top_down_rotation(yaw: float) -> Float[np.ndarray, "3 3"]:
    """End-effector rotation (world-from-eef, columns = eef axes) for a top-down grasp.

    Args:
        yaw: heading of the closing (``x``) axis in the world ``xy`` plane, rad.

    Returns:
        ``[3, 3]`` rotation with ``x = (cos yaw, sin yaw, 0)``, ``z = (0, 0, -1)``, ``y = z x x``.
    """
    c, s = math.cos(yaw), math.sin(yaw)
    x = np.array([c, s, 0.0])
    z = np.array([0.0, 0.0, -1.0])
    return np.stack([x, np.cross(z, x), z], axis=1)


@typechecked
def rotation_error(
    current: Float[np.ndarray, "3 3"], target: Float[np.ndarray, "3 3"]
) -> Float[np.ndarray, " 3"]:
    """World-frame axis-angle ``w`` (rad) with ``exp([w]) @ current = target``.

    This is the rotation part of an OSC_POSE delta action: the controller applies axis-angle
    deltas in the world frame.

    Args:
        current: ``[3, 3]`` rotation now.
        target: ``[3, 3]`` rotation wanted.
    """
    r = target @ current.T
    cos = float(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))
    angle = math.acos(cos)
    vee = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    if angle < 1e-6:
        return 0.5 * vee  # first order: r ~ I + [w]
    if math.pi - angle < 1e-4:
        # Near a half turn the antisymmetric part vanishes; the axis is the dominant column of r + I.
        m = r + np.eye(3)
        axis = m[:, int(np.argmax(np.linalg.norm(m, axis=0)))]
        return angle * axis / np.linalg.norm(axis)
    return angle * vee / (2.0 * math.sin(angle))


@typechecked
def footprint_widths(
    points: Float[np.ndarray, "N 3"], yaws: Float[np.ndarray, " Y"]
) -> Float[np.ndarray, " Y"]:
    """Width (m) of a point set measured along each horizontal heading in ``yaws``.

    The fingers must straddle the object along the closing axis, so the width along a candidate
    grasp yaw is what has to fit between the open fingers.

    Args:
        points: ``[N, 3]`` world-frame points of the object.
        yaws: ``[Y]`` headings (rad).
    """
    dirs = np.stack([np.cos(yaws), np.sin(yaws)], axis=1)  # [Y, 2]
    proj = points[:, :2] @ dirs.T  # [N, Y]
    return proj.max(axis=0) - proj.min(axis=0)


@typechecked
def rect_overlap_area(
    center: Float[np.ndarray, " 2"],
    yaw: float,
    half_size: Float[np.ndarray, " 2"],
    points: Float[np.ndarray, "N 2"],
) -> float:
    """Overlap area (m^2) between an oriented rectangle and the axis-aligned box (in the rectangle's
    frame) of ``points``; a cheap stand-in for "would the hand land on this object".

    Args:
        center: ``[2]`` rectangle centre in the world ``xy`` plane.
        yaw: heading of the rectangle's first half-size axis (rad).
        half_size: ``[2]`` half extents along the rectangle's own axes.
        points: ``[N, 2]`` world ``xy`` points of the obstacle.
    """
    c, s = math.cos(yaw), math.sin(yaw)
    local = (points - center) @ np.array([[c, -s], [s, c]])  # world -> rectangle frame
    lo = np.maximum(local.min(axis=0), -half_size)
    hi = np.minimum(local.max(axis=0), half_size)
    ext = np.clip(hi - lo, 0.0, None)
    return float(ext[0] * ext[1])


@typechecked
def shift_overlap(
    moving: Float[np.ndarray, "N 2"], fixed: Float[np.ndarray, "M 2"], direction: Float[np.ndarray, " 2"]
) -> tuple[float, float] | None:
    """The shifts ``t`` (m) for which the convex hull of ``moving + t * direction`` overlaps that of
    ``fixed``: an open interval ``(lo, hi)``, or ``None`` if no shift along ``direction`` makes them meet.

    Both point sets are taken as their convex hulls (the footprints of boxes, of an object's collision
    geoms); the hulls overlap exactly when their projections overlap on every axis, and the shifts that
    keep one axis's projections overlapping form an interval, so the answer is the intersection of one
    interval per axis (72 evenly spaced headings).

    Args:
        moving: ``[N, 2]`` points of the footprint that moves.
        fixed: ``[M, 2]`` points of the footprint that stays.
        direction: ``[2]`` unit direction of the shift.
    """
    pm, pf = moving @ _AXES.T, fixed @ _AXES.T  # [N, A], [M, A]
    a0, a1, b0, b1 = pm.min(axis=0), pm.max(axis=0), pf.min(axis=0), pf.max(axis=0)
    s = _AXES @ direction  # [A]: how fast the moving projection slides along each axis
    lo, hi = -math.inf, math.inf
    for sa, lo_a, hi_a in zip(s, b0 - a1, b1 - a0, strict=True):
        # Projections overlap while lo_a < t * sa < hi_a.
        if abs(sa) < 1e-9:
            if not lo_a < 0.0 < hi_a:
                return None
            continue
        t0, t1 = sorted((lo_a / sa, hi_a / sa))
        lo, hi = max(lo, t0), min(hi, t1)
    return (lo, hi) if lo < hi else None


@typechecked
def clearing_shift(
    moving: Float[np.ndarray, "N 2"], fixed: Float[np.ndarray, "M 2"], direction: Float[np.ndarray, " 2"]
) -> float:
    """How far (m) the footprint ``moving`` must go along the unit ``direction`` until it no longer
    overlaps ``fixed`` (convex hulls, see [`shift_overlap`][flowvla.envs.experts.geometry.shift_overlap]);
    0 when they do not overlap now."""
    span = shift_overlap(moving, fixed, direction)
    return 0.0 if span is None or not span[0] < 0.0 < span[1] else float(span[1])
