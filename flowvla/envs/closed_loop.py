"""One closed-loop episode: observe, predict a chunk, execute it (re-planning, temporal ensembling,
cuts at gripper toggles), until success or the step limit; and its record.

[`run_episode`][flowvla.envs.closed_loop.run_episode] runs an episode in a given environment;
[`run_episodes`][flowvla.envs.closed_loop.run_episodes] runs several at once in their own environments,
with one policy call for every episode that re-plans at the same time (batched observations);
[`simulate_episode`][flowvla.envs.closed_loop.simulate_episode] is the evaluation's default
`EpisodeFn`: it keeps one environment per process, runs the
episode and writes its video ([`simulate_episodes`][flowvla.envs.closed_loop.simulate_episodes]: the
same for several episodes of one task). A test or an experiment passes its own ``EpisodeFn`` to
[`evaluate`][flowvla.envs.rollout.evaluate] instead (no simulator needed).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flowvla.data.batch import STATE, STATE_MASK, collate, pad_state
from flowvla.envs.libero import ACTION_DIM, LiberoEnv
from flowvla.envs.metrics import action_smoothness
from flowvla.envs.outcome import OutcomeTracker
from flowvla.envs.pool import cached_envs
from flowvla.envs.rollout_config import RolloutConfig
from flowvla.envs.video import caption_frames, tile_views, write_video
from flowvla.io import jsonable

__all__ = [
    "EpisodeFn",
    "EpisodeRecord",
    "caption_episode",
    "ensemble_action",
    "gripper_toggles",
    "outcome_text",
    "run_episode",
    "run_episodes",
    "simulate_episode",
    "simulate_episodes",
]


@dataclasses.dataclass
class EpisodeRecord:
    """One evaluated episode (one line of ``episodes.jsonl``). Times in seconds."""

    suite: str
    task_index: int
    task_name: str
    instruction: str
    init_state: int
    seed: int
    success: bool
    steps: int
    step_limit: int
    replans: int
    time_total: float
    time_policy: float
    time_render: float
    time_physics: float
    time_reset: float
    video: str | None = None
    time_video: float = 0.0
    debug: dict[str, Any] = dataclasses.field(default_factory=dict)
    policy: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None
    outcome: dict[str, Any] | None = None
    smoothness: dict[str, float] | None = None
    perturbation: dict[str, Any] | None = None

    def key(self) -> tuple[str, int, int]:
        return self.suite, self.task_index, self.init_state


#: ``episode_fn(policy, cfg, task, init_state) -> EpisodeRecord``: how
#: [`evaluate`][flowvla.envs.rollout.evaluate] gets one episode (default:
#: [`simulate_episode`][flowvla.envs.closed_loop.simulate_episode]). It runs in the worker processes
#: when ``cfg.workers > 1``, so it must be a module-level function there.
EpisodeFn = Callable[[Any, RolloutConfig, int, int], EpisodeRecord]


def _as_numpy_actions(actions: Any, batch: int = 1) -> np.ndarray:
    """``[B, H, A]`` float64 actions from a policy's output for a batch of ``batch``."""
    if hasattr(actions, "detach"):
        actions = actions.detach().float().cpu().numpy()
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim != 3 or a.shape[0] != batch or a.shape[2] != ACTION_DIM or a.shape[1] < 1:
        raise ValueError(
            f"predict_action must return actions of shape [{batch}, H, {ACTION_DIM}] for a batch of "
            f"{batch}, got {a.shape}"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError("predict_action returned NaN or Inf actions")
    return a


def _debug_of(policy: Any, debug: Any, index: int) -> dict[str, Any]:
    """Sample ``index``'s view of a batch's ``debug_info``: the policy's own split where it has one
    (``sample_debug``, e.g. [`VLAPolicy.sample_debug`][flowvla.policy.policy.VLAPolicy.sample_debug]),
    else the whole call's."""
    if not isinstance(debug, dict):
        return {}
    split = getattr(policy, "sample_debug", None)
    return debug if split is None else split(debug, index)


def _wants_video(cfg: RolloutConfig, first_of_task: bool) -> bool:
    # Frames must be collected before the outcome is known, so "failures" / "successes" collect them
    # for every episode and decide at the end.
    return cfg.video in ("all", "failures", "successes") or (cfg.video == "first" and first_of_task)


def _render_frame(env: LiberoEnv, size: int | None = None) -> np.ndarray:
    """The env's views side by side, upright, at the env's image size or ``size`` (square)."""
    views = [env.render_camera(c, height=size, width=size)[0].transpose(2, 0, 1) for c in env.cameras]
    return tile_views(np.stack(views))


def ensemble_action(chunks: Sequence[tuple[int, np.ndarray]], step: int, m: float) -> np.ndarray:
    """ACT's temporal ensemble: the mean of every chunk's action for ``step``, the ``i``-th oldest
    chunk weighted by ``exp(-m * i)``.

    Args:
        chunks: ``(first step, [H, A] actions)`` of the predicted chunks, oldest first.
        step: the episode step to act at.
        m: the weight decay (0: a plain mean; large: the oldest prediction).

    Raises:
        ValueError: no chunk covers ``step``.
    """
    rows = [c[step - s0] for s0, c in chunks if 0 <= step - s0 < len(c)]
    if not rows:
        raise ValueError(f"step {step}: no predicted chunk covers it")
    w = np.exp(-m * np.arange(len(rows)))
    return (w[:, None] * np.stack(rows)).sum(0) / w.sum()


def run_episode(
    env: LiberoEnv, policy: Any, cfg: RolloutConfig, init_state: int, record_video: bool = False
) -> tuple[EpisodeRecord, list[np.ndarray]]:
    """Run one episode of ``env``'s task from ``init_state``; return its record and video frames.

    The frames (with ``record_video``) are the policy's observations at each re-plan, or, with
    ``cfg.video_size``, a render at that size after every ``cfg.video_every``-th control step (default:
    each), the last step always included: as many frames as steps when every step is rendered.
    [`caption_episode`][flowvla.envs.closed_loop.caption_episode] writes the episode's text on them.
    """
    return _drive([_episode(env, cfg, init_state, record_video)], policy, cfg)[0]


def run_episodes(
    envs: Sequence[LiberoEnv],
    policy: Any,
    cfg: RolloutConfig,
    init_states: Sequence[int],
    record_video: Sequence[bool] | bool = False,
) -> list[tuple[EpisodeRecord, list[np.ndarray]]]:
    """Run the episode from ``init_states[k]`` in ``envs[k]`` for every ``k`` at once: each runs as
    [`run_episode`][flowvla.envs.closed_loop.run_episode] would run it, but the episodes that need a
    new chunk are observed first and planned by one ``predict_action`` call on their stacked
    observations. For a policy whose actions for a sample do not depend on the rest of its batch, the
    records equal ``run_episode``'s one at a time (tested); a policy's time in a batched call is split
    evenly over its episodes. An int ``seed`` in ``cfg.predict_kwargs`` goes to a batched call as one
    seed per sample, each the same (as
    [`VLAPolicy.predict_action`][flowvla.policy.policy.VLAPolicy.predict_action] takes them), so that
    each episode's noise is the noise it would get alone.

    Args:
        envs: one environment per episode (distinct objects; the same task or not).
        policy: anything with ``predict_action``.
        cfg: the rollout settings.
        init_states: the official init state of each episode.
        record_video: whether each episode (or all) collects video frames.
    """
    if len(envs) != len(init_states):
        raise ValueError(f"envs and init_states must pair up, got {len(envs)} and {len(init_states)}")
    if len({id(e) for e in envs}) != len(envs):
        raise ValueError("envs: each episode needs its own environment, got the same one twice")
    videos = [record_video] * len(envs) if isinstance(record_video, bool) else list(record_video)
    if len(videos) != len(envs):
        raise ValueError(f"record_video: one flag per episode, got {len(videos)} for {len(envs)}")
    return _drive(
        [_episode(e, cfg, i, v) for e, i, v in zip(envs, init_states, videos, strict=True)], policy, cfg
    )


#: What an episode in progress is given when it asks for a plan: ``(chunk [H, A], debug_info, policy
#: seconds)``.
_Plan = tuple[np.ndarray, dict[str, Any], float]
_Episode = Generator[dict[str, Any], _Plan, tuple[EpisodeRecord, list[np.ndarray]]]


def _drive(
    episodes: list[_Episode], policy: Any, cfg: RolloutConfig
) -> list[tuple[EpisodeRecord, list[np.ndarray]]]:
    """Run ``episodes`` to their ends: each yields its observation when it needs a chunk; those
    waiting are planned together by one policy call."""
    done: dict[int, tuple[EpisodeRecord, list[np.ndarray]]] = {}
    waiting: dict[int, dict[str, Any]] = {}

    def advance(k: int, plan: _Plan | None) -> None:
        try:
            waiting[k] = next(episodes[k]) if plan is None else episodes[k].send(plan)
        except StopIteration as end:
            done[k] = end.value

    for k in range(len(episodes)):
        advance(k, None)
    while waiting:
        keys = sorted(waiting)
        batch = collate([waiting.pop(k) for k in keys])
        kwargs = dict(cfg.predict_kwargs)
        if len(keys) > 1 and isinstance(kwargs.get("seed"), int):
            # Each sample's noise as a batch of one with this seed draws it (VLAPolicy's per-sample
            # seeds): an episode's chunks do not depend on which others were planned with it.
            kwargs["seed"] = [kwargs["seed"]] * len(keys)
        t0 = time.perf_counter()
        actions, debug = policy.predict_action(batch, **kwargs)
        share = (time.perf_counter() - t0) / len(keys)
        chunks = _as_numpy_actions(actions, len(keys))
        for j, k in enumerate(keys):
            advance(k, (chunks[j], _debug_of(policy, debug, j), share))
    return [done[k] for k in range(len(episodes))]


def _episode(env: LiberoEnv, cfg: RolloutConfig, init_state: int, record_video: bool) -> _Episode:
    """One episode as a generator: yields the observation (a batch-of-one item) whenever it needs a
    chunk, is sent the plan, returns ``(record, frames)``. Its times count only while it runs."""
    clock = time.perf_counter()
    active = 0.0  # seconds this episode ran, not counting the policy nor other episodes' turns
    seed = cfg.seed + init_state
    applied: dict[str, Any] = {}
    perturb = None
    if cfg.perturbation is not None and cfg.perturbation.active:
        rng = np.random.default_rng([seed, 0x5E7])  # its own stream: LIBERO's numpy draws stay as they were

        def perturb(e: LiberoEnv) -> None:
            applied.update(cfg.perturbation.apply(e, rng))

    env.reset(init_state=init_state, seed=seed, settle_steps=cfg.settle_steps, perturb=perturb)
    t_reset = time.perf_counter() - clock
    instruction = (cfg.instructions or {}).get(env.task.index, env.instruction)
    tracker = OutcomeTracker(env)
    limit = cfg.step_limit
    frames: list[np.ndarray] = []
    queue: list[np.ndarray] = []
    running: list[tuple[int, np.ndarray]] = []  # (first step, chunk), for temporal ensembling
    t_policy = t_render = t_physics = t_video = 0.0
    # Watchable video: rendered apart from the observations, every k-th step.
    video_every = (cfg.video_every or 1) if record_video and cfg.video_size else None
    replans = steps = 0
    success = False
    last_debug: dict[str, Any] = {}
    executed: list[np.ndarray] = []
    chunk_starts: list[int] = []  # steps whose action is the first of a fresh chunk
    fresh = False  # the next queued action is the first of a chunk just predicted
    while steps < limit:
        if cfg.replan_at_gripper and queue and executed and not fresh:
            if gripper_toggles(executed[-1], queue[0]):
                queue = []
        if not queue:
            t0 = time.perf_counter()
            obs = env.observe()
            t_render += time.perf_counter() - t0
            if cfg.state_dim is not None:
                obs[STATE], obs[STATE_MASK] = pad_state(obs[STATE], cfg.state_dim)
            obs["instruction"] = instruction
            active += time.perf_counter() - clock
            chunk, debug, seconds = yield obs
            clock = time.perf_counter()
            t_policy += seconds
            queue = list(chunk[: cfg.replan_every or len(chunk)])
            if cfg.temporal_ensemble is not None:
                running = [(s0, c) for s0, c in running if s0 + len(c) > steps] + [(steps, chunk)]
            replans += 1
            fresh = True
            last_debug = debug if isinstance(debug, dict) else {}
            if record_video and video_every is None:
                frames.append(tile_views(obs["images"]))
        elif record_video and video_every is None and cfg.video_every and steps % cfg.video_every == 0:
            t0 = time.perf_counter()
            frames.append(_render_frame(env))
            t_render += time.perf_counter() - t0
        t0 = time.perf_counter()
        action = queue.pop(0)
        if cfg.temporal_ensemble is not None:
            action = ensemble_action(running, steps, cfg.temporal_ensemble)
        result = env.step(action)
        t_physics += time.perf_counter() - t0
        tracker.update(action)
        if fresh:
            chunk_starts.append(steps)
        executed.append(np.asarray(action, dtype=np.float64))
        fresh = False
        steps += 1
        if video_every is not None and (steps % video_every == 0 or result.success or steps == limit):
            t0 = time.perf_counter()
            frames.append(_render_frame(env, cfg.video_size))
            t_video += time.perf_counter() - t0
        if result.success:
            success = True
            break
    if record_video and video_every is None:
        frames.append(_render_frame(env))
    rec = EpisodeRecord(
        suite=cfg.suite,
        task_index=env.task.index,
        task_name=env.task.name,
        instruction=instruction,
        init_state=init_state,
        seed=seed,
        success=success,
        steps=steps,
        step_limit=limit,
        replans=replans,
        time_total=active + time.perf_counter() - clock + t_policy,
        time_policy=t_policy,
        time_render=t_render,
        time_physics=t_physics,
        time_reset=t_reset,
        time_video=t_video,
        debug=jsonable(last_debug),
        policy=cfg.policy_id,
        settings=cfg.outcome_settings(),
        outcome=tracker.summary(success),
        smoothness=action_smoothness(np.stack(executed), chunk_starts) if executed else None,
        perturbation=applied or None,
    )
    return rec, frames


def gripper_toggles(previous: np.ndarray, action: np.ndarray) -> bool:
    """Whether ``action`` switches the gripper against ``previous`` (closed: last dimension > 0)."""
    return bool((previous[-1] > 0) != (action[-1] > 0))


def _envs_for(cfg: RolloutConfig, task: int, count: int = 1) -> list[LiberoEnv]:
    key = (cfg.suite, task, cfg.image_size, tuple(cfg.cameras), cfg.depth, cfg.hard_reset)
    return cached_envs(
        key,
        count,
        lambda: LiberoEnv(
            cfg.suite,
            task,
            image_size=cfg.image_size,
            cameras=cfg.cameras,
            depth=cfg.depth,
            hard_reset=cfg.hard_reset,
        ),
    )


def _video_path(cfg: RolloutConfig, task: int, init_state: int) -> Path:
    assert cfg.out_dir is not None
    name = f"{cfg.suite}_task{task:02d}_init{init_state:02d}.{cfg.video_format}"
    return Path(cfg.out_dir) / "videos" / name


def simulate_episode(policy: Any, cfg: RolloutConfig, task: int, init_state: int) -> EpisodeRecord:
    """The default `EpisodeFn`: ``task``'s episode from
    ``init_state`` in this process's LIBERO environment (built once per task and process), with the
    video ``cfg.video`` asks for written under ``cfg.out_dir``."""
    return simulate_episodes(policy, cfg, task, [init_state])[0]


def simulate_episodes(
    policy: Any, cfg: RolloutConfig, task: int, init_states: Sequence[int]
) -> list[EpisodeRecord]:
    """[`simulate_episode`][flowvla.envs.closed_loop.simulate_episode] for several init states of
    ``task`` at once, one environment each (kept by this process while it runs this task), planned
    in batches by [`run_episodes`][flowvla.envs.closed_loop.run_episodes]."""
    envs = _envs_for(cfg, task, len(init_states))
    wants = [_wants_video(cfg, first_of_task=i == cfg.init_states[0]) for i in init_states]
    records = []
    for (rec, frames), want in zip(run_episodes(envs, policy, cfg, init_states, wants), wants, strict=True):
        keep = want and (cfg.video in ("all", "first") or (cfg.video == "failures") != rec.success)
        if keep and frames:
            if cfg.video_size:
                frames = caption_episode(frames, rec, every=cfg.video_every or 1)
                fps = 20.0 / (cfg.video_every or 1)
            else:
                # Real-time playback: the frames span the episode's steps at LIBERO's 20 Hz control rate.
                fps = min(20.0, max(1.0, 20.0 * len(frames) / max(rec.steps, 1)))
            rec.video = str(write_video(frames, _video_path(cfg, task, rec.init_state), fps=fps))
        records.append(rec)
    return records


def outcome_text(rec: EpisodeRecord) -> str:
    """How an episode ended, in words for a caption: ``"success at step 143"`` or
    ``"failure: missed_grasp (280 steps)"`` (the outcome named by
    [`flowvla.envs.outcome`][flowvla.envs.outcome])."""
    if rec.success:
        return f"success at step {rec.steps}"
    outcome = (rec.outcome or {}).get("outcome", "unknown")
    return f"failure: {outcome} ({rec.steps} steps)"


def caption_episode(frames: Sequence[np.ndarray], rec: EpisodeRecord, every: int = 1) -> list[np.ndarray]:
    """The frames of a ``video_size`` episode video with its text drawn above them: the instruction,
    the outcome ([`outcome_text`][flowvla.envs.closed_loop.outcome_text]) and each frame's step
    (frame ``i`` shows the state after step ``(i + 1) * every``, the last one after the last step)."""
    header = f"{rec.suite} task {rec.task_index}, init state {rec.init_state}: {rec.instruction}\n"
    header += outcome_text(rec)
    steps = [min((i + 1) * every, rec.steps) for i in range(len(frames))]
    return caption_frames(frames, header, [f"step {s} / {rec.step_limit}" for s in steps])
