"""Training-item throughput of flowvla.data on this machine (synthetic LIBERO-sized demonstrations).

    python benchmarks/speed/libero_data.py                 # 10 demos x 150 steps, two 128x128 views
    python benchmarks/speed/libero_data.py --size 224 --workers 0 2

Writes a LIBERO-layout HDF5 file (and a LeRobot v2.1 copy with PNG views) to a temporary folder, then
measures items/s through ``ChunkDataset`` shuffled, in a ``DataLoader`` with ``collate``, with and
without augmentation. Prints a table and writes JSON (default ``benchmarks/results/libero_data.json``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from flowvla.data.augment import ImageAugment
from flowvla.data.batch import collate
from flowvla.data.dataset import ChunkDataset, HDF5Source
from flowvla.data.hdf5 import LiberoHDF5Writer
from flowvla.profiling import Stopwatch, markdown_table, write_results


def make_hdf5(path: Path, demos: int, steps: int, size: int) -> None:
    rng = np.random.default_rng(0)
    with LiberoHDF5Writer(
        path, env_name="bench", problem_info={"language_instruction": "pick up the bowl"}
    ) as w:
        for _ in range(demos):
            # Smooth images compress like renders; noise would not (PNG / video rows).
            base = rng.integers(0, 255, size=(steps, 1, 1, 3), dtype=np.uint8)
            ramp = np.linspace(0, 60, size, dtype=np.uint8)[None, :, None, None]
            img = (base + ramp).astype(np.uint8).repeat(size, axis=2)
            w.add_demo(
                actions=rng.normal(size=(steps, 7)),
                states=rng.normal(size=(steps, 40)),
                obs={
                    "agentview_rgb": img,
                    "eye_in_hand_rgb": img[:, ::-1].copy(),
                    "ee_states": rng.normal(size=(steps, 6)),
                    "gripper_states": rng.normal(size=(steps, 2)),
                },
            )


def make_lerobot(root: Path, src: HDF5Source) -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    def png(a: np.ndarray) -> bytes:
        b = io.BytesIO()
        Image.fromarray(a).save(b, format="PNG")
        return b.getvalue()

    (root / "meta").mkdir(parents=True)
    n0 = src.images(0, 0).shape[-1]
    feats = {
        "image": {"dtype": "image", "shape": [n0, n0, 3]},
        "wrist_image": {"dtype": "image", "shape": [n0, n0, 3]},
        "state": {"dtype": "float32", "shape": [8]},
        "actions": {"dtype": "float32", "shape": [7]},
    }
    (root / "meta" / "info.json").write_text(
        json.dumps({"codebase_version": "v2.1", "fps": 10, "features": feats})
    )
    (root / "meta" / "tasks.jsonl").write_text(
        json.dumps({"task_index": 0, "task": "pick up the bowl"}) + "\n"
    )
    (root / "data" / "chunk-000").mkdir(parents=True)
    for e in range(len(src)):
        n = src.episode_length(e)
        imgs = [src.images(e, t) for t in range(n)]
        pq.write_table(
            pa.table(
                {
                    "image": [{"bytes": png(i[0].transpose(1, 2, 0)), "path": None} for i in imgs],
                    "wrist_image": [{"bytes": png(i[1].transpose(1, 2, 0)), "path": None} for i in imgs],
                    "state": src.states(e).tolist(),
                    "actions": src.actions(e).tolist(),
                    "timestamp": (np.arange(n) / 10).tolist(),
                    "frame_index": list(range(n)),
                    "episode_index": [e] * n,
                    "task_index": [0] * n,
                }
            ),
            root / "data" / "chunk-000" / f"episode_{e:06d}.parquet",
        )


def items_per_s(ds: ChunkDataset, n: int, workers: int, batch: int) -> float:
    g = torch.Generator().manual_seed(0)
    if workers == 0 and batch == 1:
        idx = torch.randperm(len(ds), generator=g)[:n].tolist()
        with Stopwatch() as clock:
            for i in idx:
                ds[i]
        return n / clock.wall
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate,
        generator=g,
        persistent_workers=False,
    )
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    got = 0
    with Stopwatch() as clock:
        for b in it:
            got += len(b["instruction"])
            if got >= n:
                break
    return got / clock.wall


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--demos", type=int, default=10)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--horizon", type=int, default=8)
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "results" / "libero_data.json"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    aug = ImageAugment(shift=8, crop_scale=0.9, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        h5 = Path(tmp) / "bench.hdf5"
        with Stopwatch() as write:
            make_hdf5(h5, args.demos, args.steps, args.size)
        write_s = write.wall
        src = HDF5Source([h5])
        sources = {"hdf5": src}
        try:
            make_lerobot(Path(tmp) / "lerobot", src)
            from flowvla.data.lerobot import LeRobotSource

            sources["lerobot_png"] = LeRobotSource(Path(tmp) / "lerobot", image_convention="opencv")
        except ImportError as e:
            print(f"skipping LeRobot: {e}")
        with Stopwatch() as stats_clock:
            stats = ChunkDataset(src, horizon=args.horizon).stats()
        stats_s = stats_clock.wall
        for name, s in sources.items():
            for augment in (None, aug):
                ds = ChunkDataset(s, horizon=args.horizon, state_dim=32, augment=augment)
                rows.append(
                    {
                        "source": name,
                        "augment": augment is not None,
                        "mode": "item, 1 process",
                        "items_per_s": items_per_s(ds, min(args.items, 300), 0, 1),
                    }
                )
                for w in args.workers:
                    rows.append(
                        {
                            "source": name,
                            "augment": augment is not None,
                            "mode": f"batch {args.batch}, {w} workers",
                            "items_per_s": items_per_s(ds, args.items, w, args.batch),
                        }
                    )
    print(
        f"{args.demos} demos x {args.steps} steps, 2 views {args.size}px, horizon {args.horizon}, "
        f"write {write_s:.1f} s, stats {stats_s * 1000:.0f} ms "
        f"({stats['actions'].count} frames)"
    )
    table = [[r["source"], r["augment"], r["mode"], f"{r['items_per_s']:.0f}"] for r in rows]
    print(markdown_table(["source", "augment", "mode", "items/s"], table))
    result = {"args": vars(args), "write_s": write_s, "stats_s": stats_s, "rows": rows}
    print(f"wrote {write_results(args.out, result)}")
    return result


if __name__ == "__main__":
    main()
