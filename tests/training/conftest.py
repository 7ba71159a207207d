import pytest
from safetensors.torch import load_file

from flowvla.training import TrainConfig, train
from tests.policy.helpers import tiny_policy
from tests.training.dist_worker import CONFIG
from tests.training.helpers import ItemList


@pytest.fixture(autouse=True)
def train_on_the_cpu(monkeypatch):
    """Training tests compare weights bit for bit with CPU runs: keep Accelerate off a GPU even where
    one is present (tests/training/test_cuda.py runs its GPU jobs in fresh processes)."""
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")


@pytest.fixture(scope="session")
def one_process(tmp_path_factory):
    """Raw and EMA weights after the multi-process tests' run (``CONFIG``) on one CPU process."""
    out = tmp_path_factory.mktemp("one")
    train(tiny_policy(), ItemList(8), TrainConfig(out_dir=str(out), cpu=True, **CONFIG))
    ckpt = out / "checkpoint"
    return load_file(str(ckpt / "model.safetensors")), load_file(str(ckpt / "model_ema.safetensors"))
