"""benchmarks/libero/baseline.py, the regression floor the recipe is measured against: its keypoints
find what they attend to, its task code follows the instruction, its loss ignores padded steps, and
(with LIBERO) the script trains and evaluates end to end at toy size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowvla.data.stats import FeatureStats
from tests.benchmark_loader import load_benchmark
from tests.libero_demos import generate_one_demo

bench = load_benchmark("libero/baseline")

H, A, S = 4, 7, 8


def _stats() -> dict:
    rng = np.random.default_rng(0)
    return {
        "actions": FeatureStats.from_array(rng.normal(size=(50, A))),
        "state": FeatureStats.from_array(rng.normal(size=(50, S))),
    }


def _batch(instructions: list[str], seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    b = len(instructions)
    return {
        "images": torch.randint(0, 256, (b, 2, 3, 32, 32), generator=g, dtype=torch.uint8),
        "state": torch.randn(b, S, generator=g),
        "actions": torch.randn(b, H, A, generator=g),
        "action_mask": torch.ones(b, H, dtype=torch.bool),
        "instruction": instructions,
    }


@settings(max_examples=25, deadline=None)
@given(h=st.integers(2, 9), w=st.integers(2, 9), data=st.data())
def test_a_keypoint_lands_on_the_one_bright_location(h, w, data):
    i, j = data.draw(st.integers(0, h - 1)), data.draw(st.integers(0, w - 1))
    softmax = bench.SpatialSoftmax(1, 1)
    with torch.no_grad():
        softmax.proj.weight.fill_(1.0)
        softmax.proj.bias.zero_()
    x = torch.zeros(1, 1, h, w)
    x[0, 0, i, j] = 60.0  # exp(60) swamps the other cells
    xy = softmax(x)[0]
    expected = torch.tensor([torch.linspace(-1, 1, w)[j], torch.linspace(-1, 1, h)[i]])
    torch.testing.assert_close(xy, expected, atol=1e-5, rtol=0)


def test_keypoints_stay_inside_the_image_and_have_two_coordinates_each():
    softmax = bench.SpatialSoftmax(16, 5)
    xy = softmax(torch.randn(3, 16, 6, 7) * 10)
    assert xy.shape == (3, 10) and bool((xy.abs() <= 1 + 1e-6).all())


def test_the_task_code_follows_the_instruction_and_an_unknown_one_is_all_zero():
    model = bench.RegressionBaseline(["pick the soup", "pick the cheese"], 2, S, H, A, _stats())
    one = _batch(["pick the soup"])
    code = model._features({**one, "instruction": ["pick the cheese"]})[0, -2:]
    assert model._features(one)[0, -2:].tolist() == [1.0, 0.0] and code.tolist() == [0.0, 1.0]
    assert model._features({**one, "instruction": ["stack the bowls"]})[0, -2:].tolist() == [0.0, 0.0]
    # Everything before the code is the same features: only the code changed.
    torch.testing.assert_close(
        model._features(one)[:, :-2], model._features({**one, "instruction": ["x"]})[:, :-2]
    )


def test_the_loss_ignores_padded_steps_and_predictions_come_back_in_action_units():
    torch.manual_seed(0)
    model = bench.RegressionBaseline(["a", "b"], 2, S, H, A, _stats())
    batch = _batch(["a", "b", "a"])
    batch["action_mask"][:, -1] = False
    moved = {**batch, "actions": batch["actions"].clone()}
    moved["actions"][:, -1] += 100.0  # only where the mask is off
    assert float(model(batch)) == pytest.approx(float(model(moved)), abs=1e-6)
    pred, _ = model.predict_action(batch)
    raw = model.mlp(model._features(batch)).view(-1, H, A)
    assert pred.shape == (3, H, A)
    torch.testing.assert_close(pred, model.actions.unnormalize(raw))


@pytest.mark.libero
def test_the_script_trains_and_evaluates_at_toy_size(libero_ready, tmp_path):
    data = tmp_path / "demos"
    generate_one_demo(data, "libero_object", 0)
    out = tmp_path / "run"
    argv = ["--data", str(data), "--tasks", "0", "--steps", "2", "--batch-size", "2", "--horizon", "4"]
    argv += ["--init-states", "1", "--max-steps", "8", "--eval-workers", "1", "--threads", "1"]
    result = bench.main([*argv, "--out", str(out)])
    assert result["steps"] == 2 and result["demos"] == 1 and result["episodes"] == 1
    saved = json.loads((out / "baseline.json").read_text())
    assert saved["episodes"] == 1 and saved["args"]["max_steps"] == 8
    episodes = [json.loads(line) for line in (out / "eval" / "episodes.jsonl").read_text().splitlines()]
    assert len(episodes) == 1 and episodes[0]["steps"] <= 8
