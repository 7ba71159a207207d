"""Evaluation perturbations: exact distances, seeded draws, and the rollout options that use them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from flowvla.envs.perturb import Perturbation, _quat_mul


def test_perturbation_settings_are_checked_by_name():
    assert not Perturbation().active and Perturbation(object_shift_m=0.02).active
    assert Perturbation(object_scatter_m=0.04).active
    with pytest.raises(ValueError, match="object_shift_m and object_scatter_m both move the objects"):
        Perturbation(object_shift_m=0.02, object_scatter_m=0.04)
    for name in ("object_shift_m", "object_scatter_m", "camera_shift_m", "camera_rotation_deg"):
        with pytest.raises(ValueError, match=name):
            Perturbation(**{name: -0.01})
        with pytest.raises(ValueError, match=name):
            Perturbation(**{name: float("nan")})
    with pytest.raises(ValueError, match="cameras: give a sequence"):
        Perturbation(cameras="agentview")
    assert json.loads(json.dumps(Perturbation(camera_shift_m=0.01).to_dict()))["cameras"] == ["agentview"]


def test_quaternion_product_composes_rotations():
    def about_z(deg):
        h = math.radians(deg) / 2
        return np.array([math.cos(h), 0, 0, math.sin(h)])

    np.testing.assert_allclose(_quat_mul(about_z(30), about_z(60)), about_z(90), atol=1e-12)
    np.testing.assert_allclose(_quat_mul(about_z(30), np.array([1.0, 0, 0, 0])), about_z(30))


def test_rollout_options_are_validated():
    from flowvla.envs.rollout import RolloutConfig

    with pytest.raises(TypeError, match="perturbation: expected a Perturbation"):
        RolloutConfig(suite="libero_object", tasks=[0], perturbation={"object_shift_m": 0.02})
    with pytest.raises(ValueError, match=r"instructions: tasks \[3\] are not evaluated"):
        RolloutConfig(suite="libero_object", tasks=[0], instructions={3: "pick it up"})
    with pytest.raises(ValueError, match=r"instructions: tasks \[0\] have an empty instruction"):
        RolloutConfig(suite="libero_object", tasks=[0], instructions={0: " "})
    official = RolloutConfig(suite="libero_object", tasks=[0]).outcome_settings()
    assert "perturbation" not in official and "instructions" not in official  # old records resume
    shifted = RolloutConfig(suite="libero_object", tasks=[0], perturbation=Perturbation(object_shift_m=0.03))
    assert shifted.outcome_settings()["perturbation"]["object_shift_m"] == 0.03


@pytest.fixture(scope="module")
def env(libero_ready):
    from flowvla.envs.libero import LiberoEnv

    e = LiberoEnv("libero_object", 0, image_size=32, cameras=("agentview",))
    yield e
    e.close()


def test_objects_move_exactly_the_distance_on_the_table_and_the_draw_repeats(env):
    from flowvla.envs.perturb import free_objects, shift_objects

    env.reset(init_state=0)
    names = free_objects(env)
    assert names and not any("robot" in n for n in names)
    before = {n: env.sim.data.qpos[a : a + 3].copy() for n, a in names.items()}

    def shift(seed):
        moved = {}
        env.reset(
            init_state=0,
            perturb=lambda e: moved.update(
                Perturbation(object_shift_m=0.03).apply(e, np.random.default_rng(seed))
            ),
        )
        return moved["objects"], {n: env.sim.data.qpos[a : a + 3].copy() for n, a in names.items()}

    moved, after = shift(1)
    for n in names:
        d = after[n] - before[n]
        assert np.linalg.norm(d[:2]) == pytest.approx(0.03, abs=1e-9) and d[2] == 0
        np.testing.assert_allclose(d[:2], moved[n], atol=1e-4)
    again, _ = shift(1)
    other, _ = shift(2)
    assert again == moved and other != moved
    with pytest.raises(ValueError, match="distance: must be a finite number >= 0"):
        shift_objects(env, float("nan"), np.random.default_rng(0))


def test_scattered_objects_stay_inside_the_disc_and_the_draw_repeats(env):
    from flowvla.envs.perturb import free_objects, scatter_objects

    names = free_objects(env)
    before = env.reset(seed=4)

    def scatter(seed, radius=0.04):
        moved = {}
        state = env.reset(
            seed=4, perturb=lambda e: moved.update(scatter_objects(e, radius, np.random.default_rng(seed)))
        )
        return moved, state

    moved, after = scatter(1)
    radii = []
    for n, a in names.items():
        d = after[1 + a : 4 + a] - before[1 + a : 4 + a]  # a flattened state is [time, qpos, qvel]
        np.testing.assert_allclose(d[:2], moved[n], atol=1e-4)
        assert d[2] == 0
        radii.append(np.hypot(*d[:2]))
    assert max(radii) <= 0.04 and np.ptp(radii) > 1e-3
    assert scatter(1)[0] == moved and scatter(2)[0] != moved
    assert all(v == [0.0, 0.0] for v in scatter(1, radius=0.0)[0].values())
    # As an evaluation perturbation: the same draw on an official init state, recorded as "objects".
    applied = {}
    env.reset(
        init_state=0,
        perturb=lambda e: applied.update(
            Perturbation(object_scatter_m=0.04).apply(e, np.random.default_rng(1))
        ),
    )
    assert applied["objects"] == moved
    with pytest.raises(ValueError, match="radius: must be a finite number >= 0"):
        scatter_objects(env, -0.01, np.random.default_rng(0))


def test_camera_jitter_moves_the_view_by_the_distance_and_angle(env):
    def view(perturbation, seed=0):
        applied = {}
        env.reset(
            init_state=0, perturb=lambda e: applied.update(perturbation.apply(e, np.random.default_rng(seed)))
        )
        return env.camera_extrinsics("agentview"), env.observe()["images"][0], applied

    base_pose, base_image, nothing = view(Perturbation())
    pose, image, applied = view(Perturbation(camera_shift_m=0.02, camera_rotation_deg=3.0))
    assert nothing == {} and set(applied["cameras"]) == {"agentview"}
    assert np.linalg.norm(pose[:3, 3] - base_pose[:3, 3]) == pytest.approx(0.02, abs=1e-6)
    cos = (np.trace(base_pose[:3, :3].T @ pose[:3, :3]) - 1) / 2
    assert math.degrees(math.acos(np.clip(cos, -1, 1))) == pytest.approx(3.0, abs=1e-3)
    assert np.abs(image.astype(int) - base_image.astype(int)).mean() > 1  # the rendered view moved
    # The next reset rebuilds the model: the official camera is back.
    np.testing.assert_allclose(view(Perturbation())[0], base_pose, atol=1e-9)
    with pytest.raises(ValueError, match=r"cameras: \['nowhere'\] are not in this scene"):
        view(Perturbation(camera_shift_m=0.01, cameras=("nowhere",)))


def test_rollout_gives_the_policy_the_paraphrase_and_records_the_perturbation(env, tmp_path):
    from flowvla.envs.rollout import ConstantPolicy, RolloutConfig, evaluate

    class Listening(ConstantPolicy):
        def __init__(self, horizon):
            super().__init__(horizon)
            self.heard = []

        def predict_action(self, batch, **kwargs):
            self.heard.extend(batch["instruction"])
            return super().predict_action(batch, **kwargs)

    policy = Listening(horizon=2)
    cfg = RolloutConfig(
        suite="libero_object",
        tasks=[0],
        init_states=[0],
        max_steps=2,
        image_size=32,
        out_dir=str(tmp_path),
        progress=False,
        instructions={0: "grab the alphabet soup and put it in the basket"},
        perturbation=Perturbation(object_shift_m=0.02),
    )
    evaluate(policy, cfg)
    (row,) = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert set(policy.heard) == {"grab the alphabet soup and put it in the basket"}
    assert row["instruction"] == policy.heard[0] and row["task_name"].startswith("pick_up_the_alphabet_soup")
    shifts = row["perturbation"]["objects"]
    assert shifts and all(np.hypot(*d) == pytest.approx(0.02, abs=1e-4) for d in shifts.values())
    assert row["settings"]["perturbation"]["object_shift_m"] == 0.02
