"""benchmarks/libero/lerobot_eval.py reads both evaluators' episodes on the same init states: LeRobot's
``eval_info.json`` in its episode order (init states 0, 1, ... with one env) and flowvla's records by
init state, whatever order the workers finished in; an episode flowvla never ran is an error, not a
silent gap."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.benchmark_loader import load_benchmark

bench = load_benchmark("libero/lerobot_eval")


@given(st.lists(st.booleans(), min_size=1, max_size=12), st.randoms())
def test_flowvla_records_are_read_by_init_state(wins, rnd):
    records = [{"task_index": 3, "init_state": i, "success": w} for i, w in enumerate(wins)]
    records += [{"task_index": 4, "init_state": i, "success": not w} for i, w in enumerate(wins)]
    rnd.shuffle(records)
    assert bench.flowvla_successes(records, 3, len(wins)) == wins
    assert bench.flowvla_successes(records, 4, len(wins)) == [not w for w in wins]


def test_a_missing_flowvla_episode_is_named():
    records = [{"task_index": 0, "init_state": i, "success": True} for i in (0, 2)]
    with pytest.raises(ValueError, match=r"task 0 init states \[1\]"):
        bench.flowvla_successes(records, 0, 3)


def test_lerobot_eval_info_is_read_in_episode_order(tmp_path):
    # The layout lerobot 0.4.4's eval_policy_all writes for one task of one suite.
    info = {
        "per_task": [
            {"task_group": "libero_object", "task_id": 1, "metrics": {"successes": [True, False, True]}}
        ],
        "overall": {"pc_success": 66.7},
    }
    (tmp_path / "eval_info.json").write_text(json.dumps(info))
    assert bench.lerobot_successes(tmp_path) == [True, False, True]
