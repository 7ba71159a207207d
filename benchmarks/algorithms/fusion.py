"""2D-3D fusion benchmark: cost at VLA scale, and a synthetic task only fine geometry can answer.

**Cost.** Each fusion in ``flowvla.fusion.FUSIONS`` at 2 views x 256 patches (a 16 x 16 grid, e.g.
224 px / 14 px) x width 1024 for both 2D and 3D tokens, batch 1, float32 on the CPU: median latency of
the forward pass (no grad, the policy's inference) and of forward + backward (training), and the peak
memory the call allocates beyond its inputs and parameters (from the profiler's allocation events),
plus the parameter count. The region fusion uses a 3 x 3 window, in-view and across both views.

**Synthetic task: which patch is nearest?** Each scene is two 32 x 32 views (4 x 4 patches of 8 px)
with a 16 x 16 depth map per view (a tilted plane plus a few bumps towards the camera, 5 % of pixels
missing). The 2D tokens are random "appearance" vectors that carry no depth; the geometry goes
depth -> ``point_map_from_depth`` -> ``FourierPointEncoder``
-> fusion -> a per-token score; a softmax over the 32 tokens of a scene predicts which patch has the
smallest mean depth. Global broadcast gives every token the same geometry summary, so it cannot beat
chance (1/32); token-aligned and region fusion can. Accuracy is on 1024 held-out scenes after a
short, seeded training run.

Usage: ``python benchmarks/algorithms/fusion.py [--quick] [--threads N] [--out FILE.json]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from flowvla.fusion import FUSIONS, create_fusion
from flowvla.geometry import FourierPointEncoder, PatchGrid, intrinsics_from_fovy, point_map_from_depth
from flowvla.profiling import (
    count_flops,
    machine_facts,
    markdown_table,
    median_time,
    timing_settings,
    write_results,
)

# ---- the synthetic task ----------------------------------------------------------------------------
VIEWS, IMG, PATCH, DEPTH_RES = 2, 32, 8, 16
TASK_FUSIONS = ["global", "add", "concat", "gated", "region"]


def task_kwargs(name: str) -> dict:
    """Constructor arguments a fusion needs for the task's token layout."""
    grid = PatchGrid(IMG, PATCH).grid_size
    return {"grid_size": grid, "num_views": VIEWS, "num_heads": 4} if name == "region" else {}


def make_scenes(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random depth scenes: ``(depth [B, V, h, w], intrinsics [B, V, 3, 3], nearest [B])``.

    ``nearest`` indexes the patch (over views, rows, columns) with the smallest mean valid depth.
    """
    g, h = generator, DEPTH_RES
    rows = torch.linspace(-1, 1, h)
    yy, xx = torch.meshgrid(rows, rows, indexing="ij")
    shape = (batch, VIEWS, 1, 1)
    depth = 2.0 + 0.5 * (torch.rand(shape, generator=g) - 0.5) * (xx + yy)
    for _ in range(3):  # bumps towards the camera
        cy, cx = (torch.rand(shape, generator=g) * 2 - 1 for _ in range(2))
        width = 0.15 + 0.35 * torch.rand(shape, generator=g)
        height = 0.2 + 0.8 * torch.rand(shape, generator=g)
        depth = depth - height * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width**2))
    depth = depth.masked_fill(torch.rand(depth.shape, generator=g) < 0.05, 0.0)  # missing pixels
    k = intrinsics_from_fovy(60.0, h, h).expand(batch, VIEWS, 3, 3)
    # Target from the same masked pooling the model's encoder sees (mean z of each patch's valid pixels).
    p = DEPTH_RES * PATCH // IMG
    valid = depth > 0
    z = (depth * valid).unflatten(3, (-1, p)).unflatten(2, (-1, p)).sum((3, 5))
    n = valid.unflatten(3, (-1, p)).unflatten(2, (-1, p)).sum((3, 5))
    mean_z = torch.where(n > 0, z / n.clamp_min(1), torch.inf).flatten(1)
    return depth, k, mean_z.argmin(1)


class NearestPatchModel(nn.Module):
    """Geometry encoder -> fusion -> per-token score (one logit per patch token)."""

    def __init__(self, fusion: str, dim: int = 32, geo_dim: int = 32) -> None:
        super().__init__()
        self.encoder = FourierPointEncoder(geo_dim, IMG, PATCH, num_freqs=4, hidden_dim=64, init_std=0.1)
        self.fusion = create_fusion(fusion, dim, geo_dim, **task_kwargs(fusion))
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 1))

    def forward(self, tokens_2d: torch.Tensor, depth: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        pm = point_map_from_depth(depth, k)
        geo = self.encoder(pm.points, pm.valid)
        return self.head(self.fusion(tokens_2d, geo.tokens, geo.mask)).squeeze(-1)


def train_nearest_patch(
    fusion: str, steps: int = 300, batch: int = 64, seed: int = 0, eval_size: int = 1024
) -> dict:
    """Train ``NearestPatchModel`` on fresh scenes; return held-out accuracy and chance level."""
    torch.manual_seed(seed)
    model = NearestPatchModel(fusion)
    dim = model.fusion.dim
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed + 1)
    t0 = time.perf_counter()
    for _ in range(steps):
        depth, k, target = make_scenes(batch, g)
        x = torch.randn(batch, VIEWS * 16, dim, generator=g)
        loss = nn.functional.cross_entropy(model(x, depth, k), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    train_s = time.perf_counter() - t0
    g_eval = torch.Generator().manual_seed(10_000 + seed)
    depth, k, target = make_scenes(eval_size, g_eval)
    x = torch.randn(eval_size, VIEWS * 16, dim, generator=g_eval)
    model.eval()
    with torch.no_grad():
        acc = (model(x, depth, k).argmax(1) == target).float().mean().item()
    return {"accuracy": acc, "chance": 1 / (VIEWS * 16), "final_loss": loss.item(), "train_s": train_s}


# ---- cost at VLA scale -----------------------------------------------------------------------------
def peak_allocated_bytes(fn) -> int:
    """Peak bytes allocated during ``fn()`` beyond what was live before (profiler allocation events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def cost_rows(views: int, grid: tuple[int, int], dim: int, geo_dim: int, min_time: float) -> dict:
    g = torch.Generator().manual_seed(0)
    t = views * grid[0] * grid[1]
    x = torch.randn(1, t, dim, generator=g)
    y = torch.randn(1, t, geo_dim, generator=g)
    mask = torch.rand(1, t, generator=g) > 0.1
    configs = {name: {} for name in FUSIONS if name != "region"}
    configs["region"] = {"grid_size": grid, "num_views": views, "num_heads": 16}
    configs["region-xview"] = {**configs["region"], "cross_view": True}
    rows = {}
    for label, kwargs in configs.items():
        torch.manual_seed(0)
        fusion = create_fusion(label.split("-")[0], dim, geo_dim, **kwargs)
        xg, yg = x.clone().requires_grad_(), y.clone().requires_grad_()

        def forward(fusion=fusion):
            with torch.no_grad():
                return fusion(x, y, mask)

        def train_step(fusion=fusion, xg=xg, yg=yg):
            fusion(xg, yg, mask).square().mean().backward()

        fwd_s = median_time(forward, min_time=min_time)
        rows[label] = {
            "params": sum(p.numel() for p in fusion.parameters()),
            "forward_gflop": count_flops(forward) / 1e9,
            "forward_ms": fwd_s * 1e3,
            "fwd_bwd_ms": median_time(train_step, min_time=min_time) * 1e3,
            "forward_peak_mib": peak_allocated_bytes(forward) / 2**20,
            "fwd_bwd_peak_mib": peak_allocated_bytes(train_step) / 2**20,
        }
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: short timings and training")
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "results" / "fusion.json"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: stable timings)")
    ap.add_argument("--steps", type=int, default=None, help="training steps of the synthetic task")
    args = ap.parse_args(argv)

    with timing_settings(args.threads, typecheck=True):
        machine = machine_facts()  # before the run: its load average says what else shared the CPU
        with timing_settings():  # time the modules, not the runtime shape checks
            views, grid, dim = 2, (16, 16), 1024
            cost = cost_rows(views, grid, dim, dim, min_time=0.1 if args.quick else 1.0)
        steps = args.steps or (60 if args.quick else 300)
        task = {name: train_nearest_patch(name, steps=steps) for name in TASK_FUSIONS}

    results = {
        "config": {
            "views": views,
            "patches_per_view": grid[0] * grid[1],
            "dim": dim,
            "geo_dim": dim,
            "batch": 1,
            "dtype": "float32",
            "threads": args.threads,
            "task_steps": steps,
            "quick": args.quick,
        },
        "machine": machine,
        "cost": cost,
        "task": task,
    }
    print_report(results)
    print(f"\nwrote {write_results(args.out, results)}")
    return results


def print_report(results: dict) -> None:
    c = results["config"]
    print(
        f"\nFusion cost: {c['views']} views x {c['patches_per_view']} patches x width {c['dim']}, batch 1, "
        f"{c['dtype']}, {c['threads']} thread(s)"
    )
    load = results["machine"]["load_average_1min"]
    print(f"(1-min load average {load:.1f}: timings inflate when it exceeds the threads)")
    print(
        f"task accuracy: the nearest-patch task, {c['task_steps']} steps, 1024 held-out scenes, chance 0.031"
    )
    task = results["task"]
    header = [
        "fusion",
        "params",
        "fwd GFLOP",
        "fwd ms",
        "fwd+bwd ms",
        "fwd MiB",
        "fwd+bwd MiB",
        "task accuracy",
    ]
    rows = [
        [
            name,
            f"{r['params'] / 1e6:.2f} M",
            f"{r['forward_gflop']:.2f}",
            f"{r['forward_ms']:.1f}",
            f"{r['fwd_bwd_ms']:.1f}",
            f"{r['forward_peak_mib']:.0f}",
            f"{r['fwd_bwd_peak_mib']:.0f}",
            f"{task[name]['accuracy']:.3f}" if name in task else "-",
        ]
        for name, r in results["cost"].items()
    ]
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
