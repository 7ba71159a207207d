"""``python -m flowvla.envs.libero_check``: what [`prepare_libero`][flowvla.envs.libero_setup.prepare_libero]
finds, and with ``--check`` one task built, reset and rendered (``flowvla-libero-setup``).

It lives apart from [`flowvla.envs.libero_setup`][flowvla.envs.libero_setup] because the check builds a
[`LiberoEnv`][flowvla.envs.libero.LiberoEnv], which itself needs the setup module.
"""

from __future__ import annotations

import argparse
import json
import time

from flowvla.cli import fail
from flowvla.envs.libero import LiberoEnv
from flowvla.envs.libero_setup import (
    GL_PACKAGES,
    INSTALL_COMMANDS,
    LiberoSetupError,
    prepare_libero,
    set_libero_verbose,
)

__all__ = ["main"]


def _smoke_test(suite: str, size: int) -> dict[str, float]:
    t0 = time.perf_counter()
    env = LiberoEnv(suite, 0, image_size=size)
    t1 = time.perf_counter()
    env.reset(init_state=0)
    t2 = time.perf_counter()
    obs = env.observe()
    t3 = time.perf_counter()
    env.close()
    assert obs["images"].shape == (2, 3, size, size)
    return {"construct_s": t1 - t0, "reset_s": t2 - t1, "render_s": t3 - t2}


def main(argv: list[str] | None = None) -> int:
    """``python -m flowvla.envs.libero_check --check`` (also ``--assets DIR``, ``--gl egl``)."""
    parser = argparse.ArgumentParser(
        prog="flowvla-libero-setup", description="Bring LIBERO up offline and check it", allow_abbrev=False
    )
    parser.add_argument("--assets", help="use this LIBERO asset folder instead of searching")
    parser.add_argument("--gl", choices=sorted(GL_PACKAGES), help="force an offscreen GL backend")
    parser.add_argument("--check", action="store_true", help="also build, reset and render one task")
    parser.add_argument("--suite", default="libero_object", help="suite for --check")
    parser.add_argument("--print-install", action="store_true", help="print the install commands and exit")
    parser.add_argument(
        "--verbose", action="store_true", help="show robosuite's and LIBERO's start-up messages"
    )
    args = parser.parse_args(argv)
    if args.print_install:
        print("\n".join(INSTALL_COMMANDS))
        return 0
    set_libero_verbose(args.verbose)
    try:
        paths = prepare_libero(assets=args.assets, gl_backend=args.gl)
        report: dict[str, object] = paths.as_dict()
        if args.check:
            report["check"] = _smoke_test(args.suite, 128)
    except (LiberoSetupError, ValueError) as e:
        # Exit status 1: the tool worked and found LIBERO unusable (2 stays argparse's usage error).
        fail(parser.prog, e)
        return 1
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
