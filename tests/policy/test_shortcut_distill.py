"""A shortcut student of a policy: it starts as its teacher, learns to take big steps (1 step beats the
teacher's Euler step on held-out noise), samples through predict_action(solver="shortcut"), and saves
and loads like any policy; the teacher is left as it was."""

import pytest
import torch

from flowvla.policy import VLAPolicy, distill_policy_shortcut
from tests.policy.helpers import A, H, make_batch, shaped_tiny_policy


@pytest.fixture(scope="module")
def teacher():
    return shaped_tiny_policy()


@pytest.fixture(scope="module")
def distilled(teacher):
    batch = make_batch(6, depth=False, actions=True)
    before = {k: v.clone() for k, v in teacher.head.state_dict().items()}
    student, info = distill_policy_shortcut(
        teacher, batch, iterations=150, batch_size=12, lr=2e-3, min_step=1 / 16, held_out_samples=4
    )
    return student, info, before


def test_the_student_takes_one_step_better_than_the_teachers_euler_step(distilled):
    _, info, _ = distilled
    errors, euler = info["held_out_error"], info["held_out_teacher_euler"]
    assert info["held_out_samples"] == 4 and info["observations"] == 6
    assert errors[1] < 0.7 * euler[1]
    assert euler[10] < euler[1]  # the reference is the teacher's own ODE: Euler converges to it
    assert info["teacher_evaluations"] > 0 and info["parameters"] > 0


def test_the_teacher_is_untouched(teacher, distilled):
    _, _, before = distilled
    assert all(torch.equal(v, teacher.head.state_dict()[k]) for k, v in before.items())
    assert not teacher.head.step_conditioning and not teacher.config.head.step_conditioning
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())


def test_the_student_samples_through_predict_action_and_round_trips(distilled, tmp_path):
    student, _, _ = distilled
    obs = make_batch(3, seed=1, depth=False, actions=False)
    actions, dbg = student.predict_action(obs, solver="shortcut", steps=1, seed=0)
    assert actions.shape == (3, H, A) and dbg["nfe"] == 1 and dbg["solver"] == "shortcut"
    student.save_pretrained(tmp_path / "student")
    loaded = VLAPolicy.from_pretrained(tmp_path / "student")
    loaded = loaded[0] if isinstance(loaded, tuple) else loaded
    assert loaded.config.head.step_conditioning
    again, _ = loaded.predict_action(obs, solver="shortcut", steps=1, seed=0)
    assert torch.equal(actions, again)
    # Other solvers see the student's step-0 field: close to the teacher's ODE, not the shortcut.
    euler, _ = loaded.predict_action(obs, solver="euler", steps=2, seed=0)
    assert euler.shape == actions.shape


def test_the_shortcut_solver_needs_a_step_conditioned_head(teacher):
    obs = make_batch(2, depth=False, actions=False)
    with pytest.raises(ValueError, match="step"):
        teacher.predict_action(obs, solver="shortcut", steps=1)


def test_bad_arguments_are_named(teacher, distilled):
    batch = make_batch(2, depth=False, actions=True)
    with pytest.raises(ValueError, match="iterations"):
        distill_policy_shortcut(teacher, batch, iterations=0)
    with pytest.raises(ValueError, match="actions"):
        distill_policy_shortcut(teacher, {k: v for k, v in batch.items() if k != "actions"}, iterations=1)
    with pytest.raises(ValueError, match="student"):
        distill_policy_shortcut(distilled[0], batch, iterations=1)
