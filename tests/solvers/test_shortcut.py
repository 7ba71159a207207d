"""Shortcut distillation: the student learns few-step sampling of an exact field; bad input is named."""

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
