"""The run report of a recipe: the success table, the loss curve and a one-page Markdown summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flowvla.diagnostics import SENSITIVITY_DISTANCES

__all__ = ["loss_curve_png", "success_table", "write_report"]


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
