"""Training items from demonstrations: views, instruction, padded state, action chunk with its mask.

An item at step ``t`` of an episode of length ``T`` (unbatched batch contract, see
[`flowvla.data.batch`][flowvla.data.batch])::

    images       [V, 3, H, W] uint8      upright views at t (optionally augmented)
    instruction  str                     the task of step t (a source with ``frame_instructions``
                                         may change it within an episode, as LeRobot stores it)
    state        [S] float32             state at t, zero-padded / truncated to S = state_dim
    state_mask   [S] bool                True on the dims that came from the data
    actions      [H, A] float32          actions t .. t+H-1; past the episode's end the last action
                                         is repeated
    action_mask  [H] bool                True for t + h < T (real actions) and, in demonstrations
                                         recorded with injected noise, for steps reached without
                                         noise since t (see ``ChunkDataset``)
    depth, intrinsics, extrinsics        with ``geometry=True``, when the source has them
    instruction_synonym, _opposite str   with ``instruction_pairs=True``
    episode_index, frame_index           int

Sources are anything implementing [`EpisodeSource`][flowvla.data.dataset.EpisodeSource] (the HDF5 and LeRobot
readers do). Per-episode actions and states are loaded once into memory (small); images are read per item, so
items can be produced in DataLoader workers."""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from flowvla.data.augment import ImageAugment
from flowvla.data.batch import pad_state
from flowvla.data.hdf5 import LiberoHDF5Reader
from flowvla.data.stats import FeatureStats, Normalizer, compute_stats
from flowvla.processing.instructions import SYNONYMS, opposite, rewrite

__all__ = [
    "ChunkDataset",
    "EpisodeSource",
    "EpisodeSubset",
    "HDF5Source",
    "frame_instructions",
    "perturbed_steps",
    "split_episodes",
]


@runtime_checkable
class EpisodeSource(Protocol):
    """Episodes of (views, state, action) with an instruction each."""

    def __len__(self) -> int:
        """Number of episodes."""
        ...

    def episode_length(self, e: int) -> int: ...

    def instruction(self, e: int) -> str: ...

    def actions(self, e: int) -> np.ndarray:
        """``[T, A]`` float32."""
        ...

    def states(self, e: int) -> np.ndarray:
        """``[T, S0]`` float32."""
        ...

    def images(self, e: int, t: int) -> np.ndarray:
        """``[V, 3, H, W]`` uint8, upright."""
        ...

    # Optional: ``observed_steps(e) -> [T']`` int array, the steps that have views (default: all).
    # Optional: ``frame_instructions(e) -> list[str]`` of length ``T``, the task of every step (default:
    # ``instruction(e)`` for every step). LeRobot stores a task per frame; ``instruction(e)`` is then
    # the task of the episode's first frame.

    def geometry(self, e: int, t: int) -> dict[str, np.ndarray] | None:
        """``depth [V, H, W]``, ``intrinsics [V, 3, 3]``, ``extrinsics [V, 4, 4]``, or None."""
        ...


class HDF5Source:
    """Episodes of several LIBERO HDF5 files (e.g. the 10 task files of a suite) as one source.

    Args:
        paths: HDF5 files; each is one task with its own instruction.
        episodes_per_file: use only the first this-many demonstrations of each file (default: all),
            e.g. to study success against the number of demonstrations per task.
        first_episode: skip this many demonstrations at the start of each file (e.g. the training
            ones, to read the held-out episodes generated after them).
        preload: read every used frame into memory once (uint8, upright), so items cost no file
            access; ``V * 3 * H * W`` bytes per frame (about 55 KB at 96 px with two views).
        **reader_kwargs: passed to each [`LiberoHDF5Reader`][flowvla.data.hdf5.LiberoHDF5Reader].
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        episodes_per_file: int | None = None,
        preload: bool = False,
        first_episode: int = 0,
        **reader_kwargs: Any,
    ) -> None:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        if not paths:
            raise ValueError("paths is empty")
        if episodes_per_file is not None and episodes_per_file < 1:
            raise ValueError(f"episodes_per_file: must be >= 1, got {episodes_per_file}")
        if first_episode < 0:
            raise ValueError(f"first_episode: must be >= 0, got {first_episode}")
        self.readers = [LiberoHDF5Reader(p, **reader_kwargs) for p in paths]
        self._index: list[tuple[int, int]] = [
            (r, i)
            for r, rd in enumerate(self.readers)
            for i in range(first_episode, min(len(rd), first_episode + (episodes_per_file or len(rd))))
        ]
        if not self._index:
            raise ValueError(
                f"no episodes: every file has at most first_episode={first_episode} demonstrations"
            )
        self._frames: list[np.ndarray] | None = None
        if preload:
            self._frames = [self.readers[r].images(i, slice(None)) for r, i in self._index]
            self._strides = [self.readers[r].image_stride(i) for r, i in self._index]

    def __len__(self) -> int:
        return len(self._index)

    def _at(self, e: int) -> tuple[LiberoHDF5Reader, int]:
        r, i = self._index[e]
        return self.readers[r], i

    def episode_length(self, e: int) -> int:
        rd, i = self._at(e)
        return rd.episode_length(i)

    def instruction(self, e: int) -> str:
        return self._at(e)[0].instruction

    def actions(self, e: int) -> np.ndarray:
        rd, i = self._at(e)
        return rd.actions(i)

    def states(self, e: int) -> np.ndarray:
        rd, i = self._at(e)
        return rd.states(i)

    def observed_steps(self, e: int) -> np.ndarray:
        rd, i = self._at(e)
        return rd.observed_steps(i)

    def perturbed_steps(self, e: int) -> np.ndarray:
        """``[T]`` bool: the steps at which the simulator executed something other than the label
        (noise injected while recording; all False for a clean demonstration)."""
        rd, i = self._at(e)
        return perturbed_steps(rd.actions(i), rd.executed_actions(i))

    def images(self, e: int, t: int) -> np.ndarray:
        if self._frames is not None:
            k = self._strides[e]
            if t % k:
                raise IndexError(f"step {t} of episode {e} has no views (rendered every {k} steps)")
            return self._frames[e][t // k]
        rd, i = self._at(e)
        return rd.images(i, t)

    def geometry(self, e: int, t: int) -> dict[str, np.ndarray] | None:
        rd, i = self._at(e)
        return rd.geometry(i, t)


class EpisodeSubset:
    """Some episodes of a source, as a source of their own (e.g. the held-out validation episodes).

    Args:
        source: an [`EpisodeSource`][flowvla.data.dataset.EpisodeSource].
        episodes: indices of the episodes to keep, in the order to keep them.
    """

    def __init__(self, source: EpisodeSource, episodes: Sequence[int]) -> None:
        self.source = source
        self.episodes = [int(e) for e in episodes]
        bad = [e for e in self.episodes if not 0 <= e < len(source)]
        if bad:
            raise ValueError(f"episodes: {bad[:5]} out of range for a source of {len(source)} episodes")

    def __len__(self) -> int:
        return len(self.episodes)

    def episode_length(self, e: int) -> int:
        return self.source.episode_length(self.episodes[e])

    def instruction(self, e: int) -> str:
        return self.source.instruction(self.episodes[e])

    def frame_instructions(self, e: int) -> list[str]:
        """The task of every step of episode ``e`` (the source's, or its one instruction repeated)."""
        return frame_instructions(self.source, self.episodes[e])

    def observed_steps(self, e: int) -> np.ndarray:
        """The steps of episode ``e`` that have views (the source's, or every step)."""
        observed = getattr(self.source, "observed_steps", None)
        if observed is None:
            return np.arange(self.episode_length(e))
        return np.asarray(observed(self.episodes[e]))

    def actions(self, e: int) -> np.ndarray:
        return self.source.actions(self.episodes[e])

    def perturbed_steps(self, e: int) -> np.ndarray:
        """The source's ``perturbed_steps`` (all False where it has none)."""
        return source_perturbed_steps(self.source, self.episodes[e])

    def states(self, e: int) -> np.ndarray:
        return self.source.states(self.episodes[e])

    def images(self, e: int, t: int) -> np.ndarray:
        return self.source.images(self.episodes[e], t)

    def geometry(self, e: int, t: int) -> dict[str, np.ndarray] | None:
        return self.source.geometry(self.episodes[e], t)


def perturbed_steps(actions: np.ndarray, executed: np.ndarray) -> np.ndarray:
    """``[T]`` bool: where the executed ``[T, A]`` actions differ from the ``[T, A]`` labels."""
    if actions.shape != executed.shape:
        raise ValueError(f"executed has shape {executed.shape} but actions has {actions.shape}")
    return np.any(actions != executed, axis=-1)


def source_perturbed_steps(source: EpisodeSource, e: int) -> np.ndarray:
    """``[T]`` bool: the perturbed steps of episode ``e`` of ``source`` (all False for a source that
    records none)."""
    per_step = getattr(source, "perturbed_steps", None)
    n = source.episode_length(e)
    if per_step is None:
        return np.zeros(n, dtype=bool)
    out = np.asarray(per_step(e), dtype=bool)
    if out.shape != (n,):
        raise ValueError(f"episode {e}: perturbed_steps has shape {out.shape}, expected ({n},)")
    return out


def frame_instructions(source: EpisodeSource, e: int) -> list[str]:
    """The task of every step of episode ``e`` of ``source``: its ``frame_instructions(e)`` where it has
    one (LeRobot datasets store a task per frame), else ``instruction(e)`` for every step.

    Raises:
        ValueError: the source's list does not have one task per step.
    """
    n = source.episode_length(e)
    per_frame = getattr(source, "frame_instructions", None)
    if per_frame is None:
        return [source.instruction(e)] * n
    texts = list(per_frame(e))
    if len(texts) != n:
        raise ValueError(f"episode {e}: frame_instructions gives {len(texts)} tasks for {n} steps")
    return texts


def split_episodes(
    source: EpisodeSource, val_fraction: float = 0.1, *, seed: int = 0
) -> tuple[EpisodeSubset, EpisodeSubset]:
    """Hold out about ``val_fraction`` of each task's episodes (tasks = instructions).

    Every task with two or more episodes keeps at least one for training and gives at least one to
    validation; a task with a single episode stays in training. The choice is seeded.

    Returns:
        ``(train, val)`` sources.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction: must be in (0, 1), got {val_fraction}")
    by_task: dict[str, list[int]] = {}
    for e in range(len(source)):
        by_task.setdefault(source.instruction(e), []).append(e)
    rng = np.random.default_rng(seed)
    held: set[int] = set()
    for episodes in by_task.values():
        n = len(episodes)
        if n < 2:
            continue
        k = min(max(1, round(n * val_fraction)), n - 1)
        held.update(int(e) for e in rng.choice(episodes, size=k, replace=False))
    train = [e for e in range(len(source)) if e not in held]
    return EpisodeSubset(source, train), EpisodeSubset(source, sorted(held))


class ChunkDataset(torch.utils.data.Dataset):
    """One training item per (episode, observed step): see the module docs.

    Args:
        source: an [`EpisodeSource`][flowvla.data.dataset.EpisodeSource].
        horizon: action-chunk length ``H``.
        state_dim: the policy's state size ``S`` (default: the source's).
        augment: image augmentation applied per item (default: none).
        geometry: include depth / intrinsics / extrinsics (error if the source lacks them).
        normalizers: ``{"actions": Normalizer, "state": Normalizer}`` applied to the item's actions /
            state (default: raw values; the policy may normalise itself).
        seed: base seed of the augmentation; item ``k`` of epoch-less sampling uses ``seed + k`` mixed
            with the worker's torch seed, so workers differ and a run is reproducible.
        mask_perturbed: in demonstrations recorded with injected noise (a source with
            ``perturbed_steps``), mask each chunk's actions from the first perturbed step after ``t``
            on. The label at step ``t + h`` is the expert's choice in the state the executed actions
            led to; once noise was executed between ``t`` and ``t + h``, that state depends on noise
            nothing observed at ``t`` predicts, so those labels would teach phantom corrections. The
            label at a perturbed step itself stays (the state was reached without noise since ``t``).
        instruction_pairs: also give each item ``instruction_synonym`` (its instruction reworded by
            [`SYNONYMS`][flowvla.processing.instructions.SYNONYMS], unchanged where no phrase applies)
            and ``instruction_opposite`` (by [`opposite`][flowvla.processing.instructions.opposite]),
            what the policy's synonym-consistency and contrast losses read. Every task needs an
            opposite (a ``ValueError`` names the first that has none).
    """

    def __init__(
        self,
        source: EpisodeSource,
        horizon: int,
        state_dim: int | None = None,
        augment: ImageAugment | None = None,
        geometry: bool = False,
        normalizers: dict[str, Normalizer] | None = None,
        seed: int = 0,
        mask_perturbed: bool = True,
        instruction_pairs: bool = False,
    ) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if len(source) == 0:
            raise ValueError("source has no episodes")
        self.source, self.horizon, self.augment, self.geometry = source, horizon, augment, geometry
        self.normalizers = dict(normalizers or {})
        unknown = set(self.normalizers) - {"actions", "state"}
        if unknown:
            raise ValueError(f"normalizers: unknown keys {sorted(unknown)}; use 'actions' and/or 'state'")
        self.seed = seed
        self._actions = [
            np.ascontiguousarray(source.actions(e), dtype=np.float32) for e in range(len(source))
        ]
        self._states = [np.ascontiguousarray(source.states(e), dtype=np.float32) for e in range(len(source))]
        for e, (a, s) in enumerate(zip(self._actions, self._states, strict=True)):
            n = source.episode_length(e)
            if len(a) != n or len(s) != n:
                raise ValueError(f"episode {e}: {len(a)} actions and {len(s)} states for length {n}")
        self.state_dim = state_dim or self._states[0].shape[-1]
        # Perturbed steps before each step (c[t] = perturbed steps in [0, t)), for the chunk masks.
        self._perturbed_before = [
            np.concatenate([[0], np.cumsum(source_perturbed_steps(source, e))]).astype(np.int64)
            if mask_perturbed
            else np.zeros(len(a) + 1, dtype=np.int64)
            for e, a in enumerate(self._actions)
        ]
        # Items are the steps that have views: every step, or every k-th for strided renders.
        observed = getattr(source, "observed_steps", None)
        self._steps = [
            np.asarray(observed(e) if observed else np.arange(len(a)), dtype=np.int64)
            for e, a in enumerate(self._actions)
        ]
        self._starts = np.cumsum([0] + [len(s) for s in self._steps]).tolist()
        # The task of every step, as ids into self._task_names (in order of first appearance).
        ids: dict[str, int] = {}
        self._task_ids = [
            np.asarray([ids.setdefault(x, len(ids)) for x in frame_instructions(source, e)], dtype=np.int64)
            for e in range(len(source))
        ]
        self._task_names = list(ids)
        # Task name -> (synonym, opposite), worded once per task rather than per item.
        self._pairs = (
            {name: (rewrite(name, SYNONYMS), opposite(name)) for name in self._task_names}
            if instruction_pairs
            else None
        )
        if geometry and source.geometry(0, 0) is None:
            raise ValueError("geometry=True but the source has no metric depth with camera matrices")

    def __len__(self) -> int:
        return self._starts[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """``(episode, step)`` of a flat item index."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        e = bisect.bisect_right(self._starts, index) - 1
        return e, int(self._steps[e][index - self._starts[e]])

    def action_chunk(self, e: int, t: int) -> tuple[np.ndarray, np.ndarray]:
        """``([H, A] actions, [H] mask)`` from step ``t`` of episode ``e``; padded with the last action.
        The mask is False past the episode's end and after a perturbed step (``mask_perturbed``)."""
        a = self._actions[e]
        idx = np.arange(t, t + self.horizon)
        inside = np.minimum(idx, len(a) - 1)
        c = self._perturbed_before[e]
        mask = (idx < len(a)) & (c[inside] == c[t])
        return a[inside], mask

    def item_tasks(self) -> tuple[list[str], np.ndarray]:
        """Task names (the distinct instructions, in order of first appearance) and each item's task
        id ``[N]`` (the task of the item's step): what task-balanced sampling in
        [`flowvla.training`][flowvla.training.engine] reads."""
        per_item = [ids[steps] for ids, steps in zip(self._task_ids, self._steps, strict=True)]
        return list(self._task_names), np.concatenate(per_item).astype(np.int64)

    def instruction(self, e: int, t: int) -> str:
        """The task of step ``t`` of episode ``e`` (what item ``(e, t)`` carries as ``instruction``)."""
        return self._task_names[int(self._task_ids[e][t])]

    def stats(self) -> dict[str, FeatureStats]:
        """Statistics of the raw actions and states over every frame (what to save next to a policy)."""
        return compute_stats({"actions": self._actions, "state": self._states})

    def __getitem__(self, index: int) -> dict[str, Any]:
        e, t = self.locate(int(index))
        actions, mask = self.action_chunk(e, t)
        state, state_mask = pad_state(self._states[e][t], self.state_dim)
        if "actions" in self.normalizers:
            actions = self.normalizers["actions"].normalize(actions.astype(np.float32))
        if "state" in self.normalizers:
            n = min(self.state_dim, self._states[e].shape[-1])
            state[:n] = self.normalizers["state"].normalize(self._states[e][t][None])[0, :n]
        images = torch.from_numpy(np.ascontiguousarray(self.source.images(e, t)))
        item: dict[str, Any] = {
            "instruction": self.instruction(e, t),
            "state": torch.from_numpy(state),
            "state_mask": torch.from_numpy(state_mask),
            "actions": torch.from_numpy(np.ascontiguousarray(actions, dtype=np.float32)),
            "action_mask": torch.from_numpy(mask),
            "episode_index": e,
            "frame_index": t,
        }
        if self._pairs is not None:
            item["instruction_synonym"], item["instruction_opposite"] = self._pairs[item["instruction"]]
        depth = intr = None
        if self.geometry:
            geo = self.source.geometry(e, t)
            if geo is None:
                raise ValueError(f"episode {e} step {t} has no geometry")
            depth, intr = torch.from_numpy(geo["depth"]), torch.from_numpy(geo["intrinsics"])
            item["extrinsics"] = torch.from_numpy(geo["extrinsics"])
        if self.augment is not None and self.augment.active:
            g = torch.Generator().manual_seed(hash((self.seed, index, torch.initial_seed())) & 0x7FFF_FFFF)
            images, depth, intr = self.augment(images, generator=g, depth=depth, intrinsics=intr)
        item["images"] = images
        if self.geometry:
            item["depth"], item["intrinsics"] = depth, intr
        return item
