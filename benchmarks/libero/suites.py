"""The standard LIBERO table: the four suites' presets in turn, then one report beside the field's anchors.

    python benchmarks/libero/suites.py --out runs/suites                  # all four, ~4 h a suite on 2 cores
    python benchmarks/libero/suites.py --out runs/suites --suites libero_goal,libero_10
    python benchmarks/libero/suites.py --out runs/suites --suites libero_40   # one policy, 40 tasks
    python benchmarks/libero/suites.py --out runs/suites --set eval.workers=2 --cache DIR
    python benchmarks/libero/suites.py --out runs/suites --report-only    # the table of what is done
    python benchmarks/libero/suites.py --out /tmp/suites-smoke --smoke    # toy sizes: minutes

Each suite runs its preset (``libero_spatial``, ``libero_object``, ``libero_goal``, ``libero_10``:
all 10 tasks, the 50 official init states, the suite's step limit, 10 settling steps) as
[`run_recipe`][flowvla.recipes.libero.run_recipe] does, into ``<out>/<suite>/``: data, parity,
training, evaluation, sensitivity, report. Run the same command again after an interruption, on this
machine or another one that has the ``<out>`` folder: a finished suite is not touched, a cut one
continues its phase (generation from its attempt logs, training from its last checkpoint,
evaluation from its episode records), and the demonstrations are read only by a phase still to do (a
run carried to a new machine with its training done evaluates without regenerating them; the cache,
``--cache`` / ``$FLOWVLA_CACHE``, is regenerated there when a phase needs it). A task the scripted
expert does not solve is trained without and still evaluated (the presets'
``data.unsolved_tasks=train_without``; the table marks it). A suite that fails (a parity failure, no
task with demonstrations) is reported and the next one runs; the command then exits with status 1.

After a suite's run is finished, its policy is told other tasks' instructions on the first
``--instruction-check`` official init states of each task (default 10; 0: none;
[`check_instructions`][flowvla.recipes.instruction_check.check_instructions]): told another task its
scene allows and scored on that task (``changed_task``), and told the next task's words but scored on
its own goal (``swapped_instruction``), so the table says whether each suite's policy reads its
instruction or the scene alone. Resumable like the rest; the rows' records stay under
``<out>/<suite>/instructions/``.

Writes ``<out>/suites.md`` and ``<out>/suites.json`` (also with ``--report-only``, from whatever the
run folders hold): success per suite with its Wilson 95% interval and their average beside the
anchors' published rows, per task success, failure outcomes and a video (every control step at 256
px, captioned), the instruction rows, each suite's sensitivity, and the minutes of every phase.

``--suites libero_40`` runs the ``libero_40`` preset: one policy trained on the four suites' 40 tasks
(the suite presets' own demonstrations, read from their cache folders) and evaluated on each suite
by its protocol; the table reports it beside the per-suite policies (its own row, each suite's
difference in points against the suite's own policy) and not in their average.

``--smoke`` runs the same machinery at the ``toy`` preset's sizes (task 0 of each suite, one
demonstration, 4 training steps, one 16-step episode): a check that a new machine runs every phase
of every suite, not a result.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flowvla.checks import SettingError, UserError
from flowvla.cli import fail
from flowvla.profiling import write_results
from flowvla.recipes.config import RecipeConfig
from flowvla.recipes.instruction_check import check_instructions, load_instruction_check
from flowvla.recipes.job import load_run
from flowvla.recipes.libero import parse_settings, preset, run_recipe
from flowvla.recipes.report import format_suites_report, suite_result, suites_table
from flowvla.recipes.settings import ALL_SUITES_PRESET, SUITE_PRESETS

#: Published success (%) per suite, in the protocol's order (spatial / object / goal / 10), as issue
#: 35 quotes them: every one trained on LIBERO's human demonstrations with a pretrained VLM on GPUs.
ANCHORS: dict[str, dict[str, float]] = {
    name: dict(zip(SUITE_PRESETS, values, strict=True))
    for name, values in {
        "pi0": (96.8, 98.8, 95.8, 85.2),
        "pi0.5": (98.8, 98.2, 98.0, 92.4),
        "OpenVLA-OFT": (97.6, 98.4, 97.9, 94.5),
    }.items()
}

ANCHORS_NOTE = (
    "The anchors learn from LIBERO's human teleoperation demonstrations (50 per task), fine-tuning "
    "pretrained vision-language models on GPUs; flowvla learns from its own scripted expert's "
    "demonstrations (noise-burst recoveries included) with a small policy trained from scratch on 2 "
    "CPU cores. Both are scored on the same official init states, step limits and settling steps."
)


def suite_configs(
    suites: Sequence[str], settings: Mapping[str, Any], *, smoke: bool
) -> dict[str, RecipeConfig]:
    """The recipe of each suite: its preset (``smoke``: the ``toy`` preset on that suite) with
    ``settings`` (paths or flat keys) on top; every one built, so a bad setting is refused before any
    suite runs."""
    known = [*SUITE_PRESETS, ALL_SUITES_PRESET]
    unknown = [s for s in suites if s not in known]
    if unknown or not suites or len(set(suites)) != len(suites):
        raise SettingError("--suites", f"choose from {known}, each once, got {list(suites)}")
    if smoke:
        return {s: preset("toy", **{"data.suite": preset(s).data.suite, **settings}) for s in suites}
    return {s: preset(s, **settings) for s in suites}


def _videos(run_dir: Path, out: Path) -> dict[str, str]:
    """``"suite/index"`` -> the task's video (the first init state's), relative to ``out``."""
    folder = run_dir / "eval" / "videos"
    found: dict[str, str] = {}
    for path in sorted(folder.glob("*_task*_init*.*")) if folder.is_dir() else []:
        suite, _, rest = path.name.rpartition("_task")
        found.setdefault(f"{suite}/{int(rest.split('_')[0])}", path.relative_to(out).as_posix())
    return found


def collect(out: Path, suites: Sequence[str]) -> dict[str, Any]:
    """The table of ``suites`` (the ``libero_40`` preset's one policy beside them, not in their average)
    from their run folders under ``out`` (one not started: None)."""
    results: dict[str, Any] = {}
    # One policy for the four suites is read against all four per-suite policies, whichever ran.
    names = [*SUITE_PRESETS, *suites] if ALL_SUITES_PRESET in suites else suites
    for name in dict.fromkeys(names):
        run = load_run(out / name)
        if "recipe" not in run:
            results[name] = None
            continue
        result = suite_result(run)
        videos = _videos(out / name, out)
        for row in (result["success"] or {}).get("tasks", []):
            row["video"] = videos.get(row["task"])
        result["instructions"] = load_instruction_check(out / name)
        results[name] = result
    shared = {n: results.pop(n) for n in list(results) if n == ALL_SUITES_PRESET}
    return suites_table(results, shared)


def write_table(out: Path, suites: Sequence[str], errors: Mapping[str, str], argv: Sequence[str]) -> dict:
    """Write ``suites.md`` and ``suites.json`` under ``out``; return what the JSON holds."""
    table = collect(out, suites)
    text = format_suites_report(table, ANCHORS, anchors_note=ANCHORS_NOTE)
    if errors:
        text += "\n## Errors\n\n" + "\n".join(f"- {s}: {e.splitlines()[0]}" for s, e in errors.items()) + "\n"
    text += f"\nCommand: `python benchmarks/libero/suites.py {' '.join(argv)}`\n"
    (out / "suites.md").write_text(text)
    result = {**table, "anchors": ANCHORS, "anchors_note": ANCHORS_NOTE, "errors": dict(errors)}
    result["command"] = f"python benchmarks/libero/suites.py {' '.join(argv)}"
    write_results(out / "suites.json", result)
    return result


def run_suites(
    out: str | Path,
    suites: Sequence[str] = SUITE_PRESETS,
    settings: Mapping[str, Any] | None = None,
    *,
    smoke: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    parity: bool = True,
    argv: Sequence[str] = (),
    instruction_check: int = 10,
    episode_fn: Any = None,
    expert_episode_fn: Any = None,
) -> dict[str, Any]:
    """Run (or resume) each suite's recipe into ``<out>/<suite>``, tell its trained policy other tasks'
    instructions on the first ``instruction_check`` init states of each task (0: not), then write the
    table; returns it.

    ``episode_fn`` / ``expert_episode_fn``: the evaluation's and the generator's episodes (see
    [`run_job`][flowvla.recipes.job.run_job]); tests inject them.
    """
    out = Path(out)
    configs = suite_configs(suites, settings or {}, smoke=smoke)
    if not 0 <= instruction_check <= 50:
        raise SettingError(
            "--instruction-check", f"expected 0-50 init states per task, got {instruction_check}"
        )
    errors: dict[str, str] = {}
    for i, (suite, cfg) in enumerate(configs.items()):
        print(f"=== [{i + 1}/{len(configs)}] {suite} ===", file=sys.stderr, flush=True)
        try:
            run_recipe(
                cfg, out / suite, cache_dir=cache_dir, progress=progress, parity=parity,
                episode_fn=episode_fn, expert_episode_fn=expert_episode_fn,
            )  # fmt: skip
            if instruction_check:
                check_instructions(
                    out / suite, init_states=min(instruction_check, cfg.eval.init_states),
                    progress=progress, episode_fn=episode_fn,
                )  # fmt: skip
        except UserError:
            raise
        except (RuntimeError, ValueError) as e:  # this suite cannot go on; the others can
            errors[suite] = f"{type(e).__name__}: {e}"
            print(f"{suite}: {errors[suite]}", file=sys.stderr, flush=True)
    return write_table(out, list(configs), errors, argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(
        prog="python benchmarks/libero/suites.py", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    ap.add_argument(
        "--out", default="runs/suites", help="root of the four run folders (default: runs/suites)"
    )
    ap.add_argument(
        "--suites",
        default=",".join(SUITE_PRESETS),
        help=f"a comma-separated subset, in order; {ALL_SUITES_PRESET}: one policy for all 40 tasks",
    )
    ap.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE", help="recipe settings for every suite"
    )
    ap.add_argument("--cache", help="demonstration cache (default: $FLOWVLA_CACHE or ~/.cache/flowvla)")
    ap.add_argument(
        "--instruction-check",
        type=int,
        default=10,
        metavar="N",
        help="init states per task on which each trained policy is told other tasks' instructions "
        "(default 10; 0: none)",
    )
    ap.add_argument("--smoke", action="store_true", help="the toy preset's sizes on every suite (minutes)")
    ap.add_argument("--report-only", action="store_true", help="write the table of what the folders hold")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    a = ap.parse_args(argv)
    suites = [s.strip() for s in a.suites.split(",") if s.strip()]
    try:
        settings = parse_settings(a.set)
        if a.report_only:
            suite_configs(suites, settings, smoke=a.smoke)
            result = write_table(Path(a.out), suites, {}, argv)
        else:
            result = run_suites(
                a.out, suites, settings, smoke=a.smoke, cache_dir=a.cache, progress=not a.quiet,
                argv=argv, instruction_check=a.instruction_check,
            )  # fmt: skip
    except UserError as e:
        raise SystemExit(fail(ap.prog, e)) from None
    print((Path(a.out) / "suites.md").read_text())
    print(json.dumps({"results": str(Path(a.out) / "suites.json")}))
    if result["errors"]:
        raise SystemExit(1)
    return result


if __name__ == "__main__":
    main()
