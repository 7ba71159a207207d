"""Evaluation-time perturbations of a LIBERO episode, in the spirit of LIBERO-PRO and LIBERO-Plus.

A policy that scores well on the 50 official init states may have memorised them: the same object
layouts, the same camera, the same words. These perturbations change one of those at a time, after
the init state is loaded and before the objects settle, so an evaluation can report the drop:

- **objects shifted**: every free object (the movable ones; the robot and the table have no free
  joint) moves by exactly ``object_shift_m`` on the table, in its own random direction;
- **objects scattered**: every free object moves to a point drawn uniformly from the disc of
  ``object_scatter_m`` around it, the distribution scattered demonstrations are recorded under
  (``RecipeConfig.object_scatter``), so a policy trained on them is evaluated inside its own layouts;
- **camera jitter**: the named cameras move by exactly ``camera_shift_m`` in a random direction and
  turn by exactly ``camera_rotation_deg`` about a random axis of their own frame (the depth branch's
  intrinsics and extrinsics follow, as they are read from the simulator);
- **instructions** (paraphrases unseen in training) are a setting of the rollout itself
  (``RolloutConfig.instructions``), not of the simulator.

Every draw comes from the episode's seed, so a perturbed evaluation is as repeatable as a clean one.
LIBERO rebuilds the MuJoCo model on every reset (``hard_reset``), which also undoes a camera jitter.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from flowvla.checks import check_nonnegative

__all__ = ["Perturbation", "free_objects", "jitter_cameras", "scatter_objects", "shift_objects"]

_FREE_JOINT = 0  # mjtJoint.mjJNT_FREE
# The amounts of a Perturbation: each must be >= 0, and any one non-zero makes it active.
_AMOUNTS = ("object_shift_m", "object_scatter_m", "camera_shift_m", "camera_rotation_deg")


@dataclasses.dataclass(frozen=True)
class Perturbation:
    """What to change in every episode (all zero: nothing, the official evaluation).

    Attributes:
        object_shift_m: distance every free object moves on the table (m).
        object_scatter_m: radius of the disc every free object's new place is drawn from, uniformly
            over its area (m); exclusive with ``object_shift_m``.
        camera_shift_m: distance each camera of ``cameras`` moves (m).
        camera_rotation_deg: angle each of them turns about a random axis (degrees).
        cameras: the cameras jittered (default: the third-person view; the wrist camera rides on the
            robot).
    """

    object_shift_m: float = 0.0
    object_scatter_m: float = 0.0
    camera_shift_m: float = 0.0
    camera_rotation_deg: float = 0.0
    cameras: Sequence[str] = ("agentview",)

    def __post_init__(self) -> None:
        for name in _AMOUNTS:
            check_nonnegative(name, getattr(self, name))
        if self.object_shift_m and self.object_scatter_m:
            raise ValueError(
                "object_shift_m and object_scatter_m both move the objects: give one of them, got "
                f"{self.object_shift_m} and {self.object_scatter_m}"
            )
        if isinstance(self.cameras, str):
            raise ValueError(f"cameras: give a sequence of camera names, got the string {self.cameras!r}")
        object.__setattr__(self, "cameras", tuple(self.cameras))

    @property
    def active(self) -> bool:
        return any(getattr(self, name) for name in _AMOUNTS)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "cameras": list(self.cameras)}

    def apply(self, env: Any, rng: np.random.Generator) -> dict[str, Any]:
        """Perturb ``env`` (a reset [`LiberoEnv`][flowvla.envs.libero.LiberoEnv]) in place; returns what
        moved (JSON-ready), for the episode's record."""
        done: dict[str, Any] = {}
        if self.object_shift_m:
            done["objects"] = shift_objects(env, self.object_shift_m, rng)
        if self.object_scatter_m:
            done["objects"] = scatter_objects(env, self.object_scatter_m, rng)
        if self.camera_shift_m or self.camera_rotation_deg:
            done["cameras"] = jitter_cameras(
                env, self.cameras, self.camera_shift_m, self.camera_rotation_deg, rng
            )
        return done


def free_objects(env: Any) -> dict[str, int]:
    """Body name -> ``qpos`` address of the free joint of every movable object in ``env``'s scene."""
    m = env.sim.model
    out = {}
    for j in range(m.njnt):
        if int(m.jnt_type[j]) == _FREE_JOINT:
            out[m.body_id2name(int(m.jnt_bodyid[j]))] = int(m.jnt_qposadr[j])
    return out


def _unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    v = rng.normal(size=dim)
    return v / np.linalg.norm(v)


def shift_objects(env: Any, distance: float, rng: np.random.Generator) -> dict[str, list[float]]:
    """Move every free object by ``distance`` (m) in the table plane, each in a random direction.

    Returns:
        body name -> the ``[dx, dy]`` applied.
    """
    check_nonnegative("distance", distance, "metres")
    return _move_objects(env, lambda: distance, rng)


def scatter_objects(env: Any, radius: float, rng: np.random.Generator) -> dict[str, list[float]]:
    """Move every free object to a point drawn uniformly from the disc of ``radius`` (m) around it,
    in the table plane: layouts wider than LIBERO's placement regions, for training data that covers
    the shifts [`shift_objects`][flowvla.envs.perturb.shift_objects] evaluates.

    Returns:
        body name -> the ``[dx, dy]`` applied.
    """
    check_nonnegative("radius", radius, "metres")
    # sqrt of a uniform draw: uniform over the disc's area, not crowded at its centre.
    return _move_objects(env, lambda: radius * math.sqrt(rng.uniform()), rng)


def _move_objects(
    env: Any, distance: Callable[[], float], rng: np.random.Generator
) -> dict[str, list[float]]:
    """Move every free object by ``distance()`` (drawn per object) in its own random direction on the
    table; returns body name -> the ``[dx, dy]`` applied."""
    sim = env.sim
    moved = {}
    for name, adr in sorted(free_objects(env).items()):
        d = distance() * _unit(rng, 2)
        sim.data.qpos[adr : adr + 2] += d
        moved[name] = [round(float(v), 4) for v in d]
    sim.forward()
    return moved


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of ``(w, x, y, z)`` quaternions."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


def jitter_cameras(
    env: Any, cameras: Sequence[str], shift: float, rotation_deg: float, rng: np.random.Generator
) -> dict[str, dict[str, list[float]]]:
    """Move each camera by ``shift`` (m) and turn it by ``rotation_deg`` about a random axis of its
    own frame, in ``env``'s model (until the next hard reset).

    Returns:
        camera name -> ``{"shift": [dx, dy, dz], "axis": [x, y, z]}`` applied.
    """
    m = env.sim.model
    names = list(m.camera_names)
    unknown = [c for c in cameras if c not in names]
    if unknown:
        raise ValueError(f"cameras: {unknown} are not in this scene; available: {names}")
    done = {}
    for c in cameras:
        i = names.index(c)
        d = shift * _unit(rng, 3)
        axis = _unit(rng, 3)
        half = math.radians(rotation_deg) / 2
        turn = np.concatenate([[math.cos(half)], math.sin(half) * axis])
        m.cam_pos[i] = m.cam_pos[i] + d
        q = _quat_mul(np.asarray(m.cam_quat[i], dtype=np.float64), turn)
        m.cam_quat[i] = q / np.linalg.norm(q)
        done[c] = {"shift": [round(float(v), 4) for v in d], "axis": [round(float(v), 4) for v in axis]}
    env.sim.forward()
    return done
