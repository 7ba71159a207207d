"""The layering of ``../shared/DESIGN.md``, checked on the source: every ``flowvla.*`` import in a
subpackage (module-level or inside a function) points at a lower layer, the model components (dit,
routing, fusion, geometry) do not import each other, and no two modules import each other, directly
or around a circle (a circle is one idea split wrongly: merge the modules or move the shared part
down)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "flowvla"

#: Lower numbers are lower layers. ``data`` and ``envs`` share a layer, but only envs may use data.
#: ``flowvla`` is the package front (``flowvla/__init__.py``), which re-exports the library: above all.
RANK = {
    "_version": 0,
    "deprecation": 0,
    "_lazy": 0,
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
    "flowvla": 10,
}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_main_guard(node: ast.AST) -> bool:
    """``if __name__ == "__main__":``: a script's entry point, not an import of the module."""
    test = getattr(node, "test", None)
    return (
        isinstance(node, ast.If)
        and isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
    )


def _imported(tree: ast.AST, package: str, modules: set[str]) -> list[str]:
    """The modules of ``modules`` every import statement of ``tree`` names (``from a import b`` names
    ``a.b`` when that is a module, else ``a``), at any depth but outside ``__main__`` guards."""
    out: list[str] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if _is_main_guard(node):
            continue
        todo.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            subs = [f"{module}.{a.name}" for a in node.names]
            out += [m for m in subs if m in modules] or [module]
    return out


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """``module -> the flowvla modules it imports`` (importing a package means its ``__init__``)."""
    files = {_module_name(f, root): f for f in root.rglob("*.py")}
    graph = {}
    for name, f in files.items():
        package = name if f.name == "__init__.py" else name.rpartition(".")[0]
        imported = _imported(ast.parse(f.read_text()), package, set(files))
        graph[name] = {m for m in imported if m in files and m != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def _imports(root: Path = ROOT) -> list[tuple[str, str, str]]:
    """``(importing package, imported package, module)`` for every cross-package import."""
    out = []
    graph = import_graph(root)
    for name, targets in graph.items():
        parts = name.split(".")
        if len(parts) == 1:
            continue  # the package front may name anything
        for target in targets:
            dst = target.split(".")[1] if "." in target else "flowvla"
            if dst != parts[1]:
                out.append((parts[1], dst, name))
    return sorted(set(out))


def test_every_subpackage_has_a_layer():
    packages = {p.stem if p.is_file() else p.name for p in ROOT.iterdir() if p.name != "__pycache__"}
    packages -= {"__init__", "py"}
    assert packages - set(RANK) == set(), "add the new subpackage to RANK (and to DESIGN.md)"


@pytest.mark.parametrize("src,dst,module", _imports())
def test_imports_point_down(src, dst, module):
    assert RANK[dst] < RANK[src] or (src, dst) == ("envs", "data"), f"{module}: {src} imports {dst}"
    assert not (RANK[src] == RANK[dst] == 3), f"{module}: component {src} imports component {dst}"


def test_no_import_cycles():
    cycles = import_cycles(import_graph())
    assert not cycles, f"modules that import each other (around a circle): {cycles}"


def test_the_checks_see_circles_and_arrows_up(tmp_path):
    # A fake package with a circle through a function-level import and an import of the package front.
    pkg = tmp_path / "flowvla"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from flowvla.data.a import x\n")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("from flowvla import __version__\nfrom flowvla.data.b import y\n")
    (pkg / "data" / "b.py").write_text("def f():\n    from flowvla.data import a\n")
    (pkg / "data" / "c.py").write_text('if __name__ == "__main__":\n    from flowvla.data.a import x\n')
    graph = import_graph(pkg)
    assert graph["flowvla.data.a"] == {"flowvla", "flowvla.data.b"}
    assert graph["flowvla.data.c"] == set()
    assert import_cycles(graph) == [["flowvla", "flowvla.data.a", "flowvla.data.b"]]
    assert ("data", "flowvla", "flowvla.data.a") in _imports(pkg)
