"""Read LeRobot-format datasets (v2.0 / v2.1 / v3.0) without the ``lerobot`` package.

What is read: ``meta/info.json`` (``fps``, ``features``, path templates), the tasks
(``meta/tasks.jsonl`` in v2, ``meta/tasks.parquet`` in v3), the frames (``data/**/*.parquet``) and
the views, either stored in the parquet rows (feature dtype ``image``: PNG/JPEG bytes) or as MP4 videos
(dtype ``video``; decoded with PyAV, whose wheels include AV1 and H.264 decoders). Needs ``pyarrow``
and ``Pillow``; videos also ``av`` (all in the ``data`` extra).

Tasks: LeRobot stores a task per frame (``task_index``);
[`frame_instructions`][flowvla.data.lerobot.LeRobotSource.frame_instructions] gives them, and
[`ChunkDataset`][flowvla.data.dataset.ChunkDataset] gives every item the task of its own frame.

Random access: a video frame is decoded by seeking to the keyframe at or before it and decoding forward
(an open decoder that is already just before the frame decodes on instead of seeking), so a shuffled
item costs about what an item in order costs; decoded frames are kept in a cache bounded in bytes
(``cache_bytes``).

Image orientation: images are read as stored (``image_convention="opencv"``, upright), which is right
for what ``lerobot`` writes and for real-robot data. The LIBERO ports on the hub derive from OpenVLA's
RLDS conversion, which rotates robosuite's bottom-up render by 180 degrees: an upright but mirrored
picture. Read those with ``image_convention="upright_mirrored"``, or the policy sees every scene
mirrored left-right.
"""

from __future__ import annotations

import io
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from flowvla.data.hdf5 import check_image_convention, to_upright
from flowvla.extras import requires_extra

__all__ = ["LeRobotSource"]


def _decode_image(value: Any) -> np.ndarray:
    with requires_extra("data", "decoding LeRobot images"):
        from PIL import Image

    if isinstance(value, dict):
        value = value.get("bytes")
    if not isinstance(value, (bytes, bytearray)):
        raise ValueError("image cell holds no bytes (images stored by path are not supported)")
    return np.asarray(Image.open(io.BytesIO(value)).convert("RGB"))


class LeRobotSource:
    """Episodes of a LeRobot dataset folder as an [`EpisodeSource`][flowvla.data.dataset.EpisodeSource].

    Args:
        root: the dataset folder (contains ``meta/info.json``).
        image_keys: view features in ``V`` order (default: every ``image`` / ``video`` feature, in
            ``info.json`` order).
        state_key: state feature (default: ``observation.state`` or ``state``).
        action_key: action feature (default: ``action`` or ``actions``).
        image_convention: how the views are stored (see ``flowvla.data.hdf5.IMAGE_CONVENTIONS``):
            ``"opencv"`` (default) reads them as stored; ``"upright_mirrored"`` for the LIBERO ports.
        cache_episodes: episodes of encoded images kept per view (image storage: the PNG/JPEG bytes of
            an episode are read together; decoding is per frame).
        cache_bytes: most bytes of decoded video frames kept (least recently used dropped first);
            256 MiB by default, 0 to keep none.

    A source can be handed to DataLoader workers: open video files are reopened in each process.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_keys: list[str] | None = None,
        state_key: str | None = None,
        action_key: str | None = None,
        image_convention: str = "opencv",
        cache_episodes: int = 4,
        cache_bytes: int = 256 * 2**20,
    ) -> None:
        with requires_extra("data", "reading LeRobot datasets"):
            import pyarrow.parquet as pq

        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise FileNotFoundError(
                f"root={str(self.root)!r}: no meta/info.json; not a LeRobot dataset folder"
            )
        image_convention = check_image_convention(image_convention)
        if cache_bytes < 0:
            raise ValueError(f"cache_bytes: must be >= 0, got {cache_bytes}")
        self.info: dict[str, Any] = json.loads(info_path.read_text())
        self.version = str(self.info.get("codebase_version", "v2.0"))
        self.fps = float(self.info["fps"])
        feats: dict[str, Any] = self.info["features"]
        self.image_convention, self.cache_episodes = image_convention, max(1, cache_episodes)

        def pick(given: str | None, options: tuple[str, ...], what: str) -> str:
            if given is not None:
                if given not in feats:
                    raise KeyError(f"{what}={given!r} is not a feature; features: {sorted(feats)}")
                return given
            for o in options:
                if o in feats:
                    return o
            raise KeyError(f"no {what} among {options}; pass {what}= one of {sorted(feats)}")

        self.state_key = pick(state_key, ("observation.state", "state"), "state_key")
        self.action_key = pick(action_key, ("action", "actions"), "action_key")
        visual = [k for k, f in feats.items() if f.get("dtype") in ("image", "video")]
        self.image_keys = list(image_keys) if image_keys is not None else visual
        bad = [k for k in self.image_keys if k not in visual]
        if bad or not self.image_keys:
            raise KeyError(
                f"image_keys {bad or self.image_keys} are not image/video features; those are {visual}"
            )
        self._is_video = {k: feats[k]["dtype"] == "video" for k in self.image_keys}

        files = sorted((self.root / "data").rglob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"{self.root}/data holds no parquet files")
        scalar_cols = [
            "episode_index",
            "frame_index",
            "timestamp",
            "task_index",
            self.state_key,
            self.action_key,
        ]
        rows: dict[str, list[Any]] = {c: [] for c in [*scalar_cols, "_file", "_row"]}
        for fi, path in enumerate(files):
            table = pq.read_table(path, columns=[c for c in scalar_cols if c in pq.read_schema(path).names])
            n = table.num_rows
            for c in scalar_cols:
                rows[c].extend(table.column(c).to_pylist() if c in table.column_names else [0.0] * n)
            rows["_file"].extend([fi] * n)
            rows["_row"].extend(range(n))
        self._files = files
        ep = np.asarray(rows["episode_index"], dtype=np.int64)
        order = np.lexsort((np.asarray(rows["frame_index"]), ep))
        self._episode_ids = np.unique(ep).tolist()
        self._rows: dict[int, np.ndarray] = {}
        self._actions: dict[int, np.ndarray] = {}
        self._states: dict[int, np.ndarray] = {}
        self._ts: dict[int, np.ndarray] = {}
        self._task: dict[int, np.ndarray] = {}
        self._loc: dict[int, np.ndarray] = {}
        acts = np.asarray(rows[self.action_key], dtype=np.float32)
        sts = np.asarray(rows[self.state_key], dtype=np.float32)
        loc = np.stack([np.asarray(rows["_file"]), np.asarray(rows["_row"])], axis=1)
        ts = np.asarray(rows["timestamp"], dtype=np.float64)
        tasks = np.asarray(rows["task_index"], dtype=np.int64)
        ep_sorted = ep[order]
        bounds = np.flatnonzero(np.diff(ep_sorted)) + 1
        for seg in np.split(order, bounds):
            e = int(ep[seg[0]])
            self._actions[e], self._states[e] = acts[seg], sts[seg]
            self._ts[e], self._loc[e], self._task[e] = ts[seg], loc[seg], tasks[seg]
        self.tasks = self._read_tasks()
        for e, ti in self._task.items():
            missing = sorted(set(np.unique(ti).tolist()) - set(self.tasks))
            if missing:
                raise KeyError(f"episode {e} has task_index {missing}, which is not in the task list")
        self._episode_meta = self._read_episode_meta() if any(self._is_video.values()) else {}
        self._bytes_cache: OrderedDict[tuple[str, int], list[Any]] = OrderedDict()
        self.cache_bytes = int(cache_bytes)
        self._frames = _FrameCache(self.cache_bytes)
        self._decoders: OrderedDict[Path, _VideoDecoder] = OrderedDict()
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        # Open decoders do not cross processes (DataLoader workers, spawn): each process opens its own.
        state = dict(self.__dict__)
        state["_decoders"] = OrderedDict()
        state["_frames"] = _FrameCache(self.cache_bytes)
        return state

    # ------------------------------------------------------------------------------------- metadata
    def _read_tasks(self) -> dict[int, str]:
        meta = self.root / "meta"
        if (meta / "tasks.jsonl").is_file():
            out = {}
            for line in (meta / "tasks.jsonl").read_text().splitlines():
                if line.strip():
                    d = json.loads(line)
                    out[int(d["task_index"])] = str(d["task"])
            return out
        if (meta / "tasks.parquet").is_file():
            with requires_extra("data", "reading LeRobot datasets"):
                import pyarrow.parquet as pq

            t = pq.read_table(meta / "tasks.parquet").to_pydict()
            # pandas writes the task string as the index ("task" or "__index_level_0__").
            text_col = next((c for c in ("task", "__index_level_0__") if c in t), None)
            if text_col is None or "task_index" not in t:
                raise ValueError(f"{meta / 'tasks.parquet'}: expected columns task_index and task")
            return {int(i): str(s) for i, s in zip(t["task_index"], t[text_col], strict=True)}
        raise FileNotFoundError(f"{meta}: neither tasks.jsonl (v2) nor tasks.parquet (v3)")

    def _read_episode_meta(self) -> dict[int, dict[str, Any]]:
        meta_dir = self.root / "meta" / "episodes"
        if not meta_dir.is_dir():
            return {}  # v2: one video per episode, found by the path template
        with requires_extra("data", "reading LeRobot datasets"):
            import pyarrow.parquet as pq

        out: dict[int, dict[str, Any]] = {}
        for path in sorted(meta_dir.rglob("*.parquet")):
            for row in pq.read_table(path).to_pylist():
                out[int(row["episode_index"])] = row
        return out

    # ------------------------------------------------------------------------------ EpisodeSource API
    def __len__(self) -> int:
        return len(self._episode_ids)

    def episode_id(self, e: int) -> int:
        """The dataset's ``episode_index`` of the ``e``-th episode."""
        return self._episode_ids[e]

    def episode_length(self, e: int) -> int:
        return len(self._actions[self.episode_id(e)])

    def instruction(self, e: int) -> str:
        """The task of the episode's first frame (see ``frame_instructions`` for every frame's)."""
        return self.tasks[int(self._task[self.episode_id(e)][0])]

    def frame_instructions(self, e: int) -> list[str]:
        """The task of every frame of episode ``e`` (``T`` strings), as stored per frame."""
        return [self.tasks[int(i)] for i in self._task[self.episode_id(e)]]

    def timestamps(self, e: int) -> np.ndarray:
        """``[T]`` float64: the stored ``timestamp`` of every frame of episode ``e`` (seconds)."""
        return self._ts[self.episode_id(e)]

    def actions(self, e: int) -> np.ndarray:
        return self._actions[self.episode_id(e)]

    def states(self, e: int) -> np.ndarray:
        return self._states[self.episode_id(e)]

    def geometry(self, e: int, t: int) -> None:
        return None

    def images(self, e: int, t: int) -> np.ndarray:
        views = []
        for key in self.image_keys:
            if self._is_video[key]:
                views.append(self._video_frame(key, e, t))
            else:
                views.append(to_upright(_decode_image(self._episode_bytes(key, e)[t]), self.image_convention))
        return np.ascontiguousarray(np.stack(views).transpose(0, 3, 1, 2))

    # -------------------------------------------------------------------------------------- decoding
    @staticmethod
    def _cached(cache: OrderedDict, ck: tuple[str, int], make: Any, limit: int) -> Any:
        if ck in cache:
            cache.move_to_end(ck)
            return cache[ck]
        value = make()
        cache[ck] = value
        while len(cache) > limit:
            cache.popitem(last=False)
        return value

    def _episode_bytes(self, key: str, e: int) -> list[Any]:
        """The encoded images of view ``key`` for episode ``e``, in frame order (cached: compact)."""
        with requires_extra("data", "reading LeRobot datasets"):
            import pyarrow.parquet as pq

        def load() -> list[Any]:
            loc = self._loc[self.episode_id(e)]
            out: list[Any] = []
            for fi in np.unique(loc[:, 0]):
                rows = loc[loc[:, 0] == fi, 1]
                # Read only the row groups that hold this episode (v3 files hold many episodes).
                pf = pq.ParquetFile(self._files[int(fi)])
                starts = np.cumsum(
                    [0] + [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
                )
                groups = sorted({int(np.searchsorted(starts, r, side="right")) - 1 for r in rows})
                col = pf.read_row_groups(groups, columns=[key]).column(key)
                offset = {
                    g: int(starts[g]) - sum(int(starts[h + 1] - starts[h]) for h in groups if h < g)
                    for g in groups
                }
                for r in rows:
                    g = int(np.searchsorted(starts, r, side="right")) - 1
                    out.append(col[int(r) - offset[g]].as_py())
            return out

        # Encoded frames are small (a PNG per view), so many episodes fit: random access stays cheap.
        return self._cached(
            self._bytes_cache, (key, e), load, 64 * self.cache_episodes * len(self.image_keys)
        )

    def _video_file_and_offset(self, key: str, ep: int) -> tuple[Path, float]:
        tmpl = self.info.get("video_path")
        if not tmpl:
            raise ValueError(f"feature {key!r} is a video but info.json has no video_path template")
        chunks = int(self.info.get("chunks_size", 1000))
        meta = self._episode_meta.get(ep)
        if meta is not None and f"videos/{key}/file_index" in meta:  # v3: many episodes per file
            path = tmpl.format(
                video_key=key,
                chunk_index=int(meta[f"videos/{key}/chunk_index"]),
                file_index=int(meta[f"videos/{key}/file_index"]),
            )
            return self.root / path, float(meta[f"videos/{key}/from_timestamp"])
        path = tmpl.format(video_key=key, episode_chunk=ep // chunks, episode_index=ep)
        return self.root / path, 0.0

    def _decoder(self, path: Path) -> _VideoDecoder:
        if os.getpid() != self._pid:  # forked into a worker: the parent's open files are not ours
            self._decoders, self._pid = OrderedDict(), os.getpid()
        dec = self._decoders.get(path)
        if dec is None:
            if not path.is_file():
                raise FileNotFoundError(f"video not found: {path}")
            dec = self._decoders[path] = _VideoDecoder(path)
            while len(self._decoders) > _OPEN_VIDEOS:
                self._decoders.popitem(last=False)[1].close()
        self._decoders.move_to_end(path)
        return dec

    def _video_frame(self, key: str, e: int, t: int) -> np.ndarray:
        """Upright ``[H, W, 3]`` uint8 frame ``t`` of video view ``key`` in episode ``e``."""
        hit = self._frames.get((key, e, t))
        if hit is not None:
            return hit
        ep = self.episode_id(e)
        if not 0 <= t < len(self._ts[ep]):
            raise IndexError(f"t={t} out of range for episode {ep} of {len(self._ts[ep])} frames")
        path, offset = self._video_file_and_offset(key, ep)
        times = self._ts[ep] + offset  # where each frame of the episode lies in the file (s)
        tol = 0.5 / self.fps
        want = float(times[t])
        found = None
        for time, img in self._decoder(path).frames_from(want, tol):
            # Keep every frame decoded on the way that belongs to this episode: in-order reads hit them.
            i = int(np.searchsorted(times, time - tol))
            if i < len(times) and abs(times[i] - time) <= tol:
                frame = np.ascontiguousarray(to_upright(img, self.image_convention))
                self._frames.put((key, e, i), frame)
                if i == t:
                    found = frame
            if time >= want - tol:
                break
        if found is None:
            raise ValueError(
                f"{path}: no frame at {want:.4f} s (episode {ep}, frame {t}, view {key!r}); "
                "the video is shorter than the episode or its timestamps differ"
            )
        return found


#: Open video files kept per source (each holds a demuxer and a decoder).
_OPEN_VIDEOS = 16


class _FrameCache:
    """Least-recently-used decoded frames, bounded by their total bytes."""

    def __init__(self, limit: int) -> None:
        self.limit, self.size = limit, 0
        self._d: OrderedDict[tuple[str, int, int], np.ndarray] = OrderedDict()

    def get(self, k: tuple[str, int, int]) -> np.ndarray | None:
        v = self._d.get(k)
        if v is not None:
            self._d.move_to_end(k)
        return v

    def put(self, k: tuple[str, int, int], v: np.ndarray) -> None:
        if v.nbytes > self.limit:
            return
        old = self._d.pop(k, None)
        if old is not None:
            self.size -= old.nbytes
        self._d[k], self.size = v, self.size + v.nbytes
        while self.size > self.limit:
            self.size -= self._d.popitem(last=False)[1].nbytes


class _VideoDecoder:
    """One open video stream that decodes forward from where it stands, seeking only when it must.

    A request for the frame at time ``want`` continues decoding when the decoder's last frame lies
    shortly before ``want`` (within a keyframe interval); otherwise it seeks to the keyframe at or before
    ``want`` and decodes forward from there. Either way only the frames between that keyframe (or the
    last decoded frame) and ``want`` are decoded.
    """

    def __init__(self, path: Path) -> None:
        with requires_extra("data", "decoding LeRobot videos"):
            import av

        self.path = path
        self._container = av.open(str(path))
        self._stream = self._container.streams.video[0]
        # No frame threading: it holds frames back, so one frame after a seek would cost several.
        self._base = float(self._stream.time_base)
        self._frames: Any = None  # the running decode generator
        self._last = -np.inf  # time of the last frame decoded (s)
        self._key = -np.inf  # time of the last keyframe decoded (s)
        self._gap = 0.0  # the longest keyframe interval seen (s): within it, decoding on beats seeking

    def frames_from(self, want: float, tol: float) -> Any:
        """Yield ``(time, [H, W, 3] uint8)`` from the keyframe before ``want`` (or the current position)
        on; the caller stops when it has what it needs."""
        if not (self._last < want - tol and want - self._last <= max(self._gap, 4 * tol) + tol):
            # The keyframe at or before the frame (aim half a tolerance past it: stored timestamps
            # are rounded, and aiming before it would land on the previous keyframe).
            target = max(0, int((want + tol / 2) / self._base))
            self._container.seek(target, stream=self._stream, backward=True)
            self._frames = self._container.decode(self._stream)
            self._last = self._key = -np.inf
        for frame in self._frames:
            time = float(frame.pts * self._base) if frame.pts is not None else float(frame.time)
            if frame.key_frame:
                if np.isfinite(self._key):
                    self._gap = max(self._gap, time - self._key)
                self._key = time
            self._last = time
            yield time, frame.to_ndarray(format="rgb24")

    def close(self) -> None:
        self._container.close()
