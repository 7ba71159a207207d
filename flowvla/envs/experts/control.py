"""Closed-loop pose tracking for LIBERO's OSC_POSE controller: one 7-D delta action towards a target
pose, shared by every skill.

One action unit is 5 cm and 0.5 rad per step (the controller's ``output_max``); each step's goal is the
current pose plus the delta. A proportional law on the pose error, clipped per axis, gives a smooth
arrival because the controller lags its goal by several steps.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from flowvla.envs.experts.geometry import rotation_error

__all__ = ["POS_SCALE", "PRESS_DEPTH", "ROT_SCALE", "pose_action", "pose_error", "side_rotation", "yaw_of"]

POS_SCALE = 0.05  # m per action unit (OSC_POSE output_max)
ROT_SCALE = 0.5  # rad per action unit
# Sliding an object with the closed fingertips pressed on it: the hand is commanded this far (m) below
# where the fingertips came to rest on it, so the controller's spring presses them down.
PRESS_DEPTH = 0.022


def pose_action(scene: Any, target: np.ndarray, rot: np.ndarray, speed: float, gripper: float) -> np.ndarray:
    """``[7]`` action moving the grip site towards ``target [3]`` with rotation ``rot [3, 3]``.

    Args:
        scene: a [`Scene`][flowvla.envs.experts.scene.Scene] (live readings).
        target: grip-site position wanted (m, world).
        rot: end-effector rotation wanted (columns: eef axes in world coordinates).
        speed: translation speed limit (action units, at most 1 per axis).
        gripper: ``-1`` open, ``+1`` close.
    """
    dp = (np.asarray(target, dtype=np.float64) - scene.eef_pos()) / POS_SCALE
    norm = float(np.linalg.norm(dp))
    if norm > speed:
        dp *= speed / norm
    dr = rotation_error(scene.eef_rot(), np.asarray(rot, dtype=np.float64)) / ROT_SCALE
    return np.concatenate([np.clip(dp, -1.0, 1.0), np.clip(dr, -1.0, 1.0), [gripper]])


def pose_error(scene: Any, target: np.ndarray, rot: np.ndarray) -> tuple[float, float]:
    """Position (m) and orientation (rad) distance of the grip site from a target pose."""
    err = float(np.linalg.norm(np.asarray(target) - scene.eef_pos()))
    return err, float(np.linalg.norm(rotation_error(scene.eef_rot(), np.asarray(rot, dtype=np.float64))))


def side_rotation(approach: np.ndarray, current: np.ndarray, vertical_closing: bool = True) -> np.ndarray:
    """End-effector rotation with the palm's ``z`` axis along ``approach`` (not vertical: a side or tilted
    grasp), the fingers closing vertically within the approach plane (around a horizontal bar) or
    horizontally across it (a flat block to push with). Of the two signs of the closing axis, the one
    nearer the ``current`` rotation."""
    z = np.asarray(approach, dtype=np.float64).copy()
    z /= np.linalg.norm(z)
    across = np.cross(np.array([0.0, 0.0, 1.0]), z)
    across /= np.linalg.norm(across)
    x = np.cross(z, across) if vertical_closing else across
    x /= np.linalg.norm(x)
    if float(x @ current[:, 0]) < 0:
        x = -x
    return np.stack([x, np.cross(z, x), z], axis=1)


def yaw_of(rot: np.ndarray) -> float:
    """Heading of the closing (x) axis of an end-effector rotation in the world xy plane."""
    return math.atan2(rot[1, 0], rot[0, 0])
