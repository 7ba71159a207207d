"""Few-step sampling benchmark: error vs NFE (1, 2, 4, 8, 10) of learned solvers and distilled students.

The field is the exact marginal velocity towards the 8-mode mixture of ``[H=16, A=7]`` action
chunks that ``benchmarks/algorithms/solvers.py`` integrates (``smooth_chunk_mixture``; narrow
modes: the flow bends early and late). Errors are RMS distances of x(1) to an RK4 reference
(400 steps, float64; 100 with ``--quick``) on held-out noise; every route is fitted or trained on other noise.

Routes:
* baselines: Euler, midpoint, AB2 on the uniform grid and on grids fitted with ``fit_time_grid``;
* bespoke: ``fit_bespoke_solver`` (learned per-step times and scales of a base Euler step, and of
  a base midpoint step), initialised from the uniform grid, and (``/fitted-init``) from the fitted grid;
* shortcut (``--shortcut-iterations N``, 0 skips it): a ``ShortcutMLP`` student distilled from the
  exact field with the self-consistency target (``distill_shortcut``), sampled with equal steps.

Training cost is reported as seconds and teacher NFE (field evaluations x samples).

Usage: ``python benchmarks/algorithms/few_step.py [--quick] [--shortcut-iterations N]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from flowvla.flow import distill_shortcut, shortcut_sample
from flowvla.flow.analytic import smooth_chunk_mixture
from flowvla.profiling import agg_pyplot, markdown_table, write_results
from flowvla.solvers import create_solver, fit_bespoke_solver, fit_time_grid, integrate
from flowvla.typing import set_typecheck

H, A = 16, 7
NFES = [1, 2, 4, 8, 10]
BASELINES = {"euler": 1, "midpoint": 2, "ab2": 1}


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).square().mean().sqrt())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and iterations")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "results")
    parser.add_argument("--shortcut-iterations", type=int, default=0, help="0 skips the shortcut student")
    parser.add_argument("--bespoke-iterations", type=int, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    set_typecheck(False)
    n_train, n_test = (64, 256) if args.quick else (256, 1024)
    iters = args.bespoke_iterations or (40 if args.quick else 300)
    ref_steps, sweeps = (100, 1) if args.quick else (400, 2)
    dtype = torch.float32
    field = smooth_chunk_mixture(H, A, dtype=dtype)
    g = torch.Generator().manual_seed(1)
    x_train = torch.randn(n_train, H, A, generator=g, dtype=dtype)
    x_test = torch.randn(n_test, H, A, generator=g, dtype=dtype)
    f64 = smooth_chunk_mixture(H, A, dtype=torch.float64)
    ref_train = integrate(f64, x_train.double(), solver="rk4", steps=ref_steps).x.to(dtype)
    ref_test = integrate(f64, x_test.double(), solver="rk4", steps=ref_steps).x
    print(f"references done ({ref_steps} RK4 steps)", flush=True)

    rows: dict[str, dict[int, float]] = {}
    fitted_grids: dict[tuple[str, int], list[float]] = {}
    costs: dict[str, dict] = {}

    def record(route: str, nfe: int, err: float, cost: dict | None = None) -> None:
        rows.setdefault(route, {})[nfe] = err
        if cost is not None:
            costs.setdefault(route, {})[nfe] = cost
        print(f"  {route:<24} NFE {nfe:>2}: {err:.4f}", flush=True)

    for name, per_step in BASELINES.items():
        for nfe in NFES:
            if nfe % per_step:
                continue
            steps = nfe // per_step
            record(
                f"{name}/uniform", nfe, _rms(integrate(field, x_test, solver=name, steps=steps).x, ref_test)
            )
            if steps > 1:
                t0 = time.perf_counter()
                fitted = fit_time_grid(
                    field, x_train, solver=name, steps=steps, reference=ref_train, sweeps=sweeps
                )
                cost = {"seconds": time.perf_counter() - t0, "teacher_nfe": fitted.solves * nfe * n_train}
                fitted_grids[name, steps] = fitted.times
                err = _rms(create_solver(name).solve(field, x_test, fitted.tensor()).x, ref_test)
                record(f"{name}/fitted", nfe, err, cost)

    for base, per_step in (("euler", 1), ("midpoint", 2)):
        for init in ("uniform", "fitted"):
            for nfe in NFES:
                if nfe % per_step:
                    continue
                steps = nfe // per_step
                if init == "fitted" and (base, steps) not in fitted_grids:
                    continue
                solver = fit_bespoke_solver(
                    field,
                    x_train,
                    base=base,
                    steps=steps,
                    reference=ref_train,
                    init_grid=fitted_grids[base, steps] if init == "fitted" else "uniform",
                    iterations=iters,
                    lr=1e-2,
                )
                err = _rms(integrate(field, x_test, solver=solver, steps=steps).x, ref_test)
                info = solver.info
                route = f"bespoke-{base}" + ("/fitted-init" if init == "fitted" else "")
                # The fitted-init route also spent the grid fit; its cost is in the grid's row.
                record(
                    route,
                    nfe,
                    err,
                    {
                        "seconds": info["seconds"],
                        "teacher_nfe": info["teacher_nfe"],
                        "parameters": info["num_parameters"],
                        "train_error": info["fit_error"],
                        "init_train_error": info["init_error"],
                    },
                )
                if base == "euler" and nfe == 2 and init == "uniform":
                    solver.save(args.out / "few_step_bespoke_euler2.json")

    if args.shortcut_iterations > 0:
        dg = torch.Generator().manual_seed(5)
        student, info = distill_shortcut(
            field,
            lambda n: field.sample_data(n, generator=dg),
            (H, A),
            iterations=args.shortcut_iterations,
            batch_size=256,
            lr=2e-3,
        )
        with torch.no_grad():
            for nfe in NFES:
                record("shortcut", nfe, _rms(shortcut_sample(student, x_test, nfe), ref_test))
        costs["shortcut"] = {
            "all": {
                "seconds": info["seconds"],
                "teacher_nfe": info["teacher_evaluations"],
                "parameters": info["parameters"],
            }
        }

    euler10 = rows["euler/uniform"][10]
    print(f"\nRMS error of x(1) on {n_test} held-out samples (Euler@10 = {euler10:.4f})")
    table = []
    for route, errs in rows.items():
        c = costs.get(route, {})
        secs = sum(v["seconds"] for v in c.values())
        tnfe = sum(v["teacher_nfe"] for v in c.values())
        cells = [f"{errs[n]:.4f}" if n in errs else "" for n in NFES]
        table.append([route, *cells, f"{secs:.1f}" if c else "0", f"{tnfe:,}"])
    print(markdown_table(["route", *(f"NFE {n}" for n in NFES), "train s", "teacher NFE"], table))
    best2 = min((e[n], r) for r, e in rows.items() for n in (1, 2) if n in e)
    best10 = min((e[10], r) for r, e in rows.items() if 10 in e)
    print(f"\nbest at <= 2 NFE: {best2[1]} {best2[0]:.4f} ({best2[0] / euler10:.2f}x Euler@10)")
    print(f"best at 10 NFE: {best10[1]} {best10[0]:.4f} ({best10[0] / euler10:.3f}x Euler@10)")

    result = {
        "config": {
            "quick": args.quick,
            "n_train": n_train,
            "n_test": n_test,
            "bespoke_iterations": iters,
            "reference_rk4_steps": ref_steps,
            "shortcut_iterations": args.shortcut_iterations,
            "dtype": str(dtype),
        },
        "errors": {r: {str(n): e for n, e in errs.items()} for r, errs in rows.items()},
        "costs": {r: {str(n): c for n, c in cs.items()} for r, cs in costs.items()},
        "euler10": euler10,
    }
    path = write_results(args.out / "few_step.json", result)
    plt = agg_pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for route, errs in rows.items():
            ns = sorted(errs)
            style = "-o" if route.startswith(("bespoke", "shortcut")) else "--."
            ax.plot(ns, [errs[n] for n in ns], style, label=route)
        ax.axhline(euler10, color="k", lw=0.8, ls=":", label="Euler@10")
        ax.set(xlabel="NFE", ylabel="RMS error of x(1), held out", yscale="log", xticks=NFES)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(args.out / "few_step.png", dpi=120)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
