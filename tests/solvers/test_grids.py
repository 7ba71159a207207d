"""Time grids: endpoints, monotonicity, and where each warp spends its steps."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowvla.solvers import GRIDS, cosine_grid, create_grid, power_grid, shifted_grid, uniform_grid

PARAMS = {"uniform": {}, "shifted": {"shift": 2.5}, "power": {"power": 1.7}, "cosine": {}}


@pytest.mark.parametrize("kind", sorted(GRIDS))
@given(steps=st.integers(1, 64))
def test_grids_span_unit_interval_monotonically(kind, steps):
    g = create_grid(kind, steps, **PARAMS[kind])
    assert g.shape == (steps + 1,) and g.dtype == torch.float64
    assert float(g[0]) == pytest.approx(0.0, abs=1e-15) and float(g[-1]) == pytest.approx(1.0, abs=1e-15)
    assert bool((g.diff() > 0).all())


@given(steps=st.integers(2, 64), shift=st.floats(1.05, 10.0))
def test_shift_above_one_spends_steps_near_noise(steps, shift):
    g, u = shifted_grid(steps, shift), uniform_grid(steps)
    assert float(g[1]) < float(u[1])  # first step (at the noise) shorter than uniform
    assert float(g[-1] - g[-2]) > float(u[-1] - u[-2])
    torch.testing.assert_close(shifted_grid(steps, 1.0), u)


def test_shift_is_the_sd3_map_in_reverse_time():
    sigma = torch.tensor(0.4, dtype=torch.float64)  # noise level of the uniform grid point t = 0.6
    t = shifted_grid(5, 3.0)[3]
    torch.testing.assert_close(1 - t, 3 * sigma / (1 + 2 * sigma))


def test_power_and_cosine_shapes():
    torch.testing.assert_close(
        power_grid(4, 2.0), torch.tensor([0, 1 / 16, 1 / 4, 9 / 16, 1], dtype=torch.float64)
    )
    c = cosine_grid(8)
    torch.testing.assert_close(c + c.flip(0), torch.ones(9, dtype=torch.float64))  # symmetric
    assert float(c[1]) < 1 / 8


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: uniform_grid(0), "steps"),
        (lambda: create_grid("linear", 4), "unknown grid"),
        (lambda: shifted_grid(4, 0.0), "shift"),
        (lambda: power_grid(4, -1.0), "power"),
        (lambda: uniform_grid(3, 0.5, 0.5), "interval"),
    ],
)
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
