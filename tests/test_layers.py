"""The layering of ``../shared/DESIGN.md``, checked on the source: every ``flowvla.*`` import in a
subpackage (module-level or inside a function) points at a lower layer, and the model components
(dit, routing, fusion, geometry) do not import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "flowvla"

#: Lower numbers are lower layers. ``data`` and ``envs`` share a layer, but only envs may use data.
RANK = {
    "typing": 0,
    "io": 0,
    "extras": 0,
    "cli": 0,
    "checks": 0,
    "flow": 1,
    "solvers": 2,
    "dit": 3,
    "routing": 3,
    "fusion": 3,
    "geometry": 3,
    "processing": 4,
    "backbones": 5,
    "data": 6,
    "envs": 6.5,
    "policy": 7,
    "training": 8,
    "diagnostics": 8,
    "profiling": 8,
    "recipes": 9,
}


def _imports() -> list[tuple[str, str, str]]:
    """``(importing package, imported package, file)`` for every cross-package import."""
    out = []
    for f in sorted(ROOT.rglob("*.py")):
        rel = f.relative_to(ROOT).with_suffix("").parts
        if rel == ("__init__",):
            continue  # the top-level re-exports may name anything
        src = rel[0]
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                parts = name.split(".")
                if parts[0] == "flowvla" and len(parts) > 1 and parts[1] != src:
                    out.append((src, parts[1], str(f.relative_to(ROOT.parent))))
    return out


def test_every_subpackage_has_a_layer():
    packages = {p.stem if p.is_file() else p.name for p in ROOT.iterdir() if p.name != "__pycache__"}
    packages -= {"__init__", "py"}
    assert packages - set(RANK) == set(), "add the new subpackage to RANK (and to DESIGN.md)"


@pytest.mark.parametrize("src,dst,file", _imports())
def test_imports_point_down(src, dst, file):
    assert RANK[dst] < RANK[src] or (src, dst) == ("envs", "data"), f"{file}: {src} imports {dst}"
    assert not (RANK[src] == RANK[dst] == 3), f"{file}: component {src} imports component {dst}"
