"""Robustness of a trained policy, in the spirit of LIBERO-PRO and LIBERO-Plus: the drop in success
under paraphrased instructions, renamed objects, another task's instruction, a changed task, moved,
scattered and swapped objects, an offset robot pose, a jittered camera, changed lights, a tinted or
re-textured table and walls, and pixel noise.

Every row runs the same official init states with the same seeds as the unperturbed reference; one
thing changes per row ([`Perturbation`][flowvla.envs.perturb.Perturbation] for the simulator,
``RolloutConfig.instructions`` for the words). Paraphrases come from the library's word tables:
``paraphrase`` from [`SYNONYMS`][flowvla.processing.instructions.SYNONYMS] (unseen unless the recipe
trains a synonym-consistency loss on them) and ``held_out_paraphrase`` from
[`HELD_OUT_SYNONYMS`][flowvla.processing.instructions.HELD_OUT_SYNONYMS], words no training table
holds; ``object_synonym`` names the objects in other words
([`OBJECT_SYNONYMS`][flowvla.processing.instructions.OBJECT_SYNONYMS]). ``swapped_instruction`` gives
every task the instruction of the next task in ``--tasks`` (cyclically) and still scores the original
task: a policy that obeys its words drops towards 0 there, one that reads the task off the scene alone
keeps its success. ``changed_task`` is the converse: each episode is told another task its scene
allows and scored on that task (not on libero_spatial, whose words name the bowl by where it lies, and
on libero_10 only when ``--tasks`` are among 0, 1, 7, 8, the scenes that hold another task's objects).

The other rows each turn one axis of [`Perturbation`][flowvla.envs.perturb.Perturbation], at the
magnitudes given (two each by default; an empty list drops the axis): ``swap_target`` /
``swap_any`` (``--swap``), ``robot_joints_<r>rad`` (``--robot-joints``), ``light_<s>pct``
(``--light``), ``light_turn_<deg>deg`` (``--light-turn``), ``scene_tint_<s>pct`` (``--scene-tint``),
``scene_textures`` (``--scene-textures``), ``image_noise_<std>`` (``--image-noise``).

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


def words(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


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
    *,
    swaps: Sequence[str] = (),
    robot_joints: Sequence[float] = (),
    lights: Sequence[float] = (),
    light_turns: Sequence[float] = (),
    scene_tints: Sequence[float] = (),
    scene_textures: bool = False,
    image_noise: Sequence[float] = (),
    language: bool = False,
) -> dict[str, dict[str, Any]]:
    """The rows: the reference, two paraphrases of every task's instruction (trainable words and
    held-out words), another task's instruction (with two or more tasks), then each perturbation.
    ``language`` adds the object-synonym row and the changed-task row (where the suite allows it);
    the keyword arguments add one row per magnitude of the other axes."""
    from flowvla.envs.libero import get_task
    from flowvla.envs.perturb import Perturbation, changed_task_refusal, scorable_task_indices
    from flowvla.processing.instructions import held_out_paraphrase, object_synonym, paraphrase

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
    if language:
        rows["object_synonym"] = {
            "instructions": {t: object_synonym(get_task(suite, t).instruction) for t in tasks}
        }
        # libero_spatial's instructions name the bowl by where it lies; in libero_10 only four
        # scenes hold another task's objects.
        if changed_task_refusal(suite) is None and all(
            scorable_task_indices(get_task(suite, t)) for t in tasks
        ):
            rows["changed_task"] = {"perturbation": Perturbation(changed_task=True)}
    for shift in object_shifts:
        rows[f"objects+{100 * shift:g}cm"] = {"perturbation": Perturbation(object_shift_m=shift)}
    for radius in object_scatters:
        rows[f"objects_within_{100 * radius:g}cm"] = {"perturbation": Perturbation(object_scatter_m=radius)}
    for shift, angle in cameras:
        rows[f"camera+{100 * shift:g}cm+{angle:g}deg"] = {
            "perturbation": Perturbation(camera_shift_m=shift, camera_rotation_deg=angle)
        }
    axes = [
        ("swap_{:s}", "object_swap", swaps, 1),
        ("robot_joints_{:g}rad", "robot_joint_offset_rad", robot_joints, 1),
        ("light_{:g}pct", "light_intensity", lights, 100),
        ("light_turn_{:g}deg", "light_rotation_deg", light_turns, 1),
        ("scene_tint_{:g}pct", "scene_tint", scene_tints, 100),
        ("image_noise_{:g}", "image_noise_std", image_noise, 1),
    ]
    for name, field, amounts, unit in axes:
        for amount in amounts:
            label = amount if isinstance(amount, str) else unit * amount
            rows[name.format(label)] = {"perturbation": Perturbation(**{field: amount})}
    if scene_textures:
        rows["scene_textures"] = {"perturbation": Perturbation(scene_texture_swap=True)}
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
    p.add_argument(
        "--camera", type=camera_settings, default=[(0.02, 3.0), (0.04, 6.0)], help="SHIFT_M:ANGLE_DEG, ..."
    )
    p.add_argument(
        "--swap",
        type=words,
        default=["target", "any"],
        help="object swaps: target (the task's object with another) and/or any (two drawn objects)",
    )
    p.add_argument("--robot-joints", type=floats, default=[0.05, 0.1], help="radians, per arm joint at most")
    p.add_argument("--light", type=floats, default=[0.3, 0.6], help="light intensity change, fraction")
    p.add_argument("--light-turn", type=floats, default=[20.0, 40.0], help="light direction change, degrees")
    p.add_argument(
        "--scene-tint", type=floats, default=[0.3, 0.6], help="table / floor / wall tint, fraction"
    )
    p.add_argument(
        "--scene-textures",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a row with the table / floor / wall textures swapped",
    )
    p.add_argument("--image-noise", type=floats, default=[5.0, 10.0], help="pixel noise std, 0-255 values")
    p.add_argument(
        "--language",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the object-synonym and changed-task rows",
    )
    p.add_argument(
        "--rows",
        help="comma-separated subset of the rows, in that order (default: all; e.g. official,objects+3cm)",
    )
    p.add_argument("--out", default="benchmarks/results/libero_robustness")
    args = p.parse_args(argv)
    try:
        every = variants(
            args.suite,
            args.tasks,
            args.object_shift,
            args.camera,
            args.object_scatter,
            swaps=args.swap,
            robot_joints=args.robot_joints,
            lights=args.light,
            light_turns=args.light_turn,
            scene_tints=args.scene_tint,
            scene_textures=args.scene_textures,
            image_noise=args.image_noise,
            language=args.language,
        )
    except ValueError as e:  # a bad amount, named by its Perturbation field
        p.error(str(e))
    try:
        rows = select_variants(every, args.rows)
    except ValueError as e:
        p.error(f"--rows: {e}")
    for name, v in rows.items():
        if "instructions" in v:
            for t, text in v["instructions"].items():
                print(f"{name}: task {t}: {text!r}")
    return sampling.run(args, rows, "robustness")


if __name__ == "__main__":
    main()
