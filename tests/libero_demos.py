"""One small scripted LIBERO demonstration for tests that need a real one (callers skip without LIBERO)."""

from __future__ import annotations

from pathlib import Path


def generate_one_demo(out_dir: Path, suite: str, task: int) -> Path:
    """Generate one 64 px demonstration of ``suite`` task ``task`` into ``out_dir``; return its HDF5 file."""
    from flowvla.recipes.generate import GenerateConfig, generate

    summary = generate(
        GenerateConfig(
            out_dir=str(out_dir),
            suites=[suite],
            tasks=[task],
            demos_per_task=1,
            image_size=64,
            image_stride=8,
            progress=False,
        )
    )
    s = summary["tasks"][f"{suite}/{task}"]
    assert s["demos"] == 1, s
    return Path(out_dir) / suite / f"{s['task_name']}_demo.hdf5"
