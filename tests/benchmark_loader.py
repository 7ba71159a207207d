"""Import a script from ``benchmarks/`` as a module (benchmarks are scripts, not a package)."""

import importlib.util
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """The module ``benchmarks/<name>.py`` (e.g. ``"speed/policy"``), freshly executed."""
    path = BENCHMARKS / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"name: expected a script under benchmarks/ such as 'speed/policy', got {name!r}"
        )
    spec = importlib.util.spec_from_file_location(f"bench_{name.replace('/', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
