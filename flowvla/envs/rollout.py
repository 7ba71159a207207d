"""Evaluate any policy on LIBERO: chunked execution, re-planning, success rates, records, videos.

The runner talks to a policy through one method (the contract of ``flowvla.policy``)::

    actions, debug_info = policy.predict_action(batch, **predict_kwargs)

``batch`` is a [`collate`][flowvla.data.batch.collate] d observation with ``B = 1`` (images
``[1, V, 3, H, W]`` uint8, ``instruction`` list, ``state [1, S]``, optional depth/cameras);
``actions`` is ``[1, H, 7]`` (numpy or torch) in LIBERO's action space, ``debug_info`` a dict (may be
empty). The runner executes the first ``replan_every`` actions of each chunk with physics only, then
renders and asks again, until the task succeeds or the suite's step limit is reached.

Each episode is appended to ``<out_dir>/episodes.jsonl`` as soon as it ends (so an interrupted run
resumes where it stopped), and ``<out_dir>/summary.json`` holds per-task and overall success rates
with Wilson 95% intervals, the policy's identity and the settings used (the real step limit).

A record names the policy that produced it (``RolloutConfig.policy_id``, e.g. a weights hash from
``flowvla.policy.policy_identity``) and the settings that decide an episode's outcome. Records are
reused only when both match this run: an ``out_dir`` written by another policy, or with another step
limit, is refused or (``on_mismatch="restart"``) moved aside, never silently mixed in.

The parts live a module each: [`rollout_config`][flowvla.envs.rollout_config] (the config),
[`closed_loop`][flowvla.envs.closed_loop] (one episode), [`metrics`][flowvla.envs.metrics] (Wilson
intervals, smoothness), [`ledger`][flowvla.envs.ledger] (the records), [`pool`][flowvla.envs.pool]
(the worker processes), [`progress`][flowvla.envs.progress], [`baselines`][flowvla.envs.baselines];
their public names are re-exported here.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from flowvla.envs.baselines import ConstantPolicy, RandomPolicy
from flowvla.envs.closed_loop import (
    EpisodeFn,
    EpisodeRecord,
    ensemble_action,
    gripper_toggles,
    run_episode,
    run_episodes,
    simulate_episode,
    simulate_episodes,
)
from flowvla.envs.ledger import RecordLedger, load_records, move_aside
from flowvla.envs.libero_setup import prepare_libero
from flowvla.envs.metrics import SEAM_SMOOTHNESS, action_smoothness, wilson_interval
from flowvla.envs.pool import WorkerPool, worker_state
from flowvla.envs.progress import Progress
from flowvla.envs.rollout_config import RolloutConfig
from flowvla.io import jsonable, write_json_atomic

__all__ = [
    "SEAM_SMOOTHNESS",
    "ConstantPolicy",
    "EpisodeFn",
    "EpisodeRecord",
    "Policy",
    "Progress",
    "RandomPolicy",
    "RolloutConfig",
    "StaleRecordsError",
    "action_smoothness",
    "ensemble_action",
    "evaluate",
    "gripper_toggles",
    "load_records",
    "run_episode",
    "run_episodes",
    "simulate_episode",
    "simulate_episodes",
    "smoothness_columns",
    "summarize",
    "wilson_interval",
]


@runtime_checkable
class Policy(Protocol):
    """Anything with ``predict_action(batch, **kwargs) -> (actions [B, H, A], debug_info)``."""

    def predict_action(self, batch: dict[str, Any], **kwargs: Any) -> tuple[Any, dict[str, Any]]: ...


class StaleRecordsError(ValueError):
    """``out_dir`` holds episodes of another policy or other settings; the message says which."""


# ------------------------------------------------------------------------------------------ summary
def summarize(records: Iterable[EpisodeRecord | dict[str, Any]]) -> dict[str, Any]:
    """Success rate with a Wilson 95% interval, overall and per task, plus mean steps and times."""
    rows = [dataclasses.asdict(r) if isinstance(r, EpisodeRecord) else dict(r) for r in records]

    def block(rs: list[dict[str, Any]]) -> dict[str, Any]:
        n, k = len(rs), sum(bool(r["success"]) for r in rs)
        lo, hi = wilson_interval(k, n)
        return {
            "episodes": n,
            "successes": k,
            "success_rate": k / n if n else float("nan"),
            "ci95": [lo, hi],
            "mean_steps": float(np.mean([r["steps"] for r in rs])) if rs else float("nan"),
            "mean_episode_s": float(np.mean([r["time_total"] for r in rs])) if rs else float("nan"),
            **_mean_smoothness(rs),
            # How episodes ended (flowvla.envs.outcome); records written before outcomes count as unknown.
            "outcomes": dict(
                collections.Counter((r.get("outcome") or {}).get("outcome", "unknown") for r in rs)
            ),
        }

    per_task: dict[str, Any] = {}
    for r in rows:
        per_task.setdefault(f"{r['suite']}/{r['task_index']}", []).append(r)
    out = block(rows)
    out["tasks"] = {
        k: {"task_name": v[0]["task_name"], "instruction": v[0]["instruction"], **block(v)}
        for k, v in sorted(per_task.items(), key=lambda kv: (kv[0].split("/")[0], int(kv[0].split("/")[1])))
    }
    return out


def smoothness_columns(summary: dict[str, Any]) -> dict[str, float | None]:
    """An evaluation summary's executed-action smoothness under the names a results row uses:
    ``second_diff`` and ``third_diff`` (``None`` when absent), then the seam split of
    ``SEAM_SMOOTHNESS`` where the records carried it."""
    out = {k: summary.get(f"mean_{k}") for k in ("second_diff", "third_diff")}
    out.update({k: summary[f"mean_{k}"] for k in SEAM_SMOOTHNESS if f"mean_{k}" in summary})
    return out


def _mean_smoothness(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Episode means of [`action_smoothness`][flowvla.envs.metrics.action_smoothness] (records
    written before it existed are left out)."""
    have = [r["smoothness"] for r in rows if r.get("smoothness")]
    if not have:
        return {}
    keys = [k for k in have[0] if all(k in h for h in have)]  # the seam split: newer records only
    return {f"mean_{k}": float(np.mean([h[k] for h in have])) for k in keys}


# ----------------------------------------------------------------------------------- job execution
class _SavedPolicy:
    """A policy handed to worker processes as a directory it was saved to.

    Some policies cannot be pickled (``transformers`` models carry hook closures), and a saved
    directory is also far smaller to send than a pickled module; anything with ``save_pretrained`` /
    ``from_pretrained`` goes this way.
    """

    def __init__(self, policy: Any, directory: Path) -> None:
        self.cls, self.directory = type(policy), str(directory)
        policy.save_pretrained(directory)

    def load(self) -> Any:
        return self.cls.from_pretrained(self.directory).eval()


def _sendable(policy: Policy, tmp: str) -> Any:
    if callable(getattr(policy, "save_pretrained", None)) and callable(
        getattr(type(policy), "from_pretrained", None)
    ):
        return _SavedPolicy(policy, Path(tmp) / "policy")
    return policy


def _setup(policy: Any, cfg: RolloutConfig, episode_fn: EpisodeFn) -> None:
    state = worker_state()
    state["policy"] = policy.load() if isinstance(policy, _SavedPolicy) else policy
    state["cfg"], state["episode_fn"] = cfg, episode_fn


def _episodes(task: int, init_states: list[int]) -> list[dict[str, Any]]:
    """The records of a group of one task's episodes: the simulator's run together (one environment
    each, planned in shared policy calls), any other episode function's one after the other."""
    state = worker_state()
    policy, cfg, episode_fn = state["policy"], state["cfg"], state["episode_fn"]
    if episode_fn is simulate_episode and len(init_states) > 1:
        records = simulate_episodes(policy, cfg, task, init_states)
    else:
        records = [episode_fn(policy, cfg, task, i) for i in init_states]
    return [dataclasses.asdict(r) for r in records]


def _groups(jobs: list[tuple[int, int]], size: int) -> list[tuple[int, list[int]]]:
    """``(task, init states)`` groups of at most ``size`` consecutive jobs of one task."""
    groups: list[tuple[int, list[int]]] = []
    for task, init_state in jobs:
        if groups and groups[-1][0] == task and len(groups[-1][1]) < size:
            groups[-1][1].append(init_state)
        else:
            groups.append((task, [init_state]))
    return groups


def evaluate(
    policy: Policy,
    cfg: RolloutConfig,
    on_episode: Callable[[EpisodeRecord], None] | None = None,
    *,
    episode_fn: EpisodeFn | None = None,
) -> dict[str, Any]:
    """Evaluate ``policy`` on ``cfg``'s tasks x init states; return the summary (see
    [`summarize`][flowvla.envs.rollout.summarize]).

    With ``cfg.workers > 1`` the policy is sent once to each worker process of a
    [`WorkerPool`][flowvla.envs.pool.WorkerPool] (a policy with ``save_pretrained`` as its saved
    folder). With ``cfg.out_dir``, finished episodes found in ``episodes.jsonl`` are not run again.

    Args:
        policy: anything with ``predict_action``.
        cfg: what to evaluate.
        on_episode: called with each finished episode's record.
        episode_fn: how one episode is run (None: in LIBERO,
            [`simulate_episode`][flowvla.envs.closed_loop.simulate_episode]); any other needs no
            simulator (tests inject episodes this way).
    """
    if not callable(getattr(policy, "predict_action", None)):
        raise TypeError(
            f"policy must have a predict_action(batch, **kwargs) method; got {type(policy).__name__}"
        )
    episode_fn = simulate_episode if episode_fn is None else episode_fn
    out_dir = Path(cfg.out_dir) if cfg.out_dir else None
    ledger = RecordLedger(out_dir / "episodes.jsonl") if out_dir else None
    done_rows = ledger.load() if ledger else []
    reason = _mismatch(done_rows, cfg)
    if reason is not None:
        assert out_dir is not None
        if cfg.on_mismatch == "error":
            raise StaleRecordsError(
                f"out_dir={str(out_dir)!r} holds episodes that this run must not reuse: {reason}. "
                "Evaluate into a new out_dir, or restart (on_mismatch='restart', --restart on the "
                "command line) to move the old records aside."
            )
        moved = _move_aside(out_dir)
        print(
            f"evaluate: {out_dir}: {reason}; starting fresh (old records moved to {moved})", file=sys.stderr
        )
        done_rows = []
    done = {(r["suite"], r["task_index"], r["init_state"]) for r in done_rows}
    if ledger is not None and done_rows:
        ledger.rewrite(done_rows)  # without any truncated tail, so appends start on a clean line
    jobs = [(t, i) for t in cfg.tasks for i in cfg.init_states if (cfg.suite, t, i) not in done]
    rows = [
        r
        for r in done_rows
        if r["suite"] == cfg.suite and r["task_index"] in cfg.tasks and r["init_state"] in cfg.init_states
    ]
    if jobs and episode_fn is simulate_episode:
        # Fail on a missing simulator before any output, and choose the GL backend here so that
        # spawned workers inherit it.
        prepare_libero()
    progress = Progress(len(jobs), cfg.progress, f"{cfg.suite}")

    def finish(row: dict[str, Any]) -> None:
        rows.append(row)
        if ledger is not None:
            ledger.append(row)
        progress.update(row["success"])
        if on_episode is not None:
            on_episode(EpisodeRecord(**row))

    batched = cfg.envs_per_worker > 1 and episode_fn is simulate_episode
    # Batched, the jobs go out in groups of one task: split them over the workers first, so that none
    # sits idle while another runs a large group.
    size = min(cfg.envs_per_worker, -(-len(jobs) // max(1, cfg.workers))) if batched else 1
    units = _groups(jobs, size)
    workers = max(1, min(cfg.workers, len(units)))
    try:
        with tempfile.TemporaryDirectory(prefix="flowvla-rollout-") as tmp:
            sent = _sendable(policy, tmp) if workers > 1 else policy
            with WorkerPool(workers, _setup, (sent, cfg, episode_fn)) as pool:
                for group in pool.unordered(_episodes, units):
                    for row in group:
                        finish(row)
    finally:
        progress.close()
    summary = summarize(rows)
    summary["policy"] = cfg.policy_id
    config = dataclasses.asdict(cfg)
    config.pop("policy_id")
    config["predict_kwargs"] = jsonable(config["predict_kwargs"])
    config["max_steps"] = cfg.step_limit  # the limit in force, not the None that means "the suite's"
    summary["config"] = config
    if out_dir is not None:
        write_json_atomic(out_dir / "summary.json", summary)
    return summary


def _describe(policy_id: dict[str, Any] | None) -> str:
    return "an unidentified policy" if policy_id is None else json.dumps(policy_id, sort_keys=True)


def _mismatch(rows: list[dict[str, Any]], cfg: RolloutConfig) -> str | None:
    """Why ``rows`` (records already in ``out_dir``) cannot count for ``cfg``, or None if they can."""
    for r in rows:
        if r.get("policy") != cfg.policy_id:
            return (
                f"they were written by {_describe(r.get('policy'))}, this run evaluates "
                f"{_describe(cfg.policy_id)}"
            )
    settings = cfg.outcome_settings()
    for r in rows:
        if r["suite"] != cfg.suite:
            continue  # other suites have other step limits; their records are not reused anyway
        theirs = r.get("settings") or {"step_limit": r["step_limit"]}  # records before settings
        # A kept model runs the rebuilt model's episodes bit for bit: hard_reset does not decide them.
        differ = sorted(k for k in theirs if k != "hard_reset" and theirs[k] != settings.get(k))
        if differ:
            return ", ".join(f"{k} was {theirs[k]!r}, now {settings.get(k)!r}" for k in differ)
    return None


def _move_aside(out_dir: Path) -> Path:
    return move_aside(out_dir, ("episodes.jsonl", "summary.json", "videos"))
