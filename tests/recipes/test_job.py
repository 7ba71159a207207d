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
