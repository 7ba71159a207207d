"""Sideways insertion: an object carried horizontally into a region under a roof (the heating region of
an open microwave), where a top-down carry cannot enter because the hand and arm stand above the object.

The object is taken by its handle from the open side, the hand level and pointing into the opening
(fingers closing horizontally around the handle's outer bar), so the hand and arm stay outside while
the object goes in ahead of them. The way in is read from the container's collision geometry: of the
four horizontal directions from the region's centre, the open one is the one its walls do not block;
floor, roof and side walls bound where the object can go.

    above -> lower -> descend -> grip -> lift -> carry -> set -> release -> withdraw -> rise
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from flowvla.envs.experts.control import pose_action, pose_error, side_rotation, yaw_of
from flowvla.envs.experts.geometry import footprint_widths, top_down_rotation
from flowvla.envs.experts.predicates import PlaceGoal, site_parent
from flowvla.envs.experts.scene import Scene
from flowvla.envs.experts.skill import Skill

__all__ = ["Cavity", "SideInsertSkill", "cavity", "inserts"]

_TILT_DEG = 35.0
_SIGNS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class Cavity:
    """The free space of an enclosed region, in the world frame.

    Attributes:
        inward: ``[3]`` horizontal unit direction from the opening into the cavity.
        floor: height of the surface the object is set on (m).
        roof: height of the underside above the region (m).
        lateral: ``(low, high)`` free span across ``inward`` (coordinates along ``across``).
        depth: free span along ``inward``: ``(front, back)`` (coordinates along ``inward``).
        across: ``[3]`` horizontal unit direction perpendicular to ``inward``.
    """

    inward: np.ndarray
    across: np.ndarray
    floor: float
    roof: float
    lateral: tuple[float, float]
    depth: tuple[float, float]


def _boxes(raw: Any, geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres ``[G, 3]``, rotations ``[G, 3, 3]`` and half sizes ``[G, 3]`` of collision-geom boxes."""
    m, d = raw.sim.model, raw.sim.data
    aabb = np.asarray(m.geom_aabb)[geoms]
    rot = np.asarray(d.geom_xmat)[geoms].reshape(-1, 3, 3)
    centre = np.asarray(d.geom_xpos)[geoms] + np.einsum("gij,gj->gi", rot, aabb[:, :3])
    return centre, rot, aabb[:, 3:]


def _inside(point: np.ndarray, boxes: tuple[np.ndarray, np.ndarray, np.ndarray], pad: float = 0.0) -> bool:
    centre, rot, half = boxes
    local = np.einsum("gji,gj->gi", rot, point[None] - centre)
    return bool(np.any(np.all(np.abs(local) <= half + pad, axis=1)))


def _static_geoms(scene: Scene, owner: str) -> np.ndarray:
    """The owner's collision geoms that do not move with a joint of it (walls, floor, roof; not a door)."""
    m = scene.sim.model
    geoms = scene._geoms[owner]
    owner_body = scene.raw.obj_body_id[owner]
    moving = {
        int(m.jnt_bodyid[j])
        for j in range(m.njnt)
        if scene._descends(int(m.jnt_bodyid[j]), owner_body) and int(m.jnt_bodyid[j]) != owner_body
    }
    keep = [g for g in geoms if not any(scene._descends(int(m.geom_bodyid[g]), b) for b in moving)]
    return np.array(keep, dtype=np.int64)


def cavity(scene: Scene, region: str, reach: float = 0.3, step: float = 0.005) -> Cavity | None:
    """The [`Cavity`][flowvla.envs.experts.insert.Cavity] around a region site under a roof of its parent
    object, or ``None`` when nothing of the parent lies above the region's centre (an open top: a
    top-down carry reaches it) or no horizontal side is open."""
    raw = scene.raw
    if getattr(raw.object_sites_dict.get(region), "joints", None):
        return None  # a drawer's region moves out with the drawer: reached from above once open
    owner = site_parent(raw, region)
    if owner is None or owner not in scene.names:
        return None
    geoms = _static_geoms(scene, owner)
    if len(geoms) == 0:
        return None
    boxes = _boxes(raw, geoms)
    c = scene.site_pos(region)
    ts = np.arange(step, reach, step)

    def free(direction: np.ndarray) -> float:
        for t in ts:
            if _inside(c + t * direction, boxes):
                return float(t)
        return math.inf

    up = free(np.array([0.0, 0.0, 1.0]))
    if not math.isfinite(up):
        return None
    down = free(np.array([0.0, 0.0, -1.0]))
    dirs = [np.array([math.cos(a), math.sin(a), 0.0]) for a in (0.0, math.pi / 2, math.pi, 1.5 * math.pi)]
    spans = [free(u) for u in dirs]
    opens = [i for i, s in enumerate(spans) if not math.isfinite(s)]
    if len(opens) != 1:
        return None
    out = dirs[opens[0]]
    inward = -out
    across = np.array([-inward[1], inward[0], 0.0])
    back = spans[(opens[0] + 2) % 4]
    side = [spans[(opens[0] + 1) % 4], spans[(opens[0] + 3) % 4]]
    # The opening's plane: where the roof ends, walking out from the centre under it.
    front = 0.0
    for t in ts:
        if not _inside(c + t * out + np.array([0.0, 0.0, up + step]), boxes, pad=0.001):
            front = float(t)
            break
    a0 = float(c @ across)
    d0 = float(c @ inward)
    # ``side`` holds the free spans towards +90 and -90 degrees from ``out``; ``across`` is +90 from
    # ``inward``, i.e. -90 from ``out``.
    lateral = (a0 - side[0], a0 + side[1])
    floor = float(c[2] - down) if math.isfinite(down) else float(c[2] - scene.site_half_size(region)[2])
    return Cavity(inward, across, floor, float(c[2] + up), lateral, (d0 - front, d0 + back))


def inserts(scene: Scene, goal: PlaceGoal) -> bool:
    """Whether ``goal`` places its object into a region under a roof (a microwave's heating region)."""
    return goal.relation == "in" and goal.target_kind == "site" and cavity(scene, goal.target) is not None


class SideInsertSkill(Skill):
    """Carry ``goal.obj`` by its handle, hand level, into the region ``goal.target`` under a roof, set it
    down, let go and back out; done once LIBERO's predicate holds with the hand outside.

    The object needs a handle (a narrow collision geom standing out from its body) on the side facing
    the opening; without one the skill fails at once.
    """

    def __init__(self, env: Any, scene: Scene, goal: PlaceGoal) -> None:
        super().__init__(env, scene)
        self.goal = goal
        self.timeout = 230
        cav = cavity(scene, goal.target)
        if cav is None:
            raise ValueError(f"{goal.target!r} is not a region under a roof")
        self.cav = cav
        # Pointing in and tilted down: the wrist and forearm behind the hand stand higher than the hand,
        # clear of whatever lies behind the object on the table.
        tilt = math.radians(_TILT_DEG)
        approach = math.cos(tilt) * cav.inward - math.sin(tilt) * np.array([0.0, 0.0, 1.0])
        self.rot = side_rotation(approach, scene.eef_rot(), vertical_closing=False)
        self._trace: list[np.ndarray] = []  # the object's xy while carried in
        self._z: list[float] = []  # the hand's height while setting down
        self._plan()
        self._start("above" if self.bar is not None else "failed")

    def holds(self) -> bool:
        return bool(self.raw._eval_predicate([self.goal.predicate.name, *self.goal.predicate.args]))

    def _plan(self) -> None:
        """The handle's outer bar (the narrow geom farthest out towards the opening) and the object's
        extent ahead of and across its origin."""
        sc, cav = self.scene, self.cav
        shape = sc.shape(self.goal.obj)
        origin = sc.body_pos(self.goal.obj)
        boxes = shape.points.reshape(-1, 8, 3)
        widths = np.array(
            [footprint_widths(b, np.linspace(0.0, math.pi, 12, endpoint=False)).min() for b in boxes]
        )
        centres = boxes.mean(axis=1)
        outward = (centres - origin) @ -cav.inward
        ok = (widths < 0.03) & (outward > 0.05)
        self.bar = centres[int(np.argmax(np.where(ok, outward, -np.inf)))] if ok.any() else None
        rel = shape.points - origin
        self._ahead = float((rel @ cav.inward).max())
        self._lateral = (float((rel @ cav.across).min()), float((rel @ cav.across).max()))
        self._height = float(shape.high[2] - shape.low[2])
        self._below = 0.0

    def _goal_origin(self) -> np.ndarray:
        """Where the object's origin goes: the region's centre, pulled inside the cavity's walls."""
        cav, sc = self.cav, self.scene
        site = sc.site_pos(self.goal.target)
        half = sc.site_half_size(self.goal.target)
        margin = 0.015
        a = float(site @ cav.across)
        a = float(
            np.clip(a, cav.lateral[0] - self._lateral[0] + margin, cav.lateral[1] - self._lateral[1] - margin)
        )
        d_site = float(site @ cav.inward)
        d = min(d_site, cav.depth[1] - self._ahead - margin)
        d = max(d, d_site - float(half @ np.abs(cav.inward)) + 0.02)
        xy = a * cav.across + d * cav.inward
        return np.array([xy[0], xy[1], 0.0])

    def _act(self) -> np.ndarray:
        sc, cav = self.scene, self.cav
        rot = self.rot
        opened, closed = -1.0, 1.0
        if self.phase == "failed":
            self.failed = True
            return np.concatenate([np.zeros(6), [opened]])
        bar = self.bar
        # The handle is a loop in a vertical plane: the open fingers straddle it from above.
        pre = bar + np.array([0.0, 0.0, 0.08])
        if self.phase == "above":
            tgt = pre + np.array([0.0, 0.0, 0.04])
            err, rerr = pose_error(sc, tgt, rot)
            if (err < 0.03 and rerr < 0.15) or self.phase_steps > 60:
                self._start("lower")
            return pose_action(sc, tgt, rot, 1.4, opened)
        if self.phase == "lower":
            err, rerr = pose_error(sc, pre, rot)
            if (err < 0.012 and rerr < 0.08) or self.phase_steps > 40:
                self._start("descend")
            return pose_action(sc, pre, rot, 0.8, opened)
        if self.phase == "descend":
            if pose_error(sc, bar, rot)[0] < 0.006 or self.phase_steps > 30:
                self._start("grip")
            return pose_action(sc, bar, rot, 0.4, opened)
        if self.phase == "grip":
            settled = self.phase_steps > 6 and float(np.abs(sc.finger_qvel()).max()) < 0.01
            if settled or self.phase_steps > 20:
                if sc.finger_gap() < 0.003:
                    self.failed = True  # closed on nothing
                self._below = float(sc.eef_pos()[2] - sc.shape(self.goal.obj).low[2])
                self._offset = sc.eef_pos() - sc.body_pos(self.goal.obj)
                self._start("lift")
            return pose_action(sc, bar, rot, 0.2, closed)
        carry_bottom = min(cav.floor + 0.02, cav.roof - self._height - 0.012)
        carry_z = carry_bottom + self._below
        eef = sc.eef_pos()
        if self.phase == "lift":
            tgt = np.array([eef[0], eef[1], carry_z])
            if abs(eef[2] - carry_z) < 0.01 or self.phase_steps > 40:
                self._start("carry")
            return pose_action(sc, tgt, rot, 0.5, closed)
        if self.phase == "carry":
            goal = self._goal_origin()
            obj = sc.body_pos(self.goal.obj)
            tgt = eef + np.array([goal[0] - obj[0], goal[1] - obj[1], 0.0])
            tgt[2] = carry_z
            self._trace.append(obj[:2].copy())
            # Stopped short (the hand meets the roof's front edge): set it down where it is.
            stuck = len(self._trace) > 6 and float(np.linalg.norm(self._trace[-6] - obj[:2])) < 0.002
            if float(np.linalg.norm((goal - obj)[:2])) < 0.01 or stuck or self.phase_steps > 70:
                self._start("set")
            return pose_action(sc, tgt, rot, 0.8, closed)
        if self.phase == "set":
            tgt = eef.copy()
            tgt[2] = cav.floor + self._below - 0.01
            z = float(eef[2])
            self._z.append(z)
            stalled = len(self._z) > 5 and self._z[-5] - z < 0.001
            if stalled or self.phase_steps > 25:
                self._start("release")
            return pose_action(sc, tgt, rot, 0.3, closed)
        if self.phase == "release":
            if sc.finger_gap() > 0.05 or self.phase_steps > 12:
                self._out = eef - 0.14 * cav.inward
                self._start("withdraw")
            return pose_action(sc, eef, rot, 0.2, opened)
        if self.phase == "withdraw":
            tgt = self._out
            if pose_error(sc, tgt, rot)[0] < 0.02 or self.phase_steps > 30:
                self._start("rise")
            return pose_action(sc, tgt, rot, 1.0, opened)
        # Up and palm down again, so the next stage (closing the door) starts from a plain posture.
        tgt = self._out + np.array([0.0, 0.0, 0.12])
        up = top_down_rotation(yaw_of(top_down_rotation(sc.home_yaw)))
        err, rerr = pose_error(sc, tgt, up)
        if (err < 0.03 and rerr < 0.2) or self.phase_steps > 40:
            self.done, self.failed = self.holds(), not self.holds()
        return pose_action(sc, tgt, up, 1.2, opened)
