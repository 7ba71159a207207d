"""The main job's data phase without a simulator (the generator's summary injected): a task the
expert could not give its demonstrations for stops the job, or is left out of training and named."""

from __future__ import annotations

import pytest

from flowvla.recipes.job import ensure_demos
from flowvla.recipes.settings import preset


def _summary(cfg, demos):
    """A generation summary: task ``t`` kept ``demos[t]`` demonstrations (None: not supported)."""
    tasks = {}
    for t, n in enumerate(demos):
        key = f"{cfg.data.suite}/{t}"
        if n is None:
            tasks[key] = {"supported": False, "reason": "opening a hinged door is not supported"}
        else:
            tasks[key] = {"supported": True, "demos": n, "attempts": 20, "expert_success_rate": n / 20,
                          "dataset": f"task{t}_demo.hdf5"}  # fmt: skip
    return {"tasks": tasks, "attempts_this_call": 0}


@pytest.fixture
def generated(monkeypatch):
    import flowvla.recipes.generate as generate

    def use(cfg, demos):
        monkeypatch.setattr(generate, "generate", lambda gen_cfg, episode_fn=None: _summary(cfg, demos))

    return use


def test_a_task_without_demonstrations_stops_the_job_naming_it(generated, tmp_path):
    cfg = preset("default", tasks=[0, 1, 2], demos_per_task=5)
    generated(cfg, [5, 0, None])
    with pytest.raises(
        RuntimeError, match=r"libero_object task 1: only 0 of 5 .*unsolved_tasks=train_without"
    ):
        ensure_demos(cfg, tmp_path)


def test_train_without_leaves_out_the_unsolved_tasks_and_names_why(generated, tmp_path):
    cfg = preset("default", tasks=[0, 1, 2], demos_per_task=5, **{"data.unsolved_tasks": "train_without"})
    generated(cfg, [5, 3, None])
    files, summary = ensure_demos(cfg, tmp_path)
    assert [f.name for f in files] == ["task0_demo.hdf5"]
    assert sorted(summary["left_out"]) == [1, 2]
    assert "only 3 of 5" in summary["left_out"][1] and "hinged door" in summary["left_out"][2]
    generated(cfg, [0, None, 0])
    with pytest.raises(RuntimeError, match="no task of"):
        ensure_demos(cfg, tmp_path)


def test_several_suites_read_each_suites_own_cache_folder_and_name_left_out_tasks_by_suite(
    monkeypatch, tmp_path
):
    import flowvla.recipes.generate as generate

    cfg = preset("default", tasks=[0, 1], demos_per_task=5, **{"data.suite": "libero_goal+libero_10",
                 "data.unsolved_tasks": "train_without"})  # fmt: skip
    kept = {"libero_goal": [5, 5], "libero_10": [5, 2]}
    folders = []

    def fake(gen_cfg, episode_fn=None):
        (suite,) = gen_cfg.suites
        folders.append(gen_cfg.out_dir)
        single = preset("default", tasks=[0, 1], demos_per_task=5, **{"data.suite": suite})
        return _summary(single, kept[suite])

    monkeypatch.setattr(generate, "generate", fake)
    files, summary = ensure_demos(cfg, tmp_path)
    # Each suite in the folder a run of that suite alone uses: its demonstrations are shared.
    alone = {s: preset("default", **{"data.suite": s}).data_key() for s in kept}
    assert folders == [str(tmp_path / alone["libero_goal"]), str(tmp_path / alone["libero_10"])]
    assert [f.relative_to(tmp_path).parts for f in files] == [
        (alone["libero_goal"], "libero_goal", "task0_demo.hdf5"),
        (alone["libero_goal"], "libero_goal", "task1_demo.hdf5"),
        (alone["libero_10"], "libero_10", "task0_demo.hdf5"),
    ]
    assert (
        list(summary["left_out"]) == ["libero_10/1"] and "only 2 of 5" in summary["left_out"]["libero_10/1"]
    )
    assert sorted(summary["tasks"]) == ["libero_10/0", "libero_10/1", "libero_goal/0", "libero_goal/1"]


class Episodes(list):
    """An ``episode_fn`` without a simulator: remembers (suite, task, init state, step limit); task 0
    succeeds."""

    def __call__(self, policy, cfg, task, init_state):
        from flowvla.envs.rollout import EpisodeRecord

        self.append((cfg.suite, task, init_state, cfg.step_limit))
        return EpisodeRecord(
            suite=cfg.suite, task_index=task, task_name=f"t{task}", instruction="do it",
            init_state=init_state, seed=cfg.seed + init_state, success=task == 0, steps=5,
            step_limit=cfg.step_limit, replans=1, time_total=0.0, time_policy=0.0, time_render=0.0,
            time_physics=0.0, time_reset=0.0, policy=cfg.policy_id, settings=cfg.outcome_settings(),
        )  # fmt: skip


def test_several_suites_are_evaluated_each_by_its_protocol_into_one_summary_and_resume(tmp_path):
    from flowvla.recipes.job import evaluate_policy
    from tests.policy.helpers import tiny_policy

    settings = {"data.suite": "libero_goal+libero_10", "data.tasks": [0, 1], "eval.init_states": 2,
                "eval.max_steps": None, "eval.workers": 1, "eval.video": "none"}  # fmt: skip
    cfg = preset("toy", **settings)
    ran = Episodes()
    summary = evaluate_policy(cfg, tiny_policy(), tmp_path, progress=False, episode_fn=ran)
    assert sorted(ran) == sorted(
        (s, t, i, limit)
        for s, limit in (("libero_goal", 300), ("libero_10", 520))
        for t in (0, 1)
        for i in (0, 1)
    )
    assert list(summary["tasks"]) == ["libero_10/0", "libero_10/1", "libero_goal/0", "libero_goal/1"]
    assert (summary["successes"], summary["episodes"]) == (4, 8)
    assert set(summary["config"]) == {"libero_goal", "libero_10"}
    ran.clear()
    assert evaluate_policy(cfg, tiny_policy(), tmp_path, progress=False, episode_fn=ran)["episodes"] == 8
    assert ran == []
