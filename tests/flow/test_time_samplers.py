"""Time samplers: range, seeded determinism, and their distributions."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowvla.flow import (
    BetaTimeSampler,
    LogitNormalTimeSampler,
    UniformTimeSampler,
    sample_beta,
    sample_gamma,
)

SAMPLERS = [
    UniformTimeSampler(),
    BetaTimeSampler(),
    BetaTimeSampler(2.0, 3.0, 0.95),
    LogitNormalTimeSampler(0.5, 1.2),
]
N = 200_000


def _ks_statistic(samples: torch.Tensor, cdf) -> float:
    x, _ = torch.sort(samples.double())
    n = x.numel()
    f = cdf(x)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - f, f - (i - 1) / n).max())


@pytest.mark.parametrize("sampler", SAMPLERS, ids=repr)
@given(seed=st.integers(0, 2**31 - 1), shape=st.tuples(st.integers(1, 5), st.integers(1, 50)))
def test_in_unit_interval_and_deterministic(sampler, seed, shape):
    t1 = sampler.sample(shape, generator=torch.Generator().manual_seed(seed))
    t2 = sampler.sample(shape, generator=torch.Generator().manual_seed(seed))
    assert t1.shape == shape
    assert torch.equal(t1, t2)
    assert bool(((t1 >= 0) & (t1 <= 1)).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtype_is_honoured(dtype):
    assert BetaTimeSampler().sample(10, dtype=dtype).dtype == dtype


def test_different_seeds_differ():
    s = BetaTimeSampler()
    assert not torch.equal(
        s.sample(100, generator=torch.Generator().manual_seed(0)),
        s.sample(100, generator=torch.Generator().manual_seed(1)),
    )


def test_pi0_beta_matches_its_exact_distribution():
    # t = s (1 - u), u ~ Beta(alpha, 1) has CDF u^alpha, so P(t <= x) = 1 - (1 - x / s)^alpha.
    alpha, s = 1.5, 0.999
    t = BetaTimeSampler(alpha, 1.0, s).sample(
        N, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    assert float(t.max()) <= s
    d = _ks_statistic(t, lambda x: 1 - (1 - x / s).clamp(min=0) ** alpha)
    assert d < 1.63 / math.sqrt(N)  # KS critical value at the 1% level


def test_uniform_matches_its_cdf():
    t = UniformTimeSampler(0.2, 0.7).sample(
        N, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    assert _ks_statistic(t, lambda x: ((x - 0.2) / 0.5).clamp(0, 1)) < 1.63 / math.sqrt(N)


def test_logit_normal_matches_its_cdf():
    m, sd = 0.5, 1.2
    t = LogitNormalTimeSampler(m, sd).sample(
        N, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    normal_cdf = lambda x: 0.5 * (1 + torch.erf((torch.logit(x) - m) / (sd * math.sqrt(2))))
    assert _ks_statistic(t, normal_cdf) < 1.63 / math.sqrt(N)


@pytest.mark.parametrize("k", [0.3, 1.0, 1.5, 4.0])
def test_gamma_moments(k):
    x = sample_gamma(k, (N,), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    se = math.sqrt(k / N)  # std error of the mean
    assert abs(float(x.mean()) - k) < 5 * se
    assert abs(float(x.var()) - k) < 0.05 * k + 5 * math.sqrt(2 * k * k / N)
    assert bool((x > 0).all())


@pytest.mark.parametrize("a, b", [(2.0, 3.0), (0.5, 0.5), (1.5, 1.0)])
def test_beta_moments(a, b):
    x = sample_beta(a, b, (N,), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mean = a / (a + b)
    var = a * b / ((a + b) ** 2 * (a + b + 1))
    assert abs(float(x.mean()) - mean) < 5 * math.sqrt(var / N)
    assert abs(float(x.var()) - var) < 0.03 * var


@pytest.mark.parametrize(
    "make",
    [
        lambda: UniformTimeSampler(0.5, 0.5),
        lambda: BetaTimeSampler(alpha=0.0),
        lambda: BetaTimeSampler(s=1.5),
        lambda: LogitNormalTimeSampler(std=0.0),
    ],
)
def test_invalid_parameters_raise(make):
    with pytest.raises(ValueError):
        make()
