"""The flow-matching objective: minimised by the exact field, masks, repeats, determinism."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowvla.flow import FlowMatchingObjective, GaussianMixtureFlow, UniformTimeSampler, masked_mse
from flowvla.typing import TypeCheckError

dims = st.tuples(st.integers(1, 5), st.integers(1, 8), st.integers(1, 7))


def _zero_field(x, t):
    return torch.zeros_like(x)


@given(bha=dims, repeats=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_shapes_and_determinism(bha, repeats, seed):
    actions = torch.randn(bha, generator=torch.Generator().manual_seed(seed))
    obj = FlowMatchingObjective(repeats=repeats)
    out1 = obj(_zero_field, actions, generator=torch.Generator().manual_seed(seed))
    out2 = obj(_zero_field, actions, generator=torch.Generator().manual_seed(seed))
    lead = (repeats,) if repeats > 1 else ()
    assert out1.path.x_t.shape == (*lead, *bha)
    assert out1.path.t.shape == (*lead, bha[0])
    assert out1.per_sample.shape == (bha[0],)
    assert out1.loss.dim() == 0
    assert torch.equal(out1.loss, out2.loss) and torch.equal(out1.path.x_t, out2.path.x_t)


@given(bha=dims, seed=st.integers(0, 2**16))
def test_loss_is_zero_for_the_exact_field_and_positive_otherwise(bha, seed):
    # For a point-mass target at a_b the marginal field is (a_b - x) / (1 - t): exact, not learned.
    g = torch.Generator().manual_seed(seed)
    actions = torch.randn(bha, generator=g, dtype=torch.float64)

    def exact(x, t):
        return (actions - x) / (1 - t)[:, None, None]

    obj = FlowMatchingObjective()  # Beta sampler: t <= 0.999, so 1 - t > 0
    out = obj(exact, actions, generator=torch.Generator().manual_seed(seed))
    assert float(out.loss) < 1e-18
    perturbed = obj(lambda x, t: exact(x, t) + 1e-2, actions, generator=torch.Generator().manual_seed(seed))
    assert float(perturbed.loss) == pytest.approx(1e-4, rel=1e-6)


def test_marginal_field_minimises_the_expected_loss():
    """E[loss(v* + d)] = E[loss(v*)] + |d|^2: the exact marginal field of a mixture is the optimum."""
    means = torch.tensor([[[-1.0, 0.5]], [[1.0, -0.5]]], dtype=torch.float64)  # M=2, H=1, A=2
    gmm = GaussianMixtureFlow(means, torch.tensor([0.2, 0.4], dtype=torch.float64))
    actions = gmm.sample_data(200_000, generator=torch.Generator().manual_seed(0))
    obj = FlowMatchingObjective(UniformTimeSampler(0.0, 0.98))
    base = obj(gmm.velocity, actions, generator=torch.Generator().manual_seed(1)).loss
    for shift in (0.3, -0.2):
        worse = obj(
            lambda x, t, s=shift: gmm.velocity(x, t) + s, actions, generator=torch.Generator().manual_seed(1)
        ).loss
        assert float(worse - base) == pytest.approx(shift**2, rel=0.05)


def test_masked_entries_do_not_count():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 5, 4, generator=g), torch.randn(3, 5, 4, generator=g)
    mask = torch.rand(3, 5, generator=g) > 0.4
    loss, per_sample = masked_mse(pred, target, mask)
    garbage = torch.where(mask[..., None], pred, torch.full_like(pred, 1e6))
    loss2, per_sample2 = masked_mse(garbage, target, mask)
    assert torch.equal(loss, loss2) and torch.equal(per_sample, per_sample2)
    # The mean over valid entries, not over all entries.
    err = (pred - target).square()[mask]
    torch.testing.assert_close(loss, err.mean())
    for b in range(3):
        if mask[b].any():
            torch.testing.assert_close(per_sample[b], (pred[b] - target[b]).square()[mask[b]].mean())


def test_per_dimension_mask_and_fully_masked_chunk():
    pred, target = torch.ones(2, 3, 4), torch.zeros(2, 3, 4)
    mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    mask[0, :, :2] = True  # chunk 0: first two action dims valid; chunk 1: nothing valid
    loss, per_sample = masked_mse(pred * torch.arange(1, 5.0), target, mask)
    torch.testing.assert_close(loss, torch.tensor((1.0 + 4.0) / 2))
    torch.testing.assert_close(per_sample, torch.tensor([2.5, 0.0]))


def test_repeats_share_the_conditioning():
    actions = torch.randn(4, 6, 7)
    context = torch.randn(4, 9)  # per-sample conditioning, never copied R times
    seen = {}

    def field(x, t, context):
        seen["x"], seen["t"] = x.shape, t.shape
        return x * context.mean(-1)[:, None, None]  # broadcasts [B] over [R, B, H, A]

    out = FlowMatchingObjective(repeats=3)(
        field, actions, context=context, generator=torch.Generator().manual_seed(0)
    )
    assert seen == {"x": (3, 4, 6, 7), "t": (3, 4)}
    assert out.prediction.shape == (3, 4, 6, 7)


def test_repeat_draws_are_independent():
    out = FlowMatchingObjective(repeats=4)(
        _zero_field, torch.zeros(2, 3, 1), generator=torch.Generator().manual_seed(0)
    )
    assert len(set(out.path.t[:, 0].tolist())) == 4


def test_explicit_noise_and_time_are_used():
    actions = torch.randn(2, 3, 4)
    noise, t = torch.randn(2, 3, 4), torch.tensor([0.25, 0.75])
    out = FlowMatchingObjective()(_zero_field, actions, noise=noise, t=t)
    torch.testing.assert_close(out.path.x_t, (1 - t)[:, None, None] * noise + t[:, None, None] * actions)
    torch.testing.assert_close(out.path.target, actions - noise)


def test_bad_inputs_raise_clear_errors():
    obj = FlowMatchingObjective()
    a = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="velocity_fn"):
        obj(lambda x, t: x[..., :2], a)
    with pytest.raises(ValueError, match="t: flow times"):
        obj(_zero_field, a, t=torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="noise"):
        FlowMatchingObjective(repeats=2)(_zero_field, a, noise=torch.randn(2, 3, 4))
    with pytest.raises(TypeCheckError, match="action_mask"):
        obj(_zero_field, a, action_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="repeats"):
        FlowMatchingObjective(repeats=0)


def test_gradients_reach_the_model():
    net = torch.nn.Linear(4, 4)
    out = FlowMatchingObjective()(lambda x, t: net(x), torch.randn(3, 5, 4))
    out.loss.backward()
    assert net.weight.grad is not None and float(net.weight.grad.abs().sum()) > 0


@given(repeats=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_draw_is_what_sample_path_draws(repeats, seed):
    obj = FlowMatchingObjective(repeats=repeats)
    actions = torch.randn(5, 4, 3)
    noise, t = obj.draw(5, 4, 3, generator=torch.Generator().manual_seed(seed))
    path = obj.sample_path(actions, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(noise, path.noise) and torch.equal(t, path.t)
    lead = (repeats,) if repeats > 1 else ()
    assert noise.shape == (*lead, 5, 4, 3) and t.shape == (*lead, 5)
    # Slices of one draw serve the halves of the batch: the split does not change the draws.
    half = obj.sample_path(actions[:2], noise=noise[..., :2, :, :], t=t[..., :2])
    assert torch.equal(half.x_t, path.x_t[..., :2, :, :])
    with pytest.raises(ValueError, match="batch_size, horizon, action_dim"):
        obj.draw(0, 4, 3)
