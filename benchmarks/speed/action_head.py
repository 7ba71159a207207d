"""Action-head benchmark: latency, FLOPs against the machine's matmul peak, the context cache.

A realistic head: horizon 16, action dim 7, width 512 (8 heads), 8 or 16 blocks in GR00T's layout
(cross-only and self-only blocks alternate; a state token and 32 learned future tokens precede the
action tokens), reading a 2B-VLM-sized context: 544 tokens of width 2048. Hidden states of 8 VLM
layers are given; routers use 1 (``FixedLayerRouter``, last layer) to 4 of them (``ScalarMixRouter``
over the last 4, ``TopKRouter`` with k = 2 of the last 4).

Measured side by side in one run, per (depth, batch):
* one context projection (``encode_context``: every cross block's keys/values), and the routers;
* one velocity evaluation with the cache and without it (re-projecting the context, as a head
  without a cache does at every step);
* a 10-NFE sample (Euler, 10 steps): cached = one projection + 10 cached evaluations;
  uncached = 10 evaluations that each re-project the context;
* a training step (flow loss, backward, AdamW) in samples/s, and peak memory.

FLOPs are counted (``flowvla.profiling.count_flops``: matmuls and attention). The floor of a
10-NFE sample is (one projection + 10 cached evaluations) / the peak GFLOP/s of a 2048^3 matmul
(8192^3 on a GPU) in the same dtype, measured in the same run with the same threads;
``ratio = wall / floor``. Shape checks are switched off while timing (``set_typecheck(False)``),
as a deployed policy would.

Usage: ``python benchmarks/speed/action_head.py [--quick] [--threads N] [--device cpu|cuda]
[--dtype float32|bfloat16] [--out benchmarks/results]``
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

from flowvla.dit import FlowActionHead
from flowvla.flow import FlowMatchingObjective
from flowvla.profiling import (
    count_flops,
    machine_facts,
    markdown_table,
    matmul_peak_gflops,
    median_time,
    peak_memory_bytes,
    timing_settings,
    write_results,
)
from flowvla.routing import FixedLayerRouter, ScalarMixRouter, TopKRouter
from flowvla.typing import set_typecheck

FULL = dict(horizon=16, action_dim=7, dim=512, heads=8, tokens=544, context_dim=2048, layers=8, future=32)
QUICK = dict(horizon=8, action_dim=7, dim=64, heads=4, tokens=40, context_dim=96, layers=4, future=4)
STATE_DIM, NFE = 8, 10


def build(cfg: dict, depth: int, device: str, dtype: torch.dtype) -> FlowActionHead:
    torch.manual_seed(0)
    head = FlowActionHead(
        cfg["action_dim"],
        cfg["horizon"],
        cfg["context_dim"],
        dim=cfg["dim"],
        depth=depth,
        num_heads=cfg["heads"],
        block_pattern="interleaved",
        state_dim=STATE_DIM,
        num_future_tokens=cfg["future"],
    )
    # Leave the zero initialisation: timings must not depend on it, but sampled values should move.
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return head.to(device=device, dtype=dtype).eval()


def timed_once(fn, device: str) -> tuple[float, int | None]:
    """Seconds and peak added memory of one call (for calls too slow to repeat)."""
    out = {}

    def run():
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        out["s"] = time.perf_counter() - t0

    peak = peak_memory_bytes(run, device=device)
    return out["s"], peak


def bench_case(cfg: dict, depth: int, batch: int, peak: float, args, dtype: torch.dtype) -> dict:
    dev = args.device
    head = build(cfg, depth, dev, dtype)
    if args.compile:
        head.compile(mode=args.compile, dynamic=False)
    g = torch.Generator(device=dev).manual_seed(0)
    hidden = [
        torch.randn(batch, cfg["tokens"], cfg["context_dim"], generator=g, device=dev, dtype=dtype)
        for _ in range(cfg["layers"])
    ]
    mask = torch.ones(batch, cfg["tokens"], dtype=torch.bool, device=dev)
    mask[:, -cfg["tokens"] // 8 :] = False  # some padding, as in a batch of prompts
    state = torch.randn(batch, STATE_DIM, generator=g, device=dev, dtype=dtype)
    x = torch.randn(batch, cfg["horizon"], cfg["action_dim"], generator=g, device=dev, dtype=dtype)
    t = torch.full((batch,), 0.5, device=dev, dtype=dtype)
    k = head.num_context_slots
    routers = {
        "fixed-1": FixedLayerRouter(cfg["layers"], k, "last"),
        "scalarmix-4": ScalarMixRouter(cfg["layers"], k, "last:4"),
        "topk-2of4": TopKRouter(cfg["layers"], k, cfg["context_dim"], k=2, layers="last:4"),
    }
    for r in routers.values():
        r.to(device=dev, dtype=dtype).eval()
    contexts = routers["fixed-1"](hidden, mask).contexts
    # On a CPU the big cases take seconds per call: time them once (after warm-up calls of the parts).
    slow = dev == "cpu" and batch * cfg["tokens"] * cfg["context_dim"] * depth > 2e8
    calls = dict(max_calls=1) if slow else dict(min_time=args.min_time)

    res: dict = {"depth": depth, "batch": batch, "cross_blocks": k}
    with torch.inference_mode():
        cache = head.encode_context(contexts, mask)
        f_ctx = count_flops(lambda: head.encode_context(contexts, mask))
        # head.forward bypasses a compiled __call__: FLOPs are counted on the eager graph.
        f_eval = count_flops(lambda: head.forward(x, t, state=state, cache=cache))
        res["gflop_context"] = f_ctx / 1e9
        res["gflop_eval"] = f_eval / 1e9
        res["context_share_uncached"] = f_ctx / (f_ctx + f_eval)
        res["encode_s"] = median_time(lambda: head.encode_context(contexts, mask), device=dev, **calls)
        res["eval_cached_s"] = median_time(lambda: head(x, t, state=state, cache=cache), device=dev, **calls)
        res["eval_uncached_s"] = median_time(lambda: head(x, t, contexts, mask, state), device=dev, **calls)
        for name, router in routers.items():
            res[f"route_{name}_s"] = median_time(lambda r=router: r(hidden, mask), device=dev, **calls)

        def sample_cached():
            return head.sample(contexts, mask, state, solver="euler", steps=NFE, generator=g)

        def sample_uncached():  # re-projects the context at every step
            return head.sample(contexts, mask, state, solver="euler", steps=NFE, generator=g, use_cache=False)

        if slow:
            res["sample_cached_s"], res["sample_cached_peak_bytes"] = timed_once(sample_cached, dev)
            res["sample_uncached_s"], _ = timed_once(sample_uncached, dev)
        else:
            res["sample_cached_s"] = median_time(sample_cached, device=dev, min_time=args.min_time)
            res["sample_uncached_s"] = median_time(sample_uncached, device=dev, min_time=args.min_time)
            res["sample_cached_peak_bytes"] = peak_memory_bytes(sample_cached, device=dev)

    floor = (f_ctx + NFE * f_eval) / (peak * 1e9)
    res["sample_floor_s"] = floor
    res["sample_cached_ratio_to_floor"] = res["sample_cached_s"] / floor
    res["sample_achieved_gflops"] = (f_ctx + NFE * f_eval) / res["sample_cached_s"] / 1e9
    res["cache_speedup"] = res["sample_uncached_s"] / res["sample_cached_s"]

    # Training: flow loss through the router and head, backward, AdamW (the context is an input).
    train_head = head.train()
    router = routers["scalarmix-4"].train()
    params = [*train_head.parameters(), *router.parameters()]
    opt = torch.optim.AdamW(params, 1e-4)
    actions = torch.randn(batch, cfg["horizon"], cfg["action_dim"], generator=g, device=dev, dtype=dtype)

    def train_step():
        routed = router(hidden, mask)
        loss = train_head.loss(actions, routed.contexts, mask, state, objective=FlowMatchingObjective())
        opt.zero_grad(set_to_none=True)
        loss.loss.backward()
        opt.step()

    f_train = count_flops(train_step)
    if slow:
        train_step()  # warm-up (optimizer state allocation)
        res["train_step_s"], res["train_peak_bytes"] = timed_once(train_step, dev)
    else:
        res["train_step_s"] = median_time(train_step, device=dev, min_time=args.min_time)
        res["train_peak_bytes"] = peak_memory_bytes(train_step, device=dev)
    res["train_samples_per_s"] = batch / res["train_step_s"]
    res["train_gflop"] = f_train / 1e9
    res["train_ratio_to_floor"] = res["train_step_s"] / (f_train / (peak * 1e9))
    return res


def print_report(results: dict) -> None:
    cfg = results["config"]
    print(
        f"\naction head: H={cfg['horizon']} A={cfg['action_dim']} width={cfg['dim']} context "
        f"{cfg['tokens']}x{cfg['context_dim']}; {results['threads']} threads on {results['device']} "
        f"({results['dtype']}); matmul peak {results['matmul_peak_gflops']:.1f} GFLOP/s; 1-min load "
        f"{results['machine']['load_average_1min']:.1f} at start, "
        f"{results['load_average_1min_end']:.1f} at end\n"
    )
    header = [
        "blocks", "batch", "context GF", "eval GF", "encode", "eval (cached)", "eval (uncached)",
        "10-NFE cached", "floor", "ratio", "GFLOP/s", "10-NFE uncached", "cache speed-up",
        "train samples/s (ratio)", "peak MB",
    ]  # fmt: skip
    rows = [
        [
            r["depth"],
            r["batch"],
            f"{r['gflop_context']:.1f}",
            f"{r['gflop_eval']:.2f}",
            *(f"{r[k] * 1e3:.1f} ms" for k in ("encode_s", "eval_cached_s", "eval_uncached_s")),
            f"{r['sample_cached_s']:.3f} s",
            f"{r['sample_floor_s']:.3f} s",
            f"**{r['sample_cached_ratio_to_floor']:.2f}**",
            f"{r['sample_achieved_gflops']:.1f}",
            f"{r['sample_uncached_s']:.3f} s",
            f"{r['cache_speedup']:.1f}x",
            f"{r['train_samples_per_s']:.1f} ({r['train_ratio_to_floor']:.2f})",
            f"{(r.get('sample_cached_peak_bytes') or 0) / 2**20:.0f}",
        ]
        for r in results["cases"]
    ]
    print(markdown_table(header, rows))
    print("\nrouters (ms, routing only):")
    for r in results["cases"]:
        names = [k for k in r if k.startswith("route_")]
        cells = ", ".join(f"{n[6:-2]} {r[n] * 1e3:.1f}" for n in names)
        print(f"  depth {r['depth']:>2} batch {r['batch']:>2}: {cells}")
    if "typecheck_overhead_eval_s" in results:
        print(f"shape checks on: +{results['typecheck_overhead_eval_s'] * 1e3:.2f} ms per cached evaluation")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes (smoke test)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--depths", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds per repeated timing")
    ap.add_argument(
        "--compile",
        choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs"],
        help="torch.compile the head with this mode (compilation happens in the warm-up calls)",
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "results")
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    dtype = getattr(torch, args.dtype)
    with timing_settings(args.threads, typecheck=True):
        size = 512 if args.quick else 8192 if args.device.startswith("cuda") else 2048
        peak = matmul_peak_gflops(size, dtype=dtype, device=args.device)
        results = {
            "config": cfg,
            "device": torch.cuda.get_device_name()
            if args.device.startswith("cuda")
            else platform.processor() or "cpu",
            "dtype": args.dtype,
            "threads": args.threads,
            "compile": args.compile,
            "matmul_peak_gflops": peak,
            # Timings on a shared CPU inflate when the load exceeds the threads: its facts at the start.
            "machine": machine_facts(args.device),
            "cases": [],
        }
        set_typecheck(True)
        head = build(cfg, args.depths[0], args.device, dtype)
        ctx = torch.randn(1, cfg["tokens"], cfg["context_dim"], device=args.device, dtype=dtype)
        st = torch.randn(1, STATE_DIM, device=args.device, dtype=dtype)
        xx = torch.randn(1, cfg["horizon"], cfg["action_dim"], device=args.device, dtype=dtype)
        with torch.inference_mode():
            cache = head.encode_context(ctx)
            fn = lambda: head(xx, torch.tensor(0.5, device=args.device), state=st, cache=cache)
            checked = median_time(fn, device=args.device, min_time=args.min_time)
            set_typecheck(False)
            unchecked = median_time(fn, device=args.device, min_time=args.min_time)
        results["typecheck_overhead_eval_s"] = checked - unchecked
        for depth in args.depths:
            for batch in args.batches:
                print(f"depth {depth} batch {batch} ...", file=sys.stderr, flush=True)
                results["cases"].append(bench_case(cfg, depth, batch, peak, args, dtype))
        results["load_average_1min_end"] = machine_facts()["load_average_1min"]
    print_report(results)
    suffix = "_quick" if args.quick else ""
    tag = "" if args.device == "cpu" else f"_{args.device.split(':')[0]}"
    tag += f"_{args.compile}" if args.compile else ""
    print(f"\nwrote {write_results(args.out / f'action_head{tag}{suffix}.json', results)}")
    return results


if __name__ == "__main__":
    main()
