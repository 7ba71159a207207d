"""benchmarks/libero/robustness.py: a named row per perturbation axis and magnitude, refused amounts
named by their field, and the new rows through the real closed-loop runner (one short episode each)."""

from __future__ import annotations

import json

import pytest

from tests.benchmark_loader import load_benchmark


@pytest.mark.libero
def test_every_axis_gets_a_named_row_per_magnitude(libero_ready):
    robustness = load_benchmark("libero/robustness")
    rows = robustness.variants(
        "libero_object",
        [0, 1],
        [],
        [(0.02, 3.0), (0.04, 6.0)],
        swaps=["target", "any"],
        robot_joints=[0.05, 0.1],
        lights=[0.3, 0.6],
        light_turns=[20, 40],
        scene_tints=[0.3, 0.6],
        scene_textures=True,
        image_noise=[5, 10],
        language=True,
    )
    expected = {
        "swap_target": ("object_swap", "target"),
        "swap_any": ("object_swap", "any"),
        "robot_joints_0.1rad": ("robot_joint_offset_rad", 0.1),
        "light_30pct": ("light_intensity", 0.3),
        "light_60pct": ("light_intensity", 0.6),
        "light_turn_40deg": ("light_rotation_deg", 40.0),
        "scene_tint_60pct": ("scene_tint", 0.6),
        "scene_textures": ("scene_texture_swap", True),
        "image_noise_5": ("image_noise_std", 5.0),
        "changed_task": ("changed_task", True),
        "camera+4cm+6deg": ("camera_rotation_deg", 6.0),
    }
    for name, (field, value) in expected.items():
        assert getattr(rows[name]["perturbation"], field) == value, name
    assert rows["object_synonym"]["instructions"][0] == "pick up the letter soup and place it in the hamper"
    # libero_spatial's words pick the bowl by where it lies: no changed task there.
    spatial = robustness.variants("libero_spatial", [0], [], [], language=True)
    assert "object_synonym" in spatial and "changed_task" not in spatial
    # In libero_10 only four scenes hold another task's objects.
    assert "changed_task" in robustness.variants("libero_10", [0, 1], [], [], language=True)
    assert "changed_task" not in robustness.variants("libero_10", [0, 2], [], [], language=True)


def test_a_bad_amount_is_refused_by_its_field_before_any_policy_loads(capsys):
    robustness = load_benchmark("libero/robustness")
    for flag, value, field in (
        ("--light", "1.5", "light_intensity"),
        ("--robot-joints", "-0.1", "robot_joint_offset_rad"),
        ("--image-noise", "300", "image_noise_std"),
        ("--swap", "every", "object_swap"),
    ):
        with pytest.raises(SystemExit):
            robustness.main(["--policy", "/nonexistent", "--no-language", flag, value])
        assert f"error: {field}: " in capsys.readouterr().err


@pytest.mark.libero
def test_new_rows_run_through_the_closed_loop_runner(libero_ready, tmp_path):
    from flowvla.envs.rollout import ConstantPolicy, RolloutConfig
    from flowvla.envs.variants import compare_variants

    robustness = load_benchmark("libero/robustness")
    every = robustness.variants(
        "libero_goal", [1], [], [], scene_textures=True, robot_joints=[0.05], language=True
    )
    rows = {k: every[k] for k in ("official", "changed_task", "robot_joints_0.05rad")}
    base = RolloutConfig(
        suite="libero_goal", tasks=[1], init_states=[0], max_steps=2, image_size=32, progress=False
    )
    out = compare_variants(ConstantPolicy(horizon=2), base, rows, tmp_path)
    assert [r["variant"] for r in out] == list(rows) and all(r["episodes"] == 1 for r in out)
    (changed,) = [
        json.loads(x) for x in (tmp_path / "changed_task" / "episodes.jsonl").read_text().splitlines()
    ]
    task = changed["perturbation"]["task"]
    assert task["index"] != 1 and changed["instruction"] == task["instruction"]
    assert changed["settings"]["perturbation"]["changed_task"] is True
    (robot,) = [
        json.loads(x) for x in (tmp_path / "robot_joints_0.05rad" / "episodes.jsonl").read_text().splitlines()
    ]
    assert max(abs(v) for v in robot["perturbation"]["robot_joints"].values()) <= 0.05
