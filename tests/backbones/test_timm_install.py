"""The timm install story holds together (runs without timm): pins, README, CI, and the import error."""

import builtins
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from flowvla.backbones import timm_encoders

ROOT = Path(__file__).resolve().parents[2]
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


def _timm_extra() -> dict[str, Requirement]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return {r.name: r for r in map(Requirement, extras["timm"])}


def _readme_section(title: str) -> str:
    return (ROOT / "README.md").read_text().split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_the_extra_keeps_the_readme_torch_and_pairs_torchvision_with_it():
    """`pip install -e ".[timm]"` on top of the README set-up must not be able to change torch."""
    extra = _timm_extra()
    assert {"timm", "torch", "torchvision"} <= set(extra)
    setup_torch = re.search(r"pip install torch==([\d.]+)", _readme_section("Set up")).group(1)
    assert extra["torch"].specifier.contains(setup_torch)
    pair = re.search(
        r'pip install "torch===([\d.]+)" "torchvision==([\d.]+)"', _readme_section("timm encoders")
    )
    torch_version, torchvision_version = pair.groups()
    assert torch_version == setup_torch  # the timm venv tests the same torch release as the main one
    assert extra["torch"].specifier.contains(torch_version)
    assert extra["torchvision"].specifier.contains(torchvision_version)
    # One torchvision minor release per torch minor release: the pin admits no other torchvision.
    assert not extra["torchvision"].specifier.contains("0.29.0")


def test_ci_installs_exactly_what_the_readme_says():
    block = re.search(r"```bash\n(.*?)```", _readme_section("timm encoders"), re.S).group(1)
    install = block.strip().splitlines()[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert install in ci and "tests/backbones/test_timm_encoders.py" in ci


def test_missing_timm_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(ImportError, match=r'torchvision==0\.28\.0".*flowvla\[timm\]'):
        timm_encoders.TimmEncoder("resnet18", image_size=64)


def test_a_torchvision_built_for_another_torch_is_explained(monkeypatch):
    real_import = builtins.__import__

    def broken_torchvision(name, *args, **kwargs):
        if name == "timm":  # what PyPI's torchvision does at import beside the +cpu torch wheel
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "timm", raising=False)
    monkeypatch.setattr(builtins, "__import__", broken_torchvision)
    with pytest.raises(ImportError, match=r"torchvision.*does not load with torch.*nms"):
        timm_encoders.TimmEncoder("resnet18", image_size=64)
