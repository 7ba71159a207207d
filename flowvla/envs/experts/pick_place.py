"""A scripted pick-and-place expert for LIBERO's OSC_POSE controller, driven by privileged state.

The expert reads the task's BDDL goal ([`place_goal`][flowvla.envs.experts.predicates.place_goal]) and the
simulator's object poses, plans a top-down grasp and then tracks a sequence of waypoints in closed
loop, one 7-D delta action per call of
[`PickPlaceExpert.act`][flowvla.envs.experts.pick_place.PickPlaceExpert.act]::

    [nudge] -> approach -> descend -> close -> [draw] -> lift -> transport -> lower -> release -> retreat
                   ^__________________ recover (grasp missed or slipped) ______________________|

Grasps (see [`PickPlaceExpert.plan_grasp`][flowvla.envs.experts.pick_place.PickPlaceExpert.plan_grasp]):

- **pinch**: when the object fits between the open fingers along some heading, the closing axis is
  laid along its narrowest horizontal extent (a box is taken across its short side). Among the
  headings that fit, the one whose hand footprint lands on the fewest neighbouring objects, then
  the one needing the least wrist turn, is chosen.
- **rim**: an object wider than the opening in every direction (a bowl) is taken by its wall: the
  grasp point sits on the rim and the fingers close radially, one inside, one outside.

A flat object (under 3 cm) whose every pinch would land the hand on a taller neighbour (the palm on a
milk carton beside a cream cheese box) is first **nudged**: the closed fingertips press on its top and
slide it, closed loop on its position, the shortest way (along a path that meets no neighbour) to where a
pinch is free; then the grasp is planned again.

An object with something overhanging it (a bowl in an open drawer, partly under the cabinet's top: a
collision box of another body whose underside is above the object's top and whose footprint overlaps
the object's) is first **drawn out** sideways, barely lifted, the shortest way that clears every
overhang without running into what stands beside it, and only then lifted
([`PickPlaceExpert.draw_out`][flowvla.envs.experts.pick_place.PickPlaceExpert.draw_out]).

Each waypoint is tracked by a proportional law on the pose error, clipped to the action range (one
action unit is 5 cm and 0.5 rad per step). The object is carried above everything on its way, placed
with its own position (not the hand's) over the goal, lowered until it is close to the support or
the hand stalls on contact, and released. A grasp that closes on nothing or lets the object slip is
retried from a fresh plan.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from flowvla.envs.experts.control import PRESS_DEPTH
from flowvla.envs.experts.geometry import (
    clearing_shift,
    closest_equivalent_yaw,
    footprint_widths,
    rect_overlap_area,
    rotation_error,
    shift_overlap,
    top_down_rotation,
)
from flowvla.envs.experts.predicates import PlaceGoal, goal_holds, place_goals
from flowvla.envs.experts.scene import Scene

__all__ = ["ExpertConfig", "Grasp", "PickPlaceExpert"]

_POS_SCALE = 0.05  # m per action unit (OSC_POSE output_max)
_ROT_SCALE = 0.5  # rad per action unit


@dataclasses.dataclass(frozen=True)
class ExpertConfig:
    """Tuning of [`PickPlaceExpert`][flowvla.envs.experts.pick_place.PickPlaceExpert] (lengths in metres,
    speeds in action units).

    Attributes:
        max_opening: widest object footprint taken in a pinch grasp (the fingers open to ~8 cm).
        fingertip_drop: how far the fingertips reach below the grip site.
        grasp_depth: how far below an object's top the grip site goes for tall objects.
        rim_inset: distance from the outer wall to the grip site in a rim grasp.
        rim_depth: how far below the rim top the grip site goes in a rim grasp.
        hover: height of the approach waypoint above the grasp.
        clearance: gap kept between the carried object and anything it passes over.
        place_gap: height above its support at which the object is let go.
        fast: speed limit in free space.
        slow: speed limit near objects.
        pos_tol: waypoint position tolerance (m).
        rot_tol: waypoint orientation tolerance (rad).
        max_retries: fresh grasp attempts after a miss or slip.
        phase_timeout: steps after which a phase gives up (and retries or moves on).
        draw_margin: how far past an overhang's edge an object is drawn out before it is lifted.
        draw_lift: the most an object is raised while drawn out from under an overhang (it stays
            at least 4 mm below the overhang).
    """

    max_opening: float = 0.072
    fingertip_drop: float = 0.013
    grasp_depth: float = 0.035
    rim_inset: float = 0.012
    rim_depth: float = 0.02
    hover: float = 0.08
    clearance: float = 0.04
    place_gap: float = 0.012
    fast: float = 1.4
    slow: float = 0.6
    pos_tol: float = 0.008
    rot_tol: float = 0.08
    max_retries: int = 3
    phase_timeout: int = 80
    draw_margin: float = 0.015
    draw_lift: float = 0.005


@dataclasses.dataclass(frozen=True)
class Grasp:
    """A planned top-down grasp: grip-site ``position [3]`` (world), closing-axis ``yaw`` (rad), kind."""

    position: np.ndarray
    yaw: float
    kind: str  # "pinch" | "rim"


# Hand footprint in the grip-site frame (x = closing axis), measured on robosuite's Panda hand: the
# fingers are ~2 cm thick and open to ~8 cm; the palm above them spans ~20 cm along the closing axis.
_FINGER_HALF = np.array([0.055, 0.012])
_PALM_HALF = np.array([0.11, 0.035])
_PALM_ABOVE = 0.055  # palm bottom above the grip site
# A pinch whose cost passes _BLOCKED lands the hand on a neighbour (15 cm^2 of overlap: of libero_10 1's
# first 20 layouts, the palm rested on the milk carton in the three above it and in none below it, where
# the hand brushes past); an object under _FLAT (m) tall can be slid, pressed on its top, to where the best
# pinch costs under _FREE (3 cm^2).
_BLOCKED, _FREE, _FLAT = 1.5, 0.3, 0.03


class PickPlaceExpert:
    """Solve a LIBERO task whose goal is a conjunction of ``(In obj region)`` / ``(On obj target)``
    predicates from privileged state, one object after the other in the goal's order.

    Args:
        env: a [`LiberoEnv`][flowvla.envs.libero.LiberoEnv] (physics-only is enough).
        goals: what to do (default: read from the env's BDDL goal; raises
            [`UnsupportedGoalError`][flowvla.envs.experts.predicates.UnsupportedGoalError] for other goals).
        config: tuning, see [`ExpertConfig`][flowvla.envs.experts.pick_place.ExpertConfig].
        slot: ``(index, count)``: this goal's object is number ``index`` of ``count`` placed in the same
            region; each gets its own spot in it (``(0, 1)``: the region's centre).

    Call [`reset`][flowvla.envs.experts.pick_place.PickPlaceExpert.reset] after every ``env.reset`` (a hard
    reset rebuilds the MuJoCo model), then [`act`][flowvla.envs.experts.pick_place.PickPlaceExpert.act] once
    per step; ``finished`` turns true once the object was released and the hand has backed off (the caller
    decides success with ``env.success()``)."""

    def __init__(
        self,
        env: Any,
        goals: PlaceGoal | Sequence[PlaceGoal] | None = None,
        config: ExpertConfig | None = None,
        slot: tuple[int, int] = (0, 1),
    ) -> None:
        self.env = env
        if goals is None:
            goals = place_goals(env)
        self.goals = [goals] if isinstance(goals, PlaceGoal) else list(goals)
        self.goal = self.goals[0]
        self.cfg = config or ExpertConfig()
        self.slot = slot
        self.scene: Scene | None = None
        self.phase = "idle"

    # --------------------------------------------------------------------------------- planning
    def reset(self, scene: Scene | None = None) -> None:
        """Re-read the scene (or take ``scene``, already built for this model) and plan a grasp from the
        current state."""
        self.scene = scene or Scene(self.env)
        self.goal_index = 0
        self.goal = self.goals[0]
        self.retries = 0
        self.steps = 0
        self.finished = False
        self.history: list[str] = []
        self._nudges = 0
        self._start_phase("approach")
        self.grasp = self.plan_grasp()

    def _replan(self) -> None:
        self.grasp = self.plan_grasp()
        self._start_phase("approach")

    def _start_phase(self, phase: str) -> None:
        self.phase = phase
        self.phase_steps = 0
        self.history.append(phase)
        self._z_trace: list[float] = []

    def _obstacles(self) -> list[str]:
        skip = {self.goal.obj}
        return [n for n in self.scene.names if n not in skip]

    def plan_grasp(self) -> Grasp:
        """Choose a grasp of the goal object from its current shape and its neighbours'."""
        sc, cfg = self.scene, self.cfg
        shape = sc.shape(self.goal.obj)
        pts, low, high = shape.points, shape.low, shape.high
        height = high[2] - low[2]
        yaws = np.linspace(-math.pi / 2, math.pi / 2, 36, endpoint=False)
        widths = footprint_widths(pts, yaws)
        current = _yaw_of(sc.eef_rot())
        # Obstacles as (top z, xy points); the goal's own target counts too (a plate under a bowl).
        obstacles = [(sc.shape(n).high[2], sc.shape(n).points[:, :2]) for n in self._obstacles()]
        candidates: list[tuple[float, Grasp]] = []
        self.nudge = None
        if widths.min() <= cfg.max_opening:
            candidates = self._pinch_candidates(pts, widths, yaws, current, obstacles)
            if min(c[0] for c in candidates) > _BLOCKED and height < _FLAT and self._nudges < 2:
                # Every pinch would land the hand on a taller neighbour (the palm on a milk carton beside
                # a cream cheese box): slide the object clear first, pressing on its top.
                self.nudge = self._nudge_shift(pts, widths, yaws, current, obstacles)
        elif height > 0.12 and (handle := self._handle(pts, high[2])) is not None:
            # A tall vessel wider than the opening with a handle (a moka pot): its body wedges between
            # the fully open fingers and would not be let go, so it is taken by the handle, across it.
            hw = footprint_widths(handle, yaws)
            hc = 0.5 * (handle.min(axis=0) + handle.max(axis=0))
            pos = np.array([hc[0], hc[1], float(handle[:, 2].max()) - 0.015])
            for yaw, w in zip(yaws, hw, strict=True):
                if w <= hw.min() + 0.005:
                    candidates.append(
                        (self._grasp_cost(pos, yaw, current, obstacles), Grasp(pos, yaw, "pinch"))
                    )
        else:
            # Rim grasp: fingers close radially across the wall at the rim. The body origin of a
            # round vessel lies on its axis, while the box corners' extent drifts with its pose.
            center = sc.body_pos(self.goal.obj)
            radius = 0.5 * float(np.median(widths))
            z = high[2] - cfg.rim_depth
            for yaw in np.linspace(-math.pi, math.pi, 24, endpoint=False):
                u = np.array([math.cos(yaw), math.sin(yaw)])
                xy = center[:2] + (radius - cfg.rim_inset) * u
                pos = np.array([xy[0], xy[1], z])
                cost = self._grasp_cost(pos, yaw, current, obstacles)
                # Prefer the rim nearest the robot base (negative x): a shorter, less twisted reach.
                cost += 0.02 * (1.0 + math.cos(yaw))
                candidates.append((cost, Grasp(pos, float(yaw), "rim")))
        cost, best = min(candidates, key=lambda c: c[0])
        yaw = closest_equivalent_yaw(best.yaw, current)
        self._planned_at = sc.body_pos(self.goal.obj)
        return Grasp(best.position, yaw, best.kind)

    def _pinch_candidates(
        self,
        pts: np.ndarray,
        widths: np.ndarray,
        yaws: np.ndarray,
        current: float,
        obstacles: list[tuple[float, np.ndarray]],
    ) -> list[tuple[float, Grasp]]:
        """Pinch grasps of an object with corners ``pts [N, 3]`` across its narrowest extents, with costs."""
        cfg = self.cfg
        low, high = pts.min(axis=0), pts.max(axis=0)
        center = 0.5 * (low + high)
        z = max(high[2] - cfg.grasp_depth, low[2] + 0.5 * (high[2] - low[2]))
        z = max(z, low[2] + cfg.fingertip_drop + 0.002)
        pos = np.array([center[0], center[1], z])
        out = []
        for yaw, w in zip(yaws, widths, strict=True):
            if w <= min(widths.min() + 0.01, cfg.max_opening):
                out.append(
                    (self._grasp_cost(pos, float(yaw), current, obstacles), Grasp(pos, float(yaw), "pinch"))
                )
        return out

    def _nudge_shift(
        self,
        pts: np.ndarray,
        widths: np.ndarray,
        yaws: np.ndarray,
        current: float,
        obstacles: list[tuple[float, np.ndarray]],
        reach: float = 0.12,
    ) -> np.ndarray | None:
        """``[2]`` the shortest horizontal shift (1 cm grid, at most ``reach``) after which some pinch grasp
        of the object lands on no neighbour, along a straight path (plus 1 cm) that meets no neighbour
        standing above the table; ``None`` if there is none."""
        bottom = float(pts[:, 2].min())
        xy = pts[:, :2]
        around = [nb for top, nb in obstacles if top > bottom + 0.005]
        grid = np.arange(-reach, reach + 1e-9, 0.01)
        shifts = sorted(
            (np.array([dx, dy]) for dx in grid for dy in grid if 0 < math.hypot(dx, dy) <= reach),
            key=lambda d: float(np.linalg.norm(d)),
        )
        for d in shifts:
            length = float(np.linalg.norm(d))
            u = d / length
            spans = [shift_overlap(xy, nb, u) for nb in around]
            if any(sp is not None and sp[0] < length + 0.01 and sp[1] > 0.0 for sp in spans):
                continue
            moved = pts + np.array([d[0], d[1], 0.0])
            if min(c[0] for c in self._pinch_candidates(moved, widths, yaws, current, obstacles)) < _FREE:
                return d
        return None

    def _handle(self, pts: np.ndarray, top: float) -> np.ndarray | None:
        """Corner points ``[8, 3]`` of the object's handle: of its collision geoms narrower than 3 cm that
        reach within 2 cm of its top, the one farthest out from its body origin (at least 5 cm)."""
        origin = self.scene.body_pos(self.goal.obj)[:2]
        best, reach = None, 0.05
        for box in pts.reshape(-1, 8, 3):
            centre = box.mean(axis=0)
            far = float(np.linalg.norm(centre[:2] - origin))
            narrow = footprint_widths(box, np.linspace(0.0, math.pi, 12, endpoint=False)).min() < 0.03
            if narrow and box[:, 2].max() > top - 0.02 and far > reach:
                best, reach = box, far
        return best

    def _grasp_cost(
        self, pos: np.ndarray, yaw: float, current: float, obstacles: list[tuple[float, np.ndarray]]
    ) -> float:
        overlap = 0.0
        finger_bottom = pos[2] - self.cfg.fingertip_drop
        palm_bottom = pos[2] + _PALM_ABOVE
        for top, xy in obstacles:
            # Only neighbours that reach up to the fingers / palm can be hit by them.
            if top > finger_bottom:
                overlap += rect_overlap_area(pos[:2], yaw, _FINGER_HALF, xy)
            if top > palm_bottom:
                overlap += rect_overlap_area(pos[:2], yaw, _PALM_HALF, xy)
        turn = abs(closest_equivalent_yaw(yaw, current) - current)
        return overlap * 1e3 + 0.01 * turn

    def _target(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Destination ``xy [2]`` for the object's body origin, support height, and whether it is a
        region the object must end up inside."""
        g, sc = self.goal, self.scene
        if g.target_kind == "object":
            shape = sc.shape(g.target)
            return sc.body_pos(g.target)[:2], np.array(shape.high[2]), 0.0
        site = sc.site_pos(g.target)
        half = sc.site_half_size(g.target)
        xy = site[:2].copy()
        index, count = self.slot
        if count > 1:
            # Several goal objects share this region (both moka pots on the burner): object ``index``
            # of ``count`` goes to its own spot along the region's longer side, so they do not collide.
            axis = np.eye(2)[int(np.argmax(half[:2]))]
            spacing = min(1.8 * float(half[:2].max()) / count, 0.1)
            if g.relation == "on":
                # Standing side by side on a surface (two moka pots on one burner), the objects must not
                # touch: at least their own width apart, as far as the region allows (origins 2 cm in).
                width = float(footprint_widths(sc.shape(g.obj).points, np.linspace(0.0, math.pi, 36)).min())
                room = 2.0 * (float(half[:2].max()) - 0.02) / (count - 1)
                spacing = max(spacing, min(width + 0.012, room))
            xy += (index - (count - 1) / 2) * spacing * axis
        if g.relation == "in":
            return xy, np.array(site[2] - half[2]), 1.0
        return xy, np.array(site[2] + half[2]), 0.0

    def _carry_height(self, obj_below: float, dest_xy: np.ndarray) -> float:
        """Grip-site height that carries the object ``obj_below`` m under the hand over everything in
        the corridor from the object to ``dest_xy``."""
        sc = self.scene
        start = sc.body_pos(self.goal.obj)[:2]
        tops = [sc.shape(self.goal.obj).low[2]]
        seg = dest_xy - start
        length = float(np.linalg.norm(seg)) + 1e-9
        yaw = math.atan2(seg[1], seg[0])
        mid = 0.5 * (start + dest_xy)
        for n in sc.names:
            if n == self.goal.obj:
                continue
            s = sc.shape(n)
            if rect_overlap_area(mid, yaw, np.array([length / 2 + 0.06, 0.08]), s.points[:, :2]) > 0:
                tops.append(s.high[2])
        return max(tops) + self.cfg.clearance + obj_below

    def _path_boxes(
        self, start: np.ndarray, dest_xy: np.ndarray, margin: float = 0.02
    ) -> list[tuple[float, float]]:
        """The collision boxes the carried object would meet on the straight way from ``start`` (its
        centre's xy now) to ``dest_xy``, as ``(travel, top)``: how far (m) the object's centre can go
        before its footprint (plus ``margin``) reaches the box, and the box's top. Every box across
        the path counts, the destination's own walls too; a box the object stands on or beside has
        ``travel = 0``."""
        sc = self.scene
        seg = dest_xy - start
        length = float(np.linalg.norm(seg))
        if length < 1e-6:
            return []
        u = seg / length
        across = np.array([-u[1], u[0]])
        own = sc.shape(self.goal.obj).points[:, :2] - start
        ahead, half = float((own @ u).max()) + margin, float(np.abs(own @ across).max()) + margin
        out = []
        for n in sc.names:
            if n == self.goal.obj:
                continue
            for box in sc.boxes(n):
                rel = box[:, :2] - start
                along, side = rel @ u, rel @ across
                beside = side.max() < -half or side.min() > half
                if beside or along.max() < -ahead or along.min() > length + ahead:
                    continue
                out.append((max(0.0, float(along.min()) - ahead), float(box[:, 2].max())))
        return out

    def _free_travel(self, bottom: float, clearance: float = 0.02) -> float:
        """How far (m) the carried object, its bottom at ``bottom``, can go along its way to the
        destination before it would pass less than ``clearance`` above a box (``inf``: nothing left)."""
        blocked = [travel for travel, top in self._path if top + clearance > bottom]
        return min(blocked, default=math.inf)

    def _overhangs(self) -> tuple[list[np.ndarray], list[np.ndarray], float]:
        """Footprints ``[8, 2]`` of the collision boxes over the goal object (underside above its top, less
        5 mm; footprint overlapping its own: lifted straight up it would hit them) and of those beside it
        (reaching above its bottom by 1 cm, below its top); and the height of the lowest overhang above
        its top (``inf`` without one)."""
        sc = self.scene
        shape = sc.shape(self.goal.obj)
        obj_xy, top, bottom = shape.points[:, :2], float(shape.high[2]), float(shape.low[2])
        over, beside, gap = [], [], math.inf
        for n in sc.names:
            if n == self.goal.obj:
                continue
            for box in sc.boxes(n):
                lo, hi = float(box[:, 2].min()), float(box[:, 2].max())
                if lo > top - 0.005:
                    if clearing_shift(obj_xy, box[:, :2], np.array([1.0, 0.0])) > 0.0:
                        over.append(box[:, :2])
                        gap = min(gap, lo - top)
                elif hi > bottom + 0.01:
                    beside.append(box[:, :2])
        return over, beside, gap

    def draw_out(self) -> np.ndarray | None:
        """``[2]`` the horizontal shift that draws the goal object out from under everything overhanging
        it, or ``None`` when nothing does.

        Of 36 headings, the shift is the shortest that takes the object's footprint ``draw_margin`` past
        every overhang's, among those that meet no box beside the object (a wall of the drawer it stands
        in) on the way; if every heading meets one, the shortest overall (see
        [`clearing_shift`][flowvla.envs.experts.geometry.clearing_shift])."""
        over, beside, _ = self._overhangs()
        return self._draw_shift(over, beside)

    def _draw_shift(self, over: list[np.ndarray], beside: list[np.ndarray]) -> np.ndarray | None:
        """[`draw_out`][flowvla.envs.experts.pick_place.PickPlaceExpert.draw_out] from the footprints of
        the overhangs and of the boxes beside the object."""
        if not over:
            return None
        obj_xy = self.scene.shape(self.goal.obj).points[:, :2]
        best: tuple[float, np.ndarray] | None = None
        for yaw in np.linspace(-math.pi, math.pi, 36, endpoint=False):
            u = np.array([math.cos(yaw), math.sin(yaw)])
            need = max(clearing_shift(obj_xy, box, u) for box in over) + self.cfg.draw_margin
            spans = [shift_overlap(obj_xy, box, u) for box in beside]
            # A box ahead (met only after some shift) caps how far the object can go this way.
            room = min([sp[0] for sp in spans if sp is not None and sp[0] >= 0.0], default=math.inf)
            cost = need + (1.0 if need > room else 0.0)
            if best is None or cost < best[0]:
                best = (cost, need * u)
        return None if best is None else best[1]

    # ---------------------------------------------------------------------------------- control
    def _move(self, target: np.ndarray, yaw: float, speed: float, gripper: float) -> np.ndarray:
        sc = self.scene
        dp = (target - sc.eef_pos()) / _POS_SCALE
        norm = float(np.linalg.norm(dp))
        if norm > speed:
            dp *= speed / norm
        # The controller's goal is the current pose plus the delta and it lags it by several steps,
        # so a delta beyond the distance left still gives a smooth arrival; each axis saturates at 1.
        dp = np.clip(dp, -1.0, 1.0)
        dr = rotation_error(sc.eef_rot(), top_down_rotation(yaw)) / _ROT_SCALE
        dr = np.clip(dr, -1.0, 1.0)
        return np.concatenate([dp, dr, [gripper]])

    def _at(self, target: np.ndarray, yaw: float, tol: float | None = None) -> bool:
        sc = self.scene
        err = float(np.linalg.norm(target - sc.eef_pos()))
        rot = float(np.linalg.norm(rotation_error(sc.eef_rot(), top_down_rotation(yaw))))
        return err < (tol or self.cfg.pos_tol) and rot < self.cfg.rot_tol

    def _stalled(self, window: int = 4, eps: float = 0.0015) -> bool:
        """The hand has stopped descending (it rests on something)."""
        z = self._z_trace
        return len(z) > window and z[-window - 1] - z[-1] < eps

    def _holding(self) -> bool:
        # Closed on nothing, the fingers meet (gap ~ 0); on an object they stop at its width, which
        # for a vessel's wall is only a few millimetres.
        return self.scene.finger_gap() > (0.003 if self.grasp.kind == "rim" else 0.006)

    def _recover(self) -> None:
        self.retries += 1
        self._start_phase("recover" if self.retries <= self.cfg.max_retries else "failed")

    def act(self) -> np.ndarray:
        """The next ``[7]`` action (OSC_POSE deltas in ``[-1, 1]``, gripper ``-1`` open / ``+1`` close)."""
        if self.scene is None:
            raise RuntimeError("call reset() after env.reset() before act()")
        self.steps += 1
        self.phase_steps += 1
        self._z_trace.append(float(self.scene.eef_pos()[2]))
        a = self._act()
        return np.clip(a, -1.0, 1.0)

    def _act(self) -> np.ndarray:
        cfg, sc, g = self.cfg, self.scene, self.grasp
        timed_out = self.phase_steps > cfg.phase_timeout
        open_, close = -1.0, 1.0
        hover = g.position + np.array([0.0, 0.0, cfg.hover])
        if self.phase == "approach" and self.nudge is not None:
            self._start_nudge()
        if self.phase.startswith("nudge"):
            return self._nudge_step()
        if self.phase == "approach" and (
            float(np.linalg.norm(sc.body_pos(self.goal.obj) - self._planned_at)) > 0.02
        ):
            # The object moved before it was grasped (nudged, or still settling): plan again.
            self._replan()
            g = self.grasp
            hover = g.position + np.array([0.0, 0.0, cfg.hover])
        if self.phase == "approach":
            hover[2] = max(hover[2], sc.shape(self.goal.obj).high[2] + 0.05)
            if float(np.linalg.norm(hover[:2] - sc.eef_pos()[:2])) > 0.05:
                # Far from the object, keep the height the hand has: the path down to the hover point
                # may cross something tall (an opened drawer's front).
                hover[2] = max(hover[2], min(float(sc.eef_pos()[2]), hover[2] + 0.15))
            if self._at(hover, g.yaw, tol=0.015) or timed_out:
                self._start_phase("descend")
            return self._move(hover, g.yaw, cfg.fast, open_)
        if self.phase == "descend":
            near = float(np.linalg.norm(g.position - sc.eef_pos())) < 0.03
            if self._at(g.position, g.yaw) or (near and self._stalled()) or timed_out:
                self._start_phase("close")
            return self._move(g.position, g.yaw, cfg.slow, open_)
        if self.phase == "close":
            settled = self.phase_steps > 6 and float(np.abs(sc.finger_qvel()).max()) < 0.01
            if settled or self.phase_steps > 25:
                if not self._holding():
                    self._recover()
                else:
                    self._grasp_z = float(sc.eef_pos()[2])
                    self._obj_z0 = float(sc.body_pos(self.goal.obj)[2])
                    self._obj_below = self._grasp_z - float(sc.shape(self.goal.obj).low[2])
                    dest_xy, _, _ = self._target()
                    self._carry_z = self._carry_height(self._obj_below, dest_xy)
                    over, beside, gap = self._overhangs()
                    shift = self._draw_shift(over, beside)
                    if shift is None:
                        self._start_lift()
                    else:
                        rise = float(np.clip(gap - 0.004, 0.0, cfg.draw_lift))
                        start = sc.eef_pos()
                        self._draw_from = sc.body_pos(self.goal.obj)[:2]
                        self._draw = shift
                        self._draw_target = np.array([*(start[:2] + shift), start[2] + rise])
                        self._xy_trace: list[np.ndarray] = []
                        self._start_phase("draw")
            return self._move(g.position, g.yaw, cfg.slow, close)
        if self.phase == "draw":
            return self._draw_step(close)
        if self.phase in ("lift", "transport", "lower"):
            return self._carry(close)
        if self.phase == "release":
            if sc.finger_gap() > 0.06 or self.phase_steps > 15:
                self._retreat_z = float(sc.eef_pos()[2]) + 0.08
                self._start_phase("retreat")
            return np.concatenate([np.zeros(6), [open_]])
        if self.phase == "retreat":
            target = sc.eef_pos().copy()
            target[2] = self._retreat_z
            if abs(sc.eef_pos()[2] - self._retreat_z) < 0.02 or self.phase_steps > 20:
                if goal_holds(self.env, self.goal):
                    if self.goal_index + 1 < len(self.goals):
                        # This conjunct holds: start on the next object from a fresh plan.
                        self.goal_index += 1
                        self.goal = self.goals[self.goal_index]
                        self.grasp = self.plan_grasp()
                        self._start_phase("approach")
                    else:
                        self.finished = True
                elif self.phase_steps > 8:
                    # Released but the goal does not hold (it bounced, or slid off): try again.
                    self._recover()
            return self._move(target, _yaw_of(sc.eef_rot()), cfg.fast, open_)
        if self.phase == "recover":
            # Open, back off upwards, then plan afresh from wherever the object is now.
            target = sc.eef_pos().copy()
            target[2] = max(target[2], sc.shape(self.goal.obj).high[2] + cfg.hover)
            if (sc.finger_gap() > 0.06 and abs(sc.eef_pos()[2] - target[2]) < 0.02) or self.phase_steps > 25:
                self.grasp = self.plan_grasp()
                self._start_phase("approach")
            return self._move(target, _yaw_of(sc.eef_rot()), cfg.fast, open_)
        # "failed": hold still with the gripper open; the caller's step limit ends the episode.
        self.finished = True
        return np.concatenate([np.zeros(6), [open_]])

    def _start_nudge(self) -> None:
        sc = self.scene
        obj = sc.body_pos(self.goal.obj)
        self._nudge_dest = obj[:2] + self.nudge
        self._nudges += 1
        self.nudge = None
        # Pressing needs no particular heading: the one whose hand lands on the fewest neighbours.
        press = np.array([obj[0], obj[1], float(sc.shape(self.goal.obj).high[2]) + self.cfg.fingertip_drop])
        obstacles = [(sc.shape(n).high[2], sc.shape(n).points[:, :2]) for n in self._obstacles()]
        current = _yaw_of(sc.eef_rot())
        yaws = np.linspace(-math.pi / 2, math.pi / 2, 36, endpoint=False)
        costs = [self._grasp_cost(press, float(y), current, obstacles) for y in yaws]
        self._nudge_yaw = closest_equivalent_yaw(float(yaws[int(np.argmin(costs))]), current)
        self._start_phase("nudge_above")

    def _nudge_step(self) -> np.ndarray:
        """Slide the object to ``_nudge_dest`` with the closed fingertips pressed on its top (the finger pads
        grip it harder than the table holds it), closed loop on its position; then plan the grasp again."""
        cfg, sc = self.cfg, self.scene
        obj = sc.body_pos(self.goal.obj)
        top = float(sc.shape(self.goal.obj).high[2])
        press = np.array([obj[0], obj[1], top + cfg.fingertip_drop])
        yaw, closed = self._nudge_yaw, 1.0
        if self.phase == "nudge_above":
            tgt = press + np.array([0.0, 0.0, 0.06])
            if float(np.linalg.norm(tgt[:2] - sc.eef_pos()[:2])) > 0.05:
                # Far from it, keep the hand's height: the way there may cross something tall (the basket
                # the previous object went into).
                tgt[2] = max(tgt[2], min(float(sc.eef_pos()[2]), tgt[2] + 0.15))
            if self._at(tgt, yaw, tol=0.015) or self.phase_steps > 40:
                self._start_phase("nudge_press")
            return self._move(tgt, yaw, cfg.fast, closed)
        if self.phase == "nudge_press":
            # Down until the fingertips rest on the top, then hold the hand below that height: the
            # controller's spring is the press.
            z = self._z_trace
            if (len(z) > 5 and z[-5] - z[-1] < 0.001) or self.phase_steps > 30:
                self._drag_z = float(sc.eef_pos()[2]) - PRESS_DEPTH
                self._start_phase("nudge_drag")
            return self._move(press - np.array([0.0, 0.0, 0.03]), yaw, 0.3, closed)
        if self.phase == "nudge_drag":
            left = self._nudge_dest - obj[:2]
            if float(np.linalg.norm(left)) < 0.01 or self.phase_steps > 60:
                self._start_phase("nudge_rise")
            tgt = np.array([*(sc.eef_pos()[:2] + left), self._drag_z])
            return self._move(tgt, yaw, 0.7, closed)
        tgt = sc.eef_pos().copy()
        tgt[2] = top + 0.08
        if abs(float(sc.eef_pos()[2]) - tgt[2]) < 0.02 or self.phase_steps > 20:
            self.grasp = self.plan_grasp()
            self._start_phase("approach")
        return self._move(tgt, yaw, cfg.fast, -1.0)

    def _start_lift(self) -> None:
        """Lift the held object from where it is now, with the boxes on its way to the destination."""
        dest_xy, _, _ = self._target()
        self._carry_from = self.scene.body_pos(self.goal.obj)[:2]
        self._path = self._path_boxes(self._carry_from, dest_xy)
        self._start_phase("lift")

    def _draw_step(self, close: float) -> np.ndarray:
        """Draw the held object out from under its overhangs, barely lifted; lift once it has gone the
        planned shift (or the hand stopped short: it met something)."""
        cfg, sc, g = self.cfg, self.scene, self.grasp
        if not self._holding():
            self._recover()
            return self._move(sc.eef_pos(), g.yaw, cfg.slow, -1.0)
        length = float(np.linalg.norm(self._draw))
        moved = float((sc.body_pos(self.goal.obj)[:2] - self._draw_from) @ self._draw) / length
        self._xy_trace.append(sc.eef_pos()[:2])
        stopped = (
            self.phase_steps > 8 and float(np.linalg.norm(self._xy_trace[-1] - self._xy_trace[-5])) < 0.002
        )
        if moved >= length - 0.003 or stopped or self.phase_steps > 40:
            self._start_lift()
        return self._move(self._draw_target, g.yaw, cfg.slow, close)

    def _carry(self, close: float) -> np.ndarray:
        cfg, sc, g = self.cfg, self.scene, self.grasp
        eef = sc.eef_pos()
        obj = sc.body_pos(self.goal.obj)
        lifted = eef[2] - self._grasp_z
        # Slip check: once the hand is clearly up, the object must have come with it. While lowering
        # onto the goal a squeezed grip may creep; letting go there is what comes next anyway.
        slipped = not self._holding() or (lifted > 0.04 and obj[2] - self._obj_z0 < 0.5 * lifted)
        if slipped and self.phase == "lower":
            self._start_phase("release")
            return self._move(eef, g.yaw, cfg.slow, -1.0)
        if slipped:
            self._recover()
            return self._move(eef, g.yaw, cfg.slow, -1.0)
        dest_xy, support_z, inside = self._target()
        offset = eef[:2] - obj[:2]  # where the object hangs relative to the hand, measured live
        timed_out = self.phase_steps > cfg.phase_timeout
        # An object that slid down in the grip hangs lower than at the grasp: carry the hand higher by
        # as much, so the object's bottom still clears everything on the way.
        bottom = float(sc.shape(self.goal.obj).low[2])
        sag = max(0.0, (eef[2] - bottom) - self._obj_below)
        carry_z = self._carry_z + sag
        if self.phase == "lift":
            target = np.array([eef[0], eef[1], carry_z])
            # Once free of its support, the object rises and travels together as far as nothing on the
            # way is in reach below it (the rest of the rise happens on the way).
            free = lifted > 0.03 and self._free_travel(bottom) > 0.03
            if eef[2] > carry_z - 0.03 or free or timed_out:
                self._start_phase("transport")
            # Break the object free gently: a jerk right after closing pulls a thin rim out of the grip.
            fast = cfg.fast if g.kind == "pinch" else 0.5 * (cfg.slow + cfg.fast)
            return self._move(target, g.yaw, cfg.slow if lifted < 0.03 else fast, close)
        xy = dest_xy + offset
        if self.phase == "transport":
            start = self._carry_from
            way = dest_xy - start
            length = float(np.linalg.norm(way))
            room = self._free_travel(bottom)
            if length > 1e-6 and room < length:
                # Not yet high enough to pass everything ahead: go only as far as is clear.
                xy = start + max(room, float((obj[:2] - start) @ way) / length) * way / length + offset
            target = np.array([xy[0], xy[1], carry_z])
            if float(np.linalg.norm(obj[:2] - dest_xy)) < 0.008 or timed_out:
                self._start_phase("lower")
            speed = cfg.fast if float(np.linalg.norm(target - eef)) > 0.05 else cfg.slow
            return self._move(target, g.yaw, speed, close)
        # lower: bring the object's bottom to place_gap above its support (or until contact).
        bottom = eef[2] - self._obj_below
        release_z = float(support_z) + (cfg.place_gap if not inside else 0.02)
        shape = sc.shape(self.goal.obj)
        if not inside and self.goal.target_kind == "site" and shape.high[2] - shape.low[2] > 0.12:
            # A tall object let go above a region's surface (a bottle over the rack's bars) drops into
            # it and topples: it is set down until the hand stalls on the contact.
            release_z = float(support_z) - 0.015
        target = np.array([xy[0], xy[1], release_z + self._obj_below])
        speed = cfg.slow if bottom - release_z < 0.06 else cfg.fast
        if bottom <= release_z + 0.004 or (self.phase_steps > 5 and self._stalled()) or timed_out:
            self._start_phase("release")
        return self._move(target, g.yaw, speed, close)


def _yaw_of(rot: np.ndarray) -> float:
    """Heading of the closing (x) axis of an end-effector rotation in the world xy plane."""
    return math.atan2(rot[1, 0], rot[0, 0])
