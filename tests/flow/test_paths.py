"""The linear path, its parametrisations and the reverse-time conventions of peers."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowvla.flow import GaussianMixtureFlow, LinearPath, from_reverse_time_field, to_reverse_time_field

shapes = st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 8))
path = LinearPath()


def _draw(shape, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(shape, generator=g, dtype=dtype)
    z = torch.randn(shape, generator=g, dtype=dtype)
    t = torch.rand(shape[0], generator=g, dtype=dtype)
    return a, z, t


@given(shape=shapes, seed=st.integers(0, 2**16))
def test_endpoints_are_noise_and_data(shape, seed):
    a, z, _ = _draw(shape, seed)
    b = shape[0]
    assert torch.equal(path.sample(a, z, torch.zeros(b, dtype=a.dtype)).x_t, z)
    assert torch.equal(path.sample(a, z, torch.ones(b, dtype=a.dtype)).x_t, a)


@given(shape=shapes, seed=st.integers(0, 2**16))
def test_target_is_the_time_derivative_of_the_path(shape, seed):
    a, z, t = _draw(shape, seed)
    t = t.clamp(0.01, 0.99)
    eps = 1e-6
    fd = (path.sample(a, z, t + eps).x_t - path.sample(a, z, t - eps).x_t) / (2 * eps)
    torch.testing.assert_close(fd, path.sample(a, z, t).target, rtol=1e-6, atol=1e-6)


@given(shape=shapes, seed=st.integers(0, 2**16))
def test_data_and_noise_predictions_recover_the_endpoints(shape, seed):
    a, z, t = _draw(shape, seed)
    t = t.clamp(max=0.99)
    s = path.sample(a, z, t)
    torch.testing.assert_close(path.data_prediction(s.x_t, s.target, t), a)
    torch.testing.assert_close(path.noise_prediction(s.x_t, s.target, t), z)
    torch.testing.assert_close(path.velocity_from_data_prediction(s.x_t, a, t), s.target)


def test_velocity_from_data_prediction_rejects_t_one():
    x = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="t = 1"):
        path.velocity_from_data_prediction(x, x, torch.ones(2))


def _reverse_convention_gaussian_field(mu, sigma):
    """A peer's marginal field, derived in the peer's own convention (x_s = s z + (1 - s) a, u = z - a)."""

    def u(x, s):
        var = s**2 + (1 - s) ** 2 * sigma**2
        cov = s - (1 - s) * sigma**2  # Cov(z - a, x_s) per dim
        return -mu + cov / var * (x - (1 - s) * mu)

    return u


@given(seed=st.integers(0, 2**16), t=st.floats(0.0, 1.0))
def test_reverse_time_conversion_matches_an_independent_peer_field(seed, t):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(5, 3, generator=g, dtype=torch.float64)
    sigma = 0.3
    ours = GaussianMixtureFlow(mu[None], torch.tensor([sigma], dtype=torch.float64))
    peer = _reverse_convention_gaussian_field(mu, sigma)
    x = torch.randn(7, 5, 3, generator=g, dtype=torch.float64)
    tt = torch.tensor(t, dtype=torch.float64)
    torch.testing.assert_close(from_reverse_time_field(peer)(x, tt), ours(x, tt))
    torch.testing.assert_close(to_reverse_time_field(ours)(x, 1 - tt), peer(x, 1 - tt))


def test_reverse_time_sampling_loop_matches_ours():
    """openpi-style Euler (s: 1 -> 0, x += ds * u) equals our Euler on the converted field."""
    from flowvla.solvers import integrate

    mu, sigma = torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(2, 3), 0.2
    peer = _reverse_convention_gaussian_field(mu, sigma)
    x = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    n = 10
    y, s = x.clone(), 1.0
    for _ in range(n):
        y = y + (-1.0 / n) * peer(y, torch.tensor(s, dtype=torch.float64))
        s -= 1.0 / n
    ours = integrate(from_reverse_time_field(peer), x, solver="euler", steps=n).x
    torch.testing.assert_close(ours, y, rtol=1e-12, atol=1e-12)
