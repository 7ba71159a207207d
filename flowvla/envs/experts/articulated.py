"""Skills for LIBERO's articulated fixtures: open / close a drawer by its handle, close a hinged door,
turn a stove knob on or off.

Everything is read from the MuJoCo model: the joint a BDDL region or object moves
([`Articulation`][flowvla.envs.experts.articulated.Articulation]), its axis in the world, its handle (the
joint body's collision geoms farthest along the opening direction). How far to move comes from
LIBERO's own object classes: a wooden cabinet's drawer counts as open below ``q = -0.14`` and as closed
above ``q = 0``, a microwave door as closed above ``q = -0.005``, a stove as on from ``q = 0.5``
(``default_open_ranges`` / ``default_close_ranges`` / ``default_turnon_ranges``). A skill is done when
LIBERO's predicate holds (``_eval_predicate``), never by a step count:

- **drawer open** (slide joint): a horizontal grasp of the handle bar (palm facing the drawer, fingers
  closing vertically around the bar), then pull along the joint axis until the joint is past the
  open threshold, release, back off.
- **drawer close** (slide joint): closed fingers pushed against the handle along the closing
  direction until the joint reaches its closed end.
- **door close** (hinge): the closed fingers follow the door's arc just outside its face, a little
  ahead of it, so the door is swept shut.
- **knob** (hinge with ``turn_on``): a top-down pinch of the knob's grip, then the wrist turns about
  the knob's axis until the joint is past the on (or off) threshold.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np

from flowvla.envs.experts.control import pose_action, pose_error, side_rotation, yaw_of
from flowvla.envs.experts.geometry import (
    closest_equivalent_yaw,
    footprint_widths,
    rotation_error,
    top_down_rotation,
)
from flowvla.envs.experts.scene import Scene
from flowvla.envs.experts.skill import Skill

__all__ = ["Articulation", "DoorCloseSkill", "DrawerSkill", "KnobSkill", "articulation"]

_SIGNS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
_MJ_SLIDE, _MJ_HINGE = 2, 3


@dataclasses.dataclass(frozen=True)
class Articulation:
    """The joint behind a BDDL ``Open`` / ``Close`` / ``Turnon`` / ``Turnoff`` argument.

    Attributes:
        owner: the object or fixture that defines the thresholds (e.g. ``wooden_cabinet_1``).
        joint: the MuJoCo joint name.
        kind: ``"slide"`` (a drawer) or ``"hinge"`` (a door, a knob).
        open_q: a joint position well inside the "open" / "on" range.
        closed_q: the joint's end on the "closed" / "off" side (its limit: LIBERO counts a drawer as
            closed only above ``q = 0``, so it has to go all the way).
    """

    owner: str
    joint: str
    kind: Literal["slide", "hinge"]
    open_q: float
    closed_q: float


def articulation(raw: Any, arg: str) -> Articulation:
    """The [`Articulation`][flowvla.envs.experts.articulated.Articulation] a predicate argument moves: a
    region site with joints (a drawer of a cabinet) or an articulated object (a microwave, a stove).

    Raises:
        ValueError: ``arg`` has no joint with LIBERO thresholds.
    """
    from flowvla.envs.experts.predicates import site_parent

    if arg in raw.object_sites_dict and getattr(raw.object_sites_dict[arg], "joints", None):
        joints = list(raw.object_sites_dict[arg].joints)
        owner = site_parent(raw, arg)
    elif arg in raw.objects_dict or arg in raw.fixtures_dict:
        owner = arg
        joints = list(raw.get_object(arg).joints or [])
    else:
        raise ValueError(f"{arg!r} is neither a region with joints nor an object of this scene")
    m = raw.sim.model
    joints = [j for j in joints if j in m.joint_names and int(m.jnt_type[m.joint_name2id(j)]) in (1, 2, 3)]
    if owner is None or not joints:
        raise ValueError(f"{arg!r} has no slide or hinge joint")
    props = raw.get_object(owner).object_properties["articulation"]
    jid = m.joint_name2id(joints[0])
    lo, hi = (float(v) for v in m.jnt_range[jid])
    kind: Literal["slide", "hinge"] = "slide" if int(m.jnt_type[jid]) == _MJ_SLIDE else "hinge"
    if props.get("default_turnon_ranges"):
        on, off = props["default_turnon_ranges"], props["default_turnoff_ranges"]
    elif props.get("default_open_ranges"):
        on, off = props["default_open_ranges"], props["default_close_ranges"]
    else:
        raise ValueError(f"{owner!r} defines no open / close thresholds")
    opens_up = float(np.mean(on)) > float(np.mean(off))
    # Aim for the middle of the "open" range (well past its threshold), the limit on the closed side.
    return Articulation(owner, joints[0], kind, float(np.mean(on)), lo if opens_up else hi)


class _JointSkill(Skill):
    def __init__(self, env: Any, scene: Scene, predicate: tuple[str, str], art: Articulation) -> None:
        super().__init__(env, scene)
        self.predicate, self.art = predicate, art
        m = self.raw.sim.model
        self._jid = m.joint_name2id(art.joint)
        self._body = int(m.jnt_bodyid[self._jid])
        self._qadr = int(m.jnt_qposadr[self._jid])
        self._geoms = np.array(
            [
                g
                for g in range(m.ngeom)
                if m.geom_bodyid[g] == self._body and (m.geom_contype[g] or m.geom_conaffinity[g])
            ]
        )

    def q(self) -> float:
        """The joint's position now (m for a drawer, rad for a door or knob)."""
        return float(self.raw.sim.data.qpos[self._qadr])

    def axis(self) -> np.ndarray:
        """``[3]`` the joint's axis in the world frame now."""
        d, m = self.raw.sim.data, self.raw.sim.model
        return d.xmat[self._body].reshape(3, 3) @ np.asarray(m.jnt_axis[self._jid], dtype=np.float64)

    def holds(self) -> bool:
        """Whether LIBERO's own predicate for this stage holds now."""
        return bool(self.raw._eval_predicate(list(self.predicate)))

    def _geom_boxes(self) -> tuple[np.ndarray, np.ndarray]:
        """Centres ``[G, 3]`` and corner points ``[G, 8, 3]`` of the joint body's collision geoms."""
        m, d = self.raw.sim.model, self.raw.sim.data
        g = self._geoms
        aabb = np.asarray(m.geom_aabb)[g]
        local = aabb[:, None, :3] + aabb[:, None, 3:] * _SIGNS[None]
        rot = np.asarray(d.geom_xmat)[g].reshape(-1, 3, 3)
        pts = np.einsum("gij,gkj->gki", rot, local) + np.asarray(d.geom_xpos)[g][:, None, :]
        return pts.mean(axis=1), pts


class DrawerSkill(_JointSkill):
    """Open (grasp the handle and pull) or close (push the handle) a drawer on a slide joint.

    Args:
        env: the [`LiberoEnv`][flowvla.envs.libero.LiberoEnv].
        scene: live readings of ``env``.
        predicate: ``("open", region)`` or ``("close", region)``: what must hold when done.
        art: the drawer's joint (see [`articulation`][flowvla.envs.experts.articulated.articulation]).
        recover_posture: after opening and pulling the hand back towards the arm's home, turn it palm
            down and unwind the wrist (about 25 steps); ``False`` turns it palm down on the second half
            of the way home and ends the stage 12 cm short of it, for a pick-and-place stage, whose
            approach goes on from there.
    """

    def __init__(
        self,
        env: Any,
        scene: Scene,
        predicate: tuple[str, str],
        art: Articulation,
        recover_posture: bool = True,
    ) -> None:
        super().__init__(env, scene, predicate, art)
        self.recover_posture = recover_posture
        self._grasp_ref: np.ndarray | None = None
        self._turn_yaw: float | None = None
        self.opening = predicate[0] == "open"
        self.target_q = art.open_q if self.opening else art.closed_q
        self.timeout = 200
        self._start("above")

    def open_dir(self) -> np.ndarray:
        """Unit world direction the drawer front moves in when it opens."""
        sign = 1.0 if self.art.open_q > self.art.closed_q else -1.0
        n = self.axis() * sign
        n[2] = 0.0
        return n / np.linalg.norm(n)

    def _side_grasp(self, approach: np.ndarray) -> np.ndarray:
        """The side-grasp rotation (fingers closing vertically) of the two mirror images that is the
        smaller turn from the hand's pose when the stage began. From palm down the other one is nearly a
        half turn away, and the direction of a half turn flips with millimetres of tilt: the wrist then
        swings one way and the other and the arm wanders off."""
        if self._grasp_ref is None:
            now = self.scene.eef_rot()
            cands = []
            for sign in (1.0, -1.0):
                ref = now.copy()
                ref[:, 0] = np.array([0.0, 0.0, sign])
                rot = side_rotation(approach, ref)
                cands.append((float(np.linalg.norm(rotation_error(now, rot))), rot))
            self._grasp_ref = min(cands, key=lambda c: c[0])[1]
        return side_rotation(approach, self._grasp_ref)

    def sweep(self) -> tuple[np.ndarray, np.ndarray]:
        """``(lo [2], hi [2])``: the horizontal box the drawer occupies between now and fully open."""
        _, pts = self._geom_boxes()
        pts = pts.reshape(-1, 3)[:, :2]
        moved = pts + abs(self.art.open_q - self.q()) * self.open_dir()[:2]
        both = np.concatenate([pts, moved])
        return both.min(axis=0), both.max(axis=0)

    def handle(self) -> np.ndarray:
        """``[3]`` centre of the handle bar: the joint body's collision geom farthest out the front."""
        centers, _ = self._geom_boxes()
        return centers[int(np.argmax(centers @ self.open_dir()))]

    def _smallest_upright_turn(self) -> float:
        """The heading of the palm-down rotation nearest the hand's now: turning on to the home
        heading as well drives the wrist joints into their limits."""
        yaws = np.linspace(-math.pi, math.pi, 72, endpoint=False)
        turns = [np.linalg.norm(rotation_error(self.scene.eef_rot(), top_down_rotation(y))) for y in yaws]
        return float(yaws[int(np.argmin(turns))])

    def _act(self) -> np.ndarray:
        sc = self.scene
        n, h = self.open_dir(), self.handle()
        remaining = abs(self.target_q - self.q())
        if self.opening:
            rot = self._side_grasp(-n)
            pre = h + 0.09 * n
            if self.phase == "above":
                tgt = pre + np.array([0.0, 0.0, 0.04])
                if pose_error(sc, tgt, rot)[0] < 0.04 or self.phase_steps > 60:
                    self._start("approach")
                return pose_action(sc, tgt, rot, 1.4, -1.0)
            if self.phase == "approach":
                err, rerr = pose_error(sc, pre, rot)
                if (err < 0.015 and rerr < 0.1) or self.phase_steps > 50:
                    self._start("insert")
                return pose_action(sc, pre, rot, 1.0, -1.0)
            if self.phase == "insert":
                tgt = h + 0.004 * n
                if pose_error(sc, tgt, rot)[0] < 0.01 or self.phase_steps > 30:
                    self._start("grip")
                return pose_action(sc, tgt, rot, 1.0, -1.0)
            if self.phase == "grip":
                tgt = h + 0.004 * n
                settled = self.phase_steps > 6 and float(np.abs(sc.finger_qvel()).max()) < 0.01
                if settled or self.phase_steps > 20:
                    self._start("pull")
                return pose_action(sc, tgt, rot, 0.2, 1.0)
            if self.phase == "pull":
                tgt = h + 0.004 * n + (remaining + 0.01) * n
                if (self.holds() and remaining < 0.006) or self.phase_steps > 70:
                    self._start("release")
                if sc.finger_gap() < 0.004:  # closed on nothing: the handle slipped out
                    self._start("release")
                return pose_action(sc, tgt, rot, 1.0, 1.0)
            if self.phase == "release":
                if sc.finger_gap() > 0.04 or self.phase_steps > 12:
                    self._start("retreat")
                return np.concatenate([np.zeros(6), [-1.0]])
            if self.phase == "retreat":
                tgt = h + 0.07 * n + np.array([0.0, 0.0, 0.03])
                if pose_error(sc, tgt, rot)[0] < 0.04 or self.phase_steps > 25:
                    self._start("withdraw")
                return pose_action(sc, tgt, rot, 1.0, -1.0)
            # The side grasp leaves the elbow stretched: pull the hand back towards the arm's home first,
            # still palm sideways, then turn it palm down with the home heading (turning it out there
            # drives the elbow into its limit).
            tgt = sc.home_pos
            if self.phase == "withdraw":
                if self.phase_steps == 1:
                    self._withdraw_from = float(np.linalg.norm(tgt - sc.eef_pos()))
                # Followed by a pick-and-place, whose approach goes on from wherever the hand is, the
                # stage ends once the hand is back near home.
                near = 0.04 if self.recover_posture else 0.12
                if pose_error(sc, tgt, rot)[0] < near or self.phase_steps > 25:
                    if not self.recover_posture:
                        self.done, self.failed = self.holds(), not self.holds()
                    else:
                        self._start("upright")
                        self._upright_yaw = self._smallest_upright_turn()
                if not self.recover_posture:
                    # A pick-and-place comes next, palm down: turn on the way home once half of it is
                    # behind (the elbow is bent enough there), not at the stretched start.
                    if float(np.linalg.norm(tgt - sc.eef_pos())) < 0.5 * self._withdraw_from:
                        if self._turn_yaw is None:
                            self._turn_yaw = self._smallest_upright_turn()
                        rot = top_down_rotation(self._turn_yaw)
                return pose_action(sc, tgt, rot, 1.4, -1.0)
            if self.phase == "upright":
                rot = top_down_rotation(self._upright_yaw)
                err, rerr = pose_error(sc, tgt, rot)
                if (err < 0.05 and rerr < 0.2) or self.phase_steps > 30:
                    self._start("unwind")
                return pose_action(sc, tgt, rot, 1.4, -1.0)
            # Unwind the wrist towards its reset angle (palm down, a world-z turn of +a moves the last
            # joint by -a), so the next grasp's heading is reachable without hitting its limit; the
            # fingers are symmetric under a half turn, so within a quarter turn of it is enough.
            dq = sc.home_wrist - sc.wrist_angle()
            yaw = yaw_of(sc.eef_rot()) - float(np.clip(dq, -0.6, 0.6))
            if abs(dq) < 1.2 or self.phase_steps > 25:
                self.done, self.failed = self.holds(), not self.holds()
            return pose_action(sc, tgt, top_down_rotation(yaw), 1.4, -1.0)
        # Close: closed fingers, tilted 45 degrees down towards the drawer, push its handle; the hand
        # leans away from the cabinet, so nothing of it reaches the handles above.
        rot = side_rotation(-n - np.array([0.0, 0.0, 1.0]), sc.eef_rot(), vertical_closing=False)
        contact = h + 0.03 * n + np.array([0.0, 0.0, 0.015])
        if self.phase == "above":
            tgt = contact + 0.06 * n + np.array([0.0, 0.0, 0.05])
            if pose_error(sc, tgt, rot)[0] < 0.03 or self.phase_steps > 60:
                self._start("lower")
            return pose_action(sc, tgt, rot, 1.0, 1.0)
        if self.phase == "lower":
            tgt = contact + 0.04 * n
            if pose_error(sc, tgt, rot)[0] < 0.012 or self.phase_steps > 40:
                self._start("push")
            return pose_action(sc, tgt, rot, 0.6, 1.0)
        if self.phase == "push":
            # The drawer counts as closed only pressed against its stop (it springs back a few mm
            # when let go): push through it, the controller's force grows with the commanded offset.
            tgt = contact - (remaining + 0.08) * n
            if self.holds() or self.phase_steps > 80:
                self._start("retreat")
            return pose_action(sc, tgt, rot, 1.0, 1.0)
        tgt = contact + 0.1 * n + np.array([0.0, 0.0, 0.05])
        if pose_error(sc, tgt, rot)[0] < 0.03 or self.phase_steps > 25:
            self.done, self.failed = self.holds(), not self.holds()
        return pose_action(sc, tgt, rot, 1.0, 1.0)


class DoorCloseSkill(_JointSkill):
    """Close a hinged door (a microwave's) by sweeping it shut from outside with closed fingers."""

    def __init__(self, env: Any, scene: Scene, predicate: tuple[str, str], art: Articulation) -> None:
        super().__init__(env, scene, predicate, art)
        self.timeout = 200
        self._sign = 1.0 if art.closed_q > art.open_q else -1.0
        self._start("above")

    def _frame(self, ahead: float, standoff: float, reach: float = 0.8) -> tuple[np.ndarray, float]:
        """Point ``reach`` of the way along the door from its hinge, rotated ``ahead`` rad further in the
        closing direction and ``standoff`` m outside the face; and the door's heading."""
        d = self.raw.sim.data
        anchor = np.asarray(d.xanchor[self._jid], dtype=np.float64)
        centers, _ = self._geom_boxes()
        far = centers[int(np.argmax(np.linalg.norm((centers - anchor)[:, :2], axis=1)))]
        radial = far - anchor
        radius = float(np.linalg.norm(radial[:2]))
        phi = math.atan2(radial[1], radial[0]) + self._sign * ahead * float(np.sign(self.axis()[2]) or 1.0)
        u = np.array([math.cos(phi), math.sin(phi), 0.0])
        tangent = self._sign * np.cross(self.axis(), u)
        tangent[2] = 0.0
        tangent /= np.linalg.norm(tangent)
        p = anchor + reach * radius * u - standoff * tangent
        p[2] = anchor[2] + 0.01
        return p, phi

    def _act(self) -> np.ndarray:
        sc = self.scene
        rot = top_down_rotation(yaw_of(sc.eef_rot()))
        if self.phase == "above":
            p, _ = self._frame(0.0, 0.07)
            tgt = p + np.array([0.0, 0.0, 0.16])
            if pose_error(sc, tgt, rot)[0] < 0.03 or self.phase_steps > 60:
                self._start("lower")
            return pose_action(sc, tgt, rot, 1.0, 1.0)
        if self.phase == "lower":
            p, _ = self._frame(0.0, 0.06)
            if pose_error(sc, p, rot)[0] < 0.015 or self.phase_steps > 50:
                self._start("sweep")
            return pose_action(sc, p, rot, 0.8, 1.0)
        if self.phase == "sweep":
            p, _ = self._frame(0.35, 0.0, reach=0.75)
            if self.holds() or self.phase_steps > 100:
                self._start("retreat")
            return pose_action(sc, p, rot, 0.6, 1.0)
        tgt = sc.eef_pos().copy()
        tgt[2] = self._retreat_z()
        if abs(sc.eef_pos()[2] - tgt[2]) < 0.03 or self.phase_steps > 25:
            self.done, self.failed = self.holds(), not self.holds()
        return pose_action(sc, tgt, rot, 1.0, 1.0)

    def _retreat_z(self) -> float:
        _, pts = self._geom_boxes()
        return float(pts[..., 2].max()) + 0.08


class KnobSkill(_JointSkill):
    """Turn a knob (a stove's) on or off: pinch its grip from above, turn the wrist about the knob's axis
    until the joint is past LIBERO's threshold, let go."""

    def __init__(self, env: Any, scene: Scene, predicate: tuple[str, str], art: Articulation) -> None:
        super().__init__(env, scene, predicate, art)
        self.turning_on = predicate[0] == "turnon"
        self.target_q = art.open_q if self.turning_on else art.closed_q
        self.timeout = 160
        self._plan()
        self._start("above")

    def _plan(self) -> None:
        _, pts = self._geom_boxes()
        top = float(pts[..., 2].max())
        # The grip is what stands above the dial: geoms whose top reaches within 1.5 cm of the highest.
        grip = pts[pts[..., 2].max(axis=1) > top - 0.015].reshape(-1, 3)
        yaws = np.linspace(-math.pi / 2, math.pi / 2, 36, endpoint=False)
        widths = footprint_widths(grip, yaws)
        centre = np.asarray(self.raw.sim.data.xpos[self._body], dtype=np.float64)
        self.grasp_yaw = closest_equivalent_yaw(
            float(yaws[int(np.argmin(widths))]), yaw_of(self.scene.eef_rot())
        )
        dial_top = float(pts[..., 2].min()) + 0.012
        self.grasp = np.array([centre[0], centre[1], max(top - 0.012, dial_top + 0.017)])
        self._q0 = self.q()

    def _turned_yaw(self) -> float:
        # The wrist turns with the knob: yaw now = grasp yaw + (q - q at grasp) about the knob's axis.
        s = float(np.sign(self.axis()[2]) or 1.0)
        step = float(np.clip(self.target_q - self.q(), -0.6, 0.6))
        return self.grasp_yaw + s * (self.q() - self._q0 + step * 1.4)

    def _act(self) -> np.ndarray:
        sc = self.scene
        if self.phase == "above":
            tgt = self.grasp + np.array([0.0, 0.0, 0.07])
            rot = top_down_rotation(self.grasp_yaw)
            err, rerr = pose_error(sc, tgt, rot)
            if (err < 0.015 and rerr < 0.1) or self.phase_steps > 60:
                self._start("descend")
            return pose_action(sc, tgt, rot, 1.0, -1.0)
        if self.phase == "descend":
            rot = top_down_rotation(self.grasp_yaw)
            if pose_error(sc, self.grasp, rot)[0] < 0.008 or self.phase_steps > 30:
                self._start("grip")
            return pose_action(sc, self.grasp, rot, 0.35, -1.0)
        if self.phase == "grip":
            rot = top_down_rotation(self.grasp_yaw)
            settled = self.phase_steps > 6 and float(np.abs(sc.finger_qvel()).max()) < 0.01
            if settled or self.phase_steps > 20:
                self._q0 = self.q()
                self._start("turn")
            return pose_action(sc, self.grasp, rot, 0.2, 1.0)
        if self.phase == "turn":
            rot = top_down_rotation(self._turned_yaw())
            passed = self.q() >= self.target_q - 0.1 if self.turning_on else self.q() <= self.target_q + 0.002
            if (self.holds() and passed) or self.phase_steps > 50:
                self._start("release")
            return pose_action(sc, self.grasp, rot, 0.3, 1.0)
        if self.phase == "release":
            if sc.finger_gap() > 0.05 or self.phase_steps > 12:
                self._start("retreat")
            return np.concatenate([np.zeros(6), [-1.0]])
        tgt = self.grasp + np.array([0.0, 0.0, 0.1])
        rot = top_down_rotation(yaw_of(sc.eef_rot()))
        if pose_error(sc, tgt, rot)[0] < 0.03 or self.phase_steps > 25:
            self.done, self.failed = self.holds(), not self.holds()
        return pose_action(sc, tgt, rot, 1.0, -1.0)
