"""Train/eval parity: prove that a dataset and the simulator agree before any rollout is trusted.

The field's most common silent failure is a policy that trains well and scores 0% because the
dataset and the simulator disagree on something the loss never sees: image orientation, the state
layout, the gripper sign, the action convention, the instruction wording or the normalisation. This
check takes one recorded episode and the simulator task it came from and compares them directly:

1. **replay**: the episode's actions, executed from its initial state with LIBERO's evaluation
   protocol, must solve the task (the action convention, controller and gripper sign hold);
2. **frames**: a stored frame must equal a fresh render of the recorded simulator state (with the
   fixtures placed as the episode's ``model_file`` has them: LIBERO's reset moves cabinets and
   stoves, and the state does not hold them); when it does not, every image convention is tried and
   the one that matches is named;
3. **state**: the stored proprioceptive state must equal the environment's state vector at that
   simulator state (layout and units);
4. **instruction**: the dataset's instruction must be the one the environment shows;
5. **policy** (optional): the policy's image size, views, state and action sizes and its stored
   normalisation statistics must match the data.

[`check_parity`][flowvla.recipes.parity.check_parity] returns a
[`ParityReport`][flowvla.recipes.parity.ParityReport]; ``report.raise_if_failed()`` refuses with a
message naming each mismatch.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flowvla.envs.libero import DEFAULT_CAMERAS

__all__ = ["ParityCheck", "ParityError", "ParityReport", "check_parity", "task_of_dataset"]

#: Mean absolute difference (grey levels) under which a stored frame counts as the same render.
FRAME_TOLERANCE = 2.0
#: Largest absolute difference allowed between the stored and the simulator's state vector.
STATE_TOLERANCE = 1e-3


class ParityError(RuntimeError):
    """The dataset and the simulator (or the policy) disagree; the message names how."""


@dataclasses.dataclass
class ParityCheck:
    """One comparison: its name, whether it passed, and what was measured."""

    name: str
    passed: bool
    detail: str
    values: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ParityReport:
    """All comparisons of one [`check_parity`][flowvla.recipes.parity.check_parity] call."""

    dataset: str
    episode: int
    suite: str
    task_index: int
    checks: list[ParityCheck]
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failures(self) -> list[ParityCheck]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        """One line per check: ``PASS``/``FAIL``, name, detail."""
        lines = [f"parity of {self.dataset} episode {self.episode} ({self.suite} task {self.task_index}):"]
        lines += [f"  {'PASS' if c.passed else 'FAIL'} {c.name}: {c.detail}" for c in self.checks]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "passed": self.passed}

    def save(self, path: str | Path) -> None:
        from flowvla.io import write_json_atomic

        write_json_atomic(Path(path), self.to_dict())

    def raise_if_failed(self) -> None:
        """Raise [`ParityError`][flowvla.recipes.parity.ParityError] naming every failed check."""
        if not self.passed:
            raise ParityError(
                "train/eval parity failed; nothing was trained or evaluated on this data:\n" + self.summary()
            )


def task_of_dataset(bddl_file_name: str) -> tuple[str, int]:
    """``(suite, task index)`` of a LIBERO dataset from its ``bddl_file_name`` attribute."""
    from flowvla.envs.libero import LIBERO_SUITES, list_tasks

    path = Path(bddl_file_name)
    suite, stem = path.parent.name, path.stem
    if suite not in LIBERO_SUITES:
        raise ValueError(
            f"bddl_file_name={bddl_file_name!r}: its folder {suite!r} is not a LIBERO suite "
            f"({sorted(LIBERO_SUITES)})"
        )
    for task in list_tasks(suite):
        if Path(task.bddl_file).stem == stem:
            return suite, task.index
    raise ValueError(f"bddl_file_name={bddl_file_name!r}: no task of {suite} has this BDDL file")


def _frame_check(reader: Any, episode: int, t: int, env: Any) -> ParityCheck:
    from flowvla.data.hdf5 import IMAGE_CONVENTIONS, _from_upright, to_upright

    _place_fixtures(reader, episode, env)
    env.set_sim_state(reader.sim_states(episode)[t])
    fresh = env.observe(depth=False)["images"].astype(np.float32)  # [V, 3, H, W] upright
    stored = reader.images(episode, t).astype(np.float32)
    if stored.shape != fresh.shape:
        return ParityCheck(
            "frames",
            False,
            f"stored views {tuple(stored.shape)} but the simulator renders {tuple(fresh.shape)} "
            "(image size or camera list differ)",
        )
    diff = float(np.abs(stored - fresh).mean())
    if diff <= FRAME_TOLERANCE:
        return ParityCheck(
            "frames",
            True,
            f"step {t}: stored views equal a fresh render (mean |diff| {diff:.2f} grey levels, "
            f"convention {reader.image_convention!r})",
            {"mean_abs_diff": diff},
        )
    # Undo the reader's convention, then try each one to name what the file really holds.
    raw = _from_upright(stored.transpose(0, 2, 3, 1), reader.image_convention)
    tried = {}
    for conv in IMAGE_CONVENTIONS:
        cand = to_upright(raw, conv).transpose(0, 3, 1, 2)
        tried[conv] = float(np.abs(cand - fresh).mean())
    best = min(tried, key=tried.get)
    hint = (
        f"the file's images match convention {best!r} (mean |diff| {tried[best]:.2f}): read it with "
        f"image_convention={best!r}"
        if tried[best] <= FRAME_TOLERANCE
        else "no image convention matches: the scene, camera or renderer differs"
    )
    return ParityCheck(
        "frames",
        False,
        f"step {t}: stored views differ from a fresh render by {diff:.1f} grey levels with convention "
        f"{reader.image_convention!r}; {hint}",
        {"mean_abs_diff": diff, "by_convention": tried},
    )


def _state_check(reader: Any, episode: int, t: int, env: Any) -> ParityCheck:
    env.set_sim_state(reader.sim_states(episode)[t])
    live = env.state()
    stored = reader.states(episode)[t]
    if stored.shape != live.shape:
        return ParityCheck(
            "state",
            False,
            f"stored state has {stored.shape[0]} entries, the environment's has {live.shape[0]} "
            f"(reader state_keys {list(reader.state_keys)})",
        )
    err = np.abs(stored - live)
    worst = int(err.argmax())
    ok = float(err.max()) <= STATE_TOLERANCE
    detail = (
        f"step {t}: stored state equals the environment's (max |diff| {err.max():.1e})"
        if ok
        else f"step {t}: entry {worst} differs by {err[worst]:.3g} (stored {stored[worst]:.4g}, "
        f"environment {live[worst]:.4g}): the state layout or units differ"
    )
    return ParityCheck("state", ok, detail, {"max_abs_diff": float(err.max())})


def _place_fixtures(reader: Any, episode: int, env: Any) -> None:
    """Restore the episode's fixture placement from its ``model_file`` (LIBERO's reset draws a new
    one, and the simulator state does not hold it); files without the attribute keep the reset's."""
    xml = reader.demo_attrs(episode).get("model_file")
    if xml:
        env.place_fixtures(xml)


def _replay_check(reader: Any, episode: int, env: Any, settle_steps: int) -> ParityCheck:
    attrs = reader.demo_attrs(episode)
    init = attrs.get("init_state")
    if init is None:
        init = reader.sim_states(episode)[0]
    actions = reader.executed_actions(episode).astype(np.float64)
    env.reset(
        init_state=np.asarray(init, dtype=np.float64),
        settle_steps=settle_steps,
        perturb=lambda e: _place_fixtures(reader, episode, e),
    )
    grip = actions[:, -1]
    if not np.all(np.isin(np.sign(grip), (-1.0, 1.0))):
        return ParityCheck(
            "replay", False, "gripper actions are not +-1 (LIBERO: -1 open, +1 close); the convention differs"
        )
    for step, a in enumerate(actions):
        if env.step(a).success:
            return ParityCheck(
                "replay",
                True,
                f"the recorded actions solve the task from the episode's initial state at step "
                f"{step + 1} of {len(actions)}",
                {"success_step": step + 1},
            )
    return ParityCheck(
        "replay",
        False,
        f"the recorded {len(actions)} actions do not solve the task from the episode's initial state: "
        "the action convention, controller or initial state differs",
    )


def _policy_checks(policy: Any, reader: Any, episode: int, stats: dict[str, Any] | None) -> list[ParityCheck]:
    out = []
    images = reader.images(episode, 0)
    size = tuple(images.shape[-2:])
    want = tuple(policy.backbone.image_size)
    views = images.shape[0]
    c = policy.config
    problems = []
    if size != want:
        problems.append(f"image size {size} but the policy reads {want}")
    if views != c.num_views:
        problems.append(f"{views} views but the policy reads {c.num_views}")
    a_dim, s_dim = reader.actions(episode).shape[-1], reader.states(episode).shape[-1]
    if a_dim != c.action_dim:
        problems.append(f"actions have {a_dim} dims but the policy predicts {c.action_dim}")
    if s_dim > c.state_dim and not c.truncate_state:
        problems.append(f"states have {s_dim} dims but the policy reads {c.state_dim}")
    out.append(
        ParityCheck(
            "policy inputs",
            not problems,
            "; ".join(problems) or f"{views} views of {size}, {s_dim}-D state, {a_dim}-D actions",
        )
    )
    if stats is not None:
        bad = []
        for key in ("actions", "state"):
            mine, theirs = policy.stats.get(key), stats.get(key)
            if mine is None or theirs is None:
                continue
            for field in ("mean", "std", "q01", "q99"):
                a = np.asarray(getattr(mine, field, None), dtype=np.float64)
                b = np.asarray(getattr(theirs, field, None), dtype=np.float64)
                if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-5):
                    bad.append(f"{key}.{field}")
        out.append(
            ParityCheck(
                "normalisation",
                not bad,
                f"the policy's statistics differ from the data's in {bad}"
                if bad
                else "the policy's normalisation statistics equal the data's",
            )
        )
    return out


def check_parity(
    dataset: str | Path,
    *,
    episode: int = 0,
    frame: int | None = None,
    policy: Any | None = None,
    stats: dict[str, Any] | None = None,
    image_convention: str | None = None,
    instruction: str | None = "from_bddl_file_name",
    settle_steps: int = 10,
    cameras: Sequence[str] = DEFAULT_CAMERAS,
) -> ParityReport:
    """Compare one recorded episode of a LIBERO HDF5 file with the simulator (see module docs).

    Args:
        dataset: a LIBERO-layout HDF5 file (one task) that stores simulator ``states``.
        episode: which demonstration to check.
        frame: which step's frame and state to compare (default: the middle of the episode, where the
            gripper and objects are in view).
        policy: also check the policy's input sizes (and ``stats`` against its own).
        stats: the data's normalisation statistics (e.g. ``ChunkDataset.stats()``).
        image_convention: override the file's image convention (as the training reader would).
        instruction: what the training reader uses for the instruction (``"from_bddl_file_name"``:
            the benchmark's wording; ``None``: the file's ``problem_info``).
        settle_steps: dummy steps after reset, as evaluation does.
        cameras: the views the training reader uses, as simulator camera names, in its order.
    """
    import time

    from flowvla.data.hdf5 import LiberoHDF5Reader, image_keys_of
    from flowvla.envs.libero import LiberoEnv

    t0 = time.perf_counter()
    reader = LiberoHDF5Reader(
        dataset, image_keys_of(cameras), image_convention=image_convention, instruction=instruction
    )
    if not 0 <= episode < len(reader):
        raise IndexError(f"episode={episode} out of range: {dataset} holds {len(reader)} demonstrations")
    suite, task = task_of_dataset(str(reader.attrs.get("bddl_file_name", "")))
    observed = reader.observed_steps(episode)
    t = int(observed[len(observed) // 2]) if frame is None else frame
    if t not in observed:
        raise IndexError(
            f"frame={t}: the episode has views at steps {observed[0]}..{observed[-1]} "
            f"every {reader.image_stride(episode)}"
        )
    height, width = reader.images(episode, 0).shape[-2:]
    env = LiberoEnv(suite, task, image_size=(height, width), cameras=list(cameras))
    try:
        checks = [
            _replay_check(reader, episode, env, settle_steps),
            _frame_check(reader, episode, t, env),
            _state_check(reader, episode, t, env),
        ]
        same = reader.instruction == env.instruction
        checks.append(
            ParityCheck(
                "instruction",
                same,
                f"{reader.instruction!r}"
                + ("" if same else f" but the environment shows {env.instruction!r}"),
            )
        )
        if policy is not None:
            checks += _policy_checks(policy, reader, episode, stats)
    finally:
        env.close()
        reader.close()
    return ParityReport(str(dataset), episode, suite, task, checks, time.perf_counter() - t0)


def _main(argv: list[str] | None = None) -> int:  # pragma: no cover - thin CLI
    import argparse

    p = argparse.ArgumentParser(description="Check train/eval parity of a LIBERO HDF5 dataset.")
    p.add_argument("dataset")
    p.add_argument("--episode", type=int, default=0)
    a = p.parse_args(argv)
    report = check_parity(a.dataset, episode=a.episode)
    print(report.summary())
    print(json.dumps({"passed": report.passed}))
    return 0 if report.passed else 1
