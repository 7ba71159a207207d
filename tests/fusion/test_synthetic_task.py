"""Only fine geometry answers "which patch is nearest?": token-aligned fusion must beat global broadcast.

The task, model and training loop live in ``benchmarks/algorithms/fusion.py`` (the benchmark reports
the same accuracies with longer training); here a short seeded run on the CPU asserts the margin.
"""

from __future__ import annotations

import pytest
import torch

from tests.benchmark_loader import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("algorithms/fusion")


@pytest.fixture(scope="module")
def accuracies(bench):
    return {name: bench.train_nearest_patch(name, steps=150)["accuracy"] for name in bench.TASK_FUSIONS}


def test_targets_are_the_nearest_valid_patch(bench):
    depth, k, nearest = bench.make_scenes(8, torch.Generator().manual_seed(0))
    assert depth.shape == (8, 2, 16, 16) and k.shape == (8, 2, 3, 3) and nearest.shape == (8,)
    assert (depth == 0).any()  # missing pixels are part of the task
    from flowvla.geometry import PatchGrid, pool_to_patches

    mean_z, ok = pool_to_patches(depth[..., None], PatchGrid(32, 8), depth > 0)
    mean_z = torch.where(ok, mean_z[..., 0], torch.inf).flatten(1)
    assert torch.equal(mean_z.argmin(1), nearest)


def test_global_broadcast_stays_at_chance(accuracies):
    assert accuracies["global"] < 0.1  # chance is 1/32


@pytest.mark.parametrize("name", ["add", "concat", "gated"])
def test_token_aligned_fusion_beats_global_broadcast(accuracies, name):
    assert accuracies[name] > 0.7
    assert accuracies[name] - accuracies["global"] > 0.6


def test_region_attention_beats_global_broadcast(accuracies):
    assert accuracies["region"] - accuracies["global"] > 0.3
