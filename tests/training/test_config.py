"""TrainConfig validation and the learning-rate schedule's resume rule."""

import pytest

from flowvla.training import TrainConfig, lr_factor
from flowvla.training.config import check_schedule


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("steps", 0, "steps: must be >= 1"),
        ("batch_size", 0, "batch_size: must be >= 1"),
        ("gradient_accumulation_steps", 0, "gradient_accumulation_steps: must be >= 1"),
        ("ema_decay", 1.0, r"ema_decay: must be in \[0, 1\)"),
        ("mixed_precision", "fp8", "mixed_precision: expected one of"),
        ("sampling", "chunk", "sampling: expected one of"),
        ("max_minutes", 0.0, "max_minutes: must be > 0"),
        ("task_weights", {"a": -1.0}, "task_weights: weights must be finite and >= 0"),
        ("dataset_weights", {"a": float("nan")}, "dataset_weights: weights must be finite"),
        ("grad_clip", -1.0, "grad_clip: must be >= 0"),
        ("attention_backend", "sdpa", "attention_backend: expected one of"),
        ("optimizer_impl", "apex", "optimizer_impl: expected one of"),
    ],
)
def test_bad_values_are_refused_by_name(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(out_dir="x", **{field: value})


def test_from_dict_round_trips_and_names_unknown_fields():
    from dataclasses import asdict

    cfg = TrainConfig(out_dir="x", task_weights={"a": 2.0}, mixed_precision="bf16")
    assert TrainConfig.from_dict(asdict(cfg)) == cfg
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields \['nope'\]"):
        TrainConfig.from_dict({**asdict(cfg), "nope": 1})


def test_schedule_warms_up_then_decays_to_a_tenth():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(100, 100, 10) == pytest.approx(0.1)
    assert lr_factor(500, 100, 10) == pytest.approx(0.1)


def test_resuming_with_another_schedule_needs_the_flag():
    saved = {"steps": 3000, "lr": 3e-4, "warmup_steps": 50}
    longer = TrainConfig(out_dir="x", steps=6000)
    # At step 3000 the old schedule has decayed to 3e-5; the longer one would jump back up.
    with pytest.raises(
        ValueError, match=r"steps=3000 -> 6000.*from 3e-05 to 0.000167.*allow_schedule_change"
    ):
        check_schedule(saved, longer, 3000, "ckpt")
    check_schedule(saved, TrainConfig(out_dir="x", steps=6000, allow_schedule_change=True), 3000, "ckpt")
    check_schedule(saved, TrainConfig(out_dir="x", steps=3000, batch_size=4), 3000, "ckpt")  # not schedule
