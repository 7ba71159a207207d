import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Tests use tiny tensors: one intra-op thread is as fast, and it cannot thrash when another
# process holds the second core (OpenMP spin-waits made a 1 ms field evaluation take 50 ms).
torch.set_num_threads(1)

# Property tests run on a 2-core CPU: bounded examples, no per-example deadline (torch warm-up
# makes the first example slow), derandomised in CI so a failure reproduces.
settings.register_profile(
    "default",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="module")
def libero_ready():
    """Skip unless LIBERO is installed and set up (assets, renderer); the reason says which."""
    pytest.importorskip("libero", reason="LIBERO is not installed (see docs/libero.md)")
    pytest.importorskip("robosuite", reason="robosuite is not installed (see docs/libero.md)")
    from flowvla.envs.libero_setup import LiberoSetupError, prepare_libero

    try:
        prepare_libero()
    except LiberoSetupError as err:
        pytest.skip(str(err))
