"""Run a scripted expert for one episode with physics only and record what it did.

The recording follows LIBERO's evaluation protocol, so a kept episode replays exactly like a policy
rollout would start: ``env.reset(init_state=s0, settle_steps=10)``, then one action per step until
the task succeeds or the suite's step limit is reached. ``states[t]`` is the simulator state in which
``actions[t]`` was chosen (LIBERO's HDF5 ``states``), so rendering ``states[t]`` gives the observation
the action belongs to.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Protocol

import numpy as np

from flowvla.checks import check_nonnegative
from flowvla.envs.libero import DUMMY_ACTION
from flowvla.typing import Float, typechecked

__all__ = ["Expert", "ExpertEpisode", "NoiseBursts", "run_expert_episode"]


class Expert(Protocol):
    """What [`run_expert_episode`][flowvla.envs.experts.episode.run_expert_episode] needs: ``reset()`` after
    each env reset, ``act() -> [7]``, ``finished`` once the expert has nothing left to do."""

    finished: bool

    def reset(self) -> None: ...

    def act(self) -> np.ndarray: ...


@dataclasses.dataclass
class ExpertEpisode:
    """One recorded expert episode.

    Attributes:
        init_state: ``[D]`` the state the episode was reset to (before settling); compare it with the
            task's official init states to check for overlap.
        actions: ``[T, 7]`` actions taken.
        states: ``[T, D]`` simulator state before each action.
        success: the env scored the goal as reached at the last step.
        steps: ``T``.
        retries: fresh grasp attempts the expert needed.
        phases: the expert's phase sequence (for diagnosis).
        seconds: wall time of the episode (reset and settling included).
        settle_drift: the largest horizontal distance (m) a movable object travelled while settling.
        stable: the layout held still while settling; an unstable one (an object sampled half off
            the table falls) is not an expert failure and is not run.
        executed_actions: ``[T, 7]`` what the env executed when ``action_noise`` perturbed it
            (``actions`` are then the expert's clean labels); ``None`` without noise.
        stages: how the episode reached its goal: ``(name, start)`` per stage the expert began, in
            order, where ``name`` says what the stage makes hold (``"open wooden_cabinet_1_top_region"``,
            ``"place akita_black_bowl_1 in wooden_cabinet_1_top_region"``, ``"turn on flat_stove_1"``,
            ``"close microwave_1"``) and ``start`` is the index into ``actions`` of its first action.
            Starts are non-decreasing and below ``steps``; a retried stage appears again with its new
            start. Empty for an expert without stages.
    """

    init_state: np.ndarray
    actions: np.ndarray
    states: np.ndarray
    success: bool
    steps: int
    retries: int
    phases: list[str]
    seconds: float
    settle_drift: float = 0.0
    stable: bool = True
    executed_actions: np.ndarray | None = None
    stages: list[tuple[str, int]] = dataclasses.field(default_factory=list)


class NoiseBursts:
    """When to inject noise: bursts of ``length`` steps, each after a clean stretch of ``gap // 2`` to
    ``3 * gap // 2`` steps (uniform, drawn from ``rng``). Call ``step()`` once per step.

    Raises:
        ValueError: ``length < 1`` or ``gap < 2``.
    """

    def __init__(self, length: int, gap: int, rng: np.random.Generator) -> None:
        if length < 1 or gap < 2:
            raise ValueError(
                f"noise_bursts=(length, gap) needs length >= 1 and gap >= 2, got {(length, gap)}"
            )
        self.length, self.gap, self.rng = int(length), int(gap), rng
        self.burst_left, self.clean_left = 0, self._stretch()
        self.starting = False  # the last step() began a burst

    def _stretch(self) -> int:
        return int(self.rng.integers(self.gap // 2, 3 * self.gap // 2 + 1))

    def step(self) -> bool:
        """Whether this step is noisy (and advance)."""
        self.starting = False
        if self.burst_left == 0:
            if self.clean_left > 0:
                self.clean_left -= 1
                return False
            self.burst_left, self.clean_left, self.starting = self.length, self._stretch(), True
        self.burst_left -= 1
        return True


@typechecked
def run_expert_episode(
    env: Any,
    expert: Any,
    init_state: Float[np.ndarray, " D"] | int | None = None,
    *,
    seed: int | None = None,
    max_steps: int | None = None,
    settle_steps: int = 10,
    linger_steps: int = 0,
    max_settle_drift: float = 0.1,
    action_noise: float = 0.0,
    noise_correlation: float = 0.8,
    noise_bursts: tuple[int, int] | None = None,
) -> ExpertEpisode:
    """Reset ``env``, let ``expert`` act until success (or the step limit), and record it.

    Args:
        env: a [`LiberoEnv`][flowvla.envs.libero.LiberoEnv] (physics-only is enough).
        expert: an [`Expert`][flowvla.envs.experts.episode.Expert] bound to ``env`` (e.g. a
            [`PickPlaceExpert`][flowvla.envs.experts.pick_place.PickPlaceExpert]).
        init_state: the state to start from (``[D]``, or an official init-state index); ``None``
            draws a fresh one from LIBERO's BDDL region sampler with ``seed``.
        seed: seeds the sampler for a fresh ``init_state``.
        max_steps: step limit (default: the suite's evaluation limit).
        settle_steps: dummy steps after the reset, not recorded (LIBERO evaluations use 10).
        linger_steps: extra steps recorded after success while the expert keeps acting (0: stop at
            the first successful step, as LIBERO's own demonstrations do).
        max_settle_drift: a layout in which an object slides farther than this (m, horizontally)
            while settling is returned unrun, with ``stable=False``.
        action_noise: DART-style noise injection: the env executes the expert's action plus
            temporally correlated Gaussian noise of this standard deviation on the three translation
            dims (action units), while ``actions`` record the expert's clean choice in the state the
            noise led to. The demonstrations then visit states off the expert's own path, labelled
            with the correction back to it. 0: off.
        noise_correlation: AR(1) coefficient of the noise per step (0: white); correlated noise
            pushes the arm off its path for a few steps, as a policy's error would.
        noise_bursts: ``(length, gap)``: inject the noise in bursts of ``length`` steps separated
            by clean stretches of ``gap // 2`` to ``3 * gap // 2`` steps (uniform), instead of at every
            step. After each burst the expert's recovery is executed as labelled, so action chunks
            starting in or after a burst have clean labels up to the next one (what
            [`ChunkDataset`][flowvla.data.dataset.ChunkDataset] masks by). ``None``: every step.
    """
    t0 = time.perf_counter()
    limit = max_steps or env.max_steps
    if init_state is None:
        # Draw the fresh layout first, then start from it exactly as an evaluation would.
        init_state = env.reset(seed=seed)
    s0 = env.reset(init_state=init_state, seed=seed)
    # The state may hold the arm off LIBERO's default pose (a robot joint offset): hold it there
    # rather than let the controller's goal from the reset pull the hand back while settling.
    env.hold_robot_pose()
    raw = env.raw.env
    ids = [raw.obj_body_id[n] for n in raw.objects_dict]
    before = np.array(env.sim.data.body_xpos[ids])
    for _ in range(settle_steps):
        env.step(DUMMY_ACTION)
    env.steps = 0  # settling is not part of the episode, as in LiberoEnv.reset(settle_steps=...)
    moved = np.array(env.sim.data.body_xpos[ids]) - before
    # Objects are spawned above their support and drop onto it (16 cm for a bowl stacked on a box),
    # sliding a few cm: only a long sideways slide (off the table edge) marks a layout that does not
    # hold.
    drift = float(np.linalg.norm(moved[:, :2], axis=1).max())
    if drift > max_settle_drift:
        d = len(s0)
        return ExpertEpisode(
            init_state=np.asarray(s0),
            actions=np.zeros((0, 7)),
            states=np.zeros((0, d)),
            success=False,
            steps=0,
            retries=0,
            phases=[],
            seconds=time.perf_counter() - t0,
            settle_drift=drift,
            stable=False,
        )
    check_nonnegative("action_noise", action_noise)
    if not 0 <= noise_correlation < 1:
        raise ValueError(f"noise_correlation: must be in [0, 1), got {noise_correlation}")
    rng = np.random.default_rng(seed)
    noise = np.zeros(3)
    innovation = action_noise * np.sqrt(1.0 - noise_correlation**2)  # keeps the stationary std
    bursts = NoiseBursts(*noise_bursts, rng=rng) if noise_bursts is not None else None
    expert.reset()
    actions, states, executed = [], [], []
    success, extra = False, 0
    for _ in range(limit):
        a = expert.act() if not expert.finished else np.asarray(DUMMY_ACTION)
        states.append(env.get_sim_state())
        actions.append(np.asarray(a, dtype=np.float64))
        noisy = action_noise > 0 and not expert.finished
        if noisy and bursts is not None:
            noisy = bursts.step()
            if bursts.starting:
                noise = action_noise * rng.standard_normal(3)  # each burst starts from the stationary law
        if noisy:
            noise = noise_correlation * noise + innovation * rng.standard_normal(3)
            a = np.asarray(a, dtype=np.float64).copy()
            a[:3] = np.clip(a[:3] + noise, -1.0, 1.0)
        executed.append(np.asarray(a, dtype=np.float64))
        success = env.step(a).success
        if success:
            extra += 1
            if extra > linger_steps and expert.finished:
                break
        elif getattr(expert, "phase", "") == "failed":
            break
    return ExpertEpisode(
        init_state=np.asarray(s0),
        actions=np.stack(actions),
        states=np.stack(states),
        success=bool(success),
        steps=len(actions),
        retries=int(getattr(expert, "retries", 0)),
        phases=list(getattr(expert, "history", [])),
        seconds=time.perf_counter() - t0,
        settle_drift=drift,
        executed_actions=np.stack(executed) if action_noise > 0 else None,
        stages=[(str(n), int(t)) for n, t in getattr(expert, "stages", []) if t < len(actions)],
    )
