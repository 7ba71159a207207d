"""Scripted dataset generation: seeds, overlap checks, config errors (no simulator); resume without
duplicates or losses and a rendered round trip through the loaders (simulator, marked ``libero``)."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from flowvla.recipes.generate import GenerateConfig, attempt_seed, init_state_distance


def test_attempt_seeds_are_distinct_and_stable():
    seeds = {
        attempt_seed(0, s, t, a)
        for s in ("libero_object", "libero_goal")
        for t in range(10)
        for a in range(20)
    }
    assert len(seeds) == 400
    assert attempt_seed(3, "libero_object", 1, 7) == attempt_seed(3, "libero_object", 1, 7)
    assert attempt_seed(3, "libero_object", 1, 7) != attempt_seed(4, "libero_object", 1, 7)


def test_init_state_distance_compares_qpos_only():
    rng = np.random.default_rng(0)
    nq = 5
    others = rng.normal(size=(4, 1 + nq + 3))
    state = others[2].copy()
    state[0] += 100.0  # time
    state[1 + nq :] += 5.0  # velocities
    d = init_state_distance(state, others, nq)
    assert d.shape == (4,) and d[2] == 0.0 and (np.delete(d, 2) > 0).all()
    state[3] += 0.01
    assert init_state_distance(state, others, nq)[2] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="nq=20"):
        init_state_distance(state, others, 20)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"suites": ["libero_nothing"]}, "libero_nothing"),
        ({"tasks": [12]}, r"tasks \[12\] out of range"),
        ({"demos_per_task": 0}, "demos_per_task"),
        ({"workers": 0}, "workers"),
        ({"cameras": []}, "cameras is empty"),
        ({"demos_per_task": 5, "max_attempts": 2}, "max_attempts"),
        ({"object_scatter_m": -0.01}, "object_scatter_m"),
    ],
)
def test_bad_config_is_named(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        GenerateConfig(out_dir=str(tmp_path), **kwargs)


def test_cli_reports_unknown_suite(tmp_path, capsys):
    from flowvla.recipes.generate import main

    assert main(["--out", str(tmp_path), "--suites", "libero_nothing"]) == 2
    assert "libero_nothing" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--object-scatter", "-0.02"]) == 2
    assert "object_scatter_m: must be a finite number >= 0" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- simulator
@pytest.mark.libero
def test_interrupted_generation_resumes_without_duplicates(libero_ready, tmp_path):
    from flowvla.data.hdf5 import LiberoHDF5Reader
    from flowvla.recipes.generate import generate

    base = dict(
        out_dir=str(tmp_path),
        suites=["libero_object"],
        tasks=[1],
        demos_per_task=2,
        images=False,
        progress=False,
    )
    first = generate(GenerateConfig(**base, max_episodes=1))  # "killed" after one episode
    s = first["tasks"]["libero_object/1"]
    assert not first["complete"] and s["attempts"] == 1 and s["demos"] == 1
    assert first["attempts_this_call"] == 1
    name = s["task_name"]
    second = generate(GenerateConfig(**base))
    s = second["tasks"]["libero_object/1"]
    assert second["complete"] and s["demos"] == 2 and s["demos_from_attempts"] == [0, 1]
    assert second["attempts_this_call"] == 1  # only the missing attempt ran
    assert s["expert_success_rate"] == 1.0 and s["supported"]

    log = [
        json.loads(x) for x in (tmp_path / "libero_object" / name / "attempts.jsonl").read_text().splitlines()
    ]
    assert sorted(r["attempt"] for r in log) == [0, 1]  # attempt 0 was not run again
    r = LiberoHDF5Reader(tmp_path / "libero_object" / f"{name}_demo.hdf5", image_keys=())
    assert len(r) == 2
    inits = [r.demo_attrs(i)["init_state"] for i in range(2)]
    assert [r.demo_attrs(i)["seed"] for i in range(2)] == [log[0]["seed"], log[1]["seed"]]
    assert not np.allclose(inits[0], inits[1])
    assert all(x["official_distance"] > 1e-3 for x in log)  # fresh layouts, not the official ones
    for i in range(2):
        assert r.episode_length(i) == r.actions(i).shape[0] == r.sim_states(i).shape[0] > 50
        assert r.states(i).shape == (r.episode_length(i), 8)
    summary = json.loads((tmp_path / "libero_object" / f"{name}_summary.json").read_text())
    assert summary["demos"] == 2 and summary["complete"]

    third = generate(GenerateConfig(**base))  # nothing left to do: no new attempts, same data
    assert third["tasks"]["libero_object/1"]["attempts"] == 2 and third["attempts_this_call"] == 0


@pytest.mark.libero
def test_scattered_layouts_start_the_demonstration_and_are_logged(libero_ready, tmp_path):
    from flowvla.data.hdf5 import LiberoHDF5Reader
    from flowvla.envs.libero import LiberoEnv
    from flowvla.envs.perturb import free_objects
    from flowvla.recipes.generate import generate

    cfg = GenerateConfig(
        out_dir=str(tmp_path),
        tasks=[1],
        demos_per_task=1,
        images=False,
        progress=False,
        object_scatter_m=0.04,
    )
    s = generate(cfg)["tasks"]["libero_object/1"]
    assert s["demos"] == 1
    name = s["task_name"]
    (log,) = [
        json.loads(x) for x in (tmp_path / "libero_object" / name / "attempts.jsonl").read_text().splitlines()
    ]
    shifts = np.array(list(log["scatter"].values()))
    radii = np.hypot(shifts[:, 0], shifts[:, 1])
    assert (radii <= 0.04 + 1e-4).all() and np.ptp(radii) > 1e-3  # inside the disc, not on its rim
    init = LiberoHDF5Reader(tmp_path / "libero_object" / f"{name}_demo.hdf5", image_keys=()).demo_attrs(0)[
        "init_state"
    ]
    # The demonstration starts from LIBERO's own layout for its seed, every object moved as logged.
    with LiberoEnv("libero_object", 1, render=False) as env:
        objects = free_objects(env)
        fresh = env.reset(seed=log["seed"])
    assert set(log["scatter"]) == set(objects)
    for body, adr in objects.items():
        # A flattened state is [time, qpos, qvel].
        np.testing.assert_allclose(
            init[1 + adr : 3 + adr] - fresh[1 + adr : 3 + adr], log["scatter"][body], atol=1e-4
        )
    assert log["official_distance"] > 1e-3


@pytest.mark.libero
def test_named_unsupported_task_is_refused(libero_ready, tmp_path, monkeypatch):
    # Every goal of the standard suites has an expert now; an expert that refuses this one stands in
    # for a goal no skill handles (a LIBERO-90 predicate, say).
    import flowvla.envs.experts as experts
    from flowvla.recipes.generate import generate

    def refuse(env, config=None):
        raise experts.UnsupportedGoalError("goal predicate (Stack a b) is not supported")

    monkeypatch.setattr(experts, "make_expert", refuse)
    refused = r"libero_goal task 0 \(.*\): goal predicate \(Stack a b\)"
    with pytest.raises(experts.UnsupportedGoalError, match=refused):
        generate(GenerateConfig(out_dir=str(tmp_path), suites=["libero_goal"], tasks=[0], progress=False))
    assert not list(tmp_path.rglob("*.hdf5"))  # refused before any attempt


@pytest.mark.libero
def test_rendered_episode_round_trips_through_the_loaders(libero_ready, tmp_path):
    from flowvla.data.dataset import ChunkDataset, HDF5Source
    from flowvla.data.hdf5 import LiberoHDF5Reader
    from flowvla.envs.libero import LiberoEnv
    from flowvla.recipes.generate import write_demo

    size = 64
    with LiberoEnv("libero_object", 1, image_size=size, depth=True) as env:
        init = env.reset(seed=5)
        assert init_state_distance(init, env.init_states, int(env.sim.model.nq)).min() > 1e-3
        env.reset(init_state=init, settle_steps=2)
        actions, states, frames = [], [], []
        for t in range(3):
            states.append(env.get_sim_state())
            frames.append(env.observe())
            actions.append(np.array([0.2, 0.0, -0.1 * t, 0, 0, 0, -1.0]))
            env.step(actions[-1])
        path = write_demo(tmp_path / "demo.hdf5", env, np.stack(actions), np.stack(states), init)
    r = LiberoHDF5Reader(path)
    assert r.instruction == env.instruction and len(r) == 1 and r.episode_length(0) == 3
    np.testing.assert_array_equal(r.demo_attrs(0)["init_state"], init)
    np.testing.assert_allclose(r.sim_states(0), np.stack(states))
    for t in range(3):
        # Replay renders restored states (kinematics recomputed); a live render after a step shows
        # MuJoCo's body poses from before the last 2 ms substep: the same picture up to moving edges.
        live = frames[t]["images"].astype(np.float64)
        assert np.abs(r.images(0, t).astype(np.float64) - live).mean() < 2.0
        np.testing.assert_allclose(r.states(0)[t], frames[t]["state"], atol=5e-3)
        g = r.geometry(0, t)
        assert g is not None and g["depth"].shape == (2, size, size)
        assert np.median(np.abs(g["depth"] - frames[t]["depth"])) < 1e-3
    ds = ChunkDataset(HDF5Source([path]), horizon=2)
    item = ds[0]
    assert item["images"].shape == (2, 3, size, size) and item["instruction"] == env.instruction


def _staged_episode(env, expert, init_state, **_):
    """An injected expert episode (the generator's ``episode_fn`` seam): four still steps from the
    fresh layout, with the stages a staged expert reports."""
    env.reset(init_state=init_state, settle_steps=0)
    state = env.get_sim_state()
    return types.SimpleNamespace(
        success=True, stable=True, settle_drift=0.0, steps=4, retries=0, phases={},
        actions=np.zeros((4, 7)), states=np.stack([state] * 4), init_state=init_state,
        executed_actions=None, stages=[("reach", 0), ("grasp", 2)],
    )  # fmt: skip


@pytest.mark.libero
def test_the_experts_stages_reach_the_tasks_dataset(libero_ready, tmp_path):
    from flowvla.data.hdf5 import LiberoHDF5Reader
    from flowvla.recipes.generate import generate

    cfg = GenerateConfig(out_dir=str(tmp_path), tasks=[1], demos_per_task=2, images=False, progress=False)
    s = generate(cfg, episode_fn=_staged_episode)["tasks"]["libero_object/1"]
    assert s["demos"] == 2 and s["mean_steps_kept"] == 4
    reader = LiberoHDF5Reader(tmp_path / "libero_object" / s["dataset"], image_keys=())
    for i in range(2):
        attrs = reader.demo_attrs(i)
        assert [str(n) for n in attrs["stage_names"]] == ["reach", "grasp"]
        assert list(attrs["stage_starts"]) == [0, 2]
