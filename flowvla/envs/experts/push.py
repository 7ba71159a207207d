"""Non-prehensile sliding: a flat object too wide to pinch (a plate) is moved along the table to a region
on the same surface without being lifted.

The closed fingertips press down on the object's surface near its middle and drag it by friction: the
finger pads (friction 2 in robosuite's Panda) grip a light plate harder than the table (0.6 to 1) holds
it, so it follows the hand while pressed. Pressing from above needs no free side to approach from, so
a cabinet or stove next to the object never blocks the hand, and the object's height cannot rise.

    above -> press -> drag -> lift
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from flowvla.envs.experts.control import PRESS_DEPTH, pose_action, pose_error, yaw_of
from flowvla.envs.experts.geometry import footprint_widths, top_down_rotation
from flowvla.envs.experts.predicates import PlaceGoal
from flowvla.envs.experts.scene import Scene
from flowvla.envs.experts.skill import Skill

__all__ = ["ClearSkill", "SlideSkill", "clear_spot", "slides"]

_FINGERTIP_DROP = 0.013  # fingertips below the grip site (as in the pick-and-place expert)


def slides(scene: Scene, goal: PlaceGoal, max_opening: float = 0.072) -> bool:
    """Whether ``goal`` is a slide: ``On`` a region of the surface the object rests on, for an object that
    is flat (under 3 cm tall) and wider than the open fingers in every direction."""
    if goal.relation != "on" or goal.target_kind != "site":
        return False
    shape = scene.shape(goal.obj)
    yaws = np.linspace(-np.pi / 2, np.pi / 2, 36, endpoint=False)
    flat = float(shape.high[2] - shape.low[2]) < 0.03
    wide = float(footprint_widths(shape.points, yaws).min()) > max_opening
    site_top = float(scene.site_pos(goal.target)[2] + scene.site_half_size(goal.target)[2])
    same_surface = abs(float(shape.low[2]) - site_top) < 0.08
    return flat and wide and same_surface


class SlideSkill(Skill):
    """Slide ``goal.obj`` onto the region ``goal.target`` by pressing on it from above and dragging;
    done once LIBERO's predicate holds and the hand is up."""

    def __init__(self, env: Any, scene: Scene, goal: PlaceGoal) -> None:
        super().__init__(env, scene)
        self.goal = goal
        self.obj = goal.obj
        self.timeout = 170
        self.yaw = yaw_of(scene.eef_rot())
        self._z: list[float] = []
        self._start("above")

    def holds(self) -> bool:
        return bool(self.raw._eval_predicate([self.goal.predicate.name, *self.goal.predicate.args]))

    def _surface(self) -> float:
        # The plate's floor: the bottom of its collision shape plus its thickness (the rim stands higher).
        return float(self.scene.shape(self.obj).low[2]) + 0.006

    def _press_point(self) -> np.ndarray:
        obj = self.scene.body_pos(self.obj)
        return np.array([obj[0], obj[1], self._surface() + _FINGERTIP_DROP])

    def _destination(self) -> np.ndarray:
        """``[2]`` where the object's origin is dragged to."""
        return self.scene.site_pos(self.goal.target)[:2]

    def _via_point(self) -> np.ndarray | None:
        """Where the object is slid first: 8 cm out from the region on the side away from the nearest
        fixture (a stove beside its front region), so the last leg moves away from nothing it could jam
        against and pushes what lies in the region away from the fixture. ``None`` without fixtures."""
        sc = self.scene
        site = sc.site_pos(self.goal.target)[:2]
        fixtures = [n for n in sc.names if n in getattr(self.raw, "fixtures_dict", {}) and n != self.goal.obj]
        if not fixtures:
            return None
        centres = [sc.shape(n).center[:2] for n in fixtures]
        nearest = min(centres, key=lambda c: float(np.linalg.norm(c - site)))
        away = site - nearest
        norm = float(np.linalg.norm(away))
        return None if norm < 1e-6 else site + 0.08 * away / norm

    def _act(self) -> np.ndarray:
        sc = self.scene
        rot = top_down_rotation(self.yaw)
        closed = 1.0
        if self.phase == "above":
            tgt = self._press_point() + np.array([0.0, 0.0, 0.06])
            err, rerr = pose_error(sc, tgt, rot)
            if (err < 0.015 and rerr < 0.1) or self.phase_steps > 60:
                self._start("press")
            return pose_action(sc, tgt, rot, 1.4, closed)
        if self.phase == "press":
            # Down until the fingertips rest on the surface (the hand stops descending), then hold the
            # hand a little below that height: the controller's spring is the press.
            tgt = self._press_point() - np.array([0.0, 0.0, 0.03])
            z = float(sc.eef_pos()[2])
            self._z.append(z)
            rested = len(self._z) > 5 and self._z[-5] - z < 0.001
            if rested or self.phase_steps > 30:
                self._offset = sc.eef_pos()[:2] - sc.body_pos(self.obj)[:2]
                self._drag_z = z - PRESS_DEPTH
                self._via = self._via_point()
                self._start("drag")
            return pose_action(sc, tgt, rot, 0.3, closed)
        if self.phase == "drag":
            site = self._destination()
            obj = sc.body_pos(self.obj)[:2]
            if self._via is not None:
                if float(np.linalg.norm(obj - self._via)) < 0.03 or self.phase_steps > 50:
                    self._via = None
                else:
                    site = self._via
            # Closed loop on the object, not the hand: where the fingers slip on it, the hand goes on.
            tgt = np.array([*(sc.eef_pos()[:2] + site - obj), self._drag_z])
            if (float(np.linalg.norm(obj - site)) < 0.01 and self.holds()) or self.phase_steps > 90:
                self._start("lift")
            return pose_action(sc, tgt, rot, 0.7, closed)
        tgt = sc.eef_pos().copy()
        tgt[2] = self._surface() + 0.08
        if sc.eef_pos()[2] > tgt[2] - 0.02 or self.phase_steps > 20:
            if self.holds():
                self.done = True
            else:
                self.failed = True
        return pose_action(sc, tgt, rot, 1.0, closed)


class ClearSkill(Skill):
    """Push ``obj`` (a bowl) over the table to the spot ``spot [2]``, out of the way of a drawer about to
    open over it: the closed fingertips go down inside it, just above its floor, and move towards the
    spot, pushing its wall from inside low down (so it slides rather than tips), closed loop on its
    position; done once its origin is within ``tol`` of the spot and the hand is up.

    Args:
        env: the [`LiberoEnv`][flowvla.envs.libero.LiberoEnv].
        scene: live readings of ``env``.
        obj: the object to move.
        spot: ``[2]`` destination of its origin (world ``xy``), e.g. from
            [`clear_spot`][flowvla.envs.experts.push.clear_spot].
        tol: how close to the spot counts as moved (m).
    """

    def __init__(self, env: Any, scene: Scene, obj: str, spot: np.ndarray, tol: float = 0.012) -> None:
        super().__init__(env, scene)
        self.obj = obj
        self.spot = np.asarray(spot, dtype=np.float64)[:2]
        self.tol = tol
        self.timeout = 90
        self.yaw = yaw_of(scene.eef_rot())
        self._start("above")

    def holds(self) -> bool:
        return float(np.linalg.norm(self.scene.body_pos(self.obj)[:2] - self.spot)) < self.tol

    def _act(self) -> np.ndarray:
        sc = self.scene
        rot = top_down_rotation(self.yaw)
        shape = sc.shape(self.obj)
        obj = sc.body_pos(self.obj)
        low = np.array([obj[0], obj[1], float(shape.low[2]) + 0.02 + _FINGERTIP_DROP])
        if self.phase == "above":
            tgt = low + np.array([0.0, 0.0, float(shape.high[2] - shape.low[2]) + 0.04])
            if pose_error(sc, tgt, rot)[0] < 0.02 or self.phase_steps > 40:
                self._start("descend")
            return pose_action(sc, tgt, rot, 1.4, 1.0)
        if self.phase == "descend":
            if pose_error(sc, low, rot)[0] < 0.01 or self.phase_steps > 25:
                self._start("push")
            return pose_action(sc, low, rot, 1.0, 1.0)
        if self.phase == "push":
            tgt = sc.eef_pos() + np.array([*(self.spot - obj[:2]), 0.0])
            tgt[2] = low[2]
            # The fingertips slipped out over the wall (the bowl tipped, or caught): pushing on would only
            # carry the hand away from it; rise, and let the planner judge whether it is clear enough.
            radius = 0.5 * float(np.min(shape.high[:2] - shape.low[:2]))
            lost = float(np.linalg.norm(sc.eef_pos()[:2] - obj[:2])) > radius
            if self.holds() or self.phase_steps > 40 or (self.phase_steps > 5 and lost):
                self._start("rise")
            return pose_action(sc, tgt, rot, 0.8, 1.0)
        tgt = np.array([*sc.eef_pos()[:2], float(shape.high[2]) + 0.06])
        if sc.eef_pos()[2] > tgt[2] - 0.02 or self.phase_steps > 20:
            self.done, self.failed = self.holds(), not self.holds()
        return pose_action(sc, tgt, rot, 1.0, 1.0)


def clear_spot(
    scene: Scene,
    obj: str,
    keep_out: tuple[np.ndarray, np.ndarray],
    margin: float = 0.05,
    gap: float = 0.015,
    reach: float = 0.2,
) -> np.ndarray | None:
    """The nearest table spot ``[2]`` for ``obj``'s origin at least ``margin`` m outside the box
    ``keep_out = (lo [2], hi [2])`` (the space a drawer sweeps as it opens: a hand reaching down to the
    object's near side, palm along the box's edge, then stays clear of it) with its footprint ``gap`` m
    from every other object's; ``None`` if no spot within ``reach`` m qualifies."""
    shape = scene.shape(obj)
    origin = scene.body_pos(obj)[:2]
    lo_o, hi_o = shape.low[:2] - origin, shape.high[:2] - origin
    k_lo, k_hi = np.asarray(keep_out[0]) - margin, np.asarray(keep_out[1]) + margin
    radius = 0.5 * float(np.max(hi_o - lo_o))
    # Other objects as discs (centre, radius) where they are small, boxes where they are large (a cabinet).
    discs, boxes = [], []
    for n in scene.names:
        if n == obj:
            continue
        o = scene.shape(n)
        if o.high[2] <= shape.low[2] + 0.005:  # the table, not something standing on it
            continue
        if float(np.max(o.high[:2] - o.low[:2])) < 0.15:
            discs.append((o.center[:2], 0.5 * float(np.max(o.high[:2] - o.low[:2])) + radius + gap))
        else:
            boxes.append((o.low[:2] - gap, o.high[:2] + gap))
    best, best_d = None, math.inf
    for dx in np.arange(-reach, reach + 1e-9, 0.01):
        for dy in np.arange(-reach, reach + 1e-9, 0.01):
            d = math.hypot(dx, dy)
            if d > reach or d >= best_d:
                continue
            p = origin + np.array([dx, dy])
            if np.all(p > k_lo) and np.all(p < k_hi):
                continue
            lo, hi = p + lo_o, p + hi_o
            if any(np.all(hi > a) and np.all(lo < b) for a, b in boxes):
                continue
            if any(float(np.linalg.norm(p - c)) < r for c, r in discs):
                continue
            best, best_d = p, d
    return best
