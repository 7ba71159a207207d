"""Batches as a function of the step number, split over processes, drawn from a task mixture.

The global batch of step ``s`` (``batch_size`` item indices) depends only on the seed, ``s`` and the
data, never on what ran before: a resumed run, or a run on another number of processes, sees the same
batches. Each process takes a disjoint slice of it per accumulation micro-step: micro-step ``m`` of
process ``r`` of ``P`` gets slice ``j = m * P + r`` of ``M * P`` equal slices, so one process with
``M = 2`` and two processes with ``M = 1`` compute exactly the same micro-batches.

Mixtures: every item belongs to a group (dataset, task). A group's probability is its base mass
(1 per task with ``sampling="task"``, 1 per item with ``"item"``) times its task weight, optionally
normalised per dataset and scaled by dataset weights; an item is drawn by picking a group, then an
item of the group uniformly.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "Mixture",
    "StepBatchSampler",
    "build_mixture",
    "describe_items",
    "item_tasks",
    "mix_seed",
    "task_weights_from_success",
]


def mix_seed(*keys: int) -> int:
    """A seed (``[0, 2**63)``) from integer keys: distinct key tuples give unrelated streams."""
    state = np.random.SeedSequence([int(k) % 2**64 for k in keys]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


@dataclass(frozen=True)
class Mixture:
    """Sampling groups with their items and probabilities.

    Attributes:
        names: ``(dataset, task)`` per group (``""`` where there is no name).
        members: the item indices of each group (into the concatenated data).
        probs: each group's probability (sums to 1).
    """

    names: list[tuple[str, str]]
    members: list[np.ndarray]
    probs: np.ndarray

    def draw(self, n: int, generator: torch.Generator) -> list[int]:
        """``n`` item indices (with replacement): a group by ``probs``, then an item of it uniformly."""
        groups = torch.multinomial(
            torch.as_tensor(self.probs, dtype=torch.float64), n, True, generator=generator
        )
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        out = []
        for gi, ui in zip(groups.tolist(), u.tolist(), strict=True):
            m = self.members[gi]
            out.append(int(m[min(int(ui * len(m)), len(m) - 1)]))
        return out

    def task_probabilities(self) -> dict[str, float]:
        """Probability per task name (summed over datasets)."""
        out: dict[str, float] = {}
        for (_, task), p in zip(self.names, self.probs.tolist(), strict=True):
            out[task] = out.get(task, 0.0) + p
        return out


def item_tasks(dataset: Any) -> tuple[list[str], np.ndarray] | None:
    """``(task names, task id per item [N])`` of a dataset that knows its tasks, else None.

    Uses ``dataset.item_tasks()`` (as [`ChunkDataset`][flowvla.data.dataset.ChunkDataset] provides)
    and looks through ``torch.utils.data.Subset``.
    """
    if isinstance(dataset, torch.utils.data.Subset):
        inner = item_tasks(dataset.dataset)
        if inner is None:
            return None
        names, ids = inner
        return names, np.asarray(ids)[np.asarray(dataset.indices, dtype=np.int64)]
    fn = getattr(dataset, "item_tasks", None)
    if fn is None:
        return None
    names, ids = fn()
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) != len(dataset):
        raise ValueError(f"dataset: item_tasks() labels {len(ids)} items, the dataset has {len(dataset)}")
    return list(names), ids


def build_mixture(
    datasets: Mapping[str, Any],
    *,
    sampling: str = "task",
    task_weights: Mapping[str, float] | None = None,
    dataset_weights: Mapping[str, float] | None = None,
) -> Mixture | None:
    """The sampling mixture over named datasets concatenated in order (see module docs).

    Returns None when the result is uniform over items (one group, or ``"item"`` sampling without
    weights): the plain sampler then draws distinct items per batch.

    Raises:
        ValueError: a weighted task or dataset that does not exist (listing the known ones), a
            task weight on data without task labels, or weights that leave nothing to sample.
    """
    if sampling not in ("task", "item"):
        raise ValueError(f"sampling: expected 'task' or 'item', got {sampling!r}")
    task_weights = dict(task_weights or {})
    if dataset_weights is not None:
        unknown = sorted(set(dataset_weights) - set(datasets))
        if unknown:
            raise ValueError(
                f"dataset_weights: no dataset named {unknown}; the datasets are {sorted(datasets)}"
            )
    names: list[tuple[str, str]] = []
    members: list[np.ndarray] = []
    mass: list[float] = []
    offset = 0
    all_tasks: set[str] = set()
    any_labels = False
    for dname, ds in datasets.items():
        n = len(ds)
        if n == 0:
            raise ValueError(f"datasets: {dname!r} is empty")
        labels = item_tasks(ds)
        start = len(names)
        if labels is None:
            names.append((dname, ""))
            members.append(np.arange(offset, offset + n))
            mass.append(1.0 if sampling == "task" else float(n))
        else:
            any_labels = True
            tnames, ids = labels
            order = np.argsort(ids, kind="stable")
            bounds = np.searchsorted(ids[order], np.arange(len(tnames) + 1))
            for k, tname in enumerate(tnames):
                idx = order[bounds[k] : bounds[k + 1]]
                if len(idx) == 0:
                    continue
                all_tasks.add(tname)
                names.append((dname, tname))
                members.append(idx + offset)
                base = 1.0 if sampling == "task" else float(len(idx))
                mass.append(base * float(task_weights.get(tname, 1.0)))
        if dataset_weights is not None:
            total = sum(mass[start:])
            w = float(dataset_weights.get(dname, 1.0))
            for i in range(start, len(mass)):
                mass[i] = mass[i] / total * w if total > 0 else 0.0
        offset += n
    unknown = sorted(set(task_weights) - all_tasks)
    if unknown:
        if not any_labels:
            raise ValueError("task_weights: the data has no task labels (no item_tasks()); drop task_weights")
        raise ValueError(f"task_weights: no task named {unknown}; the tasks are {sorted(all_tasks)}")
    total = sum(mass)
    if not total > 0:
        raise ValueError("task_weights, dataset_weights: every group has weight 0; nothing to sample")
    probs = np.asarray(mass, dtype=np.float64) / total
    sizes = np.asarray([len(m) for m in members], dtype=np.float64)
    if len(names) == 1 or np.allclose(probs, sizes / sizes.sum(), rtol=1e-12, atol=0):
        return None
    return Mixture(names, members, probs)


def task_weights_from_success(
    success: Mapping[str, Any], *, floor: float = 0.1, power: float = 1.0
) -> dict[str, float]:
    """Task weights for the next training phase from evaluation results: hard tasks weigh more.

    ``w = max(1 - success_rate, floor) ** power``, scaled to mean 1; ``floor`` keeps solved tasks in
    the mixture.

    Args:
        success: ``{task name: success rate}``, or a summary of
            [`evaluate`][flowvla.envs.rollout.evaluate] (its ``"tasks"`` entries give
            ``instruction`` and ``success_rate``; the instruction names the task, as in training).
        floor: the smallest weight before scaling, in ``(0, 1]``.
        power: sharpens (> 1) or flattens (< 1) the preference for hard tasks.
    """
    if not 0 < floor <= 1:
        raise ValueError(f"floor: must be in (0, 1], got {floor}")
    if not power > 0:
        raise ValueError(f"power: must be > 0, got {power}")
    if "tasks" in success and isinstance(success["tasks"], Mapping):
        rates = {v["instruction"]: float(v["success_rate"]) for v in success["tasks"].values()}
    else:
        rates = {str(k): float(v) for k, v in success.items()}
    if not rates:
        raise ValueError("success: no tasks")
    bad = {k: r for k, r in rates.items() if not 0.0 <= r <= 1.0}
    if bad:
        raise ValueError(f"success: rates must lie in [0, 1], got {bad}")
    raw = {k: max(1.0 - r, floor) ** power for k, r in rates.items()}
    mean = sum(raw.values()) / len(raw)
    return {k: w / mean for k, w in raw.items()}


class StepBatchSampler(torch.utils.data.Sampler):
    """Batch indices as a function of the step number: batch ``s`` is the same whenever it is drawn.

    Iterating yields this process's micro-batches: ``accumulation_steps`` per step, each a disjoint
    slice of the step's global batch (see module docs).

    Args:
        dataset_size: number of items.
        batch_size: items per step, over all processes and micro-steps. Without a mixture, distinct
            within a batch when the data has enough items (with replacement across batches).
        start: the first step.
        stop: one past the last step.
        seed: base seed.
        mixture: draw from this [`Mixture`][flowvla.training.sampling.Mixture] (with replacement).
        num_processes: processes sharing each batch.
        process_index: this process.
        accumulation_steps: micro-steps per step.
    """

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        start: int,
        stop: int,
        seed: int = 0,
        *,
        mixture: Mixture | None = None,
        num_processes: int = 1,
        process_index: int = 0,
        accumulation_steps: int = 1,
    ) -> None:
        if dataset_size < 1:
            raise ValueError("dataset_size: the dataset is empty")
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        if not 0 <= process_index < num_processes:
            raise ValueError(f"process_index: {process_index} is not in [0, {num_processes})")
        if accumulation_steps < 1:
            raise ValueError(f"accumulation_steps: must be >= 1, got {accumulation_steps}")
        parts = num_processes * accumulation_steps
        if batch_size % parts:
            raise ValueError(
                f"batch_size: {batch_size} does not split into {num_processes} processes x "
                f"{accumulation_steps} accumulation steps; use a multiple of {parts}"
            )
        self.n, self.batch_size, self.start, self.stop, self.seed = (
            dataset_size,
            batch_size,
            start,
            stop,
            seed,
        )
        self.mixture = mixture
        self.num_processes, self.process_index, self.accumulation_steps = (
            num_processes,
            process_index,
            accumulation_steps,
        )
        self.micro_batch_size = batch_size // parts

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.accumulation_steps

    def global_batch(self, step: int) -> list[int]:
        """The ``batch_size`` indices of step ``step`` (all processes, all micro-steps)."""
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + step) % 2**64)
        if self.mixture is not None:
            return self.mixture.draw(self.batch_size, g)
        if self.batch_size <= self.n:
            return torch.randperm(self.n, generator=g)[: self.batch_size].tolist()
        return torch.randint(0, self.n, (self.batch_size,), generator=g).tolist()

    def slice_of(self, micro: int, process_index: int | None = None) -> slice:
        """Where micro-step ``micro`` of a process (default: this one) lies in the global batch."""
        r = self.process_index if process_index is None else process_index
        j = micro * self.num_processes + r
        return slice(j * self.micro_batch_size, (j + 1) * self.micro_batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            batch = self.global_batch(step)
            for m in range(self.accumulation_steps):
                yield batch[self.slice_of(m)]


def describe_items(datasets: Mapping[str, Any], indices: Sequence[int]) -> list[dict[str, Any]]:
    """Name items of the concatenated data: dataset, index in it, and episode / frame when the
    dataset can ``locate`` them (for reports)."""
    bounds, names, total = [], [], 0
    for name, ds in datasets.items():
        total += len(ds)
        bounds.append(total)
        names.append(name)
    out = []
    for i in indices:
        k = int(np.searchsorted(bounds, i, side="right"))
        local = i - (bounds[k - 1] if k else 0)
        ds = datasets[names[k]]
        row: dict[str, Any] = {"dataset": names[k], "index": int(local)}
        locate = getattr(ds, "locate", None)
        if locate is not None:
            e, t = locate(int(local))
            row["episode"], row["frame"] = int(e), int(t)
        out.append(row)
    return out
