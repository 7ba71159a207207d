"""The closed-form mixture field: pushing N(0, I) through it reproduces the mixture."""

import pytest
import torch

from flowvla.flow import GaussianMixtureFlow
from flowvla.flow.analytic import smooth_chunk_mixture
from flowvla.solvers import integrate


def test_flow_transports_noise_to_the_mixture():
    means = torch.tensor([[-2.0], [1.0], [3.0]], dtype=torch.float64)
    stds = torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    gmm = GaussianMixtureFlow(means, stds, weights)
    x0 = torch.randn(40_000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x1 = integrate(gmm, x0, solver="rk4", steps=200).x[:, 0]
    # Component masses: which basin each sample lands in.
    masses = torch.stack(
        [(x1 < -0.5).double().mean(), ((x1 > -0.5) & (x1 < 2.2)).double().mean(), (x1 > 2.2).double().mean()]
    )
    torch.testing.assert_close(masses, weights, atol=0.01, rtol=0)
    mean = float((weights * means[:, 0]).sum())
    var = float((weights * (stds**2 + means[:, 0] ** 2)).sum()) - mean**2
    assert float(x1.mean()) == pytest.approx(mean, abs=0.03)
    assert float(x1.var()) == pytest.approx(var, rel=0.02)


def test_single_gaussian_flow_is_closed_form():
    gmm = GaussianMixtureFlow(
        torch.randn(1, 3, 2, dtype=torch.float64), torch.tensor([0.4], dtype=torch.float64)
    )
    x0 = torch.randn(16, 3, 2, dtype=torch.float64)
    for t_end in (0.5, 1.0):
        grid = torch.linspace(0, t_end, 401, dtype=torch.float64)
        x = integrate(gmm, x0, solver="rk4", grid=grid).x
        torch.testing.assert_close(x, gmm.exact_flow(x0, t_end), rtol=1e-9, atol=1e-9)


def test_invalid_mixture_raises():
    with pytest.raises(ValueError, match="stds"):
        GaussianMixtureFlow(torch.zeros(2, 3), torch.tensor([0.1, 0.0]))
    with pytest.raises(ValueError, match="exact_flow"):
        GaussianMixtureFlow(torch.zeros(2, 3), torch.tensor([0.1, 0.2])).exact_flow(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="event shape"):
        GaussianMixtureFlow(torch.zeros(2, 3), torch.tensor([0.1, 0.2])).velocity(
            torch.zeros(4, 5), torch.tensor(0.5)
        )


def test_smooth_chunk_mixture_is_seeded_and_separates_first_from_second_order():
    a, b = smooth_chunk_mixture(), smooth_chunk_mixture(dtype=torch.float32)
    assert a.event_shape == (16, 7) and a.num_components == 8
    torch.testing.assert_close(a.means.float(), b.means)  # the same mixture on every call
    x0 = torch.randn(64, 16, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = integrate(a, x0, solver="rk4", steps=400).x
    err = {
        s: float((integrate(a, x0, solver=s, steps=n).x - exact).square().mean().sqrt())
        for s, n in (("euler", 10), ("midpoint", 5))
    }
    assert err["midpoint"] < err["euler"]  # what the solver benchmarks rely on: order shows at 10 NFE
    with pytest.raises(ValueError, match="horizon"):
        smooth_chunk_mixture(horizon=0)
