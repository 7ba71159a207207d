"""One style of package front: every ``flowvla`` package's ``__init__`` declares ``__all__`` and every
name in it resolves (eager re-exports, or lazy ones for packages whose modules pull optional
dependencies)."""

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "flowvla"
SUBPACKAGES = sorted(f"flowvla.{p.parent.name}" for p in ROOT.glob("*/__init__.py"))
PACKAGES = ["flowvla", *SUBPACKAGES]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_package_front_names_and_resolves_its_public_names(name):
    module = importlib.import_module(name)
    assert isinstance(getattr(module, "__all__", None), list) and module.__all__, f"{name} has no __all__"
    assert len(set(module.__all__)) == len(module.__all__)
    for public in module.__all__:
        assert getattr(module, public) is not None, f"{name}.{public}"
