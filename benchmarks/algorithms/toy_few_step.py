"""Few-step sampling routes on a trained policy: the toy flow policy of ``examples/toy_flow_policy.py``.

Issue 16 asks for 1-2 NFE action sampling at the quality of 10 NFE. This script measures two routes
on the example's conditional toy policy (a 2-D goal, a chunk of 16 2-D waypoints passing above or
below an obstacle: two modes) and what each costs against the base training:

* **train-time** (route a): train the same policy (same seed, same demonstration batches, same steps)
  under several flow-matching time distributions, then sample each with plain Euler. Time runs from
  ``t = 0`` (noise) to ``t = 1`` (data), ``x_t = (1 - t) z + t a``, so *high noise is t near 0*:

  ==================  ==============================================  ===========  ========
  name                sampler                                         P(t < 0.1)   mean t
  ==================  ==============================================  ===========  ========
  ``uniform``         ``UniformTimeSampler()``                        0.10         0.50
  ``beta``            ``BetaTimeSampler()`` (library default, pi0:    0.15         0.40
                      ``t = 0.999 (1 - u)``, ``u ~ Beta(1.5, 1)``)
  ``beta3``           ``BetaTimeSampler(alpha=3)``                    0.27         0.25
  ``logitnorm-1.5``   ``LogitNormalTimeSampler(mean=-1.5, std=1)``    0.24         0.22
  ==================  ==============================================  ===========  ========

  (A larger ``alpha`` pushes ``u`` towards 1, i.e. ``t`` towards 0; a *negative* logit-normal mean
  pushes ``t = sigmoid(n)`` towards 0. The measured fractions are written to the JSON.) Its cost is
  the training itself: same steps, so the same seconds as the base (``beta``) model.
* **learned solver** (route b): ``fit_bespoke_solver`` (learned per-step times and scales of a base
  Euler step, 4 numbers per step, plus one scale) fitted to each trained field at 1, 2 and 4 steps,
  on other goals and noise than the held-out ones, against that model's own dopri5 solution. Its
  cost: the fit's seconds and teacher evaluations (field calls x samples, the fit reference's
  included), against the model's training seconds and training evaluations (steps x batch x repeats,
  forward and backward).

* **shortcut student** (route c, ``--shortcut-iterations N``, default 6000, lr 1e-3, 75% of each
  batch on the self-consistency target): each trained field is
  copied into a student that also takes the step size ``d`` (Fourier features of ``d`` join the
  first layer's input with zero weights, so the student starts as the teacher: its ``n`` shortcut
  steps are the teacher's Euler@n), then trained with the shortcut self-consistency target
  (``flowvla.flow.distill_shortcut``, conditional on the goal; ``d = 0`` rows regress the teacher's
  own velocity) on fresh demonstration batches. Its cost: the distillation's seconds and teacher
  evaluations. Unlike an ODE solver it is not bound to ``E[a | goal]`` at one step: ``s(z, 0, 1)``
  can learn the whole map from noise to the end of the teacher's flow, which picks a mode.

On held-out goals and noise, every model is sampled with Euler on the uniform grid at NFE 1, 2, 4,
10, with its bespoke solvers at NFE 1, 2, 4 and with its shortcut student at NFE 1, 2, 4. Reported
per configuration:

* ``off_mode``: the example's task metric, RMS distance of each sampled chunk to the nearer of its
  goal's two demonstrated paths (lower is better). The dopri5 solution's own ``off_mode`` is what
  exact sampling of that model scores (its "floor" as a solver target; not a strict bound: a coarse
  solver's error can move samples towards the demonstrations as well as away);
* ``ode_err``: RMS distance to the model's own dopri5 solution (solver accuracy).

A row "reaches Euler@10" at NFE n when its off_mode there is within ``--tolerance`` (5%) of the same
model's Euler@10 off_mode.

Note: with an exact flow-matching field, one Euler step from ``t = 0`` lands on ``E[a | goal]``, the
mean of the two modes (``v(z, 0) = E[a] - z`` since ``x_0 = z`` carries no information about ``a``),
whatever the training time distribution (its off_mode is then 0.6 sqrt(mean sin^2) / sqrt(2) ~ 0.29);
1-step Euler can only look better than that through a field that is *not* exact.

Usage::

    python benchmarks/algorithms/toy_few_step.py            # 3000 training steps per model, as the example
    python benchmarks/algorithms/toy_few_step.py --quick    # 200 steps, small fits: a smoke run
    python benchmarks/algorithms/toy_few_step.py --steps 1000 --samplers uniform,beta,beta3 --out DIR

Writes ``toy_few_step.json`` and ``toy_few_step.png`` to ``--out``
(default ``benchmarks/results/toy_few_step``). Times are wall seconds and CPU seconds of this
process (one intra-op thread by default, so CPU seconds approximate an idle core's wall time).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import math
from pathlib import Path

import torch

from flowvla.flow import (
    BetaTimeSampler,
    FlowMatchingObjective,
    LogitNormalTimeSampler,
    UniformTimeSampler,
    distill_shortcut,
    shortcut_sample,
)
from flowvla.profiling import Stopwatch, agg_pyplot, markdown_table, timing_settings, write_results
from flowvla.solvers import DormandPrince54Solver, create_solver, fit_bespoke_solver, grid_times

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "toy_flow_policy.py"

SAMPLERS = {
    "uniform": UniformTimeSampler(),
    "beta": BetaTimeSampler(),
    "beta3": BetaTimeSampler(alpha=3.0),
    "logitnorm-1.5": LogitNormalTimeSampler(mean=-1.5, std=1.0),
}
"""Training time distributions, by name (``beta`` is the library default and the cost baseline)."""
BASE = "beta"
EULER_NFES = [1, 2, 4, 10]
BESPOKE_STEPS = [1, 2, 4]
SHORTCUT_STEPS = [1, 2, 4]
BATCH, REPEATS = 256, 2  # the example's training batch and time draws per chunk


def load_example():
    """``examples/toy_flow_policy.py`` as a module (the toy task, its model, metric and training loop)."""
    spec = importlib.util.spec_from_file_location("toy_flow_policy", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class StepVelocityMLP(torch.nn.Module):
    """The example's ``VelocityMLP`` with a step-size input: ``s(x, t, d | goal)`` for shortcut sampling.

    Built from a trained field: its layers are copied, and the first layer gets Fourier features of
    ``d`` as extra inputs with zero weights, so until trained the student *is* the teacher for every
    ``d`` (``n`` shortcut steps = the teacher's Euler@n).
    """

    def __init__(self, teacher: torch.nn.Module) -> None:
        super().__init__()
        first = teacher.net[0]
        self.register_buffer("freqs", teacher.freqs.clone())
        grown = torch.nn.Linear(first.in_features + 2 * self.freqs.numel(), first.out_features)
        with torch.no_grad():
            grown.weight.zero_()
            grown.weight[:, : first.in_features] = first.weight
            grown.bias.copy_(first.bias)
        layers = [grown] + [copy.deepcopy(m) for m in list(teacher.net)[1:]]
        self.net = torch.nn.Sequential(*layers).requires_grad_(True)

    def forward(self, x: torch.Tensor, t: torch.Tensor, d: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        tf, df = t[:, None] * self.freqs, d[:, None] * self.freqs
        inp = torch.cat([x.flatten(-2), goal, tf.sin(), tf.cos(), df.sin(), df.cos()], dim=-1)
        return self.net(inp).view_as(x)


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).square().mean().sqrt())


def time_stats(sampler, n: int = 200_000) -> dict:
    """Where ``sampler`` puts its mass: P(t < 0.1), P(t < 0.25), P(t > 0.9), mean."""
    t = sampler.sample(n, generator=torch.Generator().manual_seed(0))
    return {
        "repr": repr(sampler),
        "p_below_0.1": float((t < 0.1).float().mean()),
        "p_below_0.25": float((t < 0.25).float().mean()),
        "p_above_0.9": float((t > 0.9).float().mean()),
        "mean": float(t.mean()),
    }


def evaluate_model(
    toy,
    model,
    data: dict,
    *,
    iterations: int,
    lr: float,
    shortcut_iterations: int = 0,
    shortcut_lr: float = 1e-3,
    shortcut_consistency: float = 0.75,
) -> dict:
    """Euler, bespoke-Euler and shortcut-student samples of one trained ``model``, on the held-out data.

    Args:
        toy: the example module.
        model: a trained ``VelocityMLP`` (its parameters are frozen here).
        data: ``test_goal``, ``z_test`` (held out) and ``fit_goal``, ``z_fit`` (for the fits).
        iterations: Adam steps per bespoke fit.
        lr: Adam learning rate of the fits.
        shortcut_iterations: AdamW steps of the shortcut distillation (0: no student).
        shortcut_lr: its peak learning rate.
        shortcut_consistency: its share of self-consistency rows per batch.

    Returns:
        ``{"dopri": ..., "euler": {nfe: ...}, "bespoke": {nfe: ...}, "shortcut": {nfe: ...},
        "reference_cost": ..., "shortcut_cost": ...}``.
    """
    model.requires_grad_(False)
    test_goal, z_test, fit_goal, z_fit = data["test_goal"], data["z_test"], data["fit_goal"], data["z_fit"]
    fine = DormandPrince54Solver(atol=1e-6, rtol=1e-6, max_nfe=5000)
    with torch.no_grad():
        ref = fine.solve(model, z_test, [0.0, 1.0], goal=test_goal)
        with Stopwatch() as clock:
            ref_fit = fine.solve(model, z_fit, [0.0, 1.0], goal=fit_goal)
    out: dict = {
        "dopri": {"off_mode": toy.off_mode(ref.x, test_goal), "nfe": ref.nfe},
        "reference_cost": {
            "seconds": clock.wall,
            "cpu_seconds": clock.cpu,
            "teacher_nfe": ref_fit.nfe * z_fit.shape[0],
        },
        "euler": {},
        "bespoke": {},
    }
    euler = create_solver("euler")
    with torch.no_grad():
        for nfe in EULER_NFES:
            x = euler.solve(model, z_test, grid_times("uniform", nfe), goal=test_goal).x
            x_fit = euler.solve(model, z_fit, grid_times("uniform", nfe), goal=fit_goal).x
            out["euler"][nfe] = {
                "off_mode": toy.off_mode(x, test_goal),
                "ode_err": _rms(x, ref.x),
                "fit_ode_err": _rms(x_fit, ref_fit.x),
            }
    for steps in BESPOKE_STEPS:
        with Stopwatch() as clock:
            solver = fit_bespoke_solver(
                model,
                z_fit,
                base="euler",
                steps=steps,
                reference=ref_fit.x,
                iterations=iterations,
                lr=lr,
                goal=fit_goal,
            )
        with torch.no_grad():
            x = solver.solve(model, z_test, grid_times("uniform", steps), goal=test_goal).x
        info = solver.info
        out["bespoke"][solver.nfe] = {
            "off_mode": toy.off_mode(x, test_goal),
            "ode_err": _rms(x, ref.x),
            "fit": {
                "fit_error": info["fit_error"],
                "init_error": info["init_error"],
                "iterations": info["iterations"],
                "parameters": info["num_parameters"],
                "seconds": clock.wall,
                "cpu_seconds": clock.cpu,
                "teacher_nfe": info["teacher_nfe"],
            },
            "params": solver.to_dict()["params"],
        }
    if shortcut_iterations > 0:
        demos = torch.Generator().manual_seed(20)  # other goals than the held-out and fitting ones

        def draws(n: int) -> tuple[torch.Tensor, dict]:
            goal, chunk = toy.demonstrations(n, demos)
            return chunk, {"goal": goal}

        torch.manual_seed(0)
        with Stopwatch() as clock:
            student, info = distill_shortcut(
                model,
                draws,
                (toy.H, toy.A),
                student=StepVelocityMLP(model),
                iterations=shortcut_iterations,
                batch_size=BATCH,
                lr=shortcut_lr,
                consistency_fraction=shortcut_consistency,
            )
        out["shortcut_cost"] = {
            "seconds": clock.wall,
            "cpu_seconds": clock.cpu,
            "teacher_nfe": info["teacher_evaluations"],
            "iterations": shortcut_iterations,
            "lr": shortcut_lr,
            "consistency_fraction": shortcut_consistency,
            "final_loss": info["final_loss"],
        }
        out["shortcut"] = {}
        with torch.no_grad():
            for steps in SHORTCUT_STEPS:
                x = shortcut_sample(student, z_test, steps, goal=test_goal)
                out["shortcut"][steps] = {"off_mode": toy.off_mode(x, test_goal), "ode_err": _rms(x, ref.x)}
    return out


def summarize(samplers: dict, models: dict, tolerance: float) -> dict[str, dict]:
    """The table's rows, ``<sampler>/<route>``, each with its errors, dopri5 value, verdicts and cost."""
    base = samplers.get(BASE) or next(iter(samplers.values()))
    rows: dict[str, dict] = {}
    for name, res in models.items():
        train = samplers[name]["train"]
        euler10 = res["euler"][10]["off_mode"]
        for route in [r for r in ("euler", "bespoke", "shortcut") if r in res]:
            per = res[route]
            if route == "euler":  # route (a): the training run itself is the cost
                cost = {
                    "seconds": train["seconds"],
                    "cpu_seconds": train["cpu_seconds"],
                    "field_evals": train["field_evals"],
                }
                extra_cpu = train["cpu_seconds"] - base["train"]["cpu_seconds"]
            elif route == "shortcut":  # route (c): the distillation, on top of the training
                c = res["shortcut_cost"]
                cost = {k: c[k] for k in ("seconds", "cpu_seconds", "teacher_nfe")}
                extra_cpu = cost["cpu_seconds"]
            else:  # route (b): the fits and their reference, on top of the training
                fits = [v["fit"] for v in per.values()] + [res["reference_cost"]]
                cost = {
                    "seconds": sum(f["seconds"] for f in fits),
                    "cpu_seconds": sum(f["cpu_seconds"] for f in fits),
                    "teacher_nfe": sum(f["teacher_nfe"] for f in fits),
                }
                extra_cpu = cost["cpu_seconds"]
            rows[f"{name}/{route}"] = {
                "sampler": name,
                "route": route,
                "off_mode": {str(n): v["off_mode"] for n, v in per.items()},
                "ode_err": {str(n): v["ode_err"] for n, v in per.items()},
                "dopri_off_mode": res["dopri"]["off_mode"],
                "euler10_off_mode": euler10,
                "reaches_euler10": {
                    str(n): per[n]["off_mode"] <= (1 + tolerance) * euler10 for n in (1, 2) if n in per
                },
                "cost": cost,
                "extra_cpu_seconds_vs_base_training": extra_cpu,
                "extra_vs_base_training": extra_cpu / base["train"]["cpu_seconds"],
            }
    return rows


def print_table(rows: dict[str, dict], tolerance: float) -> None:
    print(
        f"\noff_mode on held-out goals and noise (lower is better); 'E10?' = within {tolerance:.0%} "
        "of the same model's Euler@10; extra = CPU s added over the base (beta) training"
    )
    nfes = [f"NFE {n}" for n in EULER_NFES]

    def cells(r: dict, metric: str) -> list[str]:
        return [f"{r[metric][str(n)]:.4f}" if str(n) in r[metric] else "" for n in EULER_NFES]

    header = ["time dist / route", *nfes, "dopri5", "1 E10?", "2 E10?", "extra CPU s", "extra / base"]
    table = [
        [
            key,
            *cells(r, "off_mode"),
            f"{r['dopri_off_mode']:.4f}",
            *("yes" if r["reaches_euler10"].get(str(n)) else "no" for n in (1, 2)),
            f"{r['extra_cpu_seconds_vs_base_training']:+.1f}",
            f"{r['extra_vs_base_training']:+.1%}",
        ]
        for key, r in rows.items()
    ]
    print(markdown_table(header, table))
    print("\node_err (RMS to the model's own dopri5 solution)")
    print(
        markdown_table(["time dist / route", *nfes], [[key, *cells(r, "ode_err")] for key, r in rows.items()])
    )


def plot(rows: dict[str, dict], path: Path) -> bool:
    """off_mode (and ode_err) vs NFE, one line per row; dopri5 values dotted. False without matplotlib."""
    plt = agg_pyplot()
    if plt is None:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    colors: dict[str, str] = {}
    for key, r in rows.items():
        color = colors.setdefault(r["sampler"], f"C{len(colors)}")
        style = {"euler": "-o", "bespoke": "--s"}.get(r["route"], "-.^")
        for ax, metric in zip(axes, ("off_mode", "ode_err"), strict=True):
            ns = sorted(int(n) for n in r[metric])
            ax.plot(ns, [r[metric][str(n)] for n in ns], style, color=color, label=key)
        if r["route"] == "euler":
            axes[0].axhline(r["dopri_off_mode"], color=color, lw=0.8, ls=":")
    axes[0].set(xlabel="NFE", ylabel="off_mode (held out; dotted: dopri5)", xscale="log", xticks=EULER_NFES)
    axes[1].set(xlabel="NFE", ylabel="ode_err: RMS to dopri5", xscale="log", yscale="log", xticks=EULER_NFES)
    for ax in axes:
        ax.set_xticklabels([str(n) for n in EULER_NFES])
        ax.xaxis.set_minor_locator(plt.NullLocator())
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle("toy flow policy: few-step sampling by training time distribution, solver and student")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns what it writes to ``toy_few_step.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 training steps, small fits (smoke run)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per model (default 3000)")
    parser.add_argument(
        "--samplers",
        default=",".join(SAMPLERS),
        help=f"comma-separated training time distributions, of {list(SAMPLERS)}",
    )
    parser.add_argument("--iterations", type=int, default=None, help="Adam steps per bespoke fit")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate of the bespoke fits")
    parser.add_argument(
        "--shortcut-iterations",
        type=int,
        default=None,
        help="AdamW steps of each shortcut distillation (default 6000, 200 with --quick; 0: none)",
    )
    parser.add_argument("--shortcut-lr", type=float, default=1e-3, help="its peak learning rate")
    parser.add_argument(
        "--shortcut-consistency",
        type=float,
        default=0.75,
        help="share of each distillation batch on the self-consistency target (the rest: d = 0)",
    )
    parser.add_argument("--tolerance", type=float, default=0.05, help="'reaches Euler@10' margin")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "toy_few_step")
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.samplers.split(",") if s.strip()]
    unknown = [s for s in names if s not in SAMPLERS]
    if unknown or not names:
        parser.error(f"--samplers: unknown {unknown}; choose from {list(SAMPLERS)}")
    steps = args.steps if args.steps is not None else (200 if args.quick else 3000)
    iterations = args.iterations if args.iterations is not None else (40 if args.quick else 300)
    shortcut_iterations = (
        args.shortcut_iterations if args.shortcut_iterations is not None else (200 if args.quick else 6000)
    )
    n_test, n_fit = (256, 64) if args.quick else (512, 128)

    with timing_settings(args.threads):
        toy = load_example()
        # Held-out and fitting goals/noise drawn as in the example (same seeds).
        data = {
            "test_goal": toy.demonstrations(n_test, torch.Generator().manual_seed(1))[0],
            "fit_goal": toy.demonstrations(n_fit, torch.Generator().manual_seed(2))[0],
            "z_test": torch.randn(n_test, toy.H, toy.A, generator=torch.Generator().manual_seed(3)),
            "z_fit": torch.randn(n_fit, toy.H, toy.A, generator=torch.Generator().manual_seed(4)),
        }
        samplers: dict[str, dict] = {}
        models: dict[str, dict] = {}
        for name in names:
            sampler = SAMPLERS[name]
            torch.manual_seed(0)  # same initial weights for every time distribution
            model = toy.VelocityMLP()
            objective = FlowMatchingObjective(time_sampler=sampler, repeats=REPEATS)
            with Stopwatch() as clock:
                loss = toy.train(
                    model,
                    steps,
                    torch.Generator().manual_seed(0),  # (t, z) draws
                    objective=objective,
                    data_generator=torch.Generator().manual_seed(10),  # same batches for every sampler
                    log=False,
                )
            samplers[name] = {
                **time_stats(sampler),
                "train": {
                    "steps": steps,
                    "final_loss": loss,
                    "seconds": clock.wall,
                    "cpu_seconds": clock.cpu,
                    "field_evals": steps * BATCH * REPEATS,
                },
            }
            print(
                f"{name:<14} trained {steps} steps in {clock.wall:.1f} s ({clock.cpu:.1f} CPU s), "
                f"last loss {loss:.4f}",
                flush=True,
            )
            models[name] = evaluate_model(
                toy,
                model,
                data,
                iterations=iterations,
                lr=args.lr,
                shortcut_iterations=shortcut_iterations,
                shortcut_lr=args.shortcut_lr,
                shortcut_consistency=args.shortcut_consistency,
            )
            res = models[name]
            print(
                f"{'':<14} dopri5 off_mode {res['dopri']['off_mode']:.4f}; Euler@1/2/4/10 "
                + "/".join(f"{v['off_mode']:.4f}" for v in res["euler"].values())
                + "; bespoke@1/2/4 "
                + "/".join(f"{v['off_mode']:.4f}" for v in res["bespoke"].values())
                + (
                    "; shortcut@1/2/4 " + "/".join(f"{v['off_mode']:.4f}" for v in res["shortcut"].values())
                    if "shortcut" in res
                    else ""
                ),
                flush=True,
            )

    rows = summarize(samplers, models, args.tolerance)
    print_table(rows, args.tolerance)
    result = {
        "config": {
            "quick": args.quick,
            "steps": steps,
            "batch": BATCH,
            "repeats": REPEATS,
            "n_test": n_test,
            "n_fit": n_fit,
            "bespoke_iterations": iterations,
            "bespoke_lr": args.lr,
            "shortcut_iterations": shortcut_iterations,
            "shortcut_lr": args.shortcut_lr,
            "shortcut_consistency": args.shortcut_consistency,
            "tolerance": args.tolerance,
            "base": BASE,
            "threads": args.threads,
        },
        "samplers": samplers,
        "models": {
            name: {
                "dopri": res["dopri"],
                "reference_cost": res["reference_cost"],
                "euler": {str(n): v for n, v in res["euler"].items()},
                "bespoke": {str(n): v for n, v in res["bespoke"].items()},
                "shortcut": {str(n): v for n, v in res.get("shortcut", {}).items()},
                "shortcut_cost": res.get("shortcut_cost"),
            }
            for name, res in models.items()
        },
        "rows": rows,
    }
    if not all(
        math.isfinite(v) for r in rows.values() for m in ("off_mode", "ode_err") for v in r[m].values()
    ):
        print("warning: non-finite errors in the results")
    path = write_results(args.out / "toy_few_step.json", result)
    plot(rows, args.out / "toy_few_step.png")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
