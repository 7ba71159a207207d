"""The sensitivity report's held-out paraphrase row, on a policy whose actions are a function of the
instruction's words (so every distance is known)."""

import pytest
import torch

from flowvla.diagnostics import sensitivity_report

WEIGHTS = {"pick": 1.0, "up": 1.0, "grab": 2.2, "lift": 2.0, "put": 1.0, "down": 5.0}


class WordPolicy:
    """Actions ``[B, 2, 1]``: per sample, the sum of the ``WEIGHTS`` of its instruction's words."""

    def predict_action(self, batch, solver=None, steps=None, seed=0):
        rows = [sum(WEIGHTS.get(w, 0.0) for w in text.split()) for text in batch["instruction"]]
        img = batch["images"].float().mean(dim=(1, 2, 3, 4))
        return torch.tensor(rows)[:, None, None].repeat(1, 2, 1) + 1e-3 * img[:, None, None], {}


def _batch(texts):
    g = torch.Generator().manual_seed(0)
    n = len(texts)
    return {
        "images": torch.randint(0, 255, (n, 1, 3, 4, 4), generator=g),
        "instruction": texts,
        "state": torch.zeros(n, 2),
    }


def test_held_out_paraphrase_is_measured_beside_the_trained_synonym():
    report = sensitivity_report(WordPolicy(), _batch(["pick up the bowl", "pick up the mug"]))
    assert report["instructions"]["held_out"] == ["lift the bowl", "lift the mug"]
    # pick+up = 2; grab = 2.2; lift = 2.0; put+down = 6 -> per-sample distance |Δ| * sqrt(2).
    assert report["synonym_l2"] == pytest.approx(0.2 * 2**0.5, rel=1e-5)
    assert report["held_out_l2"] == pytest.approx(0.0, abs=1e-6)
    assert report["opposite_l2"] == pytest.approx(4.0 * 2**0.5, rel=1e-5)
    assert report["checks"]["held_out_below_opposite"] and "skipped" not in report
    assert report["held_out_over_synonym"] == pytest.approx(0.0, abs=1e-5)


def test_without_a_held_out_rule_the_row_is_skipped_and_says_why():
    batch = _batch(["wave at the bowl"])
    report = sensitivity_report(
        WordPolicy(), batch, synonyms=["wave to the bowl"], opposites=["ignore the bowl"]
    )
    assert "held_out_l2" not in report and "wave at the bowl" in report["skipped"]["held_out_l2"]
    explicit = sensitivity_report(
        WordPolicy(),
        batch,
        synonyms=["wave to the bowl"],
        opposites=["grab the bowl"],
        held_out=["greet the bowl"],
    )
    assert (
        explicit["held_out_l2"] == pytest.approx(0.0, abs=1e-6)
        and explicit["checks"]["held_out_below_opposite"]
    )
    with pytest.raises(ValueError, match="held_out"):
        sensitivity_report(WordPolicy(), batch, synonyms=["a"], opposites=["b"], held_out=["c", "d"])


class DepthPolicy:
    """Actions ``[B, 2, 1]``: ``mean(images) / 255 + 10 * mean(depth)`` per sample, so the depth's
    share of every distance is known."""

    def predict_action(self, batch, solver=None, steps=None, seed=0):
        img = batch["images"].float().mean(dim=(1, 2, 3, 4)) / 255
        dep = batch["depth"].float().mean(dim=(1, 2, 3))
        return (img + 10 * dep)[:, None, None].repeat(1, 2, 1), {}


@pytest.mark.parametrize("n", [1, 3])
def test_geometry_row_changes_the_depth_alone(n):
    g = torch.Generator().manual_seed(1)
    batch = _batch(["pick up the bowl"] * n)
    batch["depth"] = torch.rand(n, 1, 4, 4, generator=g)
    if n == 1:  # a batch of one is compared with its own depth mirrored: make the mirror differ
        batch["depth"][..., 0] += 1.0
    report = sensitivity_report(DepthPolicy(), batch)
    dep = batch["depth"].mean(dim=(1, 2, 3))
    other = dep.roll(1) if n > 1 else batch["depth"].flip(-1).mean(dim=(1, 2, 3))
    expected = (10 * (dep - other)).abs() * 2**0.5
    assert report["per_sample"]["geometry_l2"] == pytest.approx(expected.tolist(), rel=1e-4, abs=1e-6)
    assert report["checks"]["uses_geometry"] == (float(expected.mean()) > 0)
    assert "geometry_l2" not in sensitivity_report(WordPolicy(), _batch(["pick up the bowl"]))


@pytest.mark.parametrize(("fusion", "uses"), [("none", False), ("gated", False), ("global", True)])
def test_geometry_row_tells_whether_a_policy_reads_its_depth(fusion, uses):
    from tests.policy.helpers import make_batch, shaped_tiny_policy

    # No geometry branch ignores depth; gated fusion starts closed (its value projection is 0), so
    # at initialisation its actions do not depend on depth either; global fusion reads it at once.
    # The head gets random weights: a fresh head's zeroed output layers would make every row 0.
    policy = shaped_tiny_policy(fusion=fusion).eval()
    report = sensitivity_report(policy, make_batch(3, actions=False))
    assert report["image_l2"] > 1e-6  # the rows can move at all
    assert report["baseline_l2"] == 0.0
    assert report["checks"]["uses_geometry"] is uses
    assert (report["geometry_l2"] > 1e-6) if uses else (report["geometry_l2"] == 0.0)


class RoutedPolicy:
    """Reports given router weights ``[B, K, L]`` (one sample per row of ``weights``)."""

    def __init__(self, weights):
        self.weights = weights

    def predict_action(self, batch, seed=0):
        return torch.zeros(len(self.weights), 2, 1), {"router_weights": self.weights}


def test_layer_usage_averages_the_router_weights_and_measures_their_spread():
    from flowvla.diagnostics import layer_usage

    # Two samples, one head block, two layers: each sample reads another layer.
    usage = layer_usage(RoutedPolicy([[[1.0, 0.0]], [[0.0, 1.0]]]), {})
    assert usage["per_block"] == [[0.5, 0.5]] and usage["per_layer"] == [0.5, 0.5]
    assert usage["sample_spread"] == pytest.approx(0.5) and usage["samples"] == 2
    same = layer_usage(RoutedPolicy([[[0.2, 0.8], [1.0, 0.0]]] * 3), {})
    assert same["per_layer"] == pytest.approx([0.6, 0.4]) and same["sample_spread"] == 0.0
    with pytest.raises(ValueError, match="no 'router_weights'"):
        layer_usage(WordPolicy(), _batch(["pick up the soup"]))
    with pytest.raises(ValueError, match=r"^policy: router weights must be \[B, K, L\]"):
        layer_usage(RoutedPolicy([0.5, 0.5]), {})


@pytest.mark.parametrize("router", ["fixed", "scalar_mix", "topk"])
def test_layer_usage_of_real_routers(router):
    from flowvla.diagnostics import layer_usage
    from tests.policy.helpers import make_batch, tiny_policy

    usage = layer_usage(tiny_policy(router=router).eval(), make_batch(3, actions=False))
    per_block = torch.tensor(usage["per_block"], dtype=torch.float64)
    per_layer = torch.tensor(usage["per_layer"], dtype=torch.float64)
    torch.testing.assert_close(per_block.sum(-1), torch.ones(per_block.shape[0], dtype=torch.float64))
    if router == "fixed":  # the last layer, for every block and input
        assert per_layer.tolist() == [0.0] * (len(per_layer) - 1) + [1.0] and usage["sample_spread"] == 0.0
    elif router == "scalar_mix":  # learned, but one mix for every input
        assert (per_layer > 0).all() and usage["sample_spread"] < 1e-12
    else:  # top-2 of the layers for each sample: at least two layers read, never all at once
        assert 2 <= int((per_block > 0).sum(-1).min()) and usage["sample_spread"] >= 0.0


def test_sensitivity_report_carries_the_layer_usage_of_its_reference_prediction():
    from flowvla.diagnostics import layer_usage
    from tests.policy.helpers import make_batch, tiny_policy

    batch = make_batch(3, actions=False)
    policy = tiny_policy(router="topk").eval()
    assert sensitivity_report(policy, batch)["layer_usage"] == layer_usage(policy, batch)
    # A policy without a layer router reports no usage rather than a made-up one.
    assert "layer_usage" not in sensitivity_report(WordPolicy(), _batch(["pick up the soup"]))
