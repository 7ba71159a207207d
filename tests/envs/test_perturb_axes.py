"""The perturbation axes: each changes what it names and nothing else, by the drawn amount, and
repeats from its seed; bad amounts are refused by name before anything runs."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowvla.envs.perturb import _AMOUNTS, Perturbation, add_image_noise

# ------------------------------------------------------------------------------------- settings

BOUNDED = {name: high for name, (high, _) in _AMOUNTS.items() if high is not None}


@pytest.mark.parametrize("name", sorted(_AMOUNTS))
def test_every_amount_refuses_negative_nan_and_out_of_range_by_name(name):
    for bad in (-0.01, float("nan"), float("inf"), "0.1"):
        with pytest.raises(ValueError, match=f"^{name}: must be"):
            Perturbation(**{name: bad})
    if name in BOUNDED:
        with pytest.raises(ValueError, match=f"^{name}: must be <= {BOUNDED[name]:g}"):
            Perturbation(**{name: BOUNDED[name] * 1.01})
        assert Perturbation(**{name: BOUNDED[name]}).active


def test_swap_flags_and_unknown_fields_are_refused_by_name():
    for bad in ("all", ("milk_1",), ("milk_1", "milk_1"), ("a", "b", "c")):
        with pytest.raises(ValueError, match=r"^object_swap: give"):
            Perturbation(object_swap=bad)
    for flag in ("scene_texture_swap", "changed_task"):
        with pytest.raises(ValueError, match=f"^{flag}: must be True or False"):
            Perturbation(**{flag: 1})
        assert Perturbation(**{flag: True}).active
    with pytest.raises(ValueError, match=r"perturbation: unknown fields \['light'\]"):
        Perturbation.from_dict({"light": 0.3})
    with pytest.raises(ValueError, match=r"^changed_task: not on libero_spatial"):
        Perturbation(changed_task=True).check_suite("libero_spatial")
    Perturbation(changed_task=True).check_suite("libero_goal")


@settings(max_examples=40, deadline=None)
@given(
    amounts=st.fixed_dictionaries(
        {},
        optional={
            name: st.floats(0, BOUNDED.get(name, 1.0), allow_nan=False, allow_subnormal=False)
            for name in _AMOUNTS
            if name != "object_scatter_m"
        },
    ),
    swap=st.sampled_from(["", "any", "target", ("alphabet_soup_1", "milk_1")]),
    flags=st.tuples(st.booleans(), st.booleans()),
)
def test_a_perturbation_survives_json_and_is_active_iff_something_is_on(amounts, swap, flags):
    p = Perturbation(**amounts, object_swap=swap, scene_texture_swap=flags[0], changed_task=flags[1])
    back = Perturbation.from_dict(json.loads(json.dumps(p.to_dict())))
    assert back == p
    assert p.active == (any(amounts.values()) or bool(swap) or any(flags))


def test_records_of_the_first_axes_keep_their_settings_so_old_evaluations_resume():
    old = {"object_shift_m": 0.03, "object_scatter_m": 0.0, "camera_shift_m": 0.0, "camera_rotation_deg": 0.0}
    assert Perturbation(object_shift_m=0.03).to_dict() == {**old, "cameras": ["agentview"]}
    assert Perturbation(scene_tint=0.2).to_dict()["scene_tint"] == 0.2


@settings(max_examples=30, deadline=None)
@given(
    std=st.floats(0, 60),
    seed=st.integers(0, 2**32 - 1),
    shape=st.sampled_from([(3, 8, 8), (2, 3, 16, 4)]),
    level=st.integers(0, 255),
)
def test_image_noise_repeats_from_its_seed_stays_in_range_and_has_the_asked_spread(std, seed, shape, level):
    images = np.full(shape, level, dtype=np.uint8)
    noisy = add_image_noise(images, std, np.random.default_rng(seed))
    assert noisy.dtype == np.uint8 and noisy.shape == images.shape
    np.testing.assert_array_equal(noisy, add_image_noise(images, std, np.random.default_rng(seed)))
    assert np.abs(noisy.astype(int) - level).max() <= math.ceil(8 * std) + 1
    if std == 0:
        np.testing.assert_array_equal(noisy, images)


def test_image_noise_spread_is_the_std_in_pixel_values():
    images = np.full((2, 3, 64, 64), 128, dtype=np.uint8)
    noisy = add_image_noise(images, 10.0, np.random.default_rng(0)).astype(float)
    assert noisy.std() == pytest.approx(10.0, rel=0.03) and abs(noisy.mean() - 128) < 0.2
    with pytest.raises(ValueError, match="std: must be a finite number >= 0"):
        add_image_noise(images, -1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="images: expected uint8"):
        add_image_noise(images.astype(np.float32), 1.0, np.random.default_rng(0))


# ------------------------------------------------------------------------------------ simulator
ACTIONS = np.random.default_rng(0).uniform(-1, 1, size=(12, 7))


@pytest.fixture(scope="module")
def env(libero_ready):
    """libero_goal's one kitchen scene (a table, a cabinet, a stove, four objects; all ten tasks share
    it), rebuilt on every reset as LIBERO's evaluation does: episodes repeat bit for bit."""
    from flowvla.envs.libero import LiberoEnv

    e = LiberoEnv("libero_goal", 1, image_size=32, cameras=("agentview",))
    yield e
    e.close()


@pytest.fixture(scope="module")
def soft(env):
    """The same scene kept across resets (as the generator runs it): resets take a fraction of a
    second, and the next reset must undo what a perturbation changed in the model."""
    from flowvla.envs.libero import LiberoEnv

    e = LiberoEnv("libero_goal", 1, image_size=32, cameras=("agentview",), hard_reset=False)
    yield e
    e.close()


def start(env, perturbation, seed=0):
    """Reset to init state 0 under ``perturbation``; the state before settling and what was applied."""
    applied = {}
    # The reset's seed keeps the fixtures where they were when the model is kept (they are placed afresh).
    state = env.reset(
        init_state=0,
        seed=0,
        perturb=lambda e: applied.update(perturbation.apply(e, np.random.default_rng(seed))),
    )
    return {"start": state, "applied": applied}


def episode(env, perturbation, seed=0, settle=5):
    """Reset to init state 0 under ``perturbation`` (drawn from ``seed``), render, step ACTIONS."""
    applied = {}
    start = env.reset(
        init_state=0,
        seed=0,
        settle_steps=settle,
        perturb=lambda e: applied.update(perturbation.apply(e, np.random.default_rng(seed))),
    )
    image = env.observe()["images"][0].astype(int)
    after_settling = env.get_sim_state()
    for a in ACTIONS:
        env.step(a)
    return {
        "start": start,
        "settled": after_settling,
        "end": env.get_sim_state(),
        "image": image,
        "applied": applied,
        "model": model_fields(env),
    }


@pytest.fixture(scope="module")
def clean(env):
    return episode(env, Perturbation())


def model_fields(env):
    m = env.sim.model
    return {
        "light_diffuse": np.array(m.light_diffuse),
        "light_specular": np.array(m.light_specular),
        "light_dir": np.array(m.light_dir),
        "headlight": np.array(m.vis.headlight.diffuse),
        "mat_rgba": np.array(m.mat_rgba),
        "mat_texid": np.array(m.mat_texid),
        "cam_pos": np.array(m.cam_pos),
    }


@pytest.mark.parametrize(
    "perturbation",
    [
        Perturbation(light_intensity=0.5),
        Perturbation(light_rotation_deg=30.0),
        Perturbation(scene_tint=0.6),
        Perturbation(scene_texture_swap=True),
        Perturbation(camera_shift_m=0.02, camera_rotation_deg=3.0),
    ],
    ids=["light_intensity", "light_rotation", "scene_tint", "texture_swap", "camera"],
)
@pytest.mark.libero
def test_appearance_changes_the_image_and_leaves_the_physics_bit_exact(env, clean, perturbation):
    run = episode(env, perturbation)
    assert np.abs(run["image"] - clean["image"]).mean() > 1.0  # the rendered view changed
    np.testing.assert_array_equal(run["start"], clean["start"])
    np.testing.assert_array_equal(run["end"], clean["end"])  # 5 settling + 12 random steps, exactly


@pytest.mark.libero
def test_lights_change_by_exactly_the_drawn_factor_and_angle(env, clean):
    before = clean["model"]
    run = episode(env, Perturbation(light_intensity=0.3, light_rotation_deg=20.0), seed=3)
    after = run["model"]
    scale = run["applied"]["lights"]["scale"]
    assert scale in (pytest.approx(0.7), pytest.approx(1.3))
    np.testing.assert_allclose(after["light_diffuse"], scale * before["light_diffuse"])
    np.testing.assert_allclose(after["headlight"], scale * before["headlight"])
    for d0, d1 in zip(before["light_dir"], after["light_dir"], strict=True):
        cos = d0 @ d1 / np.linalg.norm(d0) / np.linalg.norm(d1)
        assert math.degrees(math.acos(np.clip(cos, -1, 1))) == pytest.approx(20.0, abs=1e-6)
    assert (
        episode(env, Perturbation(light_intensity=0.3, light_rotation_deg=20.0), seed=3)["applied"]
        == run["applied"]
    )


@pytest.mark.libero
def test_scene_tint_darkens_only_the_table_floor_and_walls_by_the_drawn_amount(env, clean):
    from flowvla.envs.perturb import scene_materials

    before = clean["model"]
    run = episode(env, Perturbation(scene_tint=0.4), seed=1)
    after = run["model"]
    scene = scene_materials(env)
    assert {"table_texture", "floorplane", "walls_mat"} <= set(scene)
    assert not any(n.startswith(("robot", "akita", "plate", "wooden_cabinet")) for n in scene)
    changed = np.flatnonzero(np.any(after["mat_rgba"] != before["mat_rgba"], axis=1))
    assert set(changed) == set(scene.values())
    for name, i in scene.items():
        factor = after["mat_rgba"][i, :3] / before["mat_rgba"][i, :3]
        assert factor.min() == pytest.approx(0.6) and factor.max() <= 1.0
        np.testing.assert_allclose(factor, run["applied"]["scene_tint"][name], atol=1e-4)
        assert after["mat_rgba"][i, 3] == before["mat_rgba"][i, 3]


@pytest.mark.libero
def test_texture_swap_gives_scene_materials_other_textures_of_their_kind(env, clean):
    before = clean["model"]
    run = episode(env, Perturbation(scene_texture_swap=True), seed=2)
    after = run["model"]
    swapped = run["applied"]["scene_textures"]
    assert swapped and all(old != new for old, new in swapped.values())
    rows = np.flatnonzero(np.any(after["mat_texid"] != before["mat_texid"], axis=1))
    m = env.sim.model
    assert len(rows) == len(swapped)
    for i in rows:
        old, new = before["mat_texid"][i, 1], after["mat_texid"][i, 1]
        assert m.tex_type[old] == m.tex_type[new]
    assert episode(env, Perturbation(scene_texture_swap=True), seed=2)["applied"] == run["applied"]


@pytest.mark.libero
def test_a_reset_undoes_every_model_change_even_without_rebuilding_the_model(soft):
    everything = Perturbation(
        light_intensity=0.5,
        light_rotation_deg=30.0,
        scene_tint=0.5,
        scene_texture_swap=True,
        camera_shift_m=0.03,
        camera_rotation_deg=5.0,
        image_noise_std=20.0,
        changed_task=True,
    )
    start(soft, Perturbation())
    official = model_fields(soft)
    image = soft.observe()["images"]
    start(soft, everything)
    assert soft.instruction != "put the bowl on the stove" and soft.image_filter is not None
    assert any(not np.array_equal(v, official[k]) for k, v in model_fields(soft).items())
    start(soft, Perturbation())
    for k, v in model_fields(soft).items():
        np.testing.assert_array_equal(v, official[k], err_msg=k)
    assert soft.instruction == "put the bowl on the stove" and soft.image_filter is None
    np.testing.assert_array_equal(soft.observe()["images"], image)


@pytest.mark.libero
def test_image_noise_reaches_the_policy_repeats_from_the_seed_and_leaves_the_physics(env, clean, soft):
    run = episode(env, Perturbation(image_noise_std=8.0), seed=5)
    diff = run["image"] - clean["image"]
    assert 5 < diff.std() < 10
    np.testing.assert_array_equal(run["end"], clean["end"])

    def noisy(seed):
        start(soft, Perturbation(image_noise_std=8.0), seed=seed)
        return soft.observe()["images"]

    np.testing.assert_array_equal(noisy(5), noisy(5))
    assert not np.array_equal(noisy(5), noisy(6))


def _positions(env, state):
    from flowvla.envs.perturb import free_objects

    return {n: state[1 + a : 4 + a] for n, a in free_objects(env).items()}


@pytest.mark.libero
def test_swapped_objects_exchange_places_and_nothing_else_moves(soft):
    official = start(soft, Perturbation())["start"]
    before = _positions(soft, official)
    for swap, seed in (("target", 0), ("any", 4), (("wine_bottle_1", "plate_1_main"), 0)):
        run = start(soft, Perturbation(object_swap=swap), seed=seed)
        a, b = run["applied"]["swap"]["bodies"]
        after = _positions(soft, run["start"])
        np.testing.assert_array_equal(after[a][:2], before[b][:2])
        np.testing.assert_array_equal(after[b][:2], before[a][:2])
        for n in set(before) - {a, b}:
            np.testing.assert_array_equal(after[n], before[n])
        robot = slice(1, 10)  # the arm's 7 joints and the gripper's 2 come first in qpos
        np.testing.assert_array_equal(run["start"][robot], official[robot])
        if swap == "target":  # the bowl the task moves, with an object the task does not name
            assert a == "akita_black_bowl_1_main" and b in after and b != a
    # The drawn pair repeats from the seed; other seeds draw other pairs.
    draws = [start(soft, Perturbation(object_swap="any"), seed=s)["applied"]["swap"] for s in (4, 4, 5, 6)]
    assert draws[0] == draws[1] and len({tuple(d["bodies"]) for d in draws}) > 1
    with pytest.raises(ValueError, match="object_swap: 'teapot' is not a movable object of this scene"):
        start(soft, Perturbation(object_swap=("teapot", "plate_1")))


@pytest.mark.libero
def test_a_swapped_object_comes_to_rest_where_the_other_rested(soft):
    from flowvla.envs.perturb import _lowest_point, swap_objects

    pair = ("akita_black_bowl_1_main", "wine_bottle_1_main")
    lows = {}

    def swap(e):
        ids = [e.sim.model.body_name2id(n) for n in pair]
        lows["before"] = [_lowest_point(e, i) for i in ids]
        swap_objects(e, *pair)
        lows["after"] = [_lowest_point(e, i) for i in ids]

    soft.reset(init_state=0, perturb=swap)
    np.testing.assert_allclose(lows["after"], lows["before"][::-1], atol=1e-9)


@pytest.mark.libero
def test_robot_joints_start_offset_within_bounds_and_limits_and_hold_there(soft):
    env = soft
    clean = start(env, Perturbation())
    robot = env.raw.env.robots[0]
    m = env.sim.model
    adr = [1 + int(m.jnt_qposadr[m.joint_name2id(j)]) for j in robot.robot_joints]
    limits = np.array([m.jnt_range[m.joint_name2id(j)] for j in robot.robot_joints])
    run = episode(env, Perturbation(robot_joint_offset_rad=0.15), seed=7)
    offsets = run["start"][adr] - clean["start"][adr]
    assert np.all(np.abs(offsets) <= 0.15 + 1e-9) and np.abs(offsets).max() > 0.05
    np.testing.assert_allclose(offsets, list(run["applied"]["robot_joints"].values()), atol=1e-6)
    assert np.all((run["start"][adr] >= limits[:, 0]) & (run["start"][adr] <= limits[:, 1]))
    # The objects and the gripper do not move; the arm holds its new pose through the settling steps
    # (the controller's goal followed it), instead of swinging back to the official one.
    others = [i for i in range(1, 1 + int(m.nq)) if i not in adr]
    np.testing.assert_array_equal(run["start"][others], clean["start"][others])
    drift = np.abs(run["settled"][adr] - run["start"][adr]).max()
    assert drift < 0.5 * np.abs(offsets).max()
    again = episode(env, Perturbation(robot_joint_offset_rad=0.15), seed=7)
    np.testing.assert_array_equal(again["start"], run["start"])


@pytest.mark.libero
def test_a_restored_offset_pose_holds_once_the_controller_is_told(soft):
    # What the expert's episode does with the generator's perturbed layout: reset to its state. The
    # controller still aims at the hand pose of the reset's default layout until hold_robot_pose.
    from flowvla.envs.experts.geometry import rotation_error
    from flowvla.envs.libero import DUMMY_ACTION

    env = soft
    site = env.raw.env.robots[0].eef_site_id
    offset = start(env, Perturbation(robot_joint_offset_rad=0.3), seed=3)["start"]

    def hand_moves_while_settling(hold: bool) -> tuple[float, float]:
        """(m, degrees) the hand moves in 10 idle steps from the restored state."""
        env.reset(init_state=offset, seed=0)
        if hold:
            env.hold_robot_pose()
        d = env.sim.data
        p0, r0 = np.array(d.site_xpos[site]), np.array(d.site_xmat[site]).reshape(3, 3)
        for _ in range(10):
            env.step(DUMMY_ACTION)
        r1 = np.array(d.site_xmat[site]).reshape(3, 3)
        turn = math.degrees(float(np.linalg.norm(rotation_error(r1, r0))))
        return float(np.linalg.norm(d.site_xpos[site] - p0)), turn

    (moved, turned), (held, held_turn) = hand_moves_while_settling(False), hand_moves_while_settling(True)
    assert held < 0.002 < 0.01 < moved and held_turn < 0.5 < 3.0 < turned


@pytest.mark.libero
def test_a_changed_task_is_scored_on_the_other_goal_and_its_words(soft):
    env = soft
    from flowvla.envs.libero import get_task, list_tasks, task_goal
    from flowvla.envs.perturb import scorable_tasks

    assert scorable_tasks(env) == [0, 2, 3, 4, 5, 6, 7, 8, 9]  # one scene for all of libero_goal
    # Read from the BDDL files, it agrees with what the built scene can score.
    built = set(env.raw.env.object_states_dict)
    others = [t for t in list_tasks("libero_goal") if t.index != env.task.index]
    names = {t.index: {n for p in task_goal(t) for n in p[1:]} for t in others}
    assert scorable_tasks(env) == [i for i, n in names.items() if n <= built]
    task = start(env, Perturbation(changed_task=True), seed=0)["applied"]["task"]
    assert task["index"] != 1 and env.instruction == task["instruction"] == env.goal_task.instruction
    assert env.observe()["instruction"] == task["instruction"]
    assert env.raw.env.parsed_problem["goal_state"] == task_goal(get_task("libero_goal", task["index"]))
    assert start(env, Perturbation(changed_task=True), seed=0)["applied"]["task"] == task
    # A goal naming something this scene lacks is refused, by the argument's name.
    states = env.raw.env.object_states_dict
    plate = states.pop("plate_1")
    try:
        with pytest.raises(ValueError, match=r"task_index: the goal of task 8 .* names \['plate_1'\]"):
            env.set_goal(8)
    finally:
        states["plate_1"] = plate


@pytest.mark.libero
def test_every_axis_is_a_field_of_the_record(soft):
    """Each axis, when on, leaves a JSON-ready trace in the episode's record."""
    keys = {
        "object_swap": ("any", "swap"),
        "robot_joint_offset_rad": (0.05, "robot_joints"),
        "light_intensity": (0.2, "lights"),
        "scene_tint": (0.2, "scene_tint"),
        "scene_texture_swap": (True, "scene_textures"),
        "image_noise_std": (3.0, "image_noise_std"),
        "changed_task": (True, "task"),
    }
    everything = dataclasses.replace(Perturbation(), **{k: v for k, (v, _) in keys.items()})
    applied = start(soft, everything)["applied"]
    assert {key for _, key in keys.values()} <= set(applied)
    json.dumps(applied)
