"""Shortcut distillation: the student learns few-step sampling of an exact field; bad input is named."""

import itertools

import pytest
import torch

from flowvla.flow import ShortcutMLP, distill_shortcut, shortcut_loss, shortcut_sample
from flowvla.solvers import integrate


def _rms(a, b):
    return float((a - b).square().mean().sqrt())


def test_distilled_student_beats_euler_at_one_and_two_steps_on_held_out_noise(mixture):
    field = mixture  # float64 3-mode 2-D mixture
    dg = torch.Generator().manual_seed(2)
    student, info = distill_shortcut(
        field,
        lambda n: field.sample_data(n, generator=dg),
        (2,),
        iterations=300,
        batch_size=128,
        hidden=64,
        depth=2,
        lr=3e-3,
        dtype=torch.float64,
    )
    assert info["teacher_evaluations"] > 0 and info["seconds"] > 0
    x0 = torch.randn(512, 2, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    ref = integrate(field, x0, solver="rk4", steps=200).x
    with torch.no_grad():
        for steps in (1, 2):
            euler = _rms(integrate(field, x0, solver="euler", steps=steps).x, ref)
            student_err = _rms(shortcut_sample(student, x0, steps), ref)
            assert student_err < 0.7 * euler, f"{steps} steps: student {student_err:.3f} vs euler {euler:.3f}"


class _ConditionalStudent(torch.nn.Module):
    """s(x, t, d | shift) for 2-D states: an MLP on the state, the condition and Fourier times."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.pi * 2.0 ** torch.arange(4, dtype=torch.float64))
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2 + 2 + 16, 64),
            torch.nn.SiLU(),
            torch.nn.Linear(64, 64),
            torch.nn.SiLU(),
            torch.nn.Linear(64, 2),
        ).double()

    def forward(self, x, t, d, shift):
        f = torch.cat([t[:, None] * self.freqs, d[:, None] * self.freqs], dim=-1)
        return self.net(torch.cat([x, shift, f.sin(), f.cos()], dim=-1))


def test_a_conditional_student_learns_each_rows_flow(mixture):
    """The target is the mixture moved by a per-row ``shift``: ``v(x, t | c) = v(x - t c, t) + c`` is
    its exact field. One distillation over random shifts serves held-out shifts and noise."""

    def shifted(x, t, shift):
        tt = t.reshape(-1, 1) if t.dim() else t
        return mixture(x - tt * shift, t) + shift

    dg = torch.Generator().manual_seed(3)
    torch.manual_seed(0)  # the student's initial weights

    def draws(n):
        shift = (torch.rand(n, 2, generator=dg, dtype=torch.float64) - 0.5) * 4
        return mixture.sample_data(n, generator=dg) + shift, {"shift": shift}

    student, info = distill_shortcut(
        shifted,
        draws,
        (2,),
        student=_ConditionalStudent(),
        iterations=300,
        batch_size=128,
        lr=3e-3,
        dtype=torch.float64,
    )
    assert info["parameters"] == sum(p.numel() for p in student.parameters())
    g = torch.Generator().manual_seed(11)
    x0 = torch.randn(512, 2, generator=g, dtype=torch.float64)
    shift = (torch.rand(512, 2, generator=g, dtype=torch.float64) - 0.5) * 4
    ref = integrate(shifted, x0, solver="rk4", steps=200, shift=shift).x
    with torch.no_grad():
        # Measured over 4 seeds: 0.43-0.48x Euler at 1 step, 0.60-0.75x at 2.
        for steps, ratio in ((1, 0.6), (2, 0.85)):
            euler = _rms(integrate(shifted, x0, solver="euler", steps=steps, shift=shift).x, ref)
            student_err = _rms(shortcut_sample(student, x0, steps, shift=shift), ref)
            assert student_err < ratio * euler, (
                f"{steps} steps: student {student_err:.3f} vs euler {euler:.3f}"
            )
        # The condition is used: the same noise under another row's shift lands elsewhere.
        moved = shortcut_sample(student, x0, 1, shift=shift.roll(1, 0))
        assert _rms(moved, shortcut_sample(student, x0, 1, shift=shift)) > 0.5


def test_bad_arguments_name_the_argument(mixture):
    model = ShortcutMLP(2, hidden=8, depth=1)
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="steps"):
        shortcut_sample(model, x, 0)
    with pytest.raises(ValueError, match="min_step"):
        shortcut_loss(model, mixture, x, x, min_step=0.0)
    with pytest.raises(ValueError, match="consistency_fraction"):
        shortcut_loss(model, mixture, x, x, consistency_fraction=2.0)
    with pytest.raises(ValueError, match="hidden"):
        ShortcutMLP(2, hidden=0)
    with pytest.raises(ValueError, match="iterations"):
        distill_shortcut(mixture, lambda n: torch.zeros(n, 2), (2,), iterations=0)
    with pytest.raises(ValueError, match="sample_data"):
        distill_shortcut(mixture, lambda n: torch.zeros(n, 3), (2,), iterations=1, batch_size=4)
    with pytest.raises(ValueError, match="student"):
        distill_shortcut(mixture, lambda n: torch.zeros(n, 2), (2,), student=model.requires_grad_(False))


def test_the_shortcut_solver_hands_each_step_its_exact_size():
    from flowvla.solvers import ShortcutSolver, create_solver

    grid = [0.0, 0.1, 0.35, 1.0]
    x0 = torch.randn(3, 4, dtype=torch.float64)
    # A field that returns its step size: x(1) = x0 + sum h_i * h_i.
    sol = ShortcutSolver().solve(lambda x, t, step: torch.full_like(x, float(step)), x0, grid)
    sizes = [b - a for a, b in itertools.pairwise(grid)]
    assert torch.allclose(sol.x, x0 + sum(h * h for h in sizes)) and sol.nfe == 3

    # On a field that ignores the step size it is Euler, bit for bit.
    def field(x, t, step=None):
        return torch.sin(3 * x) * (1 + t)

    euler = create_solver("euler").solve(field, x0, grid)
    assert torch.equal(create_solver("shortcut").solve(field, x0, grid).x, euler.x)
    with pytest.raises(ValueError, match="step"):
        ShortcutSolver().solve(lambda x, t: x, x0, grid)
    with pytest.raises(ValueError, match="step"):
        ShortcutSolver().solve(field, x0, grid, step=0.5)
