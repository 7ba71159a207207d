"""Optional dependencies: which extra installs what, and one-line errors when one is missing.

flowvla's core needs only torch and a few small packages; readers, simulators and pretrained
backbones come with extras (``pip install "flowvla[data]"``). Code that needs one imports it inside
[`requires_extra`][flowvla.extras.requires_extra], so a missing package raises
[`MissingExtraError`][flowvla.extras.MissingExtraError] with a single line that names the extra and
the command that installs it, both from the package index and from a source checkout::

    with requires_extra("data", "reading LIBERO HDF5 files"):
        import h5py
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["EXTRAS", "MissingExtraError", "install_command", "missing_extra_message", "requires_extra"]

EXTRAS: dict[str, str] = {
    "hf": "transformers models, tokenizers and image processors",
    "data": "HDF5 and LeRobot datasets, images and videos",
    "libero": "the LIBERO simulator's runtime (robosuite, mujoco, assets)",
    "timm": "timm vision encoders",
    "bench": "the benchmark scripts' peers and plots",
    "docs": "the documentation site",
}
"""What each extra is for (the packages are listed in ``pyproject.toml``)."""

# libero and bddl go in without their declared dependencies (those replace a CPU torch with a CUDA
# build and install mujoco 4, which breaks robosuite 1.4), so the libero extra needs a second command.
_AFTER = {"libero": " && pip install --no-deps libero==0.1.1 bddl==1.0.1"}


class MissingExtraError(ImportError):
    """An optional dependency is missing; the message names the extra that installs it."""


def install_command(extra: str, editable: bool = False) -> str:
    """The shell command that installs ``extra``: from the package index, or (``editable``) from a
    source checkout's root.

    Raises:
        ValueError: ``extra`` is not one of [`EXTRAS`][flowvla.extras.EXTRAS].
    """
    if extra not in EXTRAS:
        raise ValueError(f"extra={extra!r} is not a flowvla extra; choose one of {sorted(EXTRAS)}")
    target = f'-e ".[{extra}]"' if editable else f'"flowvla[{extra}]"'
    return f"pip install {target}{_AFTER.get(extra, '')}"


def missing_extra_message(extra: str, what: str, missing: str) -> str:
    """One line: what needs the extra, what is missing, and both install commands."""
    return (
        f"{what} needs flowvla's {extra!r} extra ({missing}): {install_command(extra)} "
        f"(from a source checkout: {install_command(extra, editable=True)})"
    )


@contextlib.contextmanager
def requires_extra(extra: str, what: str) -> Iterator[None]:
    """Turn an ``ImportError`` raised in the block into a
    [`MissingExtraError`][flowvla.extras.MissingExtraError].

    Args:
        extra: the extra that provides the imports in the block (a key of
            [`EXTRAS`][flowvla.extras.EXTRAS]).
        what: the feature that needs them, for the message (``"reading LIBERO HDF5 files"``).
    """
    if extra not in EXTRAS:
        raise ValueError(f"extra={extra!r} is not a flowvla extra; choose one of {sorted(EXTRAS)}")
    try:
        yield
    except MissingExtraError:
        raise
    except ImportError as e:
        # e.name is the module not found; None when an installed package refused to import (say
        # transformers without pillow), whose own message then says what is missing.
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        missing = f"{e.name} is not installed" if e.name else (lines[0] if lines else type(e).__name__)
        raise MissingExtraError(missing_extra_message(extra, what, missing)) from e
