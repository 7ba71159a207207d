"""Fixtures shared by the recipe tests."""

import pytest


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
