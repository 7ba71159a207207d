"""Solver overhead: what an ODE solver itself costs per solve, against torchdiffeq and flow_matching.

Every solver integrates the same field, the exact marginal velocity of the linear path towards an
8-mode mixture of ``[H=16, A=7]`` action chunks (``flowvla.flow.analytic.smooth_chunk_mixture``,
the field whose accuracy ``benchmarks/algorithms/solvers.py`` measures), for one batch of 64 states
(the policy's batch size) in float32 on one intra-op thread.

Overhead per solve = wall time - NFE x (one field evaluation), and, directly, the wall time with a
field that costs nothing (it returns a precomputed tensor). Floors: a step must at least read the
state and velocity and write the new state (bytes below), and each elementwise kernel costs at least
one eager dispatch (measured: one ``torch.add`` on the state). flowvla's solvers are timed with and
without their shape checks; the peers, when installed (``pip install torchdiffeq``;
``pip install --no-deps flow-matching tqdm``, whose licence is non-commercial: a benchmark peer
only), on the same uniform grids.

Usage: ``python benchmarks/speed/solver_overhead.py [--quick] [--threads N] [--out benchmarks/results]``
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import torch

from flowvla.flow import GaussianMixtureFlow
from flowvla.flow.analytic import smooth_chunk_mixture
from flowvla.profiling import markdown_table, median_time, timing_settings, write_results
from flowvla.solvers import create_solver, grid_times
from flowvla.typing import set_typecheck

SOLVERS = {"euler": 1, "midpoint": 2, "rk4": 4, "heun": 2, "ab2": 1, "dpm++2m": 1}  # NFE per step
PEER_METHODS = {"euler": 1, "midpoint": 2, "rk4": 4}  # torchdiffeq names
H, A, BATCH = 16, 7, 64


def load_peers() -> dict:
    """The installed peers: ``torchdiffeq`` and ``flow_matching``'s ``ODESolver`` (with its wrapper)."""
    peers = {}
    try:
        import torchdiffeq

        peers["torchdiffeq"] = torchdiffeq
    except ImportError:
        print("torchdiffeq not installed: pip install torchdiffeq")
    try:
        from flow_matching.solver import ODESolver
        from flow_matching.utils import ModelWrapper

        peers["flow_matching"] = (ODESolver, ModelWrapper)
    except ImportError:
        print("flow_matching not installed: pip install --no-deps flow-matching tqdm")
    return peers


def _swap_args(field, t, x):
    """torchdiffeq calls ``f(t, x)``; flowvla fields take ``(x, t)``."""
    return field(x, t)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short timings at NFE 4 and 10 (smoke test)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "results")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: stable timings)")
    args = ap.parse_args(argv)

    # Subnormal floats (exp of very negative log-likelihoods) make a field's cost depend on the
    # state's values; flushing them keeps the field cost the same for every solver.
    with timing_settings(args.threads, typecheck=True, flush_denormal=True):
        return run(args)


def run(args: argparse.Namespace) -> dict:
    nfes = [4, 10] if args.quick else [4, 8, 16, 32]
    min_time = 0.02 if args.quick else 0.3
    x = torch.randn(BATCH, H, A, generator=torch.Generator().manual_seed(1))
    mixture = smooth_chunk_mixture(H, A, dtype=torch.float32)
    # The field's own shape check would follow the switch toggled below; time it without the check
    # so that only the solvers' cost differs between rows.
    raw_velocity = getattr(
        GaussianMixtureFlow.velocity, "__flowvla_unchecked__", GaussianMixtureFlow.velocity
    )
    field = functools.partial(raw_velocity, mixture)
    const_v = torch.zeros_like(x)
    free_field = lambda x, t: const_v
    t_field = median_time(lambda: field(x, torch.tensor(0.5)), min_time=min_time)
    t_add = median_time(lambda: torch.add(x, const_v, alpha=0.1), min_time=min_time)
    state_bytes = x.numel() * x.element_size()
    results: dict = {
        "config": {
            "batch": BATCH,
            "event": [H, A],
            "dtype": "float32",
            "threads": args.threads,
            "quick": args.quick,
        },
        "field_eval_s": t_field,
        "floor": {
            "torch_add_dispatch_s": t_add,
            "state_bytes": state_bytes,
            "euler_step_min_bytes": 3 * state_bytes,  # read x, v; write x'
        },
        "solves": {},
    }
    rows = results["solves"]

    def record(label, nfe, fn_real, fn_free):
        wall = median_time(fn_real, min_time=min_time)
        free = median_time(fn_free, min_time=min_time)
        rows.setdefault(label, {})[nfe] = {
            "wall_s": wall,
            "overhead_s": wall - nfe * t_field,
            "free_field_s": free,
        }

    def peer_nfes(per: int) -> list[int]:
        return [n for n in nfes if n % per == 0]

    p = functools.partial
    peers = load_peers()
    with torch.no_grad():
        for name, per in SOLVERS.items():
            solver = create_solver(name)
            for nfe in peer_nfes(per):
                times = grid_times("uniform", nfe // per)
                for checked in (True, False):
                    set_typecheck(checked)
                    label = f"flowvla-{name}" + ("" if checked else " (unchecked)")
                    record(
                        label, nfe, p(solver.solve, field, x, times), p(solver.solve, free_field, x, times)
                    )
                set_typecheck(True)
        if "torchdiffeq" in peers:
            odeint = peers["torchdiffeq"].odeint
            real_tf, free_tf = p(_swap_args, field), p(_swap_args, free_field)
            for method, per in PEER_METHODS.items():
                for nfe in peer_nfes(per):
                    grid = torch.tensor(grid_times("uniform", nfe // per))
                    real = p(odeint, real_tf, x, grid, method=method)
                    record(f"torchdiffeq-{method}", nfe, real, p(odeint, free_tf, x, grid, method=method))
        if "flow_matching" in peers:
            ODESolver, ModelWrapper = peers["flow_matching"]

            class Wrapped(ModelWrapper):
                def __init__(self, fn):
                    super().__init__(None)
                    self.fn = fn

                def forward(self, x, t, **extras):
                    return self.fn(x, t)

            fm_real, fm_free = ODESolver(Wrapped(field)), ODESolver(Wrapped(free_field))
            for method, per in PEER_METHODS.items():
                for nfe in peer_nfes(per):
                    grid = torch.tensor(grid_times("uniform", nfe // per))
                    real = p(fm_real.sample, x, None, method=method, time_grid=grid)
                    free = p(fm_free.sample, x, None, method=method, time_grid=grid)
                    record(f"flow_matching-{method}", nfe, real, free)

    ratio = {}
    for method in PEER_METHODS:
        ours = rows.get(f"flowvla-{method}", {})
        for peer in ("torchdiffeq", "flow_matching"):
            theirs = rows.get(f"{peer}-{method}", {})
            for nfe in ours:
                if nfe in theirs:
                    ratio.setdefault(f"{method} vs {peer}", {})[nfe] = (
                        ours[nfe]["free_field_s"] / theirs[nfe]["free_field_s"]
                    )
    results["overhead_ratio_ours_over_peer"] = ratio

    print_report(results)
    suffix = "_quick" if args.quick else ""
    print(f"\nwrote {write_results(args.out / f'solver_overhead{suffix}.json', results)}")
    return results


def print_report(results: dict) -> None:
    floor = results["floor"]
    print(
        f"\nbatch {BATCH}: one field evaluation {results['field_eval_s'] * 1e6:.1f} us; one torch.add on the "
        f"state {floor['torch_add_dispatch_s'] * 1e6:.1f} us ({floor['state_bytes']} B state, an Euler step "
        f"moves >= {floor['euler_step_min_bytes']} B)"
    )
    us = lambda s: f"{s * 1e6:.1f}"
    table = [
        [label, nfe, us(r["wall_s"]), us(r["overhead_s"]), us(r["free_field_s"])]
        for label, row in results["solves"].items()
        for nfe, r in row.items()
    ]
    print(markdown_table(["solver", "NFE", "wall us", "overhead us", "free-field us"], table))
    if results["overhead_ratio_ours_over_peer"]:
        print("\noverhead ratio, flowvla / peer (free-field solve time; < 1: flowvla is leaner)")
        ratio = results["overhead_ratio_ours_over_peer"]
        nfes = sorted({n for row in ratio.values() for n in row})
        table = [[k, *(f"{row[n]:.2f}" if n in row else "" for n in nfes)] for k, row in ratio.items()]
        print(markdown_table(["method vs peer", *(f"NFE {n}" for n in nfes)], table))


if __name__ == "__main__":
    main()
