"""Grasp maths and BDDL goal reading of the scripted experts (no simulator needed)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowvla.envs.experts.geometry import (
    clearing_shift,
    closest_equivalent_yaw,
    footprint_widths,
    rect_overlap_area,
    rotation_error,
    shift_overlap,
    top_down_rotation,
    wrap_half_turn,
)
from flowvla.envs.experts.predicates import GoalPredicate, UnsupportedGoalError, place_goal

angles = st.floats(-3 * math.pi, 3 * math.pi, allow_nan=False)


def _exp(w: np.ndarray) -> np.ndarray:
    """Rodrigues: rotation matrix of the axis-angle ``w``."""
    th = float(np.linalg.norm(w))
    if th < 1e-12:
        return np.eye(3)
    k = w / th
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(th) * kx + (1 - math.cos(th)) * kx @ kx


@given(yaw=angles)
def test_top_down_rotation_is_a_downward_grasp_frame(yaw):
    r = top_down_rotation(yaw)
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(r[:, 2], [0, 0, -1], atol=1e-12)  # palm points down
    np.testing.assert_allclose(r[:, 0], [math.cos(yaw), math.sin(yaw), 0], atol=1e-12)


@given(
    w=st.lists(st.floats(-1.0, 1.0), min_size=3, max_size=3).map(np.array),
    scale=st.floats(0.0, 3.0),
    yaw=angles,
)
def test_rotation_error_inverts_the_world_frame_delta(w, scale, yaw):
    n = float(np.linalg.norm(w))
    if n > 1e-6:
        w = w / n * scale  # angles in [0, 3] rad, below the half-turn ambiguity
    current = top_down_rotation(yaw)
    target = _exp(w) @ current  # OSC applies axis-angle deltas in the world frame, on the left
    np.testing.assert_allclose(rotation_error(current, target), w, atol=1e-6)


def test_rotation_error_at_a_half_turn_has_angle_pi():
    current = np.eye(3)
    target = _exp(np.array([0.0, 0.0, math.pi]))
    err = rotation_error(current, target)
    assert np.linalg.norm(err) == pytest.approx(math.pi)
    np.testing.assert_allclose(_exp(err) @ current, target, atol=1e-9)


@given(yaw=angles, ref=angles)
def test_equivalent_yaw_is_the_nearest_half_turn_copy(yaw, ref):
    out = closest_equivalent_yaw(yaw, ref)
    assert abs(out - ref) <= math.pi / 2 + 1e-9
    k = (out - yaw) / math.pi
    assert abs(k - round(k)) < 1e-9  # the gripper cannot tell yaw from yaw + k * pi
    assert -math.pi / 2 <= wrap_half_turn(yaw) < math.pi / 2


@given(length=st.floats(0.02, 0.3), width=st.floats(0.01, 0.1), heading=angles)
def test_footprint_width_of_a_box_is_smallest_across_it(length, width, heading):
    c, s = math.cos(heading), math.sin(heading)
    corners = np.array(
        [[sx * length / 2, sy * width / 2, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (0, 1)]
    )
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    pts = corners @ rot.T + np.array([0.3, -0.2, 0.0])
    w = footprint_widths(pts, np.array([heading, heading + math.pi / 2, heading + math.pi]))
    np.testing.assert_allclose(w, [length, width, length], atol=1e-9)


def test_rect_overlap_area():
    square = np.array([[0.0, 0.0], [1.0, 1.0]])
    assert rect_overlap_area(np.array([0.5, 0.5]), 0.0, np.array([0.25, 0.25]), square) == pytest.approx(0.25)
    assert rect_overlap_area(np.array([3.0, 3.0]), 0.7, np.array([0.5, 0.5]), square) == 0.0
    # A rectangle's own corners overlap it fully, at any heading.
    corners = np.array([[math.cos(0.3), math.sin(0.3)], [-math.cos(0.3), -math.sin(0.3)]]) * 0.2
    assert rect_overlap_area(np.zeros(2), 0.3, np.array([0.2, 0.05]), corners) == pytest.approx(0.0)


# -------------------------------------------------------------------------------------------- goals
def _fake_env(goal, sites=("basket_1_contain_region",), drawer=()):
    site_objs = {s: SimpleNamespace(joints=[f"{s}_joint"] if s in drawer else []) for s in sites}
    return SimpleNamespace(
        parsed_problem={"goal_state": goal},
        objects_dict={"alphabet_soup_1": 0, "basket_1": 0, "akita_black_bowl_1": 0, "plate_1": 0},
        fixtures_dict={"wooden_cabinet_1": 0, "flat_stove_1": 0},
        object_sites_dict=site_objs,
    )


def _box(centre: tuple[float, float], half: tuple[float, float]) -> np.ndarray:
    cx, cy = centre
    hx, hy = half
    return np.array([[cx + sx * hx, cy + sy * hy] for sx in (-1, 1) for sy in (-1, 1)])


def _boxes_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a.max(axis=0) > b.min(axis=0)) and np.all(a.min(axis=0) < b.max(axis=0)))


coords = st.floats(-0.2, 0.2, allow_nan=False)
halves = st.floats(0.01, 0.1, allow_nan=False)
# Two axis-aligned boxes, centres and half sizes (m), as _box builds them.
TWO_BOXES = {
    "c1": st.tuples(coords, coords),
    "h1": st.tuples(halves, halves),
    "c2": st.tuples(coords, coords),
    "h2": st.tuples(halves, halves),
}


@given(
    **TWO_BOXES,
    heading=angles,
    t=st.floats(-0.6, 0.6, allow_nan=False),
)
def test_shift_overlap_is_the_set_of_shifts_where_two_boxes_meet(c1, h1, c2, h2, heading, t):
    moving, fixed = _box(c1, h1), _box(c2, h2)
    u = np.array([math.cos(heading), math.sin(heading)])
    span = shift_overlap(moving, fixed, u)
    meets = _boxes_overlap(moving + t * u, fixed)
    if span is None:
        assert not meets
    elif min(abs(t - span[0]), abs(t - span[1])) > 1e-6:
        assert (span[0] < t < span[1]) == meets


@given(
    **TWO_BOXES,
    heading=angles,
)
def test_a_footprint_shifted_by_its_clearing_shift_just_clears_the_other(c1, h1, c2, h2, heading):
    moving, fixed = _box(c1, h1), _box(c2, h2)
    u = np.array([math.cos(heading), math.sin(heading)])
    d = clearing_shift(moving, fixed, u)
    assert d >= 0.0
    assert not _boxes_overlap(moving + (d + 1e-6) * u, fixed)
    if d > 1e-6:  # it overlapped: any shorter shift along u still does
        assert _boxes_overlap(moving + (d - 1e-6) * u, fixed)
        assert _boxes_overlap(moving, fixed)


def test_place_goal_reads_in_and_on():
    g = place_goal(_fake_env([["in", "alphabet_soup_1", "basket_1_contain_region"]]))
    assert (g.obj, g.relation, g.target, g.target_kind, g.parent) == (
        "alphabet_soup_1", "in", "basket_1_contain_region", "site", "basket_1",
    )  # fmt: skip
    g = place_goal(_fake_env([["on", "akita_black_bowl_1", "plate_1"]]))
    assert (g.obj, g.relation, g.target, g.target_kind) == ("akita_black_bowl_1", "on", "plate_1", "object")
    g = place_goal(
        _fake_env([["on", "akita_black_bowl_1", "flat_stove_1_cook_region"]], ["flat_stove_1_cook_region"])
    )
    assert g.target_kind == "site" and g.parent == "flat_stove_1"


@pytest.mark.parametrize(
    ("goal", "match"),
    [
        ([["open", "wooden_cabinet_1_middle_region"]], r"\(Open wooden_cabinet_1_middle_region\)"),
        ([["turnon", "flat_stove_1"]], r"\(Turnon flat_stove_1\)"),
        ([["on", "a", "plate_1"], ["on", "akita_black_bowl_1", "plate_1"]], "2 predicates"),
        ([["on", "ghost_1", "plate_1"]], "'ghost_1' is not a movable object"),
        ([["in", "akita_black_bowl_1", "nowhere"]], "'nowhere' is neither"),
        ([["in", "akita_black_bowl_1", "wooden_cabinet_1_top_region"]], "drawer"),
    ],
)
def test_unsupported_goals_are_named(goal, match):
    env = _fake_env(
        goal,
        sites=("basket_1_contain_region", "wooden_cabinet_1_top_region"),
        drawer=("wooden_cabinet_1_top_region",),
    )
    with pytest.raises(UnsupportedGoalError, match=match):
        place_goal(env)
    assert issubclass(UnsupportedGoalError, ValueError)


def test_goal_predicate_prints_like_bddl():
    assert str(GoalPredicate("in", ("a_1", "b_1_contain_region"))) == "(In a_1 b_1_contain_region)"


def test_conjunctions_become_one_place_goal_per_object_in_order():
    from flowvla.envs.experts.predicates import place_goals

    env = _fake_env(
        [["in", "alphabet_soup_1", "basket_1_contain_region"], ["on", "akita_black_bowl_1", "plate_1"]]
    )
    goals = place_goals(env)
    assert [(g.obj, g.relation, g.target) for g in goals] == [
        ("alphabet_soup_1", "in", "basket_1_contain_region"),
        ("akita_black_bowl_1", "on", "plate_1"),
    ]
    with pytest.raises(UnsupportedGoalError, match=r"\(Turnon flat_stove_1\)"):
        place_goals(_fake_env([["on", "akita_black_bowl_1", "plate_1"], ["turnon", "flat_stove_1"]]))


@given(st.integers(1, 8), st.integers(2, 40), st.integers(0, 2**16))
def test_noise_bursts_have_their_length_and_gaps_in_range(length, gap, seed):
    from flowvla.envs.experts.episode import NoiseBursts

    b = NoiseBursts(length, gap, np.random.default_rng(seed))
    flags, starts = [], []
    for _ in range(400):
        flags.append(b.step())
        starts.append(b.starting)
    text = "".join("x" if f else "." for f in flags)
    runs = text.strip(".").replace(".", " ").split()
    assert runs and all(len(r) == length for r in runs[:-1]) and len(runs[-1]) <= length
    gaps = [len(g) for g in text.split("x") if g][:-1]  # the last stretch may be cut by the end
    assert all(gap // 2 <= g <= 3 * gap // 2 for g in gaps)
    assert sum(starts) == len(runs)  # `starting` marks each burst's first step


def test_noise_bursts_reject_degenerate_schedules():
    from flowvla.envs.experts.episode import NoiseBursts

    with pytest.raises(ValueError, match="noise_bursts"):
        NoiseBursts(0, 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="noise_bursts"):
        NoiseBursts(3, 1, np.random.default_rng(0))


def _block(center, half, top, bottom=0.9) -> np.ndarray:
    """``[8, 3]`` corners of an axis-aligned box."""
    cx, cy = center
    return np.array(
        [[cx + sx * half, cy + sy * half, z] for sx in (-1, 1) for sy in (-1, 1) for z in (bottom, top)]
    )


def _carrying(heading: float, boxes: dict[str, np.ndarray]):
    """A pick-and-place expert carrying a 6 cm object from the origin 40 cm along ``heading``, among
    ``boxes``, with no simulator behind it."""
    from flowvla.envs.experts.pick_place import ExpertConfig, PickPlaceExpert
    from flowvla.envs.experts.scene import BodyShape

    shapes = {"obj": _block((0.0, 0.0), 0.03, 0.96), **boxes}
    scene = SimpleNamespace(
        names=list(shapes),
        body_pos=lambda n: shapes[n].mean(axis=0),
        shape=lambda n: BodyShape(shapes[n]),
        boxes=lambda n: shapes[n][None],
    )
    expert = object.__new__(PickPlaceExpert)
    expert.scene, expert.cfg = scene, ExpertConfig()
    expert.goal = SimpleNamespace(obj="obj")
    start = scene.body_pos("obj")[:2]
    expert._path = expert._path_boxes(start, 0.4 * np.array([math.cos(heading), math.sin(heading)]))
    return expert


@given(
    heading=st.floats(-math.pi, math.pi),
    ahead=st.floats(0.1, 0.3),
    side=st.floats(-0.3, 0.3),
    top=st.floats(0.95, 1.2),
)
def test_a_carried_object_travels_only_as_far_as_it_clears_the_boxes_on_its_way(heading, ahead, side, top):
    # A 4 cm box `ahead` along the way, its centre `side` off it: the object may go until its footprint
    # comes within 2 cm of the box's (along the way), unless its bottom passes 2 cm above the box's top;
    # a box more than 2 cm to the side of the object's swept band never blocks it.
    u = np.array([math.cos(heading), math.sin(heading)])
    across = np.array([-u[1], u[0]])
    box = _block(ahead * u + side * across, 0.02, top)
    expert = _carrying(heading, {"box": box})
    own = _block((0.0, 0.0), 0.03, 0.96)[:, :2]
    reach, half = float((own @ u).max()), float(np.abs(own @ across).max())
    lateral = box[:, :2] @ across
    if lateral.min() > half + 0.02 or lateral.max() < -half - 0.02:
        assert expert._free_travel(0.9) == math.inf
        return
    near = float((box[:, :2] @ u).min())
    assert expert._free_travel(top + 0.0199) == pytest.approx(max(0.0, near - reach - 0.02), abs=1e-9)
    assert expert._free_travel(top + 0.0201) == math.inf  # high enough: the whole way is free


def test_the_lowest_blocking_box_on_the_way_sets_the_travel():
    expert = _carrying(
        0.0, {"near_low": _block((0.15, 0.0), 0.02, 0.95), "far_high": _block((0.3, 0.0), 0.02, 1.1)}
    )
    assert expert._free_travel(0.93) == pytest.approx(0.15 - 0.02 - 0.05)  # both block: the nearer one
    assert expert._free_travel(1.0) == pytest.approx(0.3 - 0.02 - 0.05)  # above the low one: the far one
    assert expert._free_travel(1.13) == math.inf
    behind = _carrying(0.0, {"behind": _block((-0.15, 0.0), 0.02, 1.1)})
    assert behind._free_travel(0.9) == math.inf
    under = _carrying(0.0, {"support": _block((0.0, 0.0), 0.05, 0.9, bottom=0.85)})
    assert under._free_travel(0.91) == 0.0  # what it stands on: rise 2 cm above it first
