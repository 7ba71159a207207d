"""Read LeRobot-format datasets (v2.0 / v2.1 / v3.0) without the ``lerobot`` package.

What is read: ``meta/info.json`` (``fps``, ``features``, path templates), the tasks
(``meta/tasks.jsonl`` in v2, ``meta/tasks.parquet`` in v3), the frames (``data/**/*.parquet``) and
the views, either stored in the parquet rows (feature dtype ``image``: PNG/JPEG bytes) or as MP4 videos
(dtype ``video``; decoded with ``imageio-ffmpeg``, which includes AV1 and H.264 decoders). Needs
``pyarrow`` and ``Pillow``; videos also ``imageio`` + ``imageio-ffmpeg``.

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
        cache_episodes: decoded episodes kept per view (images are decoded a whole episode at a time).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_keys: list[str] | None = None,
        state_key: str | None = None,
        action_key: str | None = None,
        image_convention: str = "opencv",
        cache_episodes: int = 4,
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
        self._task: dict[int, int] = {}
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
            self._ts[e], self._loc[e], self._task[e] = ts[seg], loc[seg], int(tasks[seg[0]])
        self.tasks = self._read_tasks()
        self._episode_meta = self._read_episode_meta() if any(self._is_video.values()) else {}
        self._bytes_cache: OrderedDict[tuple[str, int], list[Any]] = OrderedDict()
        self._frame_cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()

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
        ti = self._task[self.episode_id(e)]
        if ti not in self.tasks:
            raise KeyError(f"episode {self.episode_id(e)} has task_index {ti}, which is not in the task list")
        return self.tasks[ti]

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
                views.append(self._episode_frames(key, e)[t])
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

    def _episode_frames(self, key: str, e: int) -> np.ndarray:
        """Upright ``[T, H, W, 3]`` uint8 frames of video view ``key`` for episode ``e`` (LRU-cached)."""
        return self._cached(
            self._frame_cache,
            (key, e),
            lambda: np.ascontiguousarray(to_upright(self._decode_video(key, e), self.image_convention)),
            self.cache_episodes * len(self.image_keys),
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

    def _decode_video(self, key: str, e: int) -> np.ndarray:
        with requires_extra("data", "decoding LeRobot videos"):
            import imageio.v2 as imageio

        ep = self.episode_id(e)
        path, offset = self._video_file_and_offset(key, ep)
        if not path.is_file():
            raise FileNotFoundError(f"video for episode {ep}, view {key!r} not found: {path}")
        idx = np.rint((self._ts[ep] + offset) * self.fps).astype(np.int64)
        reader = imageio.get_reader(path, format="FFMPEG")  # type: ignore[arg-type]
        try:
            frames: dict[int, np.ndarray] = {}
            wanted = set(idx.tolist())
            first, last = int(idx.min()), int(idx.max())
            if first > 0:
                reader.set_image_index(first)
            for i in range(first, last + 1):
                img = reader.get_next_data()
                if i in wanted:
                    frames[i] = np.asarray(img)[..., :3]
        except (IndexError, StopIteration) as err:
            raise ValueError(f"{path}: video ends before frame {last} needed by episode {ep}") from err
        finally:
            reader.close()
        return np.stack([frames[int(i)] for i in idx])
