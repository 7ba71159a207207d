"""The recipe's ``train.precision``: what each value asks of the training engine."""

import pytest
import torch

from flowvla.checks import SettingError
from flowvla.recipes.settings import preset
from flowvla.recipes.train import train_config


def test_fp32_leaves_the_engine_and_launcher_defaults(tmp_path):
    tc = train_config(preset("default", **{"train.precision": "fp32"}), tmp_path, progress=False)
    assert (tc.mixed_precision, tc.attention_backend, tc.optimizer_impl) == (None, None, None)


def test_bf16_asks_for_autocast_and_the_cpu_attention_kernel(tmp_path):
    tc = train_config(preset("default", **{"train.precision": "bf16"}), tmp_path, progress=False)
    assert tc.mixed_precision == "bf16" and tc.optimizer_impl is None
    assert tc.attention_backend == (None if torch.cuda.is_available() else "math")


@pytest.mark.parametrize("native", [True, False])
def test_auto_trains_in_bf16_exactly_on_cpus_with_bf16_instructions(tmp_path, monkeypatch, native):
    import flowvla.recipes.train as recipe_train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(recipe_train, "native_bf16_cpu", lambda: native)
    tc = train_config(preset("default", **{"train.precision": "auto"}), tmp_path, progress=False)
    assert tc.mixed_precision == ("bf16" if native else None)
    assert tc.attention_backend == ("math" if native else None)


def test_the_default_trains_in_fp32_until_bf16_is_measured_in_closed_loop(tmp_path):
    assert train_config(preset("default"), tmp_path, progress=False).mixed_precision is None


def test_an_unknown_precision_is_refused_by_name():
    with pytest.raises(SettingError, match=r"train\.precision"):
        preset("default", **{"train.precision": "fp16"})
