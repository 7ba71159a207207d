"""Policy benchmark: training throughput and ``predict_action`` latency by stage, cache on and off.

Two configurations, built from scratch at random initialisation (no download):

* ``tiny``  -- the test-suite policy: 16 px images, 2 views, widths 16-32;
* ``small`` -- 128 px images (16 px patches: 64 tokens per view), 2 views, a 4-layer 192-wide ViT,
  a 6-layer 384-wide Llama-style LM, token-aligned gated 2D-3D fusion, a scalar-mix router over the
  last 4 layers, a 6-block 256-wide DiT head with horizon 16.

Reported per configuration: training samples/s (flow loss, backward, AdamW; batch 8), and at batch 1
the median ``predict_action`` time split into backbone, geometry + fusion, routing and head
(and head per NFE), with the context cache and without it (re-projecting the VLM context at every
solver step); peak memory of a training step and of a prediction. Shape checks are off while timing.

Usage: ``python benchmarks/speed/policy.py [--quick] [--threads N] [--out benchmarks/results]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch

from flowvla.backbones.composed import ComposedBackbone
from flowvla.data.stats import FeatureStats
from flowvla.policy import FusionConfig, HeadConfig, PolicyConfig, RouterConfig, VLAPolicy
from flowvla.profiling import (
    machine_facts,
    markdown_table,
    median_time,
    peak_memory_bytes,
    timing_settings,
    write_results,
)

TEXTS = [
    "pick up the black bowl and place it on the plate",
    "open the top drawer of the cabinet",
    "put the cream cheese in the basket",
    "turn on the stove",
]
CONFIGS = {
    "tiny": dict(
        image=16, patch=8, vision_dim=16, vision_layers=1, lm_dim=32, lm_layers=2, heads=2,
        head_dim=32, head_depth=2, horizon=4, geo_dim=16, router="fixed", fusion="add",
    ),
    "small": dict(
        image=128, patch=16, vision_dim=192, vision_layers=4, lm_dim=384, lm_layers=6, heads=6,
        head_dim=256, head_depth=6, horizon=16, geo_dim=64, router="scalar_mix", fusion="gated",
    ),
}  # fmt: skip
ACTION_DIM, STATE_DIM, VIEWS = 7, 8, 2


def build(c: dict) -> VLAPolicy:
    torch.manual_seed(0)
    backbone = ComposedBackbone.tiny(
        TEXTS * 8,
        image_size=c["image"],
        patch_size=c["patch"],
        vision_dim=c["vision_dim"],
        vision_layers=c["vision_layers"],
        lm_dim=c["lm_dim"],
        lm_layers=c["lm_layers"],
        num_heads=c["heads"],
        vocab_size=512,
    )
    config = PolicyConfig(
        backbone=backbone.spec(),
        horizon=c["horizon"],
        action_dim=ACTION_DIM,
        state_dim=STATE_DIM,
        num_views=VIEWS,
        steps=5,
        solver="midpoint",
        head=HeadConfig(dim=c["head_dim"], depth=c["head_depth"], num_heads=max(2, c["head_dim"] // 64)),
        router=RouterConfig(kind=c["router"], layers="last" if c["router"] == "fixed" else "last:4"),
        fusion=FusionConfig(kind=c["fusion"], geo_dim=c["geo_dim"]),
    )
    g = torch.Generator().manual_seed(0)
    stats = {
        "actions": FeatureStats.from_array(torch.randn(256, ACTION_DIM, generator=g).numpy()),
        "state": FeatureStats.from_array(torch.randn(256, STATE_DIM, generator=g).numpy()),
    }
    return VLAPolicy(config, backbone, stats)


def batch_for(c: dict, b: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "images": torch.randint(
            0, 256, (b, VIEWS, 3, c["image"], c["image"]), generator=g, dtype=torch.uint8
        ),
        "instruction": [TEXTS[i % len(TEXTS)] for i in range(b)],
        "state": torch.randn(b, STATE_DIM, generator=g),
        "depth": torch.rand(b, VIEWS, c["image"], c["image"], generator=g) + 0.5,
        "actions": torch.randn(b, c["horizon"], ACTION_DIM, generator=g),
    }


def bench(name: str, c: dict, args) -> dict:
    policy = build(c)
    n_params = sum(p.numel() for p in policy.parameters())
    train_batch = batch_for(c, args.train_batch)
    opt = torch.optim.AdamW(policy.parameters(), 1e-4)

    def train_step():
        out = policy(train_batch)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    policy.train()
    train_s = median_time(train_step, min_time=args.min_time, blocks=3)
    train_peak = peak_memory_bytes(train_step)
    infer = {k: v for k, v in batch_for(c, 1, seed=1).items() if k != "actions"}
    res = {
        "params_millions": n_params / 1e6,
        "train_batch": args.train_batch,
        "train_samples_per_s": args.train_batch / train_s,
        "train_step_s": train_s,
        "train_peak_bytes": train_peak,
    }
    for cached in (True, False):
        runs = []
        for _ in range(args.repeats):
            _, info = policy.predict_action(infer, seed=0, diagnostics=False, use_context_cache=cached)
            runs.append(info["timings_s"])
        keys = runs[0].keys()
        med = {k: statistics.median(r[k] for r in runs[1:] or runs) for k in keys}
        res["predict_cached" if cached else "predict_uncached"] = med
        res["nfe"] = info["nfe"]
    res["predict_peak_bytes"] = peak_memory_bytes(
        lambda: policy.predict_action(infer, seed=0, diagnostics=False)
    )
    res["cache_speedup_head"] = res["predict_uncached"]["head"] / res["predict_cached"]["head"]
    return res


def print_report(results: dict) -> None:
    m = results["machine"]
    print(
        f"\npolicy benchmark: {results['threads']} threads, torch {m['torch']}, 1-min load "
        f"{m['load_average_1min']:.1f}\n"
    )
    header = [
        "config", "params", "train samples/s", "train MB", "backbone", "geometry + fusion", "routing",
        "head", "per NFE", "total", "head without cache", "cache effect", "predict MB",
    ]  # fmt: skip
    ms = lambda s: f"{s * 1e3:.1f} ms"
    rows = []
    for name, r in results["configs"].items():
        p, u = r["predict_cached"], r["predict_uncached"]
        rows.append(
            [
                name,
                f"{r['params_millions']:.1f} M",
                f"{r['train_samples_per_s']:.1f}",
                f"{(r['train_peak_bytes'] or 0) / 2**20:.0f}",
                ms(p["backbone"]),
                ms(p.get("geometry_and_fusion", 0.0)),
                ms(p["routing"]),
                ms(p["head"]),
                ms(p["head_per_nfe"]),
                ms(p["total"]),
                ms(u["head"]),
                f"{r['cache_speedup_head']:.2f}x",
                f"{(r['predict_peak_bytes'] or 0) / 2**20:.0f}",
            ]
        )
    print(markdown_table(header, rows))
    nfe = next(iter(results["configs"].values()))["nfe"]
    print(
        f"\npredict_action at batch 1, {nfe} NFE (midpoint); MB = peak memory added by a step / a prediction"
    )


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny configuration only, few repeats")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=2.0)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "results")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.min_time = 2, 0.05
    with timing_settings(args.threads):
        names = ["tiny"] if args.quick else list(CONFIGS)
        results = {
            "threads": args.threads,
            "machine": machine_facts(),  # at the start: the load says what else shared the CPU
            "configs": {},
        }
        for name in names:
            print(f"{name} ...", file=sys.stderr, flush=True)
            results["configs"][name] = bench(name, CONFIGS[name], args)
    print_report(results)
    suffix = "_quick" if args.quick else ""
    print(f"wrote {write_results(args.out / f'policy{suffix}.json', results)}")
    return results


if __name__ == "__main__":
    main()
