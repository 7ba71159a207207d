"""Privileged simulator readings an expert plans from: end-effector pose, fingers, object shapes.

Everything is read from MuJoCo's live data of a [`LiberoEnv`][flowvla.envs.libero.LiberoEnv], so it is
valid right after any ``step`` / ``reset`` / ``set_sim_state``. Object shapes come from the collision
geoms' own boxes (``geom_aabb``) placed at their current poses: LIBERO's per-object
``top_offset`` / ``horizontal_radius`` are generic defaults, not measurements.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["BodyShape", "Scene"]

_SIGNS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class BodyShape:
    """A body's collision geometry now: ``points [N, 3]`` (box corners, world frame) and its box."""

    points: np.ndarray

    @property
    def low(self) -> np.ndarray:
        return self.points.min(axis=0)

    @property
    def high(self) -> np.ndarray:
        return self.points.max(axis=0)

    @property
    def center(self) -> np.ndarray:
        return 0.5 * (self.low + self.high)


class Scene:
    """Named access to the robot and the task's objects, fixtures and regions of a LIBERO env.

    Args:
        env: a [`LiberoEnv`][flowvla.envs.libero.LiberoEnv] (physics-only is enough).
    """

    def __init__(self, env: Any) -> None:
        self.env = env
        self.raw = env.raw.env
        self.robot = self.raw.robots[0]
        m = self.sim.model
        # Body subtree -> collision geoms, fixed for the model's lifetime (a hard reset rebuilds the
        # model, so build a new Scene after each reset).
        self._geoms: dict[str, np.ndarray] = {}
        for name, bid in self.raw.obj_body_id.items():
            bodies = {b for b in range(m.nbody) if self._descends(b, bid)}
            self._geoms[name] = np.array(
                [
                    g
                    for g in range(m.ngeom)
                    if m.geom_bodyid[g] in bodies and (m.geom_contype[g] or m.geom_conaffinity[g])
                ],
                dtype=np.int64,
            )
        self._finger_joints = [
            m.joint_name2id(j) for j in self.robot.gripper.joints if j in m.joint_names
        ]  # fmt: skip
        # The hand's pose at the reset (the arm's home): stages that bend the arm far (a side grasp of a
        # handle) return to it, so the next stage starts with the elbow and wrist well inside their
        # ranges (the controller's null space pulls the joints back towards their reset posture).
        rot = self.eef_rot()
        self.home_yaw = float(np.arctan2(rot[1, 0], rot[0, 0]))
        self.home_pos = self.eef_pos()
        self.home_wrist = self.wrist_angle()

    @property
    def sim(self) -> Any:
        return self.env.sim

    def _descends(self, body: int, ancestor: int) -> bool:
        parent = self.sim.model.body_parentid
        while body != ancestor and body != 0:
            body = int(parent[body])
        return body == ancestor

    # ----------------------------------------------------------------------------------- robot
    def eef_pos(self) -> np.ndarray:
        """``[3]`` grip-site position (m, world)."""
        return np.array(self.sim.data.site_xpos[self.robot.eef_site_id], dtype=np.float64)

    def eef_rot(self) -> np.ndarray:
        """``[3, 3]`` grip-site rotation (columns: the eef axes in world coordinates)."""
        return np.array(self.sim.data.site_xmat[self.robot.eef_site_id], dtype=np.float64).reshape(3, 3)

    def wrist_angle(self) -> float:
        """The last arm joint's position (rad): the hand's turn about its own axis, limited to about
        +-2.9 rad on the Panda (a palm-down heading and the same heading plus a full turn differ here)."""
        return float(self.sim.data.qpos[self.robot._ref_joint_pos_indexes[-1]])

    def finger_qpos(self) -> np.ndarray:
        """``[2]`` finger joint positions (about +-0.04 open, 0 closed on nothing)."""
        return np.array([self.sim.data.qpos[self.sim.model.jnt_qposadr[j]] for j in self._finger_joints])

    def finger_qvel(self) -> np.ndarray:
        """``[2]`` finger joint velocities."""
        return np.array([self.sim.data.qvel[self.sim.model.jnt_dofadr[j]] for j in self._finger_joints])

    def finger_gap(self) -> float:
        """Distance between the fingers' joint positions (m): about 0.08 open, about 0 empty-closed."""
        q = self.finger_qpos()
        return float(abs(q[0] - q[1]))

    # --------------------------------------------------------------------------------- objects
    @property
    def names(self) -> list[str]:
        """Every object and fixture with a body."""
        return list(self._geoms)

    def body_pos(self, name: str) -> np.ndarray:
        """``[3]`` body origin of object or fixture ``name`` (what LIBERO's predicates test)."""
        return np.array(self.sim.data.body_xpos[self.raw.obj_body_id[name]], dtype=np.float64)

    def shape(self, name: str) -> BodyShape:
        """Corners of ``name``'s collision-geom boxes at their current poses."""
        geoms = self._geoms[name]
        if len(geoms) == 0:
            p = self.body_pos(name)
            return BodyShape(p[None].copy())
        m, d = self.sim.model, self.sim.data
        aabb = np.asarray(m.geom_aabb)[geoms]  # [G, 6]: centre, half size in the geom frame
        local = aabb[:, None, :3] + aabb[:, None, 3:] * _SIGNS[None]  # [G, 8, 3]
        rot = np.asarray(d.geom_xmat)[geoms].reshape(-1, 3, 3)
        pos = np.asarray(d.geom_xpos)[geoms]
        pts = np.einsum("gij,gkj->gki", rot, local) + pos[:, None, :]
        return BodyShape(pts.reshape(-1, 3))

    def boxes(self, name: str) -> np.ndarray:
        """``[G, 8, 3]`` corners of each of ``name``'s collision-geom boxes at its current pose (``G = 0``
        for a body without collision geoms)."""
        if len(self._geoms[name]) == 0:
            return np.zeros((0, 8, 3))
        return self.shape(name).points.reshape(-1, 8, 3)

    def in_contact(self, a: str, b: str) -> bool:
        """Whether any collision geom of ``a`` touches one of ``b``."""
        ga, gb = set(self._geoms[a].tolist()), set(self._geoms[b].tolist())
        d = self.sim.data
        for i in range(d.ncon):
            c = d.contact[i]
            if (c.geom1 in ga and c.geom2 in gb) or (c.geom1 in gb and c.geom2 in ga):
                return True
        return False

    def site_pos(self, site: str) -> np.ndarray:
        return np.array(self.sim.data.get_site_xpos(site), dtype=np.float64)

    def site_half_size(self, site: str) -> np.ndarray:
        """``[3]`` half extents of a LIBERO region site, in the world frame (as its ``in_box`` uses)."""
        size = np.asarray(self.raw.object_sites_dict[site].size, dtype=np.float64)
        mat = np.array(self.sim.data.get_site_xmat(site), dtype=np.float64).reshape(3, 3)
        return np.abs(mat @ size)
