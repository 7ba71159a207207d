"""Demonstrations generated under a Perturbation: layout axes start the episode, appearance axes reach
the rendered frames and leave the recorded physics alone; both logged per attempt, drawn from its seed."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from flowvla.envs.perturb import Perturbation
from flowvla.recipes.generate import GenerateConfig


def test_generator_refuses_a_changed_task_and_bad_fields_by_name(capsys):
    with pytest.raises(ValueError, match="perturbation: changed_task is an evaluation axis"):
        GenerateConfig(out_dir="x", perturbation=Perturbation(changed_task=True))
    with pytest.raises(ValueError, match="perturbation: expected a Perturbation"):
        GenerateConfig(out_dir="x", perturbation=0.3)
    with pytest.raises(ValueError, match="object_shift_m and object_scatter_m"):
        GenerateConfig(out_dir="x", object_scatter_m=0.02, perturbation=Perturbation(object_shift_m=0.02))
    assert GenerateConfig(out_dir="x", perturbation={"scene_tint": 0.2}).perturbation == Perturbation(
        scene_tint=0.2
    )
    from flowvla.recipes.generate import main

    with pytest.raises(SystemExit):
        main(["--out", "x", "--perturbation", '{"scene_tint": 2}'])
    assert "scene_tint: must be <= 1" in capsys.readouterr().err


def test_split_separates_what_the_physics_reads_from_what_only_the_renderer_reads():
    p = Perturbation(object_swap="any", robot_joint_offset_rad=0.1, light_intensity=0.2, image_noise_std=3.0)
    layout, look = p.split()
    assert layout == Perturbation(object_swap="any", robot_joint_offset_rad=0.1)
    assert look == Perturbation(light_intensity=0.2, image_noise_std=3.0)
    assert not Perturbation().split()[0].active and not Perturbation().split()[1].active


def short_episode(env, expert, init_state, *, seed, max_steps, settle_steps, action_noise, noise_bursts):
    """Stands in for the expert: resets to the layout a second time (as the real episode does), then
    four still steps, declared a success."""
    from flowvla.envs.libero import DUMMY_ACTION

    s0 = env.reset(init_state=init_state, seed=seed)
    states, actions = [], []
    for _ in range(4):
        states.append(env.get_sim_state())
        actions.append(np.array(DUMMY_ACTION))
        env.step(DUMMY_ACTION)
    actions = np.array(actions)
    return types.SimpleNamespace(
        success=True,
        stable=True,
        settle_drift=0.0,
        steps=4,
        retries=0,
        phases=[],
        actions=actions,
        states=np.array(states),
        init_state=s0,
        executed_actions=actions,
        stages=None,
    )


@pytest.mark.libero
def test_generated_demos_carry_the_perturbation_and_its_log(libero_ready, tmp_path):
    from flowvla.data.hdf5 import LiberoHDF5Reader
    from flowvla.recipes.generate import generate

    def run(name, perturbation):
        cfg = GenerateConfig(
            out_dir=str(tmp_path / name),
            tasks=[1],
            demos_per_task=1,
            image_size=32,
            cameras=["agentview"],
            progress=False,
            perturbation=perturbation,
        )
        s = generate(cfg, episode_fn=short_episode)["tasks"]["libero_object/1"]
        task_dir = tmp_path / name / "libero_object"
        (log,) = [
            json.loads(x) for x in (task_dir / s["task_name"] / "attempts.jsonl").read_text().splitlines()
        ]
        r = LiberoHDF5Reader(task_dir / f"{s['task_name']}_demo.hdf5", image_keys=("agentview_rgb",))
        return log, r.sim_states(0), r.demo_attrs(0)["init_state"], r.images(0, slice(None))

    plain_log, _, plain_init, plain = run("plain", None)
    assert "perturbation" not in plain_log
    p = Perturbation(
        object_swap="any", robot_joint_offset_rad=0.1, light_intensity=0.5, scene_texture_swap=True
    )
    log, _, init, demo = run("perturbed", p)
    assert set(log["perturbation"]) == {"swap", "robot_joints", "lights", "scene_textures"}
    assert log["seed"] == plain_log["seed"]  # the same attempt, the same fresh layout underneath
    # The episode starts from the offset arm (the gripper as it was) ...
    arm = np.asarray(list(log["perturbation"]["robot_joints"].values()))
    np.testing.assert_allclose(init[1:8] - plain_init[1:8], arm, atol=1e-6)
    np.testing.assert_array_equal(init[8:10], plain_init[8:10])
    assert np.abs(arm).max() > 0.01
    # ... and two objects exchanged (qpos: 9 robot entries, then 7 per free object: x, y, z, quat).
    xy = lambda s: [tuple(s[i : i + 2]) for i in range(10, 10 + 7 * 7, 7)]
    moved = [i for i, (u, v) in enumerate(zip(xy(init), xy(plain_init), strict=True)) if u != v]
    assert len(moved) == 2 and sorted(xy(init)) == sorted(xy(plain_init))
    # The frames were rendered under the changed lights and textures.
    assert np.abs(demo.astype(int) - plain.astype(int)).mean() > 1.0
