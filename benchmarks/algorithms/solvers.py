"""Solver accuracy: error vs NFE of each ODE solver and time grid on a hard closed-form mixture flow.

The field is the exact marginal velocity (``flowvla.flow.GaussianMixtureFlow``) towards an
8-mode mixture of smooth action chunks ``[H=16, A=7]`` with some narrow modes (std 0.05,
``flowvla.flow.analytic.smooth_chunk_mixture``): the flow bends early (mode choice near t = 0) and
late (narrow modes sharpen near t = 1), as action distributions do. Errors are RMS distances of x(1)
to a float64 Dormand–Prince reference (atol = rtol = 1e-10, cross-checked against RK4 with 4000
steps), for solvers run in float32 over 4096 noise samples (128 with ``--quick``). What a solver costs
per solve is ``benchmarks/speed/solver_overhead.py``.

Compared side by side in one run:
* flowvla's fixed-step solvers on uniform, SD3-shifted (shift 3, not tuned) and cosine grids, and
  on grids fitted to this field with ``fit_time_grid`` (fitted on 256 other noise samples, so the
  reported error is held out);
* ``torchdiffeq.odeint`` (euler / midpoint / rk4 on the same grids, dopri5 at several
  tolerances), when installed (``pip install torchdiffeq``).

Usage: ``python benchmarks/algorithms/solvers.py [--quick] [--out benchmarks/results]``
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import time
from pathlib import Path

import torch

from flowvla.flow.analytic import smooth_chunk_mixture
from flowvla.profiling import agg_pyplot, markdown_table, timing_settings, write_results
from flowvla.solvers import (
    DormandPrince54Solver,
    create_solver,
    fit_time_grid,
    grid_times,
    integrate,
)

FIXED = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4, "ab2": 1, "dpm++2m": 1}
GRIDS = {"uniform": {}, "shifted3": {"shift": 3.0}, "cosine": {}}
GRID_KIND = {"uniform": "uniform", "shifted3": "shifted", "cosine": "cosine"}
PEER_METHODS = {"euler": 1, "midpoint": 2, "rk4": 4}  # torchdiffeq names, NFE per step
TOLERANCES, TOLERANCES_QUICK = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5], [1e-2, 1e-3]
H, A = 16, 7
CHUNK = 1024


def _swap_args(field, t, x):
    """torchdiffeq calls ``f(t, x)``; flowvla fields take ``(x, t)``."""
    return field(x, t)


class _CountingField:
    """A torchdiffeq-style ``f(t, x)`` that counts its evaluations."""

    def __init__(self, field):
        self.field, self.calls = field, 0

    def __call__(self, t, x):
        self.calls += 1
        return self.field(x, t)


def nfe_values(per_step: int, nfes: list[int]) -> list[int]:
    return [n for n in nfes if n % per_step == 0]


def load_peers() -> dict:
    """The installed peer: ``torchdiffeq``."""
    try:
        import torchdiffeq
    except ImportError:
        print("torchdiffeq not installed: pip install torchdiffeq")
        return {}
    return {"torchdiffeq": torchdiffeq}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny run (smoke test): fewer samples and NFEs")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "results")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = ap.parse_args(argv)

    # Subnormal floats (exp of very negative log-likelihoods) are flushed to zero, as in the runs the
    # results page records (benchmarks/speed/solver_overhead.py flushes them to keep the field's cost flat).
    with timing_settings(args.threads, typecheck=True, flush_denormal=True):
        return run(args)


def chunked(solve, x0: torch.Tensor) -> torch.Tensor:
    """``solve(chunk)`` over chunks of CHUNK samples (large float64 intermediates thrash the
    allocator); ``solve`` returns an ``ODESolution`` (flowvla) or a trajectory (torchdiffeq)."""
    outs = [solve(c) for c in x0.split(CHUNK)]
    return torch.cat([o.x if hasattr(o, "x") else o[-1] for o in outs])


def per_sample_sq_error(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return (x.double() - ref).square().flatten(1).mean(1)


def rms_of(sq: torch.Tensor) -> float:
    return float(sq.mean().sqrt())


def bootstrap_ratio(sq_num: torch.Tensor, sq_den: torch.Tensor, n: int = 1000) -> tuple[float, float]:
    """95% interval of rms(num) / rms(den) resampling the (paired) noise samples."""
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, sq_num.numel(), (n, sq_num.numel()), generator=g)
    ratios = (sq_num[idx].mean(1) / sq_den[idx].mean(1)).sqrt()
    lo, hi = torch.quantile(ratios, torch.tensor([0.025, 0.975], dtype=ratios.dtype)).tolist()
    return lo, hi


def run(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    nfes = [2, 4, 6, 8, 10] if args.quick else list(range(2, 33))
    n_eval = 128 if args.quick else 4096
    fit_nfes = [4, 10] if args.quick else [4, 6, 8, 10]

    field64 = smooth_chunk_mixture(H, A, dtype=torch.float64)
    field = smooth_chunk_mixture(H, A, dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    x0_eval64 = torch.randn(n_eval, H, A, generator=g, dtype=torch.float64)
    x0_fit64 = torch.randn(256 if not args.quick else 64, H, A, generator=g, dtype=torch.float64)
    x0_eval, x0_fit = x0_eval64.float(), x0_fit64.float()

    t0 = time.perf_counter()
    ref_solver = DormandPrince54Solver(atol=1e-10, rtol=1e-10, max_nfe=200_000)
    ref = chunked(functools.partial(ref_solver.solve, field64, grid=[0.0, 1.0]), x0_eval64)
    ref_fit = ref_solver.solve(field64, x0_fit64, [0.0, 1.0]).x
    n_check = min(n_eval, CHUNK)  # RK4 with 4000 steps on one chunk cross-checks the reference
    check = integrate(field64, x0_eval64[:n_check], solver="rk4", steps=400 if args.quick else 4000).x
    ref_agreement = rms_of(per_sample_sq_error(check, ref[:n_check]))
    print(f"reference: dopri5 vs rk4 RMS difference {ref_agreement:.2e} ({time.perf_counter() - t0:.1f} s)")

    results: dict = {
        "config": {
            "field": "8-mode Gaussian mixture, event [16, 7], stds 0.05-0.3",
            "eval_samples": n_eval,
            "fit_samples": x0_fit.shape[0],
            "state_dtype": "float32",
            "reference": "dopri5 atol=rtol=1e-10 float64",
            "reference_vs_rk4_rms": ref_agreement,
            "quick": args.quick,
        },
        "errors": {},
        "fitted_grids": {},
    }
    sq_at_10: dict[str, torch.Tensor] = {}

    def score(key: str, nfe: int, x1: torch.Tensor) -> None:
        sq = per_sample_sq_error(x1, ref)
        results["errors"].setdefault(key, {})[nfe] = rms_of(sq)
        if nfe == 10:
            sq_at_10[key] = sq

    # ---- accuracy: flowvla solvers x named grids --------------------------------------------
    with torch.no_grad():
        for name, per in FIXED.items():
            solver = create_solver(name)
            for grid_name, kw in GRIDS.items():
                for nfe in nfe_values(per, nfes):
                    times = grid_times(GRID_KIND[grid_name], nfe // per, **kw)
                    score(
                        f"{name}/{grid_name}",
                        nfe,
                        chunked(functools.partial(solver.solve, field, grid=times), x0_eval),
                    )

    # ---- accuracy: fitted grids (fit on x0_fit, report on the held-out x0_eval) ---------------
    for name, per in FIXED.items():
        fits = {}
        for nfe in nfe_values(per, fit_nfes):
            t_fit = time.perf_counter()
            fitted = fit_time_grid(field, x0_fit, solver=name, steps=nfe // per, reference=ref_fit.float())
            fit_s = time.perf_counter() - t_fit
            solver = create_solver(name)
            with torch.no_grad():
                score(
                    f"{name}/fitted",
                    nfe,
                    chunked(functools.partial(solver.solve, field, grid=fitted.times), x0_eval),
                )
            fits[nfe] = {
                "times": fitted.times,
                "fit_error": fitted.fit_error,
                "start": fitted.start,
                "solves": fitted.solves,
                "fit_seconds": fit_s,
            }
        results["fitted_grids"][name] = fits

    # ---- accuracy: peers and adaptive --------------------------------------------------------
    peers = load_peers()
    with torch.no_grad():
        if "torchdiffeq" in peers:
            odeint = peers["torchdiffeq"].odeint
            fn = functools.partial(_swap_args, field)
            for method, per in PEER_METHODS.items():
                for nfe in nfe_values(per, nfes):
                    grid = torch.tensor(grid_times("uniform", nfe // per), dtype=torch.float32)
                    x1 = chunked(functools.partial(odeint, fn, t=grid, method=method), x0_eval)
                    score(f"torchdiffeq-{method}/uniform", nfe, x1)
            for tol in TOLERANCES_QUICK if args.quick else TOLERANCES:
                counted = _CountingField(field)
                span = torch.tensor([0.0, 1.0])
                solve = functools.partial(odeint, counted, t=span, method="dopri5", atol=tol, rtol=tol)
                x1 = chunked(solve, x0_eval)
                mean_nfe = round(counted.calls / math.ceil(n_eval / CHUNK))
                score("torchdiffeq-dopri5/adaptive", mean_nfe, x1)
        for tol in TOLERANCES_QUICK if args.quick else TOLERANCES:
            solver = create_solver("dopri5", atol=tol, rtol=tol, max_nfe=10_000)
            sols = [solver.solve(field, c, [0.0, 1.0]) for c in x0_eval.split(CHUNK)]
            score(
                "dopri5/adaptive", round(statistics.mean(s.nfe for s in sols)), torch.cat([s.x for s in sols])
            )

    # ---- summary against the targets -------------------------------------------------
    errs = results["errors"]
    euler10 = errs["euler/uniform"][10]
    summary = {"euler@10": euler10, "nfe_to_match_euler10": {}, "best_at_10": {}}
    for key, row in errs.items():
        if key.startswith("torchdiffeq") or key.startswith("dopri5"):
            continue
        ok = [n for n, e in sorted(row.items()) if e <= euler10]
        summary["nfe_to_match_euler10"][key] = ok[0] if ok else None
        if 10 in row:
            summary["best_at_10"][key] = euler10 / row[10]
            lo, hi = bootstrap_ratio(sq_at_10["euler/uniform"], sq_at_10[key], n=200 if args.quick else 1000)
            summary.setdefault("best_at_10_ci95", {})[key] = [lo, hi]
    uniform_keys = [k for k in summary["best_at_10"] if k.endswith("/uniform")]
    summary["best_uniform_at_10"] = max(uniform_keys, key=summary["best_at_10"].get)
    summary["best_any_grid_at_10"] = max(summary["best_at_10"], key=summary["best_at_10"].get)
    results["summary"] = summary

    print_report(results, nfes)
    suffix = "_quick" if args.quick else ""
    print(f"\nwrote {write_results(args.out / f'solvers{suffix}.json', results)}")
    if not args.no_plot:
        plot(results, args.out / f"solvers{suffix}.png")
    return results


def print_report(results: dict, nfes: list[int]) -> None:
    errs = results["errors"]
    show = [n for n in (2, 4, 6, 8, 10, 12, 16, 24, 32) if n in nfes]
    print("\nRMS error of x(1) vs NFE (float32 state; lower is better)")
    table = [
        [key, *(f"{row[n]:.4f}" if n in row else "" for n in show)]
        for key, row in errs.items()
        if not key.endswith("adaptive")
    ]
    print(markdown_table(["solver / grid", *(str(n) for n in show)], table))
    for key in ("dopri5/adaptive", "torchdiffeq-dopri5/adaptive"):
        if key in errs:
            print(f"{key:32s}" + "  ".join(f"nfe {n}: {e:.4f}" for n, e in errs[key].items()))
    s = results["summary"]
    print(f"\nEuler@10 error: {s['euler@10']:.4f}")
    print("NFE needed to match Euler@10 (first NFE with error <= Euler@10):")
    for key, n in sorted(s["nfe_to_match_euler10"].items(), key=lambda kv: (kv[1] is None, kv[1] or 0)):
        print(f"  {key:28s} {n}")
    print("Accuracy gain at 10 NFE (Euler@10 error / error, bootstrap 95% interval over noise samples):")
    for key, r in sorted(s["best_at_10"].items(), key=lambda kv: -kv[1]):
        lo, hi = s["best_at_10_ci95"][key]
        print(f"  {key:28s} {r:5.2f}x  [{lo:.2f}, {hi:.2f}]")


def plot(results: dict, path: Path) -> None:
    plt = agg_pyplot()
    if plt is None:
        return
    colors = {n: f"C{i}" for i, n in enumerate([*FIXED, "dopri5"])}
    errs = results["errors"]

    def line(ax, key, **style):
        row = errs[key]
        xs = sorted(row)
        ax.plot(xs, [row[n] for n in xs], marker="o", ms=3, **style)

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for name in [*FIXED, "dopri5"]:
        key = f"{name}/adaptive" if name == "dopri5" else f"{name}/uniform"
        line(left, key, color=colors[name], label=f"flowvla {name}")
        peer = f"torchdiffeq-{name}/adaptive" if name == "dopri5" else f"torchdiffeq-{name}/uniform"
        if peer in errs:
            line(left, peer, color=colors[name], ls="--", mfc="none", label=f"torchdiffeq {name}")
    for name in FIXED:
        if f"{name}/fitted" not in errs:
            continue
        nfes = sorted(errs[f"{name}/fitted"])
        line(right, f"{name}/fitted", color=colors[name], label=f"{name} fitted grid")
        row = errs[f"{name}/uniform"]
        right.plot(nfes, [row[n] for n in nfes], color=colors[name], ls=":", lw=1, label=f"{name} uniform")
    for ax, title in (
        (left, "uniform grid (dopri5: adaptive)"),
        (right, "grids fitted to the field, held-out error"),
    ):
        ax.axhline(results["summary"]["euler@10"], color="gray", lw=0.8, ls="-.", label="Euler@10")
        ax.set(xscale="log", yscale="log", xlabel="NFE", ylabel="RMS error of x(1)", title=title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
