"""evaluate's records: reused only for the same policy and settings, refused or moved aside otherwise,
and the summary names the policy and the step limit in force. No simulator: episodes are faked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flowvla.envs import metrics
from flowvla.envs.rollout import ConstantPolicy, EpisodeRecord, RolloutConfig, StaleRecordsError, evaluate

A = {"class": "VLAPolicy", "path": "/runs/a/checkpoint", "weights_sha256": "aa", "step": 3000}
B = {"class": "VLAPolicy", "path": "/runs/b/checkpoint", "weights_sha256": "bb", "step": 3000}


class FakeEpisodes(list):
    """An ``episode_fn`` without a simulator: success for policy A only; remembers (task, init) run."""

    def __call__(self, policy, cfg, task, init_state):
        self.append((task, init_state))
        return EpisodeRecord(
            suite=cfg.suite,
            task_index=task,
            task_name=f"task{task}",
            instruction="pick it up",
            init_state=init_state,
            seed=cfg.seed + init_state,
            success=cfg.policy_id == A,
            steps=5,
            step_limit=cfg.step_limit,
            replans=1,
            time_total=0.0,
            time_policy=0.0,
            time_render=0.0,
            time_physics=0.0,
            time_reset=0.0,
            policy=cfg.policy_id,
            settings=cfg.outcome_settings(),
        )


@pytest.fixture
def episodes():
    """The injected episodes (evaluate's public ``episode_fn`` seam): no simulator is touched."""
    return FakeEpisodes()


def config(tmp_path, **kw):
    base = dict(suite="libero_object", tasks=[0, 1], init_states=2, out_dir=str(tmp_path), progress=False)
    return RolloutConfig(**{**base, **kw})


def test_same_policy_resumes_without_running_again(tmp_path, episodes):
    first = evaluate(ConstantPolicy(), config(tmp_path, policy_id=A), episode_fn=episodes)
    assert len(episodes) == 4 and first["successes"] == 4
    again = evaluate(ConstantPolicy(), config(tmp_path, policy_id=A), episode_fn=episodes)
    assert len(episodes) == 4 and again["successes"] == 4


def test_another_policy_is_refused_and_nothing_is_touched(tmp_path, episodes):
    evaluate(ConstantPolicy(), config(tmp_path, policy_id=A), episode_fn=episodes)
    before = (tmp_path / "episodes.jsonl").read_text()
    with pytest.raises(StaleRecordsError, match=r"/runs/a/checkpoint.*/runs/b/checkpoint"):
        evaluate(ConstantPolicy(), config(tmp_path, policy_id=B), episode_fn=episodes)
    assert len(episodes) == 4 and (tmp_path / "episodes.jsonl").read_text() == before


def test_another_policy_with_restart_starts_fresh_and_says_so(tmp_path, episodes, capsys):
    evaluate(ConstantPolicy(), config(tmp_path, policy_id=A), episode_fn=episodes)
    summary = evaluate(
        ConstantPolicy(), config(tmp_path, policy_id=B, on_mismatch="restart"), episode_fn=episodes
    )
    assert len(episodes) == 8 and summary["episodes"] == 4 and summary["successes"] == 0
    assert "starting fresh" in capsys.readouterr().err
    old = [json.loads(line) for line in (tmp_path / "stale-0" / "episodes.jsonl").read_text().splitlines()]
    new = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert {r["policy"]["path"] for r in old} == {A["path"]} and {r["policy"]["path"] for r in new} == {
        B["path"]
    }


def test_an_unidentified_run_does_not_reuse_identified_records(tmp_path, episodes):
    evaluate(ConstantPolicy(), config(tmp_path, policy_id=A), episode_fn=episodes)
    with pytest.raises(StaleRecordsError, match="unidentified"):
        evaluate(ConstantPolicy(), config(tmp_path), episode_fn=episodes)


@pytest.mark.parametrize(
    "change, named",
    [({"max_steps": 100}, "step_limit"), ({"replan_every": 4}, "replan_every"), ({"seed": 1}, "seed")],
)
def test_other_outcome_settings_are_refused(tmp_path, episodes, change, named):
    evaluate(ConstantPolicy(), config(tmp_path, policy_id=A), episode_fn=episodes)
    with pytest.raises(StaleRecordsError, match=named):
        evaluate(ConstantPolicy(), config(tmp_path, policy_id=A, **change), episode_fn=episodes)


def test_records_of_a_rebuilt_model_count_for_a_kept_one(tmp_path, episodes):
    # The two run the same episodes bit for bit (tests/envs/test_libero_sim.py), so an evaluation
    # started with hard_reset=True (the default before) resumes under the new default.
    evaluate(
        ConstantPolicy(), config(tmp_path, policy_id=A, hard_reset=True, init_states=1), episode_fn=episodes
    )
    summary = evaluate(ConstantPolicy(), config(tmp_path, policy_id=A), episode_fn=episodes)
    assert summary["episodes"] == 4 and len(episodes) == 4  # only the two new init states ran


def test_records_without_identity_count_as_another_policy(tmp_path, episodes):
    # Records of an older flowvla: no policy, no settings.
    legacy = {
        "suite": "libero_object", "task_index": 0, "task_name": "task0", "instruction": "pick it up",
        "init_state": 0, "seed": 0, "success": True, "steps": 5, "step_limit": 280, "replans": 1,
        "time_total": 0.0, "time_policy": 0.0, "time_render": 0.0, "time_physics": 0.0, "time_reset": 0.0,
    }  # fmt: skip
    (tmp_path / "episodes.jsonl").write_text(json.dumps(legacy) + "\n")
    with pytest.raises(StaleRecordsError, match="unidentified"):
        evaluate(ConstantPolicy(), config(tmp_path, policy_id=A), episode_fn=episodes)


def test_another_suite_of_the_same_policy_is_kept(tmp_path, episodes):
    evaluate(ConstantPolicy(), config(tmp_path, policy_id=A, suite="libero_spatial"), episode_fn=episodes)
    summary = evaluate(ConstantPolicy(), config(tmp_path, policy_id=A), episode_fn=episodes)
    assert summary["episodes"] == 4 and len(episodes) == 8


def test_summary_records_the_policy_and_the_step_limit_in_force(tmp_path, episodes):
    evaluate(ConstantPolicy(), config(tmp_path, policy_id=A), episode_fn=episodes)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["policy"] == A
    assert summary["config"]["max_steps"] == 280  # libero_object's standard limit, not null


def test_policy_id_must_be_json(tmp_path):
    with pytest.raises(ValueError, match="policy_id"):
        config(tmp_path, policy_id={"weights": object()})
    with pytest.raises(ValueError, match="on_mismatch"):
        config(tmp_path, on_mismatch="ignore")


def test_temporal_ensemble_weights_the_oldest_chunk_most():
    import numpy as np
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from flowvla.envs.rollout import ensemble_action

    @settings(max_examples=30, deadline=None)
    @given(st.integers(1, 5), st.floats(0.0, 2.0), st.integers(0, 2**16))
    def check(n, m, seed):
        rng = np.random.default_rng(seed)
        # Chunk k starts at step k and covers steps k..k+7: all n cover step n - 1.
        chunks = [(k, rng.uniform(-1, 1, (8, 7))) for k in range(n)]
        step = n - 1
        got = ensemble_action(chunks, step, m)
        rows = np.stack([c[step - s0] for s0, c in chunks])
        assert np.all(got >= rows.min(0) - 1e-12) and np.all(got <= rows.max(0) + 1e-12)  # a convex mix
        if m == 0:
            np.testing.assert_allclose(got, rows.mean(0))
        np.testing.assert_allclose(ensemble_action(chunks, step, 50.0), rows[0], atol=1e-12)  # the oldest

    check()
    with pytest.raises(ValueError, match="step 9"):
        ensemble_action([(0, np.zeros((8, 7)))], 9, 0.1)
    with pytest.raises(ValueError, match="temporal_ensemble"):
        RolloutConfig(suite="libero_object", temporal_ensemble=-1.0)


def test_action_smoothness_measures_the_arm_and_ignores_the_gripper_step():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=25, deadline=None)
    @given(
        st.integers(4, 40),
        st.floats(-2, 2),
        st.floats(-2, 2),
        st.floats(-1, 1),
        st.integers(0, 5),
        st.integers(0, 39),
    )
    def check(t, slope, offset, curvature, dim, switch):
        time = np.arange(t, dtype=np.float64)
        a = np.zeros((t, 7))
        a[:, dim] = offset + slope * time  # a straight line: no acceleration, no jerk
        a[:, 6] = np.where(time < switch, -1.0, 1.0)  # the gripper's step counts for nothing
        flat = metrics.action_smoothness(a)
        assert flat == pytest.approx({"second_diff": 0.0, "third_diff": 0.0}, abs=1e-9)
        a[:, (dim + 1) % 6] = curvature * time**2  # constant 2nd difference 2c, no 3rd
        got = metrics.action_smoothness(a)
        assert got["second_diff"] == pytest.approx(4 * curvature**2, abs=1e-9)
        assert got["third_diff"] == pytest.approx(0.0, abs=1e-9)

    check()
    assert metrics.action_smoothness(np.zeros((2, 7))) == {"second_diff": 0.0, "third_diff": 0.0}
    with pytest.raises(ValueError, match=r"actions: expected \[T, 7\]"):
        metrics.action_smoothness(np.zeros((5, 6)))


def test_smoothness_splits_at_the_replans_and_a_seam_shows_only_across():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=40, deadline=None)
    @given(st.integers(2, 8), st.integers(9, 40), st.floats(0.1, 2.0), st.integers(0, 5))
    def check(every, t, jump, dim):
        starts = list(range(0, t, every))
        a = np.zeros((t, 7))
        # Each chunk is flat but sits `jump` above the one before: a seam at every re-plan, nothing
        # within (chunks of 2 or more: steps of 1 would be a straight ramp).
        a[:, dim] = jump * (np.arange(t) // every)
        got = metrics.action_smoothness(a, starts)
        assert got["second_diff_within"] == pytest.approx(0.0, abs=1e-12)
        assert got["third_diff_within"] == pytest.approx(0.0, abs=1e-12)
        if every < t:
            assert got["second_diff_across"] > 0 and got["third_diff_across"] > 0
        # The split partitions the windows: their weighted means give back the overall mean.
        for name, n in (("second_diff", 2), ("third_diff", 3)):
            windows = t - n
            across = sum(any(s in starts for s in range(w + 1, w + n + 1)) for w in range(windows))
            whole = (got[f"{name}_across"] * across + got[f"{name}_within"] * (windows - across)) / windows
            assert whole == pytest.approx(got[name], rel=1e-9, abs=1e-12)
        assert {k: got[k] for k in ("second_diff", "third_diff")} == metrics.action_smoothness(a)

    check()
    one_chunk = metrics.action_smoothness(np.ones((6, 7)), [0])
    assert one_chunk["second_diff_across"] == 0.0  # no seam inside the episode
    with pytest.raises(ValueError, match="chunk_starts"):
        metrics.action_smoothness(np.zeros((5, 7)), [0, 5])


def test_batched_jobs_are_grouped_by_task_in_order_and_never_larger_than_asked():
    from flowvla.envs.rollout import _groups

    jobs = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 5)]
    assert _groups(jobs, 2) == [(0, [0, 1]), (0, [2]), (1, [0, 1]), (2, [5])]
    assert _groups(jobs, 1) == [(t, [i]) for t, i in jobs]
    with pytest.raises(ValueError, match="envs_per_worker"):
        config(tmp_path=".", envs_per_worker=0)


def test_an_episode_of_a_batched_call_keeps_its_own_samples_debug_entries():
    from flowvla.envs.closed_loop import _debug_of
    from flowvla.policy import VLAPolicy

    debug = {
        "router_weights": [[0.1], [0.2], [0.3]],
        "token_signature": ["a", "b", "c"],
        "padding": {"side": "right", "padded_tokens": [0, 2, 0], "any": True},
        "layer_rms": [1.0, 2.0, 3.0],  # per layer, not per sample: left whole
        "nfe": 10,
        "batch_size": 3,
    }
    one = _debug_of(VLAPolicy, debug, 1)
    assert one["router_weights"] == [[0.2]] and one["token_signature"] == ["b"]
    assert one["padding"] == {"side": "right", "padded_tokens": [2], "any": True}
    assert _debug_of(VLAPolicy, debug, 0)["padding"]["any"] is False
    assert one["layer_rms"] == [1.0, 2.0, 3.0] and one["nfe"] == 10
    assert _debug_of(VLAPolicy, {**debug, "batch_size": 1}, 0)["router_weights"] == [[0.1], [0.2], [0.3]]
    assert _debug_of(VLAPolicy, None, 0) == {}
    # A policy that does not say which entries are per sample: each episode gets the call's whole.
    assert _debug_of(object(), debug, 1) is debug
