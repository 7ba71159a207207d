"""The run report of a recipe: the success table, the loss curve and a one-page Markdown summary; and
the table of several suites' runs side by side ([`suites_table`][flowvla.recipes.report.suites_table],
[`format_suites_report`][flowvla.recipes.report.format_suites_report]): the standard LIBERO table."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flowvla.diagnostics import SENSITIVITY_DISTANCES
from flowvla.envs.metrics import wilson_interval

__all__ = [
    "format_success_table",
    "format_suites_report",
    "loss_curve_png",
    "success_table",
    "suite_result",
    "suites_table",
    "write_report",
]


def success_table(summary: dict[str, Any]) -> dict[str, Any]:
    """Per-task and overall success with Wilson 95% intervals, from a rollout summary."""
    rows = []
    for key, t in summary["tasks"].items():
        rows.append(
            {
                "task": key,
                "instruction": t["instruction"],
                "successes": t["successes"],
                "episodes": t["episodes"],
                "success_rate": t["success_rate"],
                "ci95": t["ci95"],
                "mean_steps": t["mean_steps"],
                "outcomes": t.get("outcomes", {}),
            }
        )
    keys = ("successes", "episodes", "success_rate", "ci95", "mean_steps")
    overall = {k: summary[k] for k in keys}
    overall["outcomes"] = summary.get("outcomes", {})
    return {"tasks": rows, "overall": overall}


def _failures(outcomes: dict[str, int]) -> str:
    failed = {k: v for k, v in outcomes.items() if k != "success" and v}
    return ", ".join(f"{k} {v}" for k, v in sorted(failed.items(), key=lambda kv: -kv[1])) or "-"


def format_success_table(table: dict[str, Any]) -> str:
    """The table as Markdown."""
    lines = [
        "| task | instruction | success | 95% CI | mean steps | failures |",
        "|---|---|---|---|---|---|",
    ]
    for r in table["tasks"]:
        lo, hi = r["ci95"]
        lines.append(
            f"| {r['task']} | {r['instruction']} | {r['successes']}/{r['episodes']} "
            f"({100 * r['success_rate']:.0f}%) | {100 * lo:.0f}-{100 * hi:.0f}% | {r['mean_steps']:.0f} | "
            f"{_failures(r.get('outcomes', {}))} |"
        )
    o = table["overall"]
    lo, hi = o["ci95"]
    lines.append(
        f"| **all** | | **{o['successes']}/{o['episodes']} ({100 * o['success_rate']:.1f}%)** | "
        f"{100 * lo:.1f}-{100 * hi:.1f}% | {o['mean_steps']:.0f} | {_failures(o.get('outcomes', {}))} |"
    )
    return "\n".join(lines)


def loss_curve_png(log_path: str | Path, png_path: str | Path, keys: tuple[str, ...] = ("action",)) -> bool:
    """Plot the training log's losses (and validation loss when logged) against the step.

    Returns False (and writes nothing) when matplotlib is missing or the log is empty.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in (*keys, "val_loss"):
        pts = [(r["step"], r[key]) for r in rows if key in r and r[key] is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), label=key)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return True


def write_report(out_dir: str | Path, run: dict[str, Any]) -> Path:
    """Write ``report.md`` from what a run produced (see [`flowvla.recipes.job`][flowvla.recipes.job])."""
    out = Path(out_dir)
    cfg = run["recipe"]
    if "data" in cfg:  # nested (a run folder written before the recipe was nested holds it flat)
        cfg = {"name": cfg["name"], **cfg["data"], **cfg["train"], **cfg["eval"]}
    lines = [f"# flowvla LIBERO recipe `{cfg['name']}`: {cfg['suite']} tasks {cfg['tasks']}", ""]
    table = run.get("success")
    if table is not None:
        o = table["overall"]
        lo, hi = o["ci95"]
        lines += [
            f"**Success {o['successes']}/{o['episodes']} = {100 * o['success_rate']:.1f}%** "
            f"(Wilson 95% {100 * lo:.1f}-{100 * hi:.1f}%) on the official init states "
            f"0-{cfg['init_states'] - 1} of each task.",
            "",
            format_success_table(table),
            "",
        ]
    phases = run.get("phases", {})
    if phases:
        lines += ["## Time", "", "| phase | minutes | note |", "|---|---|---|"]
        for name, p in phases.items():
            lines.append(f"| {name} | {p.get('seconds', 0) / 60:.1f} | {p.get('note', '')} |")
        total = sum(p.get("seconds", 0) for p in phases.values())
        lines += [f"| **total** | **{total / 60:.1f}** | |", ""]
    parity = run.get("parity")
    if parity is not None:
        lines += ["## Train/eval parity", ""]
        lines += [
            f"- {'PASS' if c['passed'] else 'FAIL'} {c['name']}: {c['detail']}" for c in parity["checks"]
        ]
        lines.append("")
    train = run.get("train")
    if train is not None:
        lines += [
            "## Training",
            "",
            f"{train.get('step')} steps of batch {cfg['batch_size']} in "
            f"{train.get('seconds', 0) / 60:.1f} min; "
            f"last losses {json.dumps(train.get('last_losses', {}), default=float)[:300]}.",
            "",
        ]
    if (out / "loss.png").is_file():
        lines += ["![loss curve](loss.png)", ""]
    sens = run.get("sensitivity")
    if sens is not None:
        columns = [(k, label) for k, label in SENSITIVITY_DISTANCES.items() if k in sens]
        lines += [
            "## Sensitivity of the trained policy",
            "",
            "| " + " | ".join(label for _, label in columns) + " |",
            "|" + "---|" * len(columns),
            "| " + " | ".join(f"{sens[k]:.4f}" for k, _ in columns) + " |",
            "",
            f"L2 distances between predicted action chunks (same noise); checks: {sens['checks']}.",
            "",
        ]
        usage = sens.get("layer_usage")
        if usage is not None:
            per_layer = usage["per_layer"]
            lines += [
                "## Layers the flow head reads",
                "",
                "| layer | " + " | ".join(str(i) for i in range(len(per_layer))) + " |",
                "|" + "---|" * (len(per_layer) + 1),
                "| router weight | " + " | ".join(f"{v:.3f}" for v in per_layer) + " |",
                "",
                f"Mean over the head's blocks and the sensitivity batch (layer 0: the embeddings); the "
                f"largest spread of a weight across samples: {usage['sample_spread']:.3f} (0: the same "
                "choice for every input).",
                "",
            ]
    videos = sorted((out / "eval" / "videos").glob("*")) if (out / "eval" / "videos").is_dir() else []
    if videos:
        lines += ["## Videos", ""] + [f"- [{v.name}](eval/videos/{v.name})" for v in videos] + [""]
    lines += ["## Recipe", "", "```json", json.dumps(cfg, indent=1), "```", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _instruction_lines(present: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """The rows of each suite's instruction check (see
    [`check_instructions`][flowvla.recipes.instruction_check.check_instructions]), as Markdown."""
    checked = [(n, r["instructions"]) for n, r in present if r.get("instructions")]
    if not checked:
        return []
    lines = [
        "## Does each policy read its instruction?",
        "",
        "| suite | told | scored on | tasks | success | 95% CI | the official words, same episodes |",
        "|---|---|---|---|---|---|---|",
    ]
    told = {"changed_task": "another task its scene allows", "swapped_instruction": "the next task's words"}
    for n, check in checked:
        for row in check["rows"].values():
            name = row["name"]
            # One policy for several suites has each suite's rows.
            label = n if row["suite"] == n else f"{row['suite']} (`{n}`)"
            o = row["success"]["overall"]
            ref = row.get("official")
            ref_text = "-"
            if ref:
                ref_text = f"{ref['successes']}/{ref['episodes']} ({100 * ref['success_rate']:.0f}%)"
            lines.append(
                f"| {label} | {told.get(name, name)} | {row['scored_on']} | {len(row['tasks'])} | "
                f"{o['successes']}/{o['episodes']} ({100 * o['success_rate']:.0f}%) | "
                f"{100 * o['ci95'][0]:.0f}-{100 * o['ci95'][1]:.0f}% | {ref_text} |"
            )
    inits = sorted({c["init_states"] for _, c in checked})
    lines += [
        "",
        f"On the first {'/'.join(map(str, inits))} official init states of each task. A policy that "
        "obeys its words keeps its success when told another task and scored on it, and drops towards 0 "
        "when told the next task's words but scored on its own goal; one that reads the task off the "
        "scene does the opposite. libero_spatial has no changed-task row: its words name the bowl by "
        "where it lies.",
        "",
    ]
    return lines


# ------------------------------------------------------------------------- several suites, one table
def _task_key(suite: str, key: Any) -> str:
    """``"suite/index"`` of a task named by its index (a one-suite run) or already so."""
    return str(key) if "/" in str(key) else f"{suite}/{key}"


def _pooled(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    k, n = sum(r["successes"] for r in rows), sum(r["episodes"] for r in rows)
    return {"successes": k, "episodes": n, "success_rate": k / n if n else None,
            "ci95": list(wilson_interval(k, n)) if n else None}  # fmt: skip


def suite_result(run: Mapping[str, Any]) -> dict[str, Any]:
    """One run's part of the table, from its ``run.json`` (see
    [`load_run`][flowvla.recipes.job.load_run]): success per task and overall (None before its
    evaluation) and per suite (``per_suite``: one entry, or one per suite of a several-suite run),
    whether every episode of the protocol is in, minutes per phase, the training's end, the
    sensitivity distances, and the tasks trained without demonstrations (keyed ``"suite/index"``)."""
    cfg = run["recipe"]
    suite = cfg["data"]["suite"]
    suites = suite.split("+")
    expected = len(cfg["data"]["tasks"]) * cfg["eval"]["init_states"] * len(suites)
    table = run.get("success")
    episodes = table["overall"]["episodes"] if table else 0
    sens = run.get("sensitivity") or {}
    train = run.get("train") or {}
    left_out = (run.get("phases", {}).get("data") or {}).get("left_out", {})
    untrained = {_task_key(suite, k): why for k, why in left_out.items()}
    if table is not None and untrained:
        rows = [{**t, "demonstrations": t["task"] not in untrained} for t in table["tasks"]]
        table = {**table, "tasks": rows}
    per_suite = None
    if table is not None:
        per_suite = {s: _pooled([t for t in table["tasks"] if t["task"].split("/")[0] == s]) for s in suites}
    return {
        "suite": suite,
        "preset": cfg["name"],
        "expected_episodes": expected,
        "complete": bool(run.get("finished")) and episodes == expected,
        "success": table,
        "per_suite": per_suite,
        "phases_minutes": {k: p.get("seconds", 0.0) / 60 for k, p in run.get("phases", {}).items()},
        "train": {k: train.get(k) for k in ("step", "stopped")},
        "sensitivity": {k: sens[k] for k in SENSITIVITY_DISTANCES if k in sens},
        "untrained_tasks": untrained,
    }


def suites_table(
    results: Mapping[str, Mapping[str, Any] | None],
    shared: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """Suites side by side: each suite's [`suite_result`][flowvla.recipes.report.suite_result] (None:
    not run yet) and their average, the field's headline number: the mean of the suites' success rates
    (with equal episodes per suite, as the protocol has, the pooled rate; its Wilson 95% interval is
    the pooled one). ``average.suites`` says over how many suites it was taken. ``shared``: runs of
    one policy for several suites (preset name -> its result, None: not run yet), reported beside
    the per-suite policies and not in their average."""
    done = {k: r for k, r in results.items() if r is not None and r.get("success")}
    rates = [r["success"]["overall"]["success_rate"] for r in done.values()]
    k = sum(r["success"]["overall"]["successes"] for r in done.values())
    n = sum(r["success"]["overall"]["episodes"] for r in done.values())
    average = {
        "suites": len(done),
        "of": len(results),
        "complete": len(done) == len(results) and all(r["complete"] for r in done.values()),
        "success_rate": sum(rates) / len(rates) if rates else None,
        "successes": k,
        "episodes": n,
        "ci95": list(wilson_interval(k, n)) if n else None,
    }
    return {"suites": dict(results), "average": average, "shared": dict(shared or {})}


def _pct(rate: float | None, ci: Sequence[float] | None = None) -> str:
    if rate is None:
        return "-"
    text = f"{100 * rate:.1f}"
    return f"{text} ({100 * ci[0]:.1f}-{100 * ci[1]:.1f})" if ci is not None else text


def _detail_lines(name: str, r: Mapping[str, Any] | None) -> list[str]:
    """One run's section of the suites report: its per-task table (Wilson interval, failures, video)."""
    lines = [f"## {name}", ""]
    if r is None or not r.get("success"):
        return [*lines, "Not evaluated yet.", ""]
    o = r["success"]["overall"]
    lines += [
        f"Preset `{r['preset']}`: {o['successes']}/{o['episodes']} of {r['expected_episodes']} "
        f"episodes{'' if r['complete'] else ' so far'}.",
        "",
        "| task | instruction | success | 95% CI | mean steps | failures | video |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in r["success"]["tasks"]:
        lo, hi = t["ci95"]
        video = f"[video]({t['video']})" if t.get("video") else "-"
        untrained = " (no demonstrations: not trained on)" if t.get("demonstrations") is False else ""
        lines.append(
            f"| {t['task']}{untrained} | {t['instruction']} | {t['successes']}/{t['episodes']} | "
            f"{100 * lo:.0f}-{100 * hi:.0f}% | {t['mean_steps']:.0f} | "
            f"{_failures(t.get('outcomes', {}))} | {video} |"
        )
    return [
        *lines,
        f"| **all** | | **{o['successes']}/{o['episodes']}** | {100 * o['ci95'][0]:.1f}-"
        f"{100 * o['ci95'][1]:.1f}% | {o['mean_steps']:.0f} | {_failures(o.get('outcomes', {}))} | |",
        "",
    ]


def _shared_lines(
    suites: Sequence[str], table: Mapping[str, Any], shared: Mapping[str, Mapping[str, Any] | None]
) -> tuple[list[str], list[str]]:
    """The main table's rows of the one-policy runs, and lines saying what sharing costs or gains per
    suite."""
    rows, notes = [], []
    for name, r in shared.items():
        per = (r or {}).get("per_suite") or {}
        cells, rates = [], []
        for s in suites:
            p = per.get(s)
            cells.append(_pct(p["success_rate"], p["ci95"]) if p and p["episodes"] else "-")
            if p and p["episodes"]:
                rates.append(p["success_rate"])
        mean = _pct(sum(rates) / len(rates)) if rates and len(rates) == len(suites) else "-"
        star = "" if r and r["complete"] else " *"
        rows.append(f"| flowvla, one policy (`{name}`){star} | {' | '.join(cells)} | {mean} |")
        diffs = []
        for s in suites:
            own = (table["suites"].get(s) or {}).get("success")
            p = per.get(s)
            if own and p and p["episodes"]:
                diffs.append(f"{s} {100 * (p['success_rate'] - own['overall']['success_rate']):+.1f}")
        if diffs:
            notes.append(f"`{name}` against one policy per suite (points): {', '.join(diffs)}.")
    return rows, notes


def format_suites_report(
    table: Mapping[str, Any],
    anchors: Mapping[str, Mapping[str, float]],
    *,
    title: str = "flowvla on the standard LIBERO suites",
    anchors_note: str = "",
) -> str:
    """The standard LIBERO table as a Markdown page: success per suite and their average beside the
    ``anchors`` (name -> suite -> success %, as published), then each suite's per-task table (Wilson
    interval, failure outcomes, a video per task where its row has ``video``), the sensitivity of each
    suite's policy and the minutes each phase took."""
    suites = list(table["suites"])
    avg = table["average"]
    lines = [f"# {title}", ""]
    status = f"{avg['suites']} of {avg['of']} suites evaluated, {avg['episodes']} episodes"
    lines += [f"{status}{'' if avg['complete'] else ' (incomplete: runs resume where they stopped)'}.", ""]
    lines += ["## Success (%) by the standard protocol", ""]
    header = "| policy | " + " | ".join(suites) + " | average |"
    lines += [header, "|" + "---|" * (len(suites) + 2)]
    cells = []
    for name in suites:
        r = table["suites"][name]
        o = (r or {}).get("success") and r["success"]["overall"]
        cells.append(_pct(o["success_rate"], o["ci95"]) + ("" if r["complete"] else " *") if o else "-")
    mean = avg["success_rate"]
    lines.append(
        f"| **flowvla** | {' | '.join(cells)} | **{_pct(mean)}**"
        + (f" ({avg['suites']} suites)" if avg["suites"] != avg["of"] and mean is not None else "")
        + " |"
    )
    shared_rows, shared_notes = _shared_lines(suites, table, table.get("shared") or {})
    lines += shared_rows
    for name, row in anchors.items():
        vals = [row.get(s) for s in suites]
        known = [v for v in vals if v is not None]
        anchor_mean = sum(known) / len(known) if len(known) == len(vals) else None
        text = " | ".join("-" if v is None else f"{v:.1f}" for v in vals)
        lines.append(f"| {name} | {text} | {'-' if anchor_mean is None else f'{anchor_mean:.2f}'} |")
    lines += [
        "",
        "flowvla: success with its Wilson 95% interval; * a suite whose run is not finished. "
        "The average is the mean of the suites' rates.",
    ]
    lines += ["", *shared_notes] if shared_notes else []
    lines += [anchors_note, ""] if anchors_note else [""]
    shared = {n: r for n, r in (table.get("shared") or {}).items()}
    for name, r in [*((n, table["suites"][n]) for n in suites), *shared.items()]:
        lines += _detail_lines(name, r)
    present = [(n, table["suites"][n]) for n in suites if table["suites"][n] is not None]
    present += [(n, r) for n, r in shared.items() if r is not None]
    lines += _instruction_lines(present)
    columns = [
        (k, label)
        for k, label in SENSITIVITY_DISTANCES.items()
        if any(k in r["sensitivity"] for _, r in present)
    ]
    if columns:
        lines += [
            "## Sensitivity of each suite's policy",
            "",
            "| suite | " + " | ".join(label for _, label in columns) + " |",
            "|" + "---|" * (len(columns) + 1),
        ]
        for n, r in present:
            vals = [f"{r['sensitivity'][k]:.4f}" if k in r["sensitivity"] else "-" for k, _ in columns]
            lines.append(f"| {n} | " + " | ".join(vals) + " |")
        lines += [
            "",
            "L2 distances between predicted action chunks (same noise); see each run's report.md.",
            "",
        ]
    phases = ["data", "parity", "train", "eval", "sensitivity"]
    lines += [
        "## Compute per phase (minutes, summed over every call)",
        "",
        "| suite | " + " | ".join(phases) + " | total | training |",
        "|" + "---|" * (len(phases) + 3),
    ]
    totals = dict.fromkeys(phases, 0.0)
    for n, r in present:
        mins = r["phases_minutes"]
        for p in phases:
            totals[p] += mins.get(p, 0.0)
        trained = r["train"]
        steps = f"{trained['step']} steps ({trained['stopped']})" if trained.get("step") is not None else "-"
        cells = " | ".join(f"{mins[p]:.1f}" if p in mins else "-" for p in phases)
        lines.append(f"| {n} | {cells} | {sum(mins.values()):.1f} | {steps} |")
    lines += [
        f"| **all** | {' | '.join(f'{totals[p]:.1f}' for p in phases)} | **{sum(totals.values()):.1f}** | |",
        "",
    ]
    return "\n".join(lines)
