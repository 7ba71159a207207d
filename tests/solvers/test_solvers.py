"""Properties every solver shares: shapes, dtypes, devices, NFE accounting, autograd, compile, cost."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from flowvla.solvers import (
    HEUN,
    ButcherTableau,
    DPMSolverPlusPlus2M,
    EulerSolver,
    ExplicitRungeKutta,
    NFEBudgetExceeded,
    ODESolution,
    RK4Solver,
    Solver,
    available_solvers,
    create_solver,
    integrate,
    register_solver,
    uniform_grid,
)
from flowvla.typing import TypeCheckError

FIXED = ["euler", "midpoint", "heun", "rk4", "ab2", "dpm++2m"]
ALL = [*FIXED, "dopri5", "bosh3"]


def smooth_field(x, t):
    """A nonlinear, x- and t-dependent field with a flow that stays bounded on [0, 1]."""
    return torch.tanh(x) * (1 - t) - 0.5 * x + torch.sin(3 * t)


class Counter:
    def __init__(self, fn=smooth_field):
        self.fn, self.calls, self.ts = fn, 0, []

    def __call__(self, x, t, **kwargs):
        self.calls += 1
        self.ts.append(t)
        return self.fn(x, t)


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


@pytest.mark.parametrize("name", ALL)
@given(
    shape=shapes,
    steps=st.integers(1, 6),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
)
def test_shape_dtype_and_reported_nfe(name, shape, steps, dtype):
    x0 = torch.randn(shape).to(dtype)
    counter = Counter()
    sol = integrate(counter, x0, solver=name, steps=steps)
    assert sol.x.shape == x0.shape and sol.x.dtype == dtype and sol.x.device == x0.device
    assert sol.nfe == counter.calls
    assert torch.isfinite(sol.x.float()).all()
    expected_t_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    assert all(t.dim() == 0 and t.dtype == expected_t_dtype for t in counter.ts)


@pytest.mark.parametrize("name", FIXED)
def test_fixed_step_nfe_per_step(name):
    per_step = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4, "ab2": 1, "dpm++2m": 1}[name]
    assert integrate(smooth_field, torch.randn(3), solver=name, steps=7).nfe == 7 * per_step


@pytest.mark.parametrize("name", ALL)
def test_bitwise_deterministic_and_does_not_mutate_input(name):
    x0 = torch.randn(8, 16, 7)
    before = x0.clone()
    a = integrate(smooth_field, x0, solver=name, steps=5).x
    b = integrate(smooth_field, x0, solver=name, steps=5).x
    assert torch.equal(a, b)
    assert torch.equal(x0, before)


@pytest.mark.parametrize("name", ALL)
def test_trajectory(name):
    x0 = torch.randn(2, 3)
    grid = uniform_grid(4)
    sol = create_solver(name).solve(smooth_field, x0, grid, return_trajectory=True)
    assert sol.trajectory.shape == (5, 2, 3)
    assert torch.equal(sol.trajectory[0], x0) and torch.equal(sol.trajectory[-1], sol.x)
    torch.testing.assert_close(sol.times, grid)


@pytest.mark.parametrize("name", ALL)
def test_kwargs_reach_the_field(name):
    context = torch.randn(5, 1)

    def field(x, t, context, scale=1.0):
        return scale * context * torch.ones_like(x)

    sol = integrate(field, torch.zeros(5, 3), solver=name, steps=3, context=context, scale=2.0)
    torch.testing.assert_close(sol.x, 2.0 * context.expand(5, 3))


@pytest.mark.parametrize("name", FIXED)
def test_runs_on_meta_device(name):
    """No hidden CPU tensors or host syncs in the fixed-step loop: it runs on shape-only tensors."""
    x0 = torch.empty(4, 16, 7, device="meta")
    sol = integrate(lambda x, t: x * t, x0, solver=name, steps=3)
    assert sol.x.device.type == "meta" and sol.x.shape == x0.shape


@pytest.mark.parametrize("name", ALL)
def test_inference_mode(name):
    with torch.inference_mode():
        sol = integrate(smooth_field, torch.randn(3, 4), solver=name, steps=4)
    assert sol.x.is_inference()


@pytest.mark.parametrize("name", FIXED)
def test_gradients_through_the_solve_match_finite_differences(name):
    """In-place accumulation must not break autograd."""
    w = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    x0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)

    def field(x, t):
        return torch.tanh(w * x) + t * w

    torch.autograd.gradcheck(
        lambda w_, x_: integrate(lambda x, t: torch.tanh(w_ * x) + t * w_, x_, solver=name, steps=3).x,
        (w, x0),
    )
    loss = integrate(field, x0, solver=name, steps=3).x.sum()
    loss.backward()
    assert w.grad is not None and x0.grad is not None


@pytest.mark.parametrize("name", FIXED)
def test_torch_compile_fullgraph(name):
    torch._dynamo.reset()
    net = torch.nn.Sequential(torch.nn.Linear(7, 16), torch.nn.Tanh(), torch.nn.Linear(16, 7))

    def sample(x0):
        return integrate(lambda x, t: net(x) * t, x0, solver=name, steps=4).x

    x0 = torch.randn(2, 16, 7)
    compiled = torch.compile(sample, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x0), sample(x0))


class _AllocationCounter(TorchDispatchMode):
    """Counts aten ops that return fresh storage (not views, not in-place), outside the field."""

    def __init__(self):
        super().__init__()
        self.count, self.in_field = 0, False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        schema = func._schema
        if not self.in_field and not schema.is_mutable and not func.is_view:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    "name, allocations_per_step",
    # RK: one tensor per stage input after the first, plus the new state; AB2: the new state;
    # DPM-Solver++: the data prediction (kept for the next step) and the new state.
    [("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4), ("ab2", 1), ("dpm++2m", 2)],
)
def test_no_allocation_beyond_what_a_step_needs(name, allocations_per_step):
    x0 = torch.randn(4, 16, 7)
    mode = _AllocationCounter()

    def field(x, t):
        mode.in_field = True
        try:
            return torch.sin(x) + t
        finally:
            mode.in_field = False

    counts = []
    for steps in (5, 10):
        mode.count = 0
        with mode:
            integrate(field, x0, solver=name, steps=steps)
        counts.append(mode.count)
    assert (counts[1] - counts[0]) / 5 == allocations_per_step


def test_backward_integration_recovers_the_start():
    x0 = torch.randn(6, 3, dtype=torch.float64)
    x1 = RK4Solver().solve(smooth_field, x0, uniform_grid(64)).x
    back = RK4Solver().solve(smooth_field, x1, uniform_grid(64, 1.0, 0.0)).x
    torch.testing.assert_close(back, x0, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize(
    "grid, match",
    [
        ([0.0], "at least 2"),
        ([0.0, 0.5, 0.4, 1.0], "strictly"),
        ([0.0, float("nan")], "finite"),
        ([0.0, 0.0], "strictly"),
        (torch.zeros(2, 2), "1-D"),
    ],
)
def test_bad_grids_raise(grid, match):
    with pytest.raises(ValueError, match=match):
        EulerSolver().solve(smooth_field, torch.zeros(3), grid)


def test_dpm_solver_needs_increasing_unit_times():
    with pytest.raises(ValueError, match="within"):
        DPMSolverPlusPlus2M().solve(smooth_field, torch.zeros(3), [1.0, 0.0])
    with pytest.raises(ValueError, match="final_step"):
        DPMSolverPlusPlus2M("rk4")


def test_wrong_velocity_shape_is_reported():
    with pytest.raises(ValueError, match="velocity_fn"):
        EulerSolver().solve(lambda x, t: x.sum(-1), torch.zeros(3, 4), [0.0, 1.0])


def test_wrong_state_type_is_reported():
    with pytest.raises(TypeCheckError, match="x0"):
        EulerSolver().solve(smooth_field, torch.zeros(3, dtype=torch.int64), [0.0, 1.0])


def test_velocity_dtype_is_cast_to_the_state_dtype():
    sol = EulerSolver().solve(lambda x, t: x.double(), torch.ones(3, dtype=torch.bfloat16), [0.0, 1.0])
    assert sol.x.dtype == torch.bfloat16


def test_registry():
    assert set(ALL) <= set(available_solvers())
    with pytest.raises(ValueError, match="unknown solver"):
        create_solver("rk45")
    with pytest.raises(ValueError, match="already registered"):
        register_solver("heun", EulerSolver)
    register_solver("heun-test", lambda: ExplicitRungeKutta(HEUN))
    assert isinstance(create_solver("heun-test"), Solver)
    solver = EulerSolver()
    assert create_solver(solver) is solver
    assert create_solver("dopri5", atol=1e-3).atol == 1e-3


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(a=((), (0.5,)), b=(0.5, 0.6), c=(0.0, 0.5), order=2),
        dict(a=((), (0.5,)), b=(0.0, 1.0), c=(0.0, 0.4), order=2),
        dict(a=((0.1,), (0.5,)), b=(0.0, 1.0), c=(0.0, 0.5), order=2),
    ],
)
def test_inconsistent_tableaus_are_rejected(kwargs):
    with pytest.raises(ValueError, match="tableau"):
        ButcherTableau(**kwargs)


def test_adaptive_arguments_are_validated():
    with pytest.raises(ValueError, match="max_nfe"):
        create_solver("dopri5", max_nfe=5)
    with pytest.raises(ValueError, match="atol"):
        create_solver("bosh3", atol=0.0, rtol=0.0)
    with pytest.raises(ValueError, match="tableau"):
        from flowvla.solvers import AdaptiveRungeKutta

        AdaptiveRungeKutta(HEUN)
    assert issubclass(NFEBudgetExceeded, RuntimeError)
    assert ODESolution.__dataclass_fields__["nfe"]
