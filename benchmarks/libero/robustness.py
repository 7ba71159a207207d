"""Robustness of a trained policy, in the spirit of LIBERO-PRO and LIBERO-Plus: the drop in success
under paraphrased instructions, another task's instruction, shifted objects and a jittered camera.

Every row runs the same official init states with the same seeds as the unperturbed reference; one
thing changes per row ([`Perturbation`][flowvla.envs.perturb.Perturbation] for the simulator,
``RolloutConfig.instructions`` for the words). Paraphrases come from the library's word tables:
``paraphrase`` from [`SYNONYMS`][flowvla.processing.instructions.SYNONYMS] (unseen unless the recipe
trains a synonym-consistency loss on them) and ``held_out_paraphrase`` from
[`HELD_OUT_SYNONYMS`][flowvla.processing.instructions.HELD_OUT_SYNONYMS], words no training table
holds. ``swapped_instruction`` gives every task the instruction of the next task in ``--tasks``
(cyclically) and still scores the original task: a policy that obeys its words drops towards 0 there,
one that reads the task off the scene alone keeps its success.

    python benchmarks/libero/robustness.py --policy RUN/checkpoint --tasks 0,1 --init-states 25 \\
        --object-shift 0.02,0.04 --camera 0.02:3 --out benchmarks/results/libero_robustness

``--object-scatter 0.04`` adds a row whose objects are scattered within 4 cm of their official
places, the layouts a policy trained on scattered demonstrations (``--set object_scatter=0.04``) was
trained under. ``--rows official,objects+3cm`` keeps a subset (the first row is the reference of ``Δ pts``).

Prints the table (``Δ pts`` is the drop against the reference) and writes
``<out>/robustness.json``; each row's episode records stay under ``<out>/<row>/``.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _sampling_module() -> Any:
    # The shared closed-loop options live in the sibling script; benchmarks are not a package.
    spec = importlib.util.spec_from_file_location(
        "bench_libero_sampling", Path(__file__).with_name("sampling.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def camera_settings(text: str) -> list[tuple[float, float]]:
    """``"0.02:3,0.04:6"`` -> ``[(0.02, 3.0), (0.04, 6.0)]`` (metres : degrees); ``""`` -> no camera rows."""
    out = []
    for item in filter(str.strip, text.split(",")):
        shift, sep, angle = item.partition(":")
        if not sep:
            raise argparse.ArgumentTypeError(f"--camera: {item!r} is not SHIFT_M:ANGLE_DEG (e.g. 0.02:3)")
        out.append((float(shift), float(angle)))
    return out


def variants(
    suite: str,
    tasks: list[int],
    object_shifts: list[float],
    cameras: list[tuple[float, float]],
    object_scatters: Sequence[float] = (),
) -> dict[str, dict[str, Any]]:
    """The rows: the reference, two paraphrases of every task's instruction (trainable words and
    held-out words), another task's instruction (with two or more tasks), then each perturbation."""
    from flowvla.envs.libero import get_task
    from flowvla.envs.perturb import Perturbation
    from flowvla.processing.instructions import held_out_paraphrase, paraphrase

    rows: dict[str, dict[str, Any]] = {"official": {}}
    # "paraphrase" uses the words a synonym-consistency loss may train on; "held_out_paraphrase" words
    # that no training table holds.
    rows["paraphrase"] = {"instructions": {t: paraphrase(get_task(suite, t).instruction) for t in tasks}}
    rows["held_out_paraphrase"] = {
        "instructions": {t: held_out_paraphrase(get_task(suite, t).instruction) for t in tasks}
    }
    if len(tasks) > 1:
        # The next task's words, scored against this task's goal: the drop measures obedience.
        rows["swapped_instruction"] = {
            "instructions": {
                t: get_task(suite, tasks[(i + 1) % len(tasks)]).instruction for i, t in enumerate(tasks)
            }
        }
    for shift in object_shifts:
        rows[f"objects+{100 * shift:g}cm"] = {"perturbation": Perturbation(object_shift_m=shift)}
    for radius in object_scatters:
        rows[f"objects_within_{100 * radius:g}cm"] = {"perturbation": Perturbation(object_scatter_m=radius)}
    for shift, angle in cameras:
        rows[f"camera+{100 * shift:g}cm+{angle:g}deg"] = {
            "perturbation": Perturbation(camera_shift_m=shift, camera_rotation_deg=angle)
        }
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from flowvla.recipes.sweep import select_variants

    sampling = _sampling_module()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sampling.eval_options(p)
    p.add_argument("--object-shift", type=floats, default=[0.02, 0.04], help="metres, comma-separated")
    p.add_argument(
        "--object-scatter",
        type=floats,
        default=[],
        help="metres, comma-separated: objects moved uniformly within this radius (the layouts of "
        "demonstrations generated with object_scatter), e.g. 0.04",
    )
    p.add_argument("--camera", type=camera_settings, default=[(0.02, 3.0)], help="SHIFT_M:ANGLE_DEG, ...")
    p.add_argument(
        "--rows",
        help="comma-separated subset of the rows, in that order (default: all; e.g. official,objects+3cm)",
    )
    p.add_argument("--out", default="benchmarks/results/libero_robustness")
    args = p.parse_args(argv)
    try:
        rows = select_variants(
            variants(args.suite, args.tasks, args.object_shift, args.camera, args.object_scatter), args.rows
        )
    except ValueError as e:
        p.error(f"--rows: {e}")
    for name, v in rows.items():
        if "instructions" in v:
            for t, text in v["instructions"].items():
                print(f"{name}: task {t}: {text!r}")
    return sampling.run(args, rows, "robustness")


if __name__ == "__main__":
    main()
