"""Write any [`EpisodeSource`][flowvla.data.dataset.EpisodeSource] as a LeRobot v3.0 dataset with video.

The result loads with ``lerobot``'s own ``LeRobotDataset(repo_id, root=OUT)`` and with
[`LeRobotSource`][flowvla.data.lerobot.LeRobotSource]. Typical use: the scripted demonstrations of
``flowvla-generate`` (LIBERO HDF5 files) as a LeRobot dataset::

    python -m flowvla.data.lerobot_export demos/ out/libero_object_lerobot --fps 20

Layout written (``lerobot``'s v3.0 layout; ``S`` state dims, ``A`` action dims)::

    meta/info.json                           fps, features (with each video's codec), path templates, totals
    meta/tasks.parquet                       task_index, indexed by the task text (as pandas writes it)
    meta/stats.json                          min / max / mean / std / count of every feature
    meta/episodes/chunk-000/file-000.parquet one row per episode: length, tasks, where its rows and
                                             video frames lie, its own stats (``stats/<feature>/...``)
    data/chunk-000/file-000.parquet          one row per frame: observation.state [S], action [A],
                                             timestamp, frame_index, episode_index, index, task_index
    videos/<view>/chunk-000/file-000.mp4     every episode's frames of one view, back to back

Files are started anew past ``data_file_mb`` / ``video_file_mb`` (at an episode boundary), as
``lerobot`` does. Views are the source's upright images. A frame's task is the source's task of that
step (``frame_instructions`` where the source has it). A source whose views exist only every ``k``-th
step (an HDF5 ``image_stride``) gets, at each step, the view of the latest rendered step: LeRobot stores
a view per frame.

The dataset is built in a temporary folder beside ``out`` and renamed into place when complete, so an
interrupted export leaves no half-written dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from flowvla.data.dataset import EpisodeSource, frame_instructions
from flowvla.extras import requires_extra

__all__ = ["export_lerobot", "main"]

_CODEBASE_VERSION = "v3.0"
_CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
_DATA_PATH = "data/" + _CHUNK_FILE + ".parquet"
_VIDEO_PATH = "videos/{video_key}/" + _CHUNK_FILE + ".mp4"
_EPISODES_PATH = "meta/episodes/" + _CHUNK_FILE + ".parquet"


def _view_keys(source: EpisodeSource, n_views: int) -> list[str]:
    """LeRobot feature names for the source's views: its own names where it has them."""
    while hasattr(source, "source") and not hasattr(source, "image_keys"):  # an EpisodeSubset
        source = source.source
    names = getattr(source, "image_keys", None)
    if names is None:  # an HDF5Source: the files' obs/ dataset names
        readers = getattr(source, "readers", None)
        names = getattr(readers[0], "image_keys", None) if readers else None
    if names is None or len(names) != n_views:
        names = [f"view{i}" for i in range(n_views)]
    return [n if n.startswith("observation.images.") else f"observation.images.{n}" for n in names]


class _Stats:
    """Running min / max / mean / std / count of a feature; images per channel, scaled to [0, 1]."""

    def __init__(self) -> None:
        self.n = 0
        self.sum: np.ndarray | None = None
        self.sq: np.ndarray | None = None
        self.min: np.ndarray | None = None
        self.max: np.ndarray | None = None

    def add(self, x: np.ndarray) -> None:
        """``x`` ``[N, D]``: N samples of a D-vector."""
        x = np.asarray(x, dtype=np.float64)
        s, q, lo, hi = x.sum(0), (x * x).sum(0), x.min(0), x.max(0)
        if self.sum is None:
            self.sum, self.sq, self.min, self.max = s, q, lo, hi
        else:
            assert self.sq is not None and self.min is not None and self.max is not None
            self.sum, self.sq = self.sum + s, self.sq + q
            self.min, self.max = np.minimum(self.min, lo), np.maximum(self.max, hi)
        self.n += len(x)

    def merge(self, other: _Stats) -> None:
        if other.n == 0:
            return
        assert other.sum is not None and other.sq is not None
        assert other.min is not None and other.max is not None
        if self.sum is None:
            self.sum, self.sq, self.min, self.max = other.sum, other.sq, other.min, other.max
        else:
            assert self.sq is not None and self.min is not None and self.max is not None
            self.sum, self.sq = self.sum + other.sum, self.sq + other.sq
            self.min, self.max = np.minimum(self.min, other.min), np.maximum(self.max, other.max)
        self.n += other.n

    def as_dict(self, image: bool = False) -> dict[str, Any]:
        assert self.sum is not None and self.sq is not None
        assert self.min is not None and self.max is not None
        mean = self.sum / self.n
        std = np.sqrt(np.maximum(self.sq / self.n - mean * mean, 0.0))
        out = {"min": self.min, "max": self.max, "mean": mean, "std": std}
        # lerobot keeps image statistics per channel as [3, 1, 1] (broadcast over H, W).
        shaped = {k: (v.reshape(-1, 1, 1) if image else v).tolist() for k, v in out.items()}
        return {**shaped, "count": [int(self.n)]}


class _VideoFile:
    """One MP4 being written: frames get consecutive timestamps ``i / fps``."""

    def __init__(self, path: Path, fps: int, size: tuple[int, int], codec: str, crf: int, gop: int) -> None:
        with requires_extra("data", "writing LeRobot videos"):
            import av

        h, w = size
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.frames = path, 0
        self._container = av.open(str(path), "w")
        try:
            self._stream = self._container.add_stream(codec, rate=fps)
        except Exception as e:  # an unknown encoder name
            self._container.close()
            raise ValueError(f"codec={codec!r}: no such video encoder in this PyAV build ({e})") from e
        self._stream.width, self._stream.height = w, h
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = Fraction(1, fps)
        self._stream.options = {"g": str(gop), "crf": str(crf)}
        self._av = av

    def add(self, img: np.ndarray) -> None:
        """``img`` ``[H, W, 3]`` uint8."""
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        frame.pts = self.frames
        self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        self._container.mux(self._stream.encode(None))
        self._container.close()


def _file_mb(path: Path) -> float:
    return path.stat().st_size / 2**20 if path.is_file() else 0.0


def _tasks_table(tasks: list[str]) -> Any:
    """``meta/tasks.parquet`` as pandas writes ``DataFrame({"task_index": ...}, index=tasks)``, so that
    ``pd.read_parquet`` (what lerobot reads it with) gives the task text as the index."""
    import pyarrow as pa

    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": None,
                "field_name": "__index_level_0__",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    table = pa.table(
        {
            "task_index": pa.array(range(len(tasks)), pa.int64()),
            "__index_level_0__": pa.array(tasks, pa.string()),
        }
    )
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def export_lerobot(
    source: EpisodeSource,
    out: str | os.PathLike,
    *,
    fps: int | None = None,
    image_keys: Sequence[str] | None = None,
    state_key: str = "observation.state",
    action_key: str = "action",
    codec: str = "libx264",
    crf: int = 23,
    gop: int = 1,
    robot_type: str | None = None,
    data_file_mb: float = 100.0,
    video_file_mb: float = 200.0,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write ``source`` to the folder ``out`` as a LeRobot v3.0 dataset, views as MP4 videos.

    Args:
        source: the episodes; ``images(e, t)`` gives ``[V, 3, H, W]`` uint8 upright views, ``actions(e)``
            ``[T, A]``, ``states(e)`` ``[T, S]``.
        out: the dataset folder to create.
        fps: frames per second (LeRobot stores an integer rate); default the source's ``fps``
            attribute (a LeRobot source has one; LIBERO HDF5 files do not: LIBERO runs at 20).
        image_keys: feature names of the ``V`` views (default: ``observation.images.<name>`` with the
            source's view names, e.g. ``observation.images.agentview_rgb``).
        state_key: feature name of the state.
        action_key: feature name of the actions.
        codec: PyAV encoder: ``"libx264"`` (H.264, default), ``"libsvtav1"`` (AV1, ``lerobot``'s
            default; needs views of at least 64 px), ...
        crf: the encoder's constant-rate factor (lower: larger, closer to the source).
        gop: keyframe interval in frames; a random read decodes up to this many frames. On 96 px
            LIBERO renders, 1 (every frame a keyframe) made shuffled reads 1.4x the cost of reads in
            order; ``lerobot``'s 2 gave 1.6x and 5% smaller files.
        robot_type: stored in ``info.json``.
        data_file_mb: start a new parquet file once one holds this many MB (lerobot's default 100).
        video_file_mb: start a new video file once one holds this many MB (lerobot's default 200).
        overwrite: replace an existing ``out`` (default: refuse).
        progress: print one line per episode to stderr.

    Returns:
        ``out``.

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is False.
        ValueError: an argument is out of range or the views cannot be encoded (odd sizes).
    """
    with requires_extra("data", "writing LeRobot datasets"):
        import pyarrow as pa
        import pyarrow.parquet as pq

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"out={str(out)!r} exists; pass overwrite=True (--overwrite) to replace it")
    if len(source) == 0:
        raise ValueError("source has no episodes")
    fps = fps if fps is not None else getattr(source, "fps", None)
    if fps is None:
        raise ValueError("fps: the source has no frame rate; pass fps= (LIBERO runs at 20)")
    if float(fps) != int(fps) or int(fps) < 1:
        raise ValueError(f"fps: LeRobot stores a whole number of frames per second >= 1, got {fps}")
    fps = int(fps)
    if gop < 1 or crf < 0:
        raise ValueError(f"gop must be >= 1 and crf >= 0, got gop={gop}, crf={crf}")
    first = np.asarray(source.images(0, 0))
    if first.ndim != 4 or first.shape[1] != 3 or first.dtype != np.uint8:
        raise ValueError(f"source.images: expected [V, 3, H, W] uint8, got {first.shape} {first.dtype}")
    n_views, _, h, w = first.shape
    if h % 2 or w % 2:
        raise ValueError(f"views of {h}x{w}: H.264 / AV1 in yuv420p need even sizes")
    keys = list(image_keys) if image_keys is not None else _view_keys(source, n_views)
    if len(keys) != n_views:
        raise ValueError(f"image_keys: {len(keys)} names for {n_views} views")
    a0, s0 = np.asarray(source.actions(0)), np.asarray(source.states(0))
    feats: dict[str, Any] = {
        k: {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"]} for k in keys
    }
    feats[state_key] = {"dtype": "float32", "shape": [int(s0.shape[-1])], "names": None}
    feats[action_key] = {"dtype": "float32", "shape": [int(a0.shape[-1])], "names": None}
    for k in ("timestamp",):
        feats[k] = {"dtype": "float32", "shape": [1], "names": None}
    for k in ("frame_index", "episode_index", "index", "task_index"):
        feats[k] = {"dtype": "int64", "shape": [1], "names": None}

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    started = time.perf_counter()
    try:
        info = _write(
            source, tmp, fps, keys, state_key, action_key, feats, (codec, crf, gop), robot_type,
            (data_file_mb, video_file_mb), progress, pa, pq,
        )  # fmt: skip
        info["features"] = feats
        (tmp / "meta" / "info.json").write_text(json.dumps(info, indent=4))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    if progress:
        print(f"wrote {out} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return out


def _write(
    source: EpisodeSource,
    root: Path,
    fps: int,
    keys: list[str],
    state_key: str,
    action_key: str,
    feats: dict[str, Any],
    video: tuple[str, int, int],
    robot_type: str | None,
    limits: tuple[float, float],
    progress: bool,
    pa: Any,
    pq: Any,
) -> dict[str, Any]:
    codec, crf, gop = video
    data_mb, video_mb = limits
    s_dim, a_dim = feats[state_key]["shape"][0], feats[action_key]["shape"][0]
    h, w = feats[keys[0]]["shape"][:2]
    schema = pa.schema(
        [
            (state_key, pa.list_(pa.float32(), s_dim)),
            (action_key, pa.list_(pa.float32(), a_dim)),
            ("timestamp", pa.float32()),
            ("frame_index", pa.int64()),
            ("episode_index", pa.int64()),
            ("index", pa.int64()),
            ("task_index", pa.int64()),
        ]
    )
    task_ids: dict[str, int] = {}
    total_stats: dict[str, _Stats] = {}
    episodes: list[dict[str, Any]] = []
    data_at, data_writer, data_path = [0, 0], None, Path()
    videos: dict[str, _VideoFile] = {}
    video_at = {k: [0, 0] for k in keys}
    index = 0
    try:
        for e in range(len(source)):
            n = source.episode_length(e)
            actions = np.asarray(source.actions(e), dtype=np.float32).reshape(n, a_dim)
            states = np.asarray(source.states(e), dtype=np.float32).reshape(n, s_dim)
            texts = frame_instructions(source, e)
            tasks = np.asarray([task_ids.setdefault(x, len(task_ids)) for x in texts], dtype=np.int64)
            ts = (np.arange(n) / fps).astype(np.float32)
            cols = {
                state_key: states,
                action_key: actions,
                "timestamp": ts,
                "frame_index": np.arange(n, dtype=np.int64),
                "episode_index": np.full(n, e, dtype=np.int64),
                "index": np.arange(index, index + n, dtype=np.int64),
                "task_index": tasks,
            }
            # Parquet rows: a new file once the current one is full (at an episode boundary).
            if data_writer is not None and _file_mb(data_path) >= data_mb:
                data_writer.close()
                data_writer, data_at = None, _next_file(data_at)
            if data_writer is None:
                data_path = root / _DATA_PATH.format(chunk_index=data_at[0], file_index=data_at[1])
                data_path.parent.mkdir(parents=True, exist_ok=True)
                data_writer = pq.ParquetWriter(data_path, schema, compression="snappy")
            arrays = [
                pa.FixedSizeListArray.from_arrays(pa.array(states.reshape(-1)), s_dim),
                pa.FixedSizeListArray.from_arrays(pa.array(actions.reshape(-1)), a_dim),
                *(
                    pa.array(cols[k])
                    for k in ("timestamp", "frame_index", "episode_index", "index", "task_index")
                ),
            ]
            data_writer.write_table(pa.Table.from_arrays(arrays, schema=schema))

            # Views: a new video file once the current one is full (at an episode boundary).
            ep_stats = {k: _Stats() for k in cols}
            for k, v in cols.items():
                ep_stats[k].add(v.reshape(n, -1))
            meta: dict[str, Any] = {}
            for k in keys:
                if k in videos and _file_mb(videos[k].path) >= video_mb:
                    videos.pop(k).close()
                    video_at[k] = _next_file(video_at[k])
                if k not in videos:
                    path = root / _VIDEO_PATH.format(
                        video_key=k, chunk_index=video_at[k][0], file_index=video_at[k][1]
                    )
                    videos[k] = _VideoFile(path, fps, (h, w), codec, crf, gop)
                ep_stats[k] = _Stats()
                meta[f"videos/{k}/chunk_index"], meta[f"videos/{k}/file_index"] = video_at[k]
                meta[f"videos/{k}/from_timestamp"] = videos[k].frames / fps
            observed = getattr(source, "observed_steps", None)
            steps = np.asarray(observed(e) if observed else np.arange(n), dtype=np.int64)
            for t in range(n):
                shown = int(steps[np.searchsorted(steps, t, side="right") - 1])  # latest rendered step
                views = np.asarray(source.images(e, shown))
                if views.shape != (len(keys), 3, h, w):
                    raise ValueError(
                        f"episode {e} step {shown}: views {views.shape}, the first {(len(keys), 3, h, w)}"
                    )
                for k, img in zip(keys, views, strict=True):
                    hwc = img.transpose(1, 2, 0)
                    videos[k].add(hwc)
                    ep_stats[k].add(hwc[::4, ::4].reshape(-1, 3) / 255.0)  # every 16th pixel
            for k in keys:
                meta[f"videos/{k}/to_timestamp"] = videos[k].frames / fps
            row: dict[str, Any] = {
                "episode_index": e,
                "tasks": list(dict.fromkeys(texts)),
                "length": n,
                "data/chunk_index": data_at[0],
                "data/file_index": data_at[1],
                "dataset_from_index": index,
                "dataset_to_index": index + n,
                **meta,
                "meta/episodes/chunk_index": 0,
                "meta/episodes/file_index": 0,
            }
            for k, st in ep_stats.items():
                for name, value in st.as_dict(image=k in keys).items():
                    row[f"stats/{k}/{name}"] = value
                total_stats.setdefault(k, _Stats()).merge(st)
            episodes.append(row)
            index += n
            if progress:
                print(f"episode {e + 1}/{len(source)}: {n} frames", file=sys.stderr)
    finally:
        if data_writer is not None:
            data_writer.close()
        for v in videos.values():
            v.close()

    (root / "meta").mkdir(exist_ok=True)
    pq.write_table(_tasks_table(list(task_ids)), root / "meta" / "tasks.parquet")
    ep_path = root / _EPISODES_PATH.format(chunk_index=0, file_index=0)
    ep_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episodes), ep_path)
    stats = {k: st.as_dict(image=k in keys) for k, st in total_stats.items()}
    (root / "meta" / "stats.json").write_text(json.dumps(stats, indent=4))
    for k in keys:
        feats[k]["info"] = {
            "video.height": h,
            "video.width": w,
            "video.codec": _codec_name(root / _VIDEO_PATH.format(video_key=k, chunk_index=0, file_index=0)),
            "video.pix_fmt": "yuv420p",
            "video.is_depth_map": False,
            "video.fps": fps,
            "video.channels": 3,
            "has_audio": False,
        }
    return {
        "codebase_version": _CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": len(episodes),
        "total_frames": index,
        "total_tasks": len(task_ids),
        "chunks_size": _CHUNKS_SIZE,
        "data_files_size_in_mb": data_mb,
        "video_files_size_in_mb": video_mb,
        "fps": fps,
        "splits": {"train": f"0:{len(episodes)}"},
        "data_path": _DATA_PATH,
        "video_path": _VIDEO_PATH,
    }


#: Files per chunk folder (lerobot's default).
_CHUNKS_SIZE = 1000


def _next_file(at: list[int]) -> list[int]:
    chunk, file = at
    return [chunk + 1, 0] if file + 1 >= _CHUNKS_SIZE else [chunk, file + 1]


def _codec_name(path: Path) -> str:
    import av

    with av.open(str(path)) as c:
        return str(c.streams.video[0].codec_context.codec.canonical_name)


def _source_from_paths(paths: Sequence[str], bddl_wording: bool) -> EpisodeSource:
    """A LeRobot folder (holds ``meta/info.json``) or LIBERO HDF5 files / folders of them."""
    if len(paths) == 1 and (Path(paths[0]) / "meta" / "info.json").is_file():
        from flowvla.data.lerobot import LeRobotSource

        return LeRobotSource(paths[0])
    from flowvla.data.dataset import HDF5Source
    from flowvla.data.hdf5 import find_demo_files

    kwargs: dict[str, Any] = {"instruction": "from_bddl_file_name"} if bddl_wording else {}
    return HDF5Source(find_demo_files(paths), **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flowvla.data.lerobot_export SRC [SRC ...] OUT``: HDF5 demonstrations (files or
    folders, e.g. ``flowvla-generate``'s ``--out``) or a LeRobot folder -> a LeRobot v3.0 dataset."""
    from flowvla.cli import fail

    prog = "flowvla-export-lerobot"
    p = argparse.ArgumentParser(
        prog=prog,
        description="Write demonstrations (LIBERO HDF5 files or folders, or a LeRobot dataset) as a "
        "LeRobot v3.0 dataset with MP4 views.",
        allow_abbrev=False,
    )
    p.add_argument("src", nargs="+", help="HDF5 files or folders of them, or one LeRobot dataset folder")
    p.add_argument("out", help="the dataset folder to create")
    p.add_argument("--fps", type=int, default=None, help="frame rate (default: the source's; LIBERO: 20)")
    p.add_argument("--codec", default="libx264", help="video encoder: libx264 (default) or libsvtav1")
    p.add_argument("--crf", type=int, default=23, help="constant-rate factor (lower: larger files)")
    p.add_argument("--gop", type=int, default=1, help="keyframe interval in frames (1: every frame)")
    p.add_argument("--robot-type", default=None)
    p.add_argument(
        "--benchmark-wording",
        action="store_true",
        help="HDF5: the instruction LIBERO's benchmark shows (from the BDDL file name)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    try:
        source = _source_from_paths(a.src, a.benchmark_wording)
        fps = a.fps if a.fps is not None else getattr(source, "fps", None) or 20
        export_lerobot(
            source,
            a.out,
            fps=fps,
            codec=a.codec,
            crf=a.crf,
            gop=a.gop,
            robot_type=a.robot_type,
            overwrite=a.overwrite,
            progress=not a.no_progress,
        )
    except (OSError, ValueError, KeyError, ImportError) as e:
        return fail(prog, e)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
