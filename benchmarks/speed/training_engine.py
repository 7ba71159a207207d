"""Training-engine benchmark: samples/s and peak memory of ``flowvla.training.train``.

Runs ``train`` itself (Accelerate, step-keyed sampling, gathered losses, checkpoints at the end only)
on synthetic in-memory items for the policy configurations of ``benchmarks/speed/policy.py`` (``tiny``,
``small``; ``--config JSON`` adds another with the same keys). Throughput is the median of the
per-step ``samples_per_s`` the engine logs, after warm-up steps; peak memory is the resident-set
high-water mark of each process (CPU) or the CUDA allocator's peak (GPU).

* CPU (default): 1 process against 2 processes (``torchrun``, gloo) at the same global batch, with the
  threads split between the processes (``--threads 2``: 1 x 2 threads against 2 x 1 thread).
* GPU (``--device cuda``): one process, float32 and (``--bf16``) bf16 autocast, each eager and
  (``--compile``) compiled with ``torch.compile`` (Accelerate's ``dynamo_backend="inductor"``).

Usage::

    python benchmarks/speed/training_engine.py [--quick] [--threads 2] [--out benchmarks/results]
    python benchmarks/speed/training_engine.py --device cuda --bf16 --compile --configs tiny small
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from flowvla.profiling import machine_facts, markdown_table, write_results

HERE = Path(__file__).resolve().parent


def load_policy_benchmark():
    spec = importlib.util.spec_from_file_location("bench_policy", HERE / "policy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Items(torch.utils.data.Dataset):
    """``n`` synthetic training items for a configuration (images, instruction, state, depth, actions)."""

    def __init__(self, bench, c: dict, n: int) -> None:
        batch = bench.batch_for(c, n)
        self.items = [{k: v[i] for k, v in batch.items()} for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def worker(args) -> None:
    """One process of a measurement: train, then write this process's numbers to ``args.result``."""
    from flowvla.training import TrainConfig, train
    from flowvla.typing import set_typecheck

    bench = load_policy_benchmark()
    c = json.loads(args.config_json)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, args.threads // world))
    set_typecheck(False)
    torch.manual_seed(0)
    policy = bench.build(c)
    rows: list[dict] = []
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(
            out_dir=out,
            steps=args.steps,
            batch_size=args.batch,
            save_every=args.steps,
            log_every=1,
            warmup_steps=1,
            cpu=not cuda,
            mixed_precision="bf16" if args.bf16 else "no",
            dynamo_backend="inductor" if args.compile else None,
        )
        report = train(policy, Items(bench, c, 4 * args.batch), cfg, on_log=rows.append)
    rates = [r["samples_per_s"] for r in rows if "samples_per_s" in r][args.warmup :]
    result = {
        "rank": int(os.environ.get("RANK", "0")),
        "processes": world,
        "threads_per_process": torch.get_num_threads(),
        "samples_per_s": statistics.median(rates) if rates else None,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_cuda_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "distributed_type": report["distributed_type"],
        "mixed_precision": report["mixed_precision"],
    }
    Path(f"{args.result}.rank{result['rank']}").write_text(json.dumps(result))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(c: dict, processes: int, args, *, bf16: bool = False, compile: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result"
        cmd = [sys.executable]
        if processes > 1:
            cmd += ["-m", "torch.distributed.run", "--nproc-per-node", str(processes)]
            cmd += ["--master-port", str(free_port())]
        cmd += [str(Path(__file__).resolve()), "--worker", "--result", str(result)]
        cmd += ["--config-json", json.dumps(c)]
        cmd += ["--threads", str(args.threads), "--steps", str(args.steps), "--batch", str(args.batch)]
        cmd += ["--warmup", str(args.warmup), "--device", args.device]
        cmd += ["--bf16"] * bf16 + ["--compile"] * compile
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, args.threads // processes))}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:6])} ... failed:\n{done.stderr[-4000:]}")
        ranks = [json.loads(Path(f"{result}.rank{r}").read_text()) for r in range(processes)]
    main = ranks[0]
    return {
        "processes": processes,
        "threads_per_process": main["threads_per_process"],
        "samples_per_s": main["samples_per_s"],
        "peak_rss_bytes_per_process": max(r["peak_rss_bytes"] for r in ranks),
        "peak_rss_bytes_total": sum(r["peak_rss_bytes"] for r in ranks),
        "peak_cuda_bytes": main["peak_cuda_bytes"],
        "distributed_type": main["distributed_type"],
        "mixed_precision": main["mixed_precision"],
    }


def print_report(results: dict) -> None:
    m = results["machine"]
    print(
        f"\ntraining-engine benchmark: {results['device']}, {results['threads']} threads, global batch "
        f"{results['batch']}, torch {m['torch']}, 1-min load {m['load_average_1min']:.1f}\n"
    )
    rows = []
    for name, runs in results["configs"].items():
        for label, r in runs.items():
            cuda = r["peak_cuda_bytes"]
            mem = cuda if cuda is not None else r["peak_rss_bytes_per_process"]
            total = cuda if cuda is not None else r["peak_rss_bytes_total"]
            rate = f"{r['samples_per_s']:.1f}" if r["samples_per_s"] else "-"
            rows.append([name, label, rate, f"{mem / 2**20:.0f}", f"{total / 2**20:.0f}"])
    print(markdown_table(["config", "run", "samples/s", "peak MB per process", "peak MB all"], rows))
    print("\nMB: resident-set high-water mark per process (CPU) or the CUDA allocator's peak (GPU)")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny only, few steps")
    ap.add_argument("--configs", nargs="+", default=["tiny", "small"])
    ap.add_argument(
        "--config", type=json.loads, help="extra configuration (JSON, as in benchmarks/speed/policy.py)"
    )
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="CPU: process counts to compare")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads over all processes")
    ap.add_argument("--batch", type=int, default=8, help="global batch per step")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3, help="logged steps left out of the median")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--bf16", action="store_true", help="GPU: also measure bf16 autocast")
    ap.add_argument("--compile", action="store_true", help="GPU: also measure torch.compile (inductor)")
    ap.add_argument("--out", type=Path, default=HERE.parent / "results")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--config-json", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    if args.quick:
        args.configs, args.steps, args.warmup = ["tiny"], 4, 1
    configs = dict(load_policy_benchmark().CONFIGS)
    if args.config:
        configs["custom"] = args.config
    unknown = sorted(set(args.configs) - set(configs))
    if unknown:
        ap.error(f"--configs: unknown {unknown}; known: {sorted(configs)}")
    names = args.configs + (["custom"] if args.config else [])
    results = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "threads": args.threads,
        "batch": args.batch,
        "steps": args.steps,
        "machine": machine_facts(args.device),  # at the start: the load says what else shared the CPU
        "configs": {},
    }
    for name in names:
        print(f"{name} ...", file=sys.stderr, flush=True)
        runs = {}
        if args.device == "cpu":
            for n in args.processes:
                runs[f"{n} process{'es' * (n > 1)}"] = measure(configs[name], n, args)
        else:
            for bf16 in [False] + [True] * args.bf16:
                for compiled in [False] + [True] * args.compile:
                    label = f"{'bf16' if bf16 else 'fp32'}{' compiled' if compiled else ''}"
                    runs[label] = measure(configs[name], 1, args, bf16=bf16, compile=compiled)
        results["configs"][name] = runs
    print_report(results)
    suffix = "_quick" if args.quick else ("_cuda" if args.device == "cuda" else "")
    print(f"wrote {write_results(args.out / f'training_engine{suffix}.json', results)}")
    return results


if __name__ == "__main__":
    main()
