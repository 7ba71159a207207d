"""Tiny datasets in the official layouts, written by the tests themselves (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def upright_frames(episode: int, length: int, h: int = 12, w: int = 16, view: int = 0) -> np.ndarray:
    """Deterministic upright frames ``[T, H, W, 3]`` uint8 whose pixels encode (episode, t, row, col, view).

    Row and column are recoverable from channels 1 and 2, so any flip shows up as a mismatch.
    """
    t = np.arange(length)[:, None, None]
    r = np.arange(h)[None, :, None]
    c = np.arange(w)[None, None, :]
    out = np.empty((length, h, w, 3), dtype=np.uint8)
    out[..., 0] = (episode * 37 + t * 5 + view * 101) % 256
    out[..., 1] = np.broadcast_to(r * 10 + 3, (length, h, w))
    out[..., 2] = np.broadcast_to(c * 10 + 7, (length, h, w))
    return out


def episode_arrays(episode: int, length: int, state_dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Actions ``[T, 7]`` and states ``[T, S]`` that identify episode and step."""
    t = np.arange(length, dtype=np.float64)[:, None]
    actions = np.concatenate([np.full((length, 1), episode, float), t, np.sin(t + np.arange(5))], axis=1)
    states = np.concatenate([t + 100 * episode + np.arange(state_dim)], axis=1)
    return actions, states


def write_official_hdf5(
    path: Path,
    lengths: list[int],
    instruction: str = "put the bowl on the plate",
    h: int = 12,
    w: int = 16,
    depth: bool = False,
    bddl_file_name: str = "x.bddl",
) -> None:
    """An HDF5 file laid out like LIBERO's ``create_dataset.py`` output (images stored bottom-up); with
    ``depth``, also metric depth (0.5-2 m) and pinhole camera matrices per view, as our generator writes."""
    import h5py

    with h5py.File(path, "w") as f:
        g = f.create_group("data")
        g.attrs["env_name"] = "Libero_Tabletop_Manipulation"
        g.attrs["problem_info"] = json.dumps(
            {
                "problem_name": "libero_tabletop_manipulation",
                "domain_name": "robosuite",
                "language_instruction": instruction,
            }
        )
        g.attrs["macros_image_convention"] = "opengl"
        g.attrs["bddl_file_name"] = bddl_file_name
        g.attrs["bddl_file_content"] = "(define ...)"
        g.attrs["env_args"] = json.dumps({"type": 1, "env_name": "x", "env_kwargs": {}})
        total = 0
        for i, n in enumerate(lengths):
            d = g.create_group(f"demo_{i}")
            o = d.create_group("obs")
            actions, states = episode_arrays(i, n)
            o.create_dataset("agentview_rgb", data=upright_frames(i, n, h, w, 0)[:, ::-1])
            o.create_dataset("eye_in_hand_rgb", data=upright_frames(i, n, h, w, 1)[:, ::-1])
            o.create_dataset("ee_states", data=states[:, :6])
            o.create_dataset("gripper_states", data=states[:, 6:8])
            o.create_dataset("joint_states", data=np.zeros((n, 7)))
            if depth:
                rng = np.random.default_rng(i)
                k = np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], dtype=np.float32)
                for view in ("agentview", "eye_in_hand"):
                    z = o.create_dataset(
                        f"{view}_depth", data=rng.uniform(0.5, 2.0, (n, h, w, 1)).astype(np.float32)
                    )
                    z.attrs["units"] = "m"
                    o.create_dataset(f"{view}_intrinsics", data=np.tile(k, (n, 1, 1)))
                    o.create_dataset(
                        f"{view}_extrinsics", data=np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
                    )
            d.create_dataset("actions", data=actions)
            d.create_dataset("states", data=np.zeros((n, 20)))
            d.attrs["num_samples"] = n
            total += n
        g.attrs["num_demos"] = len(lengths)
        g.attrs["total"] = total


def png_bytes(img: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def stored_rot180(upright: np.ndarray) -> np.ndarray:
    """How OpenVLA-derived LeRobot ports store a view: raw (bottom-up) render rotated by 180 degrees."""
    raw = upright[..., ::-1, :, :]
    return raw[..., ::-1, ::-1, :]


def write_lerobot_v21(root: Path, lengths: list[int], tasks: list[str], h: int = 12, w: int = 16) -> None:
    """LeRobot v2.1 layout: one parquet per episode, views as PNG bytes in the rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "meta").mkdir(parents=True)
    feats = {
        "image": {"dtype": "image", "shape": [h, w, 3]},
        "wrist_image": {"dtype": "image", "shape": [h, w, 3]},
        "state": {"dtype": "float32", "shape": [8]},
        "actions": {"dtype": "float32", "shape": [7]},
        "timestamp": {"dtype": "float32", "shape": [1]},
        "frame_index": {"dtype": "int64", "shape": [1]},
        "episode_index": {"dtype": "int64", "shape": [1]},
        "index": {"dtype": "int64", "shape": [1]},
        "task_index": {"dtype": "int64", "shape": [1]},
    }
    info = {
        "codebase_version": "v2.1",
        "fps": 10,
        "chunks_size": 1000,
        "features": feats,
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": None,
    }
    (root / "meta" / "info.json").write_text(json.dumps(info))
    (root / "meta" / "tasks.jsonl").write_text(
        "".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(tasks))
    )
    index = 0
    for e, n in enumerate(lengths):
        actions, states = episode_arrays(e, n)
        cols = {
            "image": [
                {"bytes": png_bytes(f), "path": None} for f in stored_rot180(upright_frames(e, n, h, w, 0))
            ],
            "wrist_image": [
                {"bytes": png_bytes(f), "path": None} for f in stored_rot180(upright_frames(e, n, h, w, 1))
            ],
            "state": [s.astype(np.float32).tolist() for s in states],
            "actions": [a.astype(np.float32).tolist() for a in actions],
            "timestamp": (np.arange(n) / 10).astype(np.float32).tolist(),
            "frame_index": list(range(n)),
            "episode_index": [e] * n,
            "index": list(range(index, index + n)),
            "task_index": [e % len(tasks)] * n,
        }
        index += n
        out = root / "data" / "chunk-000" / f"episode_{e:06d}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        # Reverse the rows so the reader has to order frames itself.
        table = pa.table({k: list(reversed(v)) for k, v in cols.items()})
        pq.write_table(table, out, row_group_size=2)  # several row groups per file


def write_lerobot_v30_video(
    root: Path, lengths: list[int], tasks: list[str], h: int = 32, w: int = 32
) -> None:
    """LeRobot v3.0 layout: all episodes in one parquet and one MP4 per view, episode offsets in meta."""
    import imageio.v2 as imageio
    import pyarrow as pa
    import pyarrow.parquet as pq

    fps = 10
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    feats = {
        "observation.images.image": {"dtype": "video", "shape": [h, w, 3]},
        "observation.state": {"dtype": "float32", "shape": [8]},
        "action": {"dtype": "float32", "shape": [7]},
    }
    info = {
        "codebase_version": "v3.0",
        "fps": fps,
        "chunks_size": 1000,
        "features": feats,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
    }
    (root / "meta" / "info.json").write_text(json.dumps(info))
    pq.write_table(
        pa.table({"task_index": list(range(len(tasks))), "__index_level_0__": tasks}),
        root / "meta" / "tasks.parquet",
    )
    frames, rows, ep_rows, start = (
        [],
        {
            k: []
            for k in (
                "observation.state",
                "action",
                "timestamp",
                "frame_index",
                "episode_index",
                "task_index",
            )
        },
        [],
        0,
    )
    for e, n in enumerate(lengths):
        actions, states = episode_arrays(e, n)
        # Flat colour per frame: survives lossy coding; the orientation is checked by a bright corner.
        up = np.zeros((n, h, w, 3), np.uint8)
        up[..., 0] = (40 + 20 * e + 8 * np.arange(n))[:, None, None] % 200
        up[:, : h // 4, : w // 4, 1] = 255  # upright top-left corner is green
        frames.extend(stored_rot180(up))
        rows["observation.state"] += [s.astype(np.float32).tolist() for s in states]
        rows["action"] += [a.astype(np.float32).tolist() for a in actions]
        rows["timestamp"] += (np.arange(n) / fps).tolist()
        rows["frame_index"] += list(range(n))
        rows["episode_index"] += [e] * n
        rows["task_index"] += [e % len(tasks)] * n
        ep_rows.append(
            {
                "episode_index": e,
                "length": n,
                "videos/observation.images.image/chunk_index": 0,
                "videos/observation.images.image/file_index": 0,
                "videos/observation.images.image/from_timestamp": start / fps,
                "videos/observation.images.image/to_timestamp": (start + n) / fps,
            }
        )
        start += n
    (root / "data" / "chunk-000").mkdir(parents=True)
    pq.write_table(pa.table(rows), root / "data" / "chunk-000" / "file-000.parquet")
    pq.write_table(
        pa.Table.from_pylist(ep_rows), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    )
    vid = root / "videos" / "observation.images.image" / "chunk-000" / "file-000.mp4"
    vid.parent.mkdir(parents=True)
    imageio.mimwrite(
        vid,
        frames,
        fps=fps,
        codec="libx264",
        quality=10,
        macro_block_size=1,
        ffmpeg_log_level="error",
        pixelformat="yuv444p",
    )


def block_frames(
    episode: int, length: int, h: int = 32, w: int = 48, view: int = 0, block: int = 8
) -> np.ndarray:
    """Upright frames ``[T, H, W, 3]`` uint8 of flat ``block``-pixel squares that survive lossy video
    coding (at most 5 block rows and 7 block columns).

    Red grows with the block's row (by 50), green with its column (by 35), blue encodes (episode, t,
    view) (by 25 a step): a flip, a rotation or a frame off by one shows up as a large error, coding
    noise as a small one.
    """
    t = np.arange(length)[:, None, None]
    r = (np.arange(h) // block)[None, :, None]
    c = (np.arange(w) // block)[None, None, :]
    out = np.empty((length, h, w, 3), dtype=np.uint8)
    out[..., 0] = np.broadcast_to(20 + 50 * r, (length, h, w))
    out[..., 1] = np.broadcast_to(20 + 35 * c, (length, h, w))
    out[..., 2] = np.broadcast_to((30 + 60 * episode + 25 * t + 90 * view) % 220 + 20, (length, h, w))
    return out


class BlockSource:
    """In-memory EpisodeSource of two block-frame views; the task changes at step ``switch``."""

    def __init__(
        self, lengths: list[int], switch: int | None = None, h: int = 32, w: int = 48, block: int = 8
    ) -> None:
        self.lengths, self.switch, self.h, self.w, self.block = list(lengths), switch, h, w, block
        self.image_keys = ["image", "wrist_image"]

    def __len__(self) -> int:
        return len(self.lengths)

    def episode_length(self, e: int) -> int:
        return self.lengths[e]

    def frame_instructions(self, e: int) -> list[str]:
        first, second = f"pick block {e % 2}", "put it down"
        return [
            second if self.switch is not None and t >= self.switch else first for t in range(self.lengths[e])
        ]

    def instruction(self, e: int) -> str:
        return self.frame_instructions(e)[0]

    def actions(self, e: int) -> np.ndarray:
        return episode_arrays(e, self.lengths[e])[0].astype(np.float32)

    def states(self, e: int) -> np.ndarray:
        return episode_arrays(e, self.lengths[e])[1].astype(np.float32)

    def images(self, e: int, t: int) -> np.ndarray:
        views = [block_frames(e, self.lengths[e], self.h, self.w, v, self.block)[t] for v in (0, 1)]
        return np.stack(views).transpose(0, 3, 1, 2)

    def geometry(self, e: int, t: int) -> None:
        return None
