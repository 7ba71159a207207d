"""The instruction check of a trained run: which rows each suite gets, what each episode is told and
scored on, the official reference from the run's own records, resuming, and bad input refused by
name. Episodes are injected (no simulator); the rows' task lists read LIBERO's BDDL files."""

from __future__ import annotations

import dataclasses
import json

import pytest

from flowvla.checks import MissingPathError, SettingError
from flowvla.envs.rollout import EpisodeRecord
from flowvla.policy import policy_identity
from flowvla.recipes.instruction_check import check_instructions, instruction_rows, load_instruction_check
from flowvla.recipes.settings import preset, save_recipe
from tests.policy.helpers import tiny_policy

pytestmark = pytest.mark.libero


@pytest.fixture(scope="module")
def tasks_of(libero_ready):
    from flowvla.envs.libero import get_task

    return lambda suite, t: get_task(suite, t)


def test_scenes_that_allow_another_task_are_read_from_the_bddl_files(tasks_of):
    from flowvla.envs.perturb import changed_task_refusal, scorable_task_indices

    allowed = {
        suite: [t for t in range(10) if scorable_task_indices(tasks_of(suite, t))]
        for suite in ("libero_object", "libero_goal", "libero_10")
    }
    # One kitchen for all of libero_goal; every libero_object scene holds other tasks' groceries; in
    # libero_10 only the two living-room basket scenes (0, 1) and the two kitchens 7 and 8.
    every = list(range(10))
    assert allowed == {"libero_object": every, "libero_goal": every, "libero_10": [0, 1, 7, 8]}
    assert scorable_task_indices(tasks_of("libero_goal", 1)) == [0, 2, 3, 4, 5, 6, 7, 8, 9]
    assert changed_task_refusal("libero_spatial") and changed_task_refusal("libero_goal") is None


def test_each_suite_gets_the_rows_its_scenes_allow(tasks_of):
    goal = instruction_rows("libero_goal", [2, 5, 7])
    assert list(goal) == ["changed_task", "swapped_instruction"]
    assert goal["changed_task"]["tasks"] == [2, 5, 7] and goal["changed_task"]["perturbation"].changed_task
    swapped = goal["swapped_instruction"]
    assert swapped["told"] == {2: 5, 5: 7, 7: 2}
    words = {t: tasks_of("libero_goal", swapped["told"][t]).instruction for t in (2, 5, 7)}
    assert swapped["instructions"] == words
    # libero_spatial: its words place the bowl, so only the swapped words, scored on the own goal.
    assert list(instruction_rows("libero_spatial", [0, 1])) == ["swapped_instruction"]
    # libero_10: the changed task only where the scene allows one; one task: nothing to swap with.
    assert instruction_rows("libero_10", [1, 2, 8])["changed_task"]["tasks"] == [1, 8]
    assert instruction_rows("libero_spatial", [3]) == {}


class Told(list):
    """An ``episode_fn``: remembers what each episode was told; succeeds when told its own words."""

    def __call__(self, policy, cfg, task, init_state):
        from flowvla.envs.libero import get_task

        own = get_task(cfg.suite, task).instruction
        words = (cfg.instructions or {}).get(task, own)
        changed = cfg.perturbation is not None and cfg.perturbation.changed_task
        self.append((task, init_state, words, changed))
        return record(cfg, task, init_state, success=words == own and not changed, instruction=words)


def record(cfg, task, init_state, *, success, instruction="do it", policy=None):
    return EpisodeRecord(
        suite=cfg.suite, task_index=task, task_name=f"t{task}", instruction=instruction,
        init_state=init_state, seed=cfg.seed + init_state, success=success, steps=5,
        step_limit=cfg.step_limit, replans=1, time_total=0.0, time_policy=0.0, time_render=0.0,
        time_physics=0.0, time_reset=0.0, policy=policy or cfg.policy_id, settings=cfg.outcome_settings(),
    )  # fmt: skip


def trained_run(path, suite, tasks):
    """A run folder as a finished training leaves it: the recipe and a policy checkpoint."""
    cfg = preset("toy", **{"data.suite": suite, "data.tasks": tasks, "eval.init_states": 4})
    save_recipe(cfg, path)
    policy = tiny_policy()
    policy.save_pretrained(path / "checkpoint")
    return cfg, policy


def test_a_run_is_told_other_tasks_scored_as_told_against_its_own_records_and_resumes(tasks_of, tmp_path):
    from flowvla.policy import VLAPolicy

    cfg, _ = trained_run(tmp_path, "libero_goal", [0, 3])
    loaded = VLAPolicy.from_pretrained(tmp_path / "checkpoint", weights=cfg.eval.weights)
    # The run's own evaluation: task 0 solved on init states 0-2, task 3 on none; init state 3 is
    # beyond the check's episodes and must not count.
    rollout = cfg.eval.rollout_config(
        loaded, suite="libero_goal", tasks=[0, 3], cameras=cfg.data.cameras, out_dir=str(tmp_path / "eval")
    )
    digest = policy_identity(loaded)["weights_sha256"]
    ours = {"class": "x", "path": None, "weights_sha256": digest, "step": None}
    other = {**ours, "weights_sha256": "another policy"}
    rows = [record(rollout, t, i, success=t == 0 and i < 3, policy=ours) for t in (0, 3) for i in range(4)]
    rows.append(record(rollout, 3, 0, success=True, policy=other))  # another policy's: ignored
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "episodes.jsonl").write_text(
        "".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in rows)
    )
    told = Told()
    result = check_instructions(tmp_path, init_states=3, workers=1, progress=False, episode_fn=told)
    assert result == load_instruction_check(tmp_path) and result["init_states"] == 3
    episodes = {(t, i) for t in (0, 3) for i in range(3)}
    swapped = [(t, i, w) for t, i, w, changed in told if not changed]
    assert {(t, i) for t, i, _ in swapped} == episodes
    assert all(w == tasks_of("libero_goal", 3 - t).instruction for t, _, w in swapped)  # 0 <-> 3
    assert {(t, i) for t, i, _, changed in told if changed} == episodes
    scored = {"changed_task": "the task it was told", "swapped_instruction": "its own goal"}
    for name, scored_on in scored.items():
        row = result["rows"][f"libero_goal/{name}"]
        assert (row["suite"], row["name"], row["tasks"], row["scored_on"]) == (
            "libero_goal",
            name,
            [0, 3],
            scored_on,
        )
        assert row["success"]["overall"]["successes"] == 0 and row["success"]["overall"]["episodes"] == 6
        assert (row["official"]["successes"], row["official"]["episodes"]) == (3, 6)
    assert result["rows"]["libero_goal/swapped_instruction"]["told"] == {"0": 3, "3": 0}
    # Every episode is recorded: a second call runs none.
    told.clear()
    assert check_instructions(tmp_path, init_states=3, workers=1, progress=False, episode_fn=told) == result
    assert told == []


def test_no_trained_policy_or_a_bad_count_is_refused_by_name_before_any_episode(tmp_path):
    with pytest.raises(MissingPathError, match=r"^run_dir: .* holds no trained recipe run"):
        check_instructions(tmp_path, episode_fn=pytest.fail)
    for kwargs, name in (({"init_states": 0}, "init_states"), ({"workers": 0}, "workers")):
        with pytest.raises(SettingError, match=f"^{name}: expected"):
            check_instructions(tmp_path, **kwargs, episode_fn=pytest.fail)
