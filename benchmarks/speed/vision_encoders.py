"""Vision encoder cost per image on the CPU at LIBERO's image sizes: forward, forward + backward, FLOPs.

For choosing the LIBERO recipe's encoder under a CPU budget. Every encoder is a real architecture at
random initialisation (no download), float32, timed as the policy uses it (images in, patch tokens
``[B, N, D]`` out):

* flowvla's [`ConvEncoder`][flowvla.backbones.conv.ConvEncoder] (GroupNorm ResNet, stride 16) at
  two widths;
* timm through [`TimmEncoder`][flowvla.backbones.timm_encoders.TimmEncoder] (needs ``.[timm]``;
  skipped without it): ResNet-18 with GroupNorm (last stage, stride 32; and stage 3, stride 16),
  DINOv2 ViT-S/14 with registers, SigLIP ViT-B/16, and the OpenVLA / Prismatic fused featurizer
  (DINOv2 ViT-L/14 + SigLIP So400m/14, second-to-last layers): its FLOPs are counted on the meta
  device (no memory, no compute); ``--time-large`` times it too (tens of minutes on 2 busy cores),
  ``--no-large`` leaves it out.

Per encoder and image size (84, 128, 224 px): parameters, tokens ``N`` x width ``D``, FLOPs of one
image's forward and forward + backward (``count_flops``: matmuls, convolutions, attention), and the
median milliseconds per image (wall clock, and the process's CPU time, which other jobs on a shared
machine inflate less) of a forward without gradients (a frozen encoder) and of a forward + backward
into the weights (a trained one), at each requested thread count, next to the matmul peak measured
in the same run. A CNN's input must be a multiple of its stride: at 84 px those run at the
next multiple (96 px) and the table says so. Times are per image of a batch (``--batch``; encoders
above 20 GFLOP per image forward run one image at a time). Shape checks are off while timing.

Usage: ``python benchmarks/speed/vision_encoders.py --quick --threads 1 2 --out DIR`` (add ``--time-large``
to time the fused featurizer, or ``--no-large`` to leave it out).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from flowvla.backbones.conv import ConvEncoder
from flowvla.profiling import (
    agg_pyplot,
    count_flops,
    machine_facts,
    markdown_table,
    matmul_peak_gflops,
    timing_settings,
    write_results,
)

SIZES = (84, 128, 224)
# Above this forward cost per image a batch takes tens of seconds; one image per call is enough there
# (the per-image cost of a large transformer hardly depends on the batch).
BIG_GFLOP = 20.0


def _timm_encoder(name: str, **kwargs) -> Callable[[int], nn.Module]:
    def build(size: int) -> nn.Module:
        from flowvla.backbones.timm_encoders import TimmEncoder

        return TimmEncoder(name, image_size=size, **kwargs)

    return build


def _dinosiglip(**kwargs) -> Callable[[int], nn.Module]:
    def build(size: int) -> nn.Module:
        from flowvla.backbones.timm_encoders import FusedTimmEncoder

        return FusedTimmEncoder.dinosiglip(size, **kwargs)

    return build


def encoder_table(quick: bool, large: bool) -> dict[str, dict]:
    """``name -> {"build": size -> module, "multiple": input size multiple, "timm": bool}``."""
    tiny_vit = {"embed_dim": 32, "depth": 2, "num_heads": 2} if quick else {}
    table = {
        "conv(32,64,128,256)": {
            "build": lambda s: ConvEncoder(s, (8, 16) if quick else (32, 64, 128, 256)),
            "multiple": 4 if quick else 16,
            "timm": False,
        },
        "conv(16,32,64,128)": {
            "build": lambda s: ConvEncoder(s, (4, 8) if quick else (16, 32, 64, 128)),
            "multiple": 4 if quick else 16,
            "timm": False,
        },
        "resnet18-gn": {
            "build": _timm_encoder("resnet18", norm_layer="groupnorm"),
            "multiple": 32,
            "timm": True,
        },
        "resnet18-gn/stage3": {
            "build": _timm_encoder("resnet18", norm_layer="groupnorm", feature_layer=3),
            "multiple": 16,
            "timm": True,
        },
        "dinov2-s14-reg4": {
            "build": _timm_encoder("vit_small_patch14_reg4_dinov2", **tiny_vit),
            "multiple": None,
            "timm": True,
        },
        "siglip-b16": {
            "build": _timm_encoder("vit_base_patch16_siglip_224", **tiny_vit),
            "multiple": None,
            "timm": True,
        },
    }
    if large:
        table["dinosiglip-L+so400m"] = {
            "build": _dinosiglip(**tiny_vit),
            "multiple": None,
            "timm": True,
            "large": True,
        }
    return table


def used_size(size: int, multiple: int | None) -> int:
    """The input size an encoder runs at: ``size`` rounded up to a multiple of its stride."""
    return size if multiple is None else math.ceil(size / multiple) * multiple


def timed(fn: Callable[[], object], *, min_time: float, max_calls: int) -> tuple[float, float]:
    """Median wall and process-CPU seconds per call of ``fn`` (after one warm-up call).

    Dev machines share their cores with other jobs, which inflates wall time but hardly the CPU time
    the process itself uses; with one thread, CPU time is close to the wall time of an idle core.
    """
    fn()
    walls, cpus, start = [], [], time.perf_counter()
    while len(walls) < max_calls and (len(walls) < 3 or time.perf_counter() - start < min_time):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def measure(
    encoder: nn.Module, size: int, batch: int, threads: list[int], min_time: float, device: str = "cpu"
) -> dict:
    """FLOPs per image and ms per image (forward without grad; forward + backward) per thread count.

    On ``device="meta"`` only the FLOPs, parameters and token shape are measured (no timings).
    """
    g = torch.Generator().manual_seed(0)
    one = torch.rand(1, 3, size, size, generator=g).to(device)
    encoder.train()  # training mode: what a trained encoder costs (timm drop-path etc. are 0 anyway)

    def forward(x=one):
        with torch.no_grad():
            return encoder(x)

    def train_step(x=one):
        encoder(x).square().mean().backward()

    fwd_flops = count_flops(forward)
    bwd_flops = count_flops(train_step)
    tokens = forward()
    if device == "meta":
        threads = []
    if fwd_flops / 1e9 > BIG_GFLOP:
        batch = 1
    images = torch.rand(batch, 3, size, size, generator=g)
    row = {
        "size": size,
        "batch": batch,
        "params": sum(p.numel() for p in encoder.parameters()),
        "tokens": int(tokens.shape[1]),
        "width": int(tokens.shape[2]),
        "forward_gflop": fwd_flops / 1e9,
        "fwd_bwd_gflop": bwd_flops / 1e9,
        "threads": {},
    }
    slow = fwd_flops * batch / 1e9 > 50  # a few calls are plenty when one takes seconds
    for t in threads:
        torch.set_num_threads(t)
        fwd_wall, fwd_cpu = timed(lambda: forward(images), min_time=min_time, max_calls=3 if slow else 50)
        bwd_wall, bwd_cpu = timed(lambda: train_step(images), min_time=min_time, max_calls=3 if slow else 50)
        encoder.zero_grad(set_to_none=True)
        row["threads"][str(t)] = {
            "forward_ms": fwd_wall / batch * 1e3,
            "fwd_bwd_ms": bwd_wall / batch * 1e3,
            "forward_cpu_ms": fwd_cpu / batch * 1e3,
            "fwd_bwd_cpu_ms": bwd_cpu / batch * 1e3,
            "forward_gflops": fwd_flops * batch / fwd_wall / 1e9,
            "fwd_bwd_gflops": bwd_flops * batch / bwd_wall / 1e9,
        }
    return row


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: toy encoders at 32 px, short timings")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch intra-op thread counts")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="image sizes (default 84 128 224)")
    ap.add_argument("--batch", type=int, default=4, help="images per timed call")
    ap.add_argument("--only", nargs="+", default=None, help="encoder names to run (default all)")
    ap.add_argument("--no-large", action="store_true", help="leave out the ~0.7 B-parameter fused featurizer")
    ap.add_argument("--time-large", action="store_true", help="time the fused featurizer, not only its FLOPs")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "results")
    args = ap.parse_args(argv)

    sizes = args.sizes or ([32] if args.quick else list(SIZES))
    have_timm = importlib.util.find_spec("timm") is not None
    table = encoder_table(args.quick, large=not args.no_large)
    if args.only:
        unknown = set(args.only) - set(table)
        if unknown:
            ap.error(f"--only: unknown encoders {sorted(unknown)}; choose from {sorted(table)}")
        table = {k: v for k, v in table.items() if k in args.only}
    skipped = [name for name, e in table.items() if e["timm"] and not have_timm]
    if skipped:
        print(
            f"timm not installed: skipping {', '.join(skipped)} (pip install -e '.[timm]')", file=sys.stderr
        )

    suffix = "_quick" if args.quick else ""
    machine = machine_facts()  # at the start: the load says what else shared the CPU
    t0 = time.perf_counter()
    results: dict = {"encoders": {}, "matmul_peak_gflops": {}, "machine": machine}
    with timing_settings():  # time the encoders, not the runtime shape checks
        for t in args.threads:
            torch.set_num_threads(t)
            results["matmul_peak_gflops"][str(t)] = matmul_peak_gflops(
                1024, min_time=0.1 if args.quick else 0.5
            )
        for name, entry in table.items():
            if name in skipped:
                continue
            rows = {}
            for size in sizes:
                run_size = used_size(size, entry["multiple"])
                torch.manual_seed(0)
                # A large encoder untimed: built on the meta device, where FLOPs count without compute.
                device = "meta" if entry.get("large") and not (args.time_large or args.quick) else "cpu"
                with torch.device(device):
                    encoder = entry["build"](run_size)
                rows[str(size)] = measure(
                    encoder,
                    run_size,
                    args.batch,
                    args.threads,
                    min_time=0.05 if args.quick else 0.5,
                    device=device,
                )
                del encoder
            results["encoders"][name] = rows
            print(f"  {name}: done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
            # The large encoders take minutes on a busy machine: keep what is measured so far.
            write_results(args.out / f"vision_encoders{suffix}.partial.json", results)
    results["config"] = {
        "sizes": sizes,
        "batch": args.batch,
        "threads": args.threads,
        "dtype": "float32",
        "quick": args.quick,
        "skipped": skipped,
        "timm": _version("timm"),
        "load_average_1min_end": machine_facts()["load_average_1min"],
        "seconds": time.perf_counter() - t0,
    }
    print_report(results)
    path = write_results(args.out / f"vision_encoders{suffix}.json", results)
    (args.out / f"vision_encoders{suffix}.partial.json").unlink(missing_ok=True)
    print(f"\nwrote {path}")
    if not args.no_plot:
        plot(results, args.out / f"vision_encoders{suffix}.png")
    return results


def _version(package: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:  # not installed
        return None


def print_report(results: dict) -> None:
    c, m = results["config"], results["machine"]
    print(
        f"\nVision encoders, float32 on the CPU ({m['processor']}), torch {m['torch']}, timm {c['timm']}; "
        f"1-min load average {m['load_average_1min']:.1f} -> {c['load_average_1min_end']:.1f} "
        "(timings inflate when it exceeds the threads)"
    )
    peaks = ", ".join(f"{t} thread(s) {p:.0f}" for t, p in results["matmul_peak_gflops"].items())
    print(f"matmul peak (1024^3) GFLOP/s: {peaks}")
    threads = [str(t) for t in c["threads"]]
    header = ["encoder", "px", "params", "tokens x width", "fwd GFLOP", "fwd+bwd GFLOP"]
    header += [f"{k} @{t}" for t in threads for k in ("fwd ms", "fwd+bwd ms", "fwd+bwd CPU ms")]
    rows = []
    for name, sized in results["encoders"].items():
        for size, r in sized.items():
            px = size if int(size) == r["size"] else f"{size}>{r['size']}"  # a CNN rounded up
            row = [name, px, f"{r['params'] / 1e6:.1f} M", f"{r['tokens']} x {r['width']}"]
            row += [f"{r['forward_gflop']:.2f}", f"{r['fwd_bwd_gflop']:.2f}"]
            for t in threads:
                timing = r["threads"].get(t)  # None: FLOPs only
                keys = ("forward_ms", "fwd_bwd_ms", "fwd_bwd_cpu_ms")
                row += ["-"] * 3 if timing is None else [f"{timing[k]:.1f}" for k in keys]
            rows.append(row)
    print(markdown_table(header, rows))
    print(
        "(ms per image, wall clock; 'f+b cpu': the process's CPU ms per image, less sensitive to other "
        "jobs;\n 'a>b' px: a CNN run at b px, the next multiple of its stride)"
    )


def plot(results: dict, path: Path) -> None:
    plt = agg_pyplot()
    if plt is None:
        return
    threads = [str(t) for t in results["config"]["threads"]]
    fig, axes = plt.subplots(1, len(threads) + 1, figsize=(5 * (len(threads) + 1), 4.5))
    for i, (name, rows) in enumerate(results["encoders"].items()):
        sizes = [int(s) for s in rows]
        style = {"color": f"C{i}", "marker": "o", "ms": 4, "label": name}
        axes[0].plot(sizes, [r["fwd_bwd_gflop"] for r in rows.values()], **style)
        for ax, t in zip(axes[1:], threads, strict=True):
            if not all(t in r["threads"] for r in rows.values()):
                continue  # FLOPs only
            ax.plot(sizes, [r["threads"][t]["fwd_bwd_cpu_ms"] for r in rows.values()], **style)
            ax.plot(sizes, [r["threads"][t]["fwd_bwd_ms"] for r in rows.values()], ls=":", color=f"C{i}")
    axes[0].set(yscale="log", xlabel="image size (px)", ylabel="GFLOP per image", title="forward + backward")
    for ax, t in zip(axes[1:], threads, strict=True):
        ax.set(
            yscale="log",
            xlabel="image size (px)",
            ylabel="ms per image",
            title=f"fwd+bwd, {t} thread(s): CPU time (solid), wall (dotted)",
        )
    for ax in axes:
        ax.set_xticks(results["config"]["sizes"])
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
