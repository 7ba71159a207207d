"""LIBERO's original HDF5 demonstration layout (robomimic style): reader and writer.

Layout (as written by LIBERO's ``scripts/create_dataset.py``; ``T`` steps per demo)::

    data                       attrs: env_name, problem_info (JSON), env_args (JSON),
    |                                 bddl_file_name, bddl_file_content, macros_image_convention,
    |                                 num_demos, total
    +-- demo_0                 attrs: num_samples, model_file (XML), init_state
    |   +-- actions            [T, 7]  float64   LIBERO delta actions
    |   +-- states             [T, D]  float64   flattened MuJoCo state (time, qpos, qvel)
    |   +-- robot_states       [T, 9]            gripper qpos (2), eef pos (3), eef quat (4)
    |   +-- rewards, dones     [T]     uint8     1 on the last step
    |   +-- obs
    |       +-- agentview_rgb, eye_in_hand_rgb   [T, H, W, 3] uint8
    |       +-- ee_states [T, 6] (pos + axis-angle), ee_pos [T, 3], ee_ori [T, 3]
    |       +-- gripper_states [T, 2], joint_states [T, 7]
    |       +-- agentview_depth, eye_in_hand_depth     optional, [T, H, W, 1]
    +-- demo_1 ...

Images in these files follow ``macros_image_convention``: ``"opengl"`` (the official files: rows
bottom-up, as robosuite renders) or ``"opencv"`` (upright). The reader always returns upright images;
the writer takes upright images and stores them in the convention it is given (default ``"opengl"``,
so its files match the official ones byte for byte in layout).

flowvla's additions, ignored by other readers: depth in metres (dataset attr ``units="m"``), per-frame
``{view}_intrinsics [T, 3, 3]`` and ``{view}_extrinsics [T, 4, 4]`` (OpenCV, camera-to-world, for the
upright image), a ``data`` attr ``flowvla_version``, and a demo attr ``image_stride = k``: views
(and depth, cameras) were rendered at steps ``0, k, 2k, ...`` only, so those datasets hold
``ceil(T / k)`` frames while actions, states and proprioception keep all ``T`` steps. Rendering is
most of the cost of a scripted demonstration; consecutive frames at 20 Hz are nearly identical, so a
stride trades little training signal for a proportional saving.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flowvla._version import __version__
from flowvla.extras import requires_extra
from flowvla.io import atomic_path

__all__ = [
    "IMAGE_CONVENTIONS",
    "LiberoHDF5Reader",
    "LiberoHDF5Writer",
    "check_image_convention",
    "find_demo_files",
    "instruction_from_bddl_file_name",
    "merge_hdf5",
    "to_upright",
]

#: How images are stored relative to the upright picture:
#:
#: - ``"opencv"``: upright, read as stored.
#: - ``"opengl"``: rows reversed (robosuite's raw renders; the original LIBERO HDF5 files).
#: - ``"upright_mirrored"``: upright but mirrored left-right. This is what rotating robosuite's raw
#:   (bottom-up) render by 180 degrees gives, as the OpenVLA RLDS and the LeRobot/openpi LIBERO ports do.
#: - ``"rotated_180"``: an upright picture rotated by 180 degrees (upside down and mirrored).
IMAGE_CONVENTIONS = ("opencv", "opengl", "upright_mirrored", "rotated_180")
#: Old names still accepted, with a warning: ``opengl_rot180`` read as "an OpenGL render rotated by
#: 180 degrees", which is an upright mirrored image, not an upright image rotated by 180 degrees.
_RENAMED_CONVENTIONS = {"opengl_rot180": "upright_mirrored"}


def check_image_convention(convention: str, name: str = "image_convention") -> str:
    """The canonical name of ``convention``; a clear error names the accepted ones."""
    if convention in _RENAMED_CONVENTIONS:
        import warnings

        new = _RENAMED_CONVENTIONS[convention]
        warnings.warn(
            f"{name}={convention!r} is renamed {new!r} (an upright image mirrored left-right)",
            DeprecationWarning,
            stacklevel=3,
        )
        return new
    if convention not in IMAGE_CONVENTIONS:
        raise ValueError(f"{name}={convention!r} is not one of {IMAGE_CONVENTIONS}")
    return convention


def _demo_index(name: str) -> int:
    m = re.fullmatch(r"demo_(\d+)", name)
    if m is None:
        raise ValueError(f"unexpected group {name!r} under data/: demos are named demo_<i>")
    return int(m.group(1))


def to_upright(images: np.ndarray, convention: str) -> np.ndarray:
    """Images ``[..., H, W, C]`` stored in ``convention`` -> upright (a view, no copy)."""
    convention = check_image_convention(convention, "convention")
    if convention == "opencv":
        return images
    if convention == "opengl":
        return images[..., ::-1, :, :]
    if convention == "upright_mirrored":
        return images[..., :, ::-1, :]
    return images[..., ::-1, ::-1, :]


def _from_upright(images: np.ndarray, convention: str) -> np.ndarray:
    # Each conversion is its own inverse (a flip).
    return to_upright(images, convention)


def _decode_attr(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray) and v.dtype.kind in "SO" and v.ndim == 0:
        return _decode_attr(v.item())
    return v


def instruction_from_bddl_file_name(name: str) -> str:
    """The instruction LIBERO's benchmark (and so every evaluation) shows for a task file.

    LIBERO's benchmark derives a task's instruction from its BDDL file name, while the files'
    ``problem_info`` holds the BDDL's own ``:language`` text; the two differ in 25 of the 40 standard
    tasks ("pick the akita black bowl ..." vs "pick up the black bowl ..."). Training on one and
    evaluating on the other is a silent distribution shift. The name drops its folder, ``.bddl`` and an
    upper-case scene prefix (``KITCHEN_SCENE3_``) and joins the words with spaces.
    """
    stem = Path(name).name
    if stem.endswith(".bddl"):
        stem = stem[: -len(".bddl")]
    words = stem.split("_")
    while words and (words[0].isupper() or words[0][:5] == "SCENE"):
        words = words[1:]
    if not words:
        raise ValueError(f"bddl_file_name: {name!r} holds no instruction words")
    return " ".join(words)


def find_demo_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The LIBERO HDF5 files under ``paths`` (files or folders), each demonstration exactly once.

    A folder written by the demonstration generator holds every task's merged dataset
    ``<task>_demo.hdf5`` beside a folder ``<task>/`` of the per-attempt files it was merged from; the
    attempt files are skipped wherever their merged file exists, so pointing at the generator's output
    folder never counts a demonstration twice. Attempt files without a merged file (a generation still
    under way) are used.

    Raises:
        FileNotFoundError: a path does not exist, or no ``.hdf5`` file was found.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"paths: {str(p)!r} does not exist")
        if p.is_file():
            files.append(p)
            continue
        for f in sorted(p.rglob("*.hdf5")):
            merged = f.parent.with_name(f"{f.parent.name}_demo.hdf5")
            if re.fullmatch(r"attempt_\d+\.hdf5", f.name) and merged.is_file():
                continue
            files.append(f)
    unique = list(dict.fromkeys(f.resolve() for f in files))
    if not unique:
        raise FileNotFoundError(f"paths: no .hdf5 files under {[str(p) for p in paths]}")
    return unique


def view_name(camera: str) -> str:
    """LIBERO's HDF5 name of a robosuite camera's view, without the robot prefix:
    ``"robot0_eye_in_hand"`` -> ``"eye_in_hand"``, ``"agentview"`` -> ``"agentview"``."""
    return camera.removeprefix("robot0_")


def image_keys_of(cameras: Sequence[str]) -> tuple[str, ...]:
    """The ``obs/`` datasets holding ``cameras``' views, in their order (``<view>_rgb``)."""
    return tuple(f"{view_name(c)}_rgb" for c in cameras)


class LiberoHDF5Reader:
    """Random access to one LIBERO HDF5 file (one task's demonstrations).

    Args:
        path: the ``.hdf5`` file.
        image_keys: ``obs/`` datasets that are views, in ``V`` order.
        state_keys: ``obs/`` datasets concatenated (last axis) into the state; the default gives the
            8-D layout of [`flowvla.envs.libero`][flowvla.envs.libero] (eef pos, axis-angle, gripper qpos).
        image_convention: override the file's ``macros_image_convention`` attribute (files without
            it are taken as ``"opengl"``, like every official file).
        instruction: override the instruction read from ``problem_info``, or ``"from_bddl_file_name"``
            for the benchmark's wording (see
            [`instruction_from_bddl_file_name`][flowvla.data.hdf5.instruction_from_bddl_file_name]).

    The file is opened lazily and reopened after a fork, so a reader can be handed to DataLoader
    workers.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        image_keys: Sequence[str] = ("agentview_rgb", "eye_in_hand_rgb"),
        state_keys: Sequence[str] = ("ee_states", "gripper_states"),
        image_convention: str | None = None,
        instruction: str | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"path={str(self.path)!r}: no such HDF5 file")
        self.image_keys, self.state_keys = tuple(image_keys), tuple(state_keys)
        self._file: Any = None
        self._pid = -1
        f = self._h5()
        if "data" not in f:
            raise ValueError(f"{self.path}: no 'data' group; not a LIBERO/robomimic HDF5 file")
        data = f["data"]
        self.attrs: dict[str, Any] = {k: _decode_attr(v) for k, v in data.attrs.items()}
        self.demos: list[str] = sorted(data.keys(), key=_demo_index)
        conv = image_convention or self.attrs.get("macros_image_convention", "opengl")
        self.image_convention = check_image_convention(conv)
        self.problem_info: dict[str, Any] = json.loads(self.attrs.get("problem_info", "{}") or "{}")
        self.env_args: dict[str, Any] = json.loads(self.attrs.get("env_args", "{}") or "{}")
        if instruction == "from_bddl_file_name":
            instruction = instruction_from_bddl_file_name(str(self.attrs.get("bddl_file_name", "")))
        lang = instruction if instruction is not None else self.problem_info.get("language_instruction", "")
        if isinstance(lang, (list, tuple)):
            lang = " ".join(lang)
        self.instruction = str(lang).strip().strip('"')
        self._lengths = [int(data[d]["actions"].shape[0]) for d in self.demos]
        if self.demos:
            obs = data[self.demos[0]]["obs"]
            missing = [k for k in (*self.image_keys, *self.state_keys) if k not in obs]
            if missing:
                raise KeyError(f"{self.path}: obs keys {missing} not found; available: {sorted(obs.keys())}")

    def _h5(self) -> Any:
        with requires_extra("data", "reading and writing LIBERO HDF5 files"):
            import h5py

        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"], state["_pid"] = None, -1
        return state

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __len__(self) -> int:
        return len(self.demos)

    def episode_length(self, i: int) -> int:
        return self._lengths[i]

    def _demo(self, i: int) -> Any:
        if not 0 <= i < len(self.demos):
            raise IndexError(f"demo index {i} out of range ({len(self.demos)} demos in {self.path})")
        return self._h5()["data"][self.demos[i]]

    def actions(self, i: int) -> np.ndarray:
        """``[T, A]`` actions of demo ``i`` (the training labels)."""
        return np.asarray(self._demo(i)["actions"][()], dtype=np.float32)

    def executed_actions(self, i: int) -> np.ndarray:
        """``[T, A]`` what the simulator executed in demo ``i``: the ``executed_actions`` dataset of a
        demonstration recorded with injected noise (whose ``actions`` are the expert's clean labels),
        else ``actions``. Replaying these from the initial state reproduces the episode."""
        g = self._demo(i)
        key = "executed_actions" if "executed_actions" in g else "actions"
        return np.asarray(g[key][()], dtype=np.float32)

    def states(self, i: int) -> np.ndarray:
        """``[T, S]`` proprio state of demo ``i`` (the ``state_keys`` concatenated)."""
        obs = self._demo(i)["obs"]
        parts = [
            np.asarray(obs[k][()], dtype=np.float32).reshape(self._lengths[i], -1) for k in self.state_keys
        ]
        return np.concatenate(parts, axis=-1)

    def sim_states(self, i: int) -> np.ndarray:
        """``[T, D]`` flattened MuJoCo states of demo ``i``."""
        return np.asarray(self._demo(i)["states"][()])

    def image_stride(self, i: int) -> int:
        """``k``: demo ``i``'s views exist at steps ``0, k, 2k, ...`` (1 for every official file)."""
        return int(self._demo(i).attrs.get("image_stride", 1))

    def observed_steps(self, i: int) -> np.ndarray:
        """The steps of demo ``i`` that have views (every step unless an ``image_stride`` is set)."""
        return np.arange(0, self._lengths[i], self.image_stride(i))

    def _frame(self, i: int, t: int | slice) -> int | slice:
        k = self.image_stride(i)
        if isinstance(t, slice) or k == 1:
            return t
        if t % k:
            raise IndexError(
                f"step {t} of demo {i} has no views: they were rendered every {k} steps (use observed_steps)"
            )
        return t // k

    def images(self, i: int, t: int | slice) -> np.ndarray:
        """Upright views of demo ``i`` at step ``t``: ``[V, 3, H, W]`` uint8. A slice indexes the
        stored frames (one per observed step): ``[T', V, 3, H, W]``."""
        obs = self._demo(i)["obs"]
        t = self._frame(i, t)
        views = [to_upright(np.asarray(obs[k][t]), self.image_convention) for k in self.image_keys]
        arr = np.stack(views, axis=-4)  # [..., V, H, W, 3]
        return np.ascontiguousarray(np.moveaxis(arr, -1, -3))

    def geometry(self, i: int, t: int) -> dict[str, np.ndarray] | None:
        """Depth ``[V, H, W]`` (m), intrinsics ``[V, 3, 3]``, extrinsics ``[V, 4, 4]`` at step ``t``,
        or None if the file has no metric depth with cameras for every view."""
        obs = self._demo(i)["obs"]
        t = self._frame(i, t)
        views = [k.removesuffix("_rgb") for k in self.image_keys]
        keys = [(f"{v}_depth", f"{v}_intrinsics", f"{v}_extrinsics") for v in views]
        if not all(all(k in obs for k in ks) for ks in keys):
            return None
        depth = []
        for d, _, _ in keys:
            if _decode_attr(obs[d].attrs.get("units", "")) != "m":
                return None  # raw z-buffer values cannot be converted without the clip planes
            depth.append(to_upright(np.asarray(obs[d][t]), self.image_convention)[..., 0])
        return {
            "depth": np.stack(depth).astype(np.float32),
            "intrinsics": np.stack([np.asarray(obs[k][t]) for _, k, _ in keys]).astype(np.float32),
            "extrinsics": np.stack([np.asarray(obs[k][t]) for _, _, k in keys]).astype(np.float32),
        }

    def obs(self, i: int) -> dict[str, np.ndarray]:
        """Every ``obs/`` dataset of demo ``i`` as stored (images not flipped)."""
        return {k: np.asarray(v[()]) for k, v in self._demo(i)["obs"].items()}

    def demo_attrs(self, i: int) -> dict[str, Any]:
        return {k: _decode_attr(v) for k, v in self._demo(i).attrs.items()}


class LiberoHDF5Writer:
    """Write demonstrations in LIBERO's original HDF5 layout, atomically.

    Demos go to a temporary file beside ``path``; [`close`][flowvla.data.hdf5.LiberoHDF5Writer.close] (or
    leaving the ``with`` block without an exception) fills ``num_demos`` / ``total`` and renames it to
    ``path``. An interrupted writer leaves ``path`` untouched. For resumable generation, write one file per
    episode (or per batch) and join them with [`merge_hdf5`][flowvla.data.hdf5.merge_hdf5].

    Args:
        path: the ``.hdf5`` file to create.
        env_name: LIBERO's problem class name (e.g. ``"LIBERO_Tabletop_Manipulation"``).
        problem_info: ``{"problem_name", "domain_name", "language_instruction"}``.
        bddl_file_name: path of the task's BDDL file; its content is stored too when readable.
        env_args: ``{"type", "env_name", "problem_name", "bddl_file", "env_kwargs"}`` (JSON-able).
        image_convention: how images are stored: ``"opengl"`` (official files) or ``"opencv"``.
        compression: h5py compression for image/depth datasets (``"gzip"``, ``"lzf"`` or None, the
            official choice: uncompressed reads fastest).
        overwrite: replace an existing ``path`` (otherwise refuse).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        env_name: str,
        problem_info: Mapping[str, Any],
        bddl_file_name: str = "",
        bddl_file_content: str | None = None,
        env_args: Mapping[str, Any] | None = None,
        image_convention: str = "opengl",
        compression: str | None = None,
        overwrite: bool = False,
    ) -> None:
        with requires_extra("data", "reading and writing LIBERO HDF5 files"):
            import h5py

        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"path={str(self.path)!r} exists; pass overwrite=True to replace it")
        if image_convention not in ("opengl", "opencv"):
            raise ValueError(f"image_convention={image_convention!r}: choose 'opengl' or 'opencv'")
        if "language_instruction" not in problem_info:
            raise ValueError("problem_info needs a 'language_instruction' entry")
        self.image_convention, self.compression = image_convention, compression
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._f = h5py.File(self._tmp, "w")
        g = self._f.create_group("data")
        if bddl_file_content is None and bddl_file_name and os.path.isfile(bddl_file_name):
            bddl_file_content = Path(bddl_file_name).read_text()
        g.attrs["env_name"] = env_name
        g.attrs["problem_info"] = json.dumps(dict(problem_info))
        g.attrs["macros_image_convention"] = image_convention
        g.attrs["bddl_file_name"] = bddl_file_name
        g.attrs["bddl_file_content"] = bddl_file_content or ""
        g.attrs["env_args"] = json.dumps(dict(env_args or {}))
        g.attrs["flowvla_version"] = __version__
        self._data = g
        self._num, self._total, self._closed = 0, 0, False

    @classmethod
    def for_env(cls, path: str | os.PathLike, env: Any, **kwargs: Any) -> LiberoHDF5Writer:
        """A writer whose attributes describe a
        [`flowvla.envs.libero.LiberoEnv`][flowvla.envs.libero.LiberoEnv]'s task."""
        kw = {
            k: v
            for k, v in env.env_kwargs.items()
            if isinstance(v, (str, int, float, bool, list, type(None)))
        }
        problem_name = env.problem_info["problem_name"]
        env_args = {
            "type": 1,
            "env_name": problem_name,
            "problem_name": problem_name,
            "bddl_file": env.task.bddl_file,
            "env_kwargs": kw,
        }
        return cls(
            path,
            env_name=problem_name,
            problem_info=env.problem_info,
            bddl_file_name=env.task.bddl_file,
            env_args=env_args,
            **kwargs,
        )

    def add_demo(
        self,
        *,
        actions: np.ndarray,
        obs: Mapping[str, np.ndarray],
        states: np.ndarray | None = None,
        robot_states: np.ndarray | None = None,
        rewards: np.ndarray | None = None,
        dones: np.ndarray | None = None,
        model_file: str = "",
        init_state: np.ndarray | None = None,
        attrs: Mapping[str, Any] | None = None,
        image_stride: int = 1,
        executed_actions: np.ndarray | None = None,
    ) -> str:
        """Append one demonstration and return its group name (``demo_<i>``).

        Args:
            actions: ``[T, A]``.
            obs: ``[T, ...]`` arrays. Keys ending in ``_rgb`` are upright ``[T, H, W, 3]`` uint8 images;
                keys ending in ``_depth`` are upright ``[T, H, W]`` or ``[T, H, W, 1]`` depth in metres;
                the rest (``ee_states``, ``gripper_states``, ``joint_states``, ``*_intrinsics``, ...)
                are stored as given. ``ee_pos`` / ``ee_ori`` are derived from ``ee_states`` if absent.
            states: ``[T, D]`` flattened MuJoCo states; ``init_state`` defaults to ``states[0]``.
            robot_states: ``[T, 9]`` gripper qpos, eef pos, eef quat; not written when omitted.
            rewards: ``[T]``; default 1 on the last step, 0 elsewhere (as LIBERO).
            dones: ``[T]``; default 1 on the last step, 0 elsewhere (as LIBERO).
            model_file: the MuJoCo XML the demo was recorded in.
            attrs: extra attributes for the demo group (e.g. the seed it was generated with).
            image_stride: views, depth and cameras were rendered every ``k`` steps: those ``obs``
                arrays hold ``ceil(T / k)`` frames (see the module docs).
            executed_actions: ``[T, A]`` what the simulator executed, where it differs from the
                ``actions`` labels (demonstrations recorded with injected noise).

        Raises:
            ValueError: a length that differs from ``len(actions)`` (naming the key), wrong image
                shape or dtype, non-finite actions.
        """
        if self._closed:
            raise RuntimeError("this writer is closed")
        actions = np.asarray(actions)
        if actions.ndim != 2 or len(actions) == 0:
            raise ValueError(f"actions must be [T, A] with T > 0, got shape {actions.shape}")
        if not np.all(np.isfinite(actions)):
            raise ValueError("actions contain NaN or Inf")
        n = len(actions)

        if image_stride < 1:
            raise ValueError(f"image_stride must be >= 1, got {image_stride}")
        frames = -(-n // image_stride)

        def check_len(key: str, arr: np.ndarray) -> np.ndarray:
            if arr.shape[0] != n:
                raise ValueError(f"{key} has {arr.shape[0]} steps but actions has {n}")
            return arr

        def rendered(key: str) -> bool:
            return key.endswith(("_rgb", "_depth", "_intrinsics", "_extrinsics"))

        name = f"demo_{self._num}"
        g = self._data.create_group(name)
        og = g.create_group("obs")
        obs = {k: np.asarray(v) for k, v in obs.items()}
        if "ee_states" in obs and obs["ee_states"].shape[-1] == 6:
            obs.setdefault("ee_pos", obs["ee_states"][:, :3])
            obs.setdefault("ee_ori", obs["ee_states"][:, 3:])
        for key, arr in obs.items():
            if rendered(key) and image_stride > 1:
                if arr.shape[0] != frames:
                    raise ValueError(
                        f"obs[{key!r}] has {arr.shape[0]} frames; with image_stride={image_stride} "
                        f"and {n} steps it needs ceil({n} / {image_stride}) = {frames}"
                    )
            else:
                check_len(f"obs[{key!r}]", arr)
            kw: dict[str, Any] = {}
            if key.endswith("_rgb"):
                if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
                    raise ValueError(
                        f"obs[{key!r}] must be upright [T, H, W, 3] uint8, got {arr.dtype} {arr.shape}"
                    )
                arr = np.ascontiguousarray(_from_upright(arr, self.image_convention))
                kw = {"compression": self.compression, "chunks": (1, *arr.shape[1:])}
            elif key.endswith("_depth"):
                arr = arr[..., None] if arr.ndim == 3 else arr
                if arr.ndim != 4 or arr.shape[-1] != 1:
                    raise ValueError(f"obs[{key!r}] must be [T, H, W] or [T, H, W, 1], got {arr.shape}")
                arr = np.ascontiguousarray(_from_upright(arr.astype(np.float32), self.image_convention))
                kw = {"compression": self.compression, "chunks": (1, *arr.shape[1:])}
            ds = og.create_dataset(key, data=arr, **kw)
            if key.endswith("_depth"):
                ds.attrs["units"] = "m"
        g.create_dataset("actions", data=actions)
        if executed_actions is not None:
            executed_actions = np.asarray(executed_actions)
            if executed_actions.shape != actions.shape:
                raise ValueError(
                    f"executed_actions has shape {executed_actions.shape} but actions has {actions.shape}"
                )
            g.create_dataset("executed_actions", data=executed_actions)
        if states is not None:
            states = check_len("states", np.asarray(states))
            g.create_dataset("states", data=states)
        if robot_states is not None:
            g.create_dataset("robot_states", data=check_len("robot_states", np.asarray(robot_states)))
        last = np.zeros(n, dtype=np.uint8)
        last[-1] = 1
        g.create_dataset(
            "rewards", data=check_len("rewards", np.asarray(rewards)) if rewards is not None else last
        )
        g.create_dataset("dones", data=check_len("dones", np.asarray(dones)) if dones is not None else last)
        g.attrs["num_samples"] = n
        g.attrs["model_file"] = model_file
        if init_state is None and states is not None:
            init_state = states[0]
        if init_state is not None:
            g.attrs["init_state"] = np.asarray(init_state)
        if image_stride > 1:
            g.attrs["image_stride"] = int(image_stride)
        for k, v in (attrs or {}).items():
            g.attrs[k] = v
        self._num += 1
        self._total += n
        return name

    def close(self) -> Path:
        """Finish the file and move it to ``path``; returns ``path``."""
        if self._closed:
            return self.path
        self._data.attrs["num_demos"] = self._num
        self._data.attrs["total"] = self._total
        self._f.flush()
        self._f.close()
        self._closed = True
        self._ctx.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        """Discard everything written; ``path`` is left as it was."""
        if self._closed:
            return
        self._f.close()
        self._closed = True
        try:
            raise RuntimeError("aborted")
        except RuntimeError as e:
            self._ctx.__exit__(type(e), e, e.__traceback__)

    def __enter__(self) -> LiberoHDF5Writer:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def merge_hdf5(
    inputs: Sequence[str | os.PathLike], output: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Join LIBERO HDF5 files of one task into one, renumbering demos ``demo_0..``; atomic.

    The ``data`` attributes come from the first input; inputs must agree on
    ``macros_image_convention`` and ``problem_info`` (else ValueError naming the file).
    """
    with requires_extra("data", "reading and writing LIBERO HDF5 files"):
        import h5py

    if not inputs:
        raise ValueError("inputs is empty")
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"output={str(output)!r} exists; pass overwrite=True to replace it")
    with atomic_path(output) as tmp, h5py.File(tmp, "w") as out:
        dst = out.create_group("data")
        ref: dict[str, Any] | None = None
        num = total = 0
        for path in inputs:
            with h5py.File(path, "r") as f:
                src = f["data"]
                attrs = {k: _decode_attr(v) for k, v in src.attrs.items()}
                if ref is None:
                    ref = attrs
                    for k, v in src.attrs.items():
                        if k not in ("num_demos", "total"):
                            dst.attrs[k] = v
                for key in ("macros_image_convention", "problem_info"):
                    if attrs.get(key) != ref.get(key):
                        raise ValueError(f"{path}: {key} differs from {inputs[0]}'s; cannot merge")
                for name in sorted(src.keys(), key=_demo_index):
                    src.copy(src[name], dst, name=f"demo_{num}")
                    num += 1
                    total += int(src[name]["actions"].shape[0])
        dst.attrs["num_demos"] = num
        dst.attrs["total"] = total
    return output
