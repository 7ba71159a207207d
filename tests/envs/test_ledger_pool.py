"""The machinery simulator jobs share: the record ledger (append, read back, a crash's cut line, stale
records moved aside) and the worker pool (the same results in this process and in spawned ones)."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from flowvla.envs.ledger import RecordLedger, move_aside
from flowvla.envs.pool import WorkerPool, cached_env, worker_state

ROWS = st.lists(
    st.fixed_dictionaries({"task": st.integers(0, 9), "ok": st.booleans(), "note": st.text(max_size=8)}),
    max_size=6,
)


@settings(max_examples=30, deadline=None)
@given(rows=ROWS, cut=st.integers(1, 20))
def test_the_ledger_reads_back_what_was_appended_up_to_a_cut_line(tmp_path_factory, rows, cut):
    ledger = RecordLedger(tmp_path_factory.mktemp("ledger") / "sub" / "records.jsonl")
    assert ledger.load() == []
    for row in rows:
        ledger.append(row)
    assert ledger.load() == rows
    # A crash mid-write leaves a partial last line: everything before it is intact.
    ledger.path.parent.mkdir(parents=True, exist_ok=True)
    with open(ledger.path, "a") as f:
        f.write(json.dumps({"task": 1, "ok": True})[:cut])
    assert ledger.load() == rows
    ledger.rewrite(rows)  # and a rewrite drops it, so the next append starts on a clean line
    ledger.append({"task": 0})
    assert ledger.load() == [*rows, {"task": 0}]


def test_stale_records_are_moved_aside_never_mixed_in(tmp_path):
    (tmp_path / "episodes.jsonl").write_text("{}\n")
    (tmp_path / "videos").mkdir()
    first = move_aside(tmp_path, ["episodes.jsonl", "summary.json", "videos"])
    assert first.name == "stale-0" and (first / "episodes.jsonl").is_file() and (first / "videos").is_dir()
    assert not (tmp_path / "episodes.jsonl").exists()
    assert move_aside(tmp_path, ["episodes.jsonl"]).name == "stale-1"


def _setup(offset):
    worker_state()["offset"] = offset


def _job(x):
    env = cached_env(x % 2, lambda: _Env(x % 2))
    return x + worker_state()["offset"], env.key


class _Env:
    def __init__(self, key):
        self.key, self.closed = key, False

    def close(self):
        self.closed = True


def test_the_pool_gives_the_same_results_inline_and_in_processes():
    jobs = [(i,) for i in range(6)]
    with WorkerPool(1, _setup, (10,)) as inline:
        one = list(inline.unordered(_job, jobs))
        assert one == [(i + 10, i % 2) for i in range(6)]  # in order, in this process
        done = inline.submit(_job, 7)
        assert done.done() and done.result() == (17, 1)
    assert worker_state() == {}  # closing cleared this process's state and its cached env
    with WorkerPool(2, _setup, (10,)) as pool:
        two = sorted(pool.unordered(_job, jobs))
        pending = {pool.submit(_job, 3)}
        assert pool.wait_first(pending) == pending
    assert two == sorted(one)


def test_a_cached_env_is_reused_for_its_key_and_closed_when_it_changes():
    a = cached_env("a", lambda: _Env("a"))
    assert cached_env("a", lambda: _Env("other")) is a
    b = cached_env("b", lambda: _Env("b"))
    assert a.closed and not b.closed
    with WorkerPool(1):
        pass
    assert b.closed


def test_cached_envs_grow_to_the_count_asked_and_are_all_closed_on_a_new_key():
    from flowvla.envs.pool import cached_envs

    one = cached_envs("a", 1, lambda: _Env("a"))
    three = cached_envs("a", 3, lambda: _Env("a"))
    assert three[0] is one[0] and len({id(e) for e in three}) == 3
    assert cached_envs("a", 2, lambda: _Env("a")) == three[:2]  # fewer: the first ones, none closed
    cached_envs("b", 1, lambda: _Env("b"))
    assert all(e.closed for e in three)
