"""Step-keyed batches, their split over processes and micro-steps, and task mixtures."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowvla.training import (
    StepBatchSampler,
    build_mixture,
    item_tasks,
    mix_seed,
    task_weights_from_success,
)
from tests.training.helpers import ItemList, TaskItems


def test_step_batch_sampler_is_a_function_of_the_step():
    full = list(StepBatchSampler(10, 4, 0, 6, seed=3))
    tail = list(StepBatchSampler(10, 4, 3, 6, seed=3))
    assert full[3:] == tail and len(set(map(tuple, full))) > 1
    assert all(len(set(b)) == 4 for b in full)


@given(
    processes=st.integers(1, 3),
    accumulation=st.integers(1, 3),
    per_slice=st.integers(1, 3),
    step=st.integers(0, 10**6),
)
def test_processes_and_micro_steps_take_disjoint_slices_of_the_step_batch(
    processes, accumulation, per_slice, step
):
    batch_size = processes * accumulation * per_slice
    split = dict(num_processes=processes, accumulation_steps=accumulation)
    samplers = [
        StepBatchSampler(50, batch_size, step, step + 1, seed=7, process_index=r, **split)
        for r in range(processes)
    ]
    parts = {r: list(s) for r, s in enumerate(samplers)}
    assert all(len(p) == accumulation for p in parts.values())
    # Slice j = m * P + r: laid end to end they are the global batch, with no item twice.
    joined = [i for m in range(accumulation) for r in range(processes) for i in parts[r][m]]
    assert joined == samplers[0].global_batch(step) and len(set(joined)) == batch_size


def test_one_process_accumulating_draws_what_two_processes_draw():
    one = list(StepBatchSampler(20, 8, 0, 3, seed=1, accumulation_steps=2))
    two = [list(StepBatchSampler(20, 8, 0, 3, seed=1, num_processes=2, process_index=r)) for r in range(2)]
    for step in range(3):
        assert one[2 * step] == two[0][step] and one[2 * step + 1] == two[1][step]


def test_batch_size_must_split_over_processes_and_micro_steps():
    with pytest.raises(ValueError, match="batch_size: 6 does not split into 2 processes x 2"):
        StepBatchSampler(10, 6, 0, 1, num_processes=2, accumulation_steps=2)
    with pytest.raises(ValueError, match="process_index"):
        StepBatchSampler(10, 4, 0, 1, num_processes=2, process_index=2)


def test_mix_seed_separates_streams():
    seeds = {mix_seed(0, s, j) for s in range(50) for j in range(4)}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)
    assert mix_seed(1, 2, 3) == mix_seed(1, 2, 3) != mix_seed(1, 3, 2)


SIZES = {"a": 2, "b": 10, "c": 40}  # tasks of very different sizes


def tasks_data(**kwargs):
    return TaskItems([t for t, n in SIZES.items() for _ in range(n)], **kwargs)


def test_default_mixture_is_uniform_over_tasks_not_chunks():
    mixture = build_mixture({"": tasks_data()})
    assert mixture.task_probabilities() == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    # Uniform over chunks is the plain sampler (None), as for data without task labels.
    assert build_mixture({"": tasks_data()}, sampling="item") is None
    assert build_mixture({"": ItemList(5)}) is None


def test_observed_task_frequencies_match_the_weights():
    data = tasks_data()
    weights = {"a": 3.0, "b": 1.0, "c": 0.5}
    mixture = build_mixture({"": data}, task_weights=weights)
    expected = {t: w / sum(weights.values()) for t, w in weights.items()}
    assert mixture.task_probabilities() == pytest.approx(expected)
    sampler = StepBatchSampler(len(data), 16, 0, 400, seed=0, mixture=mixture)
    drawn = [data.tasks[i] for batch in sampler for i in batch]
    n = len(drawn)
    for task, p in expected.items():
        observed = drawn.count(task) / n
        assert abs(observed - p) < 4 * math.sqrt(p * (1 - p) / n), (task, observed, p)
    # Within a task, items are drawn uniformly: every item of task a (2 items) shows up.
    assert {i for batch in StepBatchSampler(len(data), 16, 0, 50, mixture=mixture) for i in batch} >= {0, 1}


@given(weights=st.lists(st.floats(0.0, 10.0), min_size=3, max_size=3).filter(lambda w: sum(w) > 0.01))
def test_task_probabilities_are_the_normalised_weights(weights):
    named = dict(zip(SIZES, weights, strict=True))
    mixture = build_mixture({"": tasks_data()}, task_weights=named)
    total = sum(weights)
    expected = {t: w / total for t, w in named.items()}
    if mixture is None:  # the weights happen to give uniform-over-items: nothing to reweight
        sizes = sum(SIZES.values())
        assert expected == pytest.approx({t: n / sizes for t, n in SIZES.items()})
    else:
        got = mixture.task_probabilities()
        assert {t: got.get(t, 0.0) for t in SIZES} == pytest.approx(expected, abs=1e-12)


def test_dataset_weights_set_each_datasets_mass():
    datasets = {"sim": tasks_data(), "real": TaskItems(["x"] * 3 + ["y"] * 9)}
    mixture = build_mixture(datasets, dataset_weights={"sim": 1.0, "real": 3.0})
    by_dataset: dict[str, float] = {}
    for (d, _), p in zip(mixture.names, mixture.probs, strict=True):
        by_dataset[d] = by_dataset.get(d, 0.0) + p
    assert by_dataset == pytest.approx({"sim": 0.25, "real": 0.75})
    assert mixture.task_probabilities()["x"] == pytest.approx(0.375)  # uniform over tasks within "real"
    # Item indices address the concatenation: "real" starts after the 52 items of "sim".
    real = [m for (d, _), m in zip(mixture.names, mixture.members, strict=True) if d == "real"]
    assert min(int(m.min()) for m in real) == 52


def test_unknown_names_and_impossible_weights_are_refused():
    with pytest.raises(
        ValueError, match=r"task_weights: no task named \['d'\]; the tasks are \['a', 'b', 'c'\]"
    ):
        build_mixture({"": tasks_data()}, task_weights={"d": 1.0})
    with pytest.raises(ValueError, match="dataset_weights: no dataset named"):
        build_mixture({"sim": tasks_data()}, dataset_weights={"real": 1.0})
    with pytest.raises(ValueError, match="no task labels"):
        build_mixture({"": ItemList(4)}, task_weights={"a": 1.0})
    with pytest.raises(ValueError, match="weight 0"):
        build_mixture({"": tasks_data()}, task_weights={"a": 0.0, "b": 0.0, "c": 0.0})


def test_item_tasks_looks_through_subsets():
    data = tasks_data()
    names, ids = item_tasks(torch.utils.data.Subset(data, [0, 2, 51]))
    assert [names[i] for i in ids] == ["a", "b", "c"]
    assert item_tasks(ItemList(3)) is None


def test_weights_from_success_favour_hard_tasks():
    w = task_weights_from_success({"easy": 1.0, "mid": 0.5, "hard": 0.0})
    assert w["hard"] > w["mid"] > w["easy"] > 0
    assert sum(w.values()) / 3 == pytest.approx(1.0)
    assert w["hard"] / w["easy"] == pytest.approx(10.0)  # floor 0.1 keeps solved tasks in the mix
    summary = {
        "success_rate": 0.5,
        "tasks": {
            "libero_object/0": {"instruction": "pick the soup", "success_rate": 0.9},
            "libero_object/1": {"instruction": "pick the milk", "success_rate": 0.1},
        },
    }
    w = task_weights_from_success(summary, power=2.0)
    assert set(w) == {"pick the soup", "pick the milk"}
    assert w["pick the milk"] / w["pick the soup"] == pytest.approx((0.9 / 0.1) ** 2)
    with pytest.raises(ValueError, match="rates must lie in"):
        task_weights_from_success({"a": 1.5})


def test_mixture_draw_is_reproducible_from_the_generator():
    mixture = build_mixture({"": tasks_data()})
    a = mixture.draw(32, torch.Generator().manual_seed(5))
    b = mixture.draw(32, torch.Generator().manual_seed(5))
    assert a == b and all(0 <= i < 52 for i in a)
    assert np.unique(a).size > 3
