"""Random access to a LeRobot v3.0 video dataset: shuffled items/s against in-order items/s.

    python benchmarks/speed/lerobot_access.py                  # 15 episodes x 100 steps, two 128 px views
    python benchmarks/speed/lerobot_access.py --quick --out /tmp/bench
    python benchmarks/speed/lerobot_access.py --hdf5 demos/pick_up_the_ketchup_demo.hdf5  # real renders

Writes LIBERO-layout HDF5 demonstrations (synthetic renders: a gradient with a moving square), exports
them with flowvla's own LeRobot writer (``flowvla.data.lerobot_export``; H.264, keyframe every
``--gop`` frames), then reads ``ChunkDataset`` items from a fresh ``LeRobotSource`` in order and
shuffled (one process, no workers). Also reports the write time and size of the HDF5 files and of the
LeRobot dataset (wall and CPU seconds), and the HDF5 reader's items/s for reference. ``--hdf5`` uses
existing demonstration files instead (e.g. ``flowvla-generate``'s), copied to a temporary folder.
Prints a table and writes JSON (``<out>/lerobot_access[_quick].json``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from flowvla.data.dataset import ChunkDataset, HDF5Source
from flowvla.data.hdf5 import LiberoHDF5Writer
from flowvla.data.lerobot import LeRobotSource
from flowvla.data.lerobot_export import export_lerobot
from flowvla.profiling import Stopwatch, markdown_table, write_results


def renders(steps: int, size: int, seed: int) -> np.ndarray:
    """``[T, H, W, 3]`` uint8: a fixed gradient scene with a square that moves a pixel or two a step."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    scene = np.stack([x * 200 // size + 20, y * 200 // size + 20, (x + y) * 100 // size + 40], -1)
    out = np.repeat(scene[None].astype(np.uint8), steps, axis=0)
    pos = rng.uniform(0, size * 0.7, 2) + np.cumsum(rng.normal(0, 1.5, (steps, 2)), axis=0)
    side = size // 6
    for t, (r, c) in enumerate(np.clip(pos, 0, size - side).astype(int)):
        out[t, r : r + side, c : c + side] = (230, 60, 40)
    return out


def make_hdf5(path: Path, episodes: int, steps: int, size: int) -> None:
    rng = np.random.default_rng(0)
    with LiberoHDF5Writer(
        path, env_name="bench", problem_info={"language_instruction": "pick up the bowl"}
    ) as w:
        for e in range(episodes):
            w.add_demo(
                actions=rng.normal(size=(steps, 7)),
                states=rng.normal(size=(steps, 40)),
                obs={
                    "agentview_rgb": renders(steps, size, 2 * e),
                    "eye_in_hand_rgb": renders(steps, size, 2 * e + 1),
                    "ee_states": rng.normal(size=(steps, 6)),
                    "gripper_states": rng.normal(size=(steps, 2)),
                },
            )


def folder_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def ms_per_item(make: callable, n: int, shuffled: bool) -> tuple[float, float]:
    """Mean wall and CPU ms per item over ``n`` items (the first ``n``, or ``n`` drawn without
    replacement) of a fresh dataset; its first item, which opens the files, is not counted. CPU time is
    what the wall time would be on an idle machine (one process)."""
    ds = make()
    n = min(n, len(ds))
    order = np.random.default_rng(0).permutation(len(ds))[:n].tolist() if shuffled else list(range(n))
    ds[order[0]]
    with Stopwatch() as clock:
        for i in order[1:]:
            ds[i]
    k = 1000 / (len(order) - 1)
    return clock.wall * k, clock.cpu * k


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny dataset (smoke test)")
    p.add_argument("--episodes", type=int, default=15)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--items", type=int, default=300, help="items read per mode")
    p.add_argument("--gop", type=int, default=1, help="keyframe interval of the videos")
    p.add_argument("--codec", default="libx264")
    p.add_argument("--cache-mb", type=float, default=256, help="LeRobotSource cache_bytes, in MiB")
    p.add_argument("--hdf5", type=Path, nargs="+", default=None, help="existing HDF5 files to export")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "results")
    args = p.parse_args(argv)
    if args.quick:
        args.episodes, args.steps, args.size, args.items = 3, 20, 64, 40
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        with Stopwatch() as hdf5_write:
            if args.hdf5:
                h5s = [Path(tmp) / f"{i}_{p.name}" for i, p in enumerate(args.hdf5)]
                for p, q in zip(args.hdf5, h5s, strict=True):
                    shutil.copyfile(p, q)
            else:
                h5s = [Path(tmp) / "demo.hdf5"]
                make_hdf5(h5s[0], args.episodes, args.steps, args.size)
        src = HDF5Source(h5s)
        with Stopwatch() as export:
            export_lerobot(src, Path(tmp) / "lerobot", fps=20, codec=args.codec, gop=args.gop)
        sizes = {"hdf5_mb": sum(folder_mb(h) for h in h5s), "lerobot_mb": folder_mb(Path(tmp) / "lerobot")}
        total = len(ChunkDataset(src, 8))
        args.episodes, args.size = len(src), src.images(0, 0).shape[-1]
        cache = int(args.cache_mb * 2**20)
        rows = []
        for name, make in {
            "lerobot_video": lambda: ChunkDataset(LeRobotSource(Path(tmp) / "lerobot", cache_bytes=cache), 8),
            "hdf5": lambda: ChunkDataset(HDF5Source(h5s), 8),
        }.items():
            ordered_ms, ordered_cpu = ms_per_item(make, args.items, shuffled=False)
            shuffled_ms, shuffled_cpu = ms_per_item(make, args.items, shuffled=True)
            rows.append(
                {
                    "source": name,
                    "in_order_items_per_s": 1000 / ordered_ms,
                    "shuffled_items_per_s": 1000 / shuffled_ms,
                    "in_order_ms": ordered_ms,
                    "shuffled_ms": shuffled_ms,
                    "in_order_cpu_ms": ordered_cpu,
                    "shuffled_cpu_ms": shuffled_cpu,
                    "shuffled_over_in_order_time": shuffled_ms / ordered_ms,
                    "shuffled_over_in_order_cpu": shuffled_cpu / ordered_cpu,
                }
            )
    print(
        f"{args.episodes} episodes ({total} HDF5 items), 2 views {args.size} px, {args.codec} "
        f"gop {args.gop}, {args.items} items per mode, {os.cpu_count()} cores"
    )
    made = "copy" if args.hdf5 else "write"
    print(
        f"HDF5 {made} {hdf5_write.wall:.1f} s (CPU {hdf5_write.cpu:.1f} s), {sizes['hdf5_mb']:.1f} MB; "
        f"LeRobot export {export.wall:.1f} s (CPU {export.cpu:.1f} s), {sizes['lerobot_mb']:.1f} MB"
    )
    header = [
        "reader",
        "CPU ms / item in order",
        "shuffled",
        "shuffled / in order",
        "wall items/s in order / shuffled",
    ]
    table = [
        [
            r["source"],
            f"{r['in_order_cpu_ms']:.2f}",
            f"{r['shuffled_cpu_ms']:.2f}",
            f"{r['shuffled_over_in_order_cpu']:.2f}x",
            f"{r['in_order_items_per_s']:.0f} / {r['shuffled_items_per_s']:.0f}",
        ]
        for r in rows
    ]
    print(markdown_table(header, table))
    results = {
        "args": vars(args),
        "hdf5_write_s": hdf5_write.wall,
        "hdf5_write_cpu_s": hdf5_write.cpu,
        "lerobot_export_s": export.wall,
        "lerobot_export_cpu_s": export.cpu,
        "items": total,
        **sizes,
        "rows": rows,
    }
    suffix = "_quick" if args.quick else ""
    print(f"wrote {write_results(args.out / f'lerobot_access{suffix}.json', results)}")
    return results


if __name__ == "__main__":
    main()
