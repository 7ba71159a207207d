"""Throughput of the LIBERO recipe on this machine: training samples/s (with a profile of one step),
demonstrations per minute and evaluation episodes per minute.

    python benchmarks/speed/throughput.py                      # all three, the default recipe
    python benchmarks/speed/throughput.py --baseline main      # the same, alternating with another revision
    python benchmarks/speed/throughput.py --variants           # the engine's speed options side by side
    python benchmarks/speed/throughput.py --loss-steps 300     # loss curves: float32 against the fast options
    python benchmarks/speed/throughput.py --quick              # seconds: tiny shapes, no simulator (CI)
    python benchmarks/speed/throughput.py --eval-variants --run runs/suites/libero_spatial
                                                               # evaluation settings side by side

**Training** runs the recipe's own training configuration
([`train_config`][flowvla.recipes.train.train_config] of the revision measured) through
[`flowvla.training.train`][flowvla.training.train] on synthetic demonstrations of the recipe's shapes
(``ChunkDataset`` with its random-shift augmentation, so data loading is in the measurement);
samples/s is the median of the engine's per-step rate after warm-up steps, and CPU seconds per sample
(all threads of the process) are reported beside it, since on a shared machine wall time inflates
and CPU time hardly does. **The profile** times one step's parts (data, vision encoder, language
model, action head with router and losses, backward per part, optimizer), counts its FLOPs and sets
them against this machine's matmul peak (float32 and bf16) in the same run. **Demonstrations** run
the recipe's generation of a few attempts of one task in this process (planning, then rendering
split into state restores and camera renders); **evaluation** runs a few episodes of an untrained
recipe policy (physics, rendering, observation processing and the policy, from the episode records).

``--eval-variants`` evaluates a trained run's policy (``--run``, its recipe's evaluation settings) on
the same episodes under evaluation settings side by side, in alternation (``--repeats`` rounds):
rebuilt model one episode at a time (the protocol's), kept model, and kept model with several
episodes per worker planned in batches; episodes per minute, CPU seconds per episode (this process
and its workers, building the environments included), an episode's own seconds and their split
(building excluded), the successes, and how many episodes end alike (success and length) as under the
first setting.

``--baseline REV`` checks ``REV`` out in a temporary git worktree and measures it in subprocesses
with ``PYTHONPATH`` pointing there, alternating with the current tree, ``--repeats`` times each, then
prints medians and ratios. Writes JSON (default ``benchmarks/results/throughput.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowvla.profiling import count_flops, machine_facts, markdown_table, matmul_peak_gflops, write_results

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# The recipe at CI size: the default's structure at tiny widths and 32 px.
QUICK_SETTINGS = {
    "data.image_size": 32,
    "policy.conv_channels": [8, 16],
    "policy.lm_dim": 32,
    "policy.lm_heads": 2,
    "policy.keypoints": 4,
    "policy.head.dim": 32,
    "policy.head.depth": 1,
    "policy.head.num_heads": 2,
    "train.batch_size": 4,
    "train.shift": 2,
}

# The engine options compared by --variants (TrainConfig fields over the recipe's configuration).
VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {"mixed_precision": "no", "attention_backend": None, "optimizer_impl": None},
    "fp32 contiguous convs": {"mixed_precision": "no", "attention_backend": None, "_contiguous": True},
    "fp32 fused AdamW": {"mixed_precision": "no", "attention_backend": None, "optimizer_impl": "fused"},
    "fp32 foreach AdamW": {"mixed_precision": "no", "attention_backend": None, "optimizer_impl": "foreach"},
    "fp32 1 data worker": {"mixed_precision": "no", "attention_backend": None, "num_workers": 1},
    "bf16": {"mixed_precision": "bf16", "attention_backend": None},
    "bf16 math attention": {"mixed_precision": "bf16", "attention_backend": "math"},
    "bf16 math contiguous convs": {
        "mixed_precision": "bf16",
        "attention_backend": "math",
        "_contiguous": True,
    },
    "bf16 math fused": {"mixed_precision": "bf16", "attention_backend": "math", "optimizer_impl": "fused"},
    "bf16 math fused 1 worker": {
        "mixed_precision": "bf16",
        "attention_backend": "math",
        "optimizer_impl": "fused",
        "num_workers": 1,
    },
}


# ------------------------------------------------------------------------------------------ data
class SyntheticDemos:
    """An [`EpisodeSource`][flowvla.data.dataset.EpisodeSource] of the recipe's shapes: ``episodes``
    of ``length`` steps, views rendered every ``stride`` steps, smooth images, 8-D state, 7-D actions."""

    INSTRUCTIONS = (
        "pick up the soup and place it in the basket",
        "pick up the milk and place it in the basket",
    )

    def __init__(self, episodes: int, length: int, views: int, size: int, stride: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.length, self.stride = length, stride
        frames = len(range(0, length, stride))
        ramp = np.linspace(0, 60, size, dtype=np.float32)
        self._images = []
        for _ in range(episodes):
            base = rng.uniform(0, 190, size=(frames, views, 3, 1, 1)).astype(np.float32)
            self._images.append((base + ramp[None, None, None, :, None] + ramp).astype(np.uint8))
        self._actions = [rng.uniform(-1, 1, size=(length, 7)).astype(np.float32) for _ in range(episodes)]
        self._states = [rng.normal(size=(length, 8)).astype(np.float32) for _ in range(episodes)]

    def __len__(self) -> int:
        return len(self._actions)

    def episode_length(self, e: int) -> int:
        return self.length

    def instruction(self, e: int) -> str:
        return self.INSTRUCTIONS[e % len(self.INSTRUCTIONS)]

    def actions(self, e: int) -> np.ndarray:
        return self._actions[e]

    def states(self, e: int) -> np.ndarray:
        return self._states[e]

    def observed_steps(self, e: int) -> np.ndarray:
        return np.arange(0, self.length, self.stride)

    def images(self, e: int, t: int) -> np.ndarray:
        return self._images[e][t // self.stride]

    def geometry(self, e: int, t: int) -> None:
        return None


def recipe_config(quick: bool) -> Any:
    from flowvla.recipes.settings import preset, with_settings

    cfg = preset("default")
    return with_settings(cfg, QUICK_SETTINGS) if quick else cfg


def recipe_dataset(cfg: Any, quick: bool) -> Any:
    """The recipe's training items (as ``recipes.parts`` builds them) over synthetic demonstrations."""
    from flowvla.data.augment import ImageAugment
    from flowvla.data.dataset import ChunkDataset

    d = cfg.data
    source = SyntheticDemos(
        4 if quick else 20, 40 if quick else 140, len(d.cameras), d.image_size, d.image_stride
    )
    augment = ImageAugment(shift=cfg.train.shift) if cfg.train.shift else None
    return ChunkDataset(source, cfg.policy.horizon, augment=augment, seed=cfg.seed)


# -------------------------------------------------------------------------------------- training
def training_rate(
    cfg: Any, data: Any, steps: int, warmup: int, options: dict[str, Any] | None = None
) -> dict:
    """Train the recipe's policy for ``steps`` steps with the recipe's ``TrainConfig`` (plus
    ``options``); returns the median samples/s and CPU seconds per sample after ``warmup`` steps."""
    import flowvla.typing
    from flowvla.recipes.parts import build_policy
    from flowvla.recipes.train import train_config
    from flowvla.training import train

    options = dict(options or {})
    contiguous = options.pop("_contiguous", False)
    torch.manual_seed(cfg.seed)
    policy = build_policy(cfg, data)
    if contiguous:
        policy.to(memory_format=torch.contiguous_format)
    flowvla.typing.set_typecheck(False)  # as the recipe trains
    rows: list[tuple[float, float | None]] = []
    with tempfile.TemporaryDirectory() as out:
        tc = train_config(cfg, Path(out), progress=False)
        tc = dataclasses.replace(
            tc, steps=steps, save_every=steps, log_every=1, max_minutes=None, val_every=0, **options
        )
        report = train(
            policy, data, tc, on_log=lambda r: rows.append((time.process_time(), r["samples_per_s"]))
        )
    cpu = [b[0] - a[0] for a, b in itertools.pairwise(rows)][warmup:]
    rates = [r for _, r in rows][warmup + 1 :]
    return {
        "samples_per_s": statistics.median(rates),
        "cpu_s_per_sample": statistics.median(cpu) / tc.batch_size,
        "mixed_precision": report["mixed_precision"],
        "train_config": {
            k: getattr(tc, k, None)
            for k in ("batch_size", "mixed_precision", "attention_backend", "optimizer_impl", "num_workers")
        },
    }


def compare_variants(cfg: Any, data: Any, names: list[str], steps: int, warmup: int, repeats: int) -> dict:
    """Each named variant's training rate, interleaved over ``repeats`` rounds in this process."""
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names:
            print(f"variant {n!r}, round {r + 1}/{repeats} ...", file=sys.stderr, flush=True)
            runs[n].append(training_rate(cfg, data, steps, warmup, VARIANTS[n]))
    return summarise(runs, names[0])


def summarise(runs: dict[str, list[dict]], reference: str) -> dict:
    """Medians over repeats, their spread, and ratios against ``reference`` (per round, then median)."""
    out = {}
    for n, rs in runs.items():
        rates = [r["samples_per_s"] for r in rs]
        cpu = [r["cpu_s_per_sample"] for r in rs]
        ratios = [
            r["samples_per_s"] / ref["samples_per_s"] for r, ref in zip(rs, runs[reference], strict=True)
        ]
        cpu_ratios = [
            ref["cpu_s_per_sample"] / r["cpu_s_per_sample"]
            for r, ref in zip(rs, runs[reference], strict=True)
        ]
        out[n] = {
            "samples_per_s": statistics.median(rates),
            "samples_per_s_runs": rates,
            "cpu_s_per_sample": statistics.median(cpu),
            "ratio": statistics.median(ratios),
            "ratio_runs": ratios,
            "cpu_ratio": statistics.median(cpu_ratios),
            "train_config": rs[0].get("train_config"),
        }
    return out


def loss_curves(cfg: Any, data: Any, steps: int, variants: list[str]) -> dict:
    """Logged losses of ``variants`` trained on the same batches and draws for ``steps`` steps."""
    import flowvla.typing
    from flowvla.recipes.parts import build_policy
    from flowvla.recipes.train import train_config
    from flowvla.training import train

    curves = {}
    for n in variants:
        options = {k: v for k, v in VARIANTS[n].items() if not k.startswith("_")}
        torch.manual_seed(cfg.seed)
        policy = build_policy(cfg, data)
        flowvla.typing.set_typecheck(False)
        rows: list[dict] = []
        with tempfile.TemporaryDirectory() as out:
            tc = dataclasses.replace(
                train_config(cfg, Path(out), progress=False),
                steps=steps,
                warmup_steps=max(1, steps // 20),
                save_every=steps,
                log_every=max(1, steps // 60),
                max_minutes=None,
                val_every=0,
                **options,
            )
            train(policy, data, tc, on_log=rows.append)
        curves[n] = {"step": [r["step"] for r in rows], "loss": [r["loss"] for r in rows]}
    return curves


# --------------------------------------------------------------------------------------- profile
def _clock() -> float:
    """CPU seconds of this thread with one torch thread (what the step costs, whatever else shares
    the machine), else wall seconds."""
    return time.thread_time() if torch.get_num_threads() == 1 else time.perf_counter()


class _PartClock:
    """Forward seconds per part (module hooks) and the moment each part's output gradient is
    complete in backward (tensor hooks), for one step."""

    def __init__(self, parts: dict[str, torch.nn.Module]) -> None:
        self.forward: dict[str, float] = dict.fromkeys(parts, 0.0)
        self.grad_ready: dict[str, float] = {}
        self.handles = []
        for name, module in parts.items():
            self.handles.append(module.register_forward_pre_hook(self._start(name)))
            self.handles.append(module.register_forward_hook(self._stop(name)))
        self._t0: dict[str, float] = {}

    def _start(self, name: str):
        def hook(module, args):
            self._t0[name] = _clock()

        return hook

    def _stop(self, name: str):
        def hook(module, args, output):
            self.forward[name] += _clock() - self._t0[name]
            tensors = output if isinstance(output, torch.Tensor) else getattr(output, "hidden_states", None)
            for t in [tensors] if isinstance(tensors, torch.Tensor) else list(tensors or ()):
                if t.requires_grad:
                    t.register_hook(self._ready(name))

        return hook

    def _ready(self, name: str):
        def hook(grad):
            self.grad_ready[name] = max(self.grad_ready.get(name, 0.0), _clock())

        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def profile_step(cfg: Any, data: Any, options: dict[str, Any], repeats: int) -> dict:
    """Seconds per part of one training step (medians over ``repeats``) and the step's FLOPs."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import flowvla.typing
    from flowvla.data.batch import collate
    from flowvla.recipes.parts import build_policy
    from flowvla.training.config import TrainConfig
    from flowvla.training.engine import _attention_kernel, _optimizer

    torch.manual_seed(cfg.seed)
    policy = build_policy(cfg, data)
    flowvla.typing.set_typecheck(False)
    tc = TrainConfig(out_dir="-", **{k: v for k, v in options.items() if not k.startswith("_")})
    opt = _optimizer([p for p in policy.parameters() if p.requires_grad], tc)
    bf16 = tc.mixed_precision == "bf16"
    b = cfg.train.batch_size
    g = torch.Generator().manual_seed(0)
    parts = {
        "vision encoder": policy.backbone.vision,
        "language model": policy.backbone.language_model,
        "action head": policy.head,
    }

    def batch() -> dict:
        return collate([data[int(i)] for i in torch.randint(len(data), (b,), generator=g)])

    def forward(x: dict) -> torch.Tensor:
        with (
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16),
            _attention_kernel(tc.attention_backend),
        ):
            return policy(x).loss

    rows: dict[str, list[float]] = {}
    x = batch()
    forward(x).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    for _ in range(repeats):
        t0 = _clock()
        x = batch()
        t_data = _clock() - t0
        clock = _PartClock(parts)
        t0 = _clock()
        loss = forward(x)
        t1 = _clock()
        loss.backward()
        t2 = _clock()
        clock.close()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = _clock()
        lm_ready = clock.grad_ready.get("language model", t1)
        vision_ready = clock.grad_ready.get("vision encoder", lm_ready)
        fwd = clock.forward
        sample = {
            "data loading + augmentation": t_data,
            "forward: vision encoder": fwd["vision encoder"],
            "forward: language model": fwd["language model"],
            "forward: action head": fwd["action head"],
            "forward: rest (projector, router, keypoints, tokenizer, loss)": (t1 - t0) - sum(fwd.values()),
            "backward: head, router, keypoints, loss": lm_ready - t1,
            "backward: language model + projector": vision_ready - lm_ready,
            "backward: vision encoder": t2 - vision_ready,
            "optimizer step": t3 - t2,
        }
        for k, v in sample.items():
            rows.setdefault(k, []).append(v)
    seconds = {k: statistics.median(v) for k, v in rows.items()}
    with sdpa_kernel(SDPBackend.MATH):
        flops = count_flops(lambda: forward(x).backward())
    opt.zero_grad(set_to_none=True)
    clock = "thread CPU time" if torch.get_num_threads() == 1 else "wall time"
    return {
        "seconds": seconds,
        "step_s": sum(seconds.values()),
        "flops": flops,
        "batch_size": b,
        "clock": clock,
    }


def matmul_peak(size: int, dtype: torch.dtype, min_time: float) -> float:
    """GFLOP/s of a square matmul: on thread CPU time with one torch thread (the load of a shared
    machine does not lower it), else [`matmul_peak_gflops`][flowvla.profiling.matmul_peak_gflops]."""
    if torch.get_num_threads() != 1:
        return matmul_peak_gflops(size, dtype=dtype, min_time=min_time)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    spent = 0.0
    while spent < min_time or best == float("inf"):
        t0 = time.thread_time()
        torch.mm(a, b)
        dt = max(time.thread_time() - t0, 1e-9)
        best, spent = min(best, dt), spent + dt
    return 2 * size**3 / best / 1e9


def print_profile(profiles: dict[str, dict], peaks: dict[str, float]) -> None:
    names = list(profiles)
    keys = list(profiles[names[0]]["seconds"])
    rows = []
    for k in keys:
        cells = [k]
        for n in names:
            p = profiles[n]
            s = p["seconds"][k]
            cells += [f"{1000 * s:.0f}", f"{100 * s / p['step_s']:.0f}%"]
        rows.append(cells)
    rows.append(["step", *[c for n in names for c in (f"{1000 * profiles[n]['step_s']:.0f}", "100%")]])
    header = ["part", *[c for n in names for c in (f"{n} ms", "share")]]
    print(markdown_table(header, rows))
    for n in names:
        p = profiles[n]
        gflop = p["flops"] / 1e9
        peak = peaks["bf16" if "bf16" in n else "fp32"]
        print(
            f"{n}: {gflop:.1f} GFLOP per step (matmuls, convolutions, attention; forward + backward); at the "
            f"measured {'bf16' if 'bf16' in n else 'fp32'} matmul peak of {peak:.0f} GFLOP/s the floor is "
            f"{1000 * gflop / peak:.0f} ms, the step takes {1000 * p['step_s']:.0f} ms "
            f"({gflop / p['step_s']:.1f} GFLOP/s, {100 * gflop / p['step_s'] / peak:.0f}% of peak)"
        )


# ------------------------------------------------------------------------------- demos, episodes
def demonstrations(cfg: Any, attempts: int) -> dict:
    """Generate ``attempts`` attempts of the recipe's first task in this process; the rendering of the
    kept ones split into state restores (every step) and camera renders (every ``image_stride``)."""
    from flowvla.data.hdf5 import LiberoHDF5Reader
    from flowvla.recipes.generate import _env_for, run_attempt

    d = cfg.data
    suite, task = d.suite, d.tasks[0]
    with tempfile.TemporaryDirectory() as out:
        gcfg = dataclasses.replace(
            d.generate_config(out, depth=cfg.needs_depth, seed=cfg.seed, progress=False), workers=1
        )
        t0 = time.perf_counter()
        recs = [run_attempt(gcfg, suite, task, a) for a in range(attempts)]
        wall = time.perf_counter() - t0
        kept = [r for r in recs if r["kept"]]
        env = _env_for(gcfg, suite, task)
        restore = render = 0.0
        renders = restores = 0
        files = sorted(Path(out).rglob("attempt_*.hdf5"))
        if files:
            states = LiberoHDF5Reader(files[0]).sim_states(0)
            for t, s in enumerate(states):
                t1 = time.perf_counter()
                env.set_sim_state(s)
                env.proprio()
                t2 = time.perf_counter()
                restore += t2 - t1
                restores += 1
                if t % d.image_stride == 0:
                    env.observe()
                    render += time.perf_counter() - t2
                    renders += 1
    total = sum(r["time_total"] for r in recs)
    return {
        "attempts": attempts,
        "kept": len(kept),
        "wall_s": wall,
        "demos_per_minute": 60 * len(kept) / wall,
        "plan_s": sum(r["time_plan"] for r in recs),
        "render_s": sum(r["time_render"] for r in recs),
        "total_s": total,
        "restore_ms_per_step": 1000 * restore / max(1, restores),
        "observe_ms_per_render": 1000 * render / max(1, renders),
        "views_per_render": len(d.cameras),
        "image_size": d.image_size,
        "depth": cfg.needs_depth,
    }


def episodes(cfg: Any, data: Any, count: int, max_steps: int) -> dict:
    """Run ``count`` episodes of an untrained recipe policy on the first task (``max_steps`` each)."""
    import flowvla.typing
    from flowvla.envs.closed_loop import run_episode
    from flowvla.envs.libero import LiberoEnv
    from flowvla.recipes.parts import build_policy

    torch.manual_seed(cfg.seed)
    policy = build_policy(cfg, data).eval()
    flowvla.typing.set_typecheck(False)
    d = cfg.data
    env = LiberoEnv(d.suite, d.tasks[0], image_size=d.image_size, cameras=d.cameras, depth=cfg.needs_depth)
    rcfg = dataclasses.replace(cfg.eval, video="none").rollout_config(
        policy, suite=d.suite, tasks=[d.tasks[0]], cameras=d.cameras, out_dir=None, progress=False
    )
    rcfg = dataclasses.replace(rcfg, max_steps=max_steps)
    t0 = time.perf_counter()
    recs = [run_episode(env, policy, rcfg, i)[0] for i in range(count)]
    wall = time.perf_counter() - t0
    env.close()
    keys = ("time_total", "time_reset", "time_physics", "time_render", "time_policy")
    sums = {k: sum(getattr(r, k) for r in recs) for k in keys}
    sums["time_other"] = sums["time_total"] - sum(sums[k] for k in keys[1:])
    return {
        "episodes": count,
        "steps": sum(r.steps for r in recs),
        "replans": sum(r.replans for r in recs),
        "wall_s": wall,
        "episodes_per_minute": 60 * count / wall,
        **sums,
    }


# ---------------------------------------------------------------------- evaluation settings
#: Evaluation settings compared by --eval-variants (RolloutConfig fields).
EVAL_VARIANTS: dict[str, dict[str, Any]] = {
    "rebuilt model, 1 env a worker": {"hard_reset": True, "envs_per_worker": 1},
    "kept model, 1 env a worker": {"hard_reset": False, "envs_per_worker": 1},
    "kept model, 4 envs a worker": {"hard_reset": False, "envs_per_worker": 4},
}


def _cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def evaluation_variants(
    run: Path, tasks: list[int] | None, init_states: int, workers: int, repeats: int
) -> dict:
    """Evaluate ``run``'s policy on the same episodes under each of ``EVAL_VARIANTS``, alternating."""
    from flowvla.envs.rollout import evaluate
    from flowvla.recipes.settings import load_run_policy

    policy, cfg = load_run_policy(run)
    ev = dataclasses.replace(cfg.eval, init_states=init_states, video="none", workers=workers)
    base = ev.rollout_config(
        policy,
        suite=cfg.data.suites[0],
        tasks=tasks or list(cfg.data.tasks)[:2],
        cameras=cfg.data.cameras,
        out_dir=None,
        seed=cfg.seed,
        progress=False,
    )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in EVAL_VARIANTS}
    ends: dict[str, list[tuple[bool, int]]] = {}
    for r in range(repeats):
        names = list(EVAL_VARIANTS) if r % 2 == 0 else list(EVAL_VARIANTS)[::-1]
        for name in names:
            records: list[Any] = []
            cpu, t0 = _cpu_seconds(), time.perf_counter()
            evaluate(policy, dataclasses.replace(base, **EVAL_VARIANTS[name]), on_episode=records.append)
            wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu
            records.sort(key=lambda rec: (rec.task_index, rec.init_state))
            ends.setdefault(name, [(rec.success, rec.steps) for rec in records])
            n = len(records)
            parts = ("time_total", "time_reset", "time_physics", "time_render", "time_policy")
            runs[name].append(
                {
                    "episodes": n,
                    "successes": sum(rec.success for rec in records),
                    "wall_s": wall,
                    "episodes_per_minute": 60 * n / wall,
                    "cpu_s_per_episode": cpu / n,
                    **{p: sum(getattr(rec, p) for rec in records) / n for p in parts},
                }
            )
            print(
                f"round {r + 1} {name}: {runs[name][-1]['episodes_per_minute']:.2f} episodes/min", flush=True
            )
    first = next(iter(EVAL_VARIANTS))
    out: dict[str, Any] = {}
    for name, rows in runs.items():
        med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
        med["ratio"] = med["episodes_per_minute"] / statistics.median(
            row["episodes_per_minute"] for row in runs[first]
        )
        med["cpu_ratio"] = (
            statistics.median(row["cpu_s_per_episode"] for row in runs[first]) / med["cpu_s_per_episode"]
        )
        med["ending_alike"] = sum(a == b for a, b in zip(ends[name], ends[first], strict=True))
        out[name] = med
    return {"run": str(run), "tasks": base.tasks, "init_states": base.init_states, "variants": out}


def print_evaluation_variants(result: dict) -> None:
    rows = [
        [
            name,
            f"{v['episodes_per_minute']:.2f}",
            f"{v['ratio']:.2f}",
            f"{v['cpu_s_per_episode']:.1f}",
            f"{v['cpu_ratio']:.2f}",
            f"{v['time_total']:.2f}",
            " / ".join(f"{v[p]:.2f}" for p in ("time_reset", "time_physics", "time_render", "time_policy")),
            f"{v['successes']:g}/{v['episodes']:g}",
            f"{v['ending_alike']}/{v['episodes']:g}",
        ]
        for name, v in result["variants"].items()
    ]
    head = ["setting", "episodes/min", "ratio", "CPU s / episode", "CPU ratio", "episode s"]
    head += ["reset / physics / render / policy s", "successes", "end alike"]
    print(markdown_table(head, rows))


# ------------------------------------------------------------------------------ one measurement
def measure(args: argparse.Namespace) -> dict:
    """One process's measurements of the tree on ``PYTHONPATH`` (what ``--child`` runs)."""
    torch.set_num_threads(args.threads)
    cfg = recipe_config(args.quick)
    data = recipe_dataset(cfg, args.quick)
    out: dict[str, Any] = {}
    if "training" in args.what:
        out["training"] = training_rate(cfg, data, args.steps, args.warmup)
    if "demos" in args.what:
        out["demos"] = demonstrations(cfg, args.demos)
    if "eval" in args.what:
        out["eval"] = episodes(cfg, data, args.episodes, args.episode_steps)
    return out


def child_command(args: argparse.Namespace, result: Path) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(result), "--what", *args.what]
    cmd += ["--threads", str(args.threads), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    cmd += [
        "--demos",
        str(args.demos),
        "--episodes",
        str(args.episodes),
        "--episode-steps",
        str(args.episode_steps),
    ]
    return cmd + ["--quick"] * args.quick


def run_child(args: argparse.Namespace, tree: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(args.threads)}
        done = subprocess.run(child_command(args, result), capture_output=True, text=True, env=env, cwd=tree)
        if done.returncode != 0:
            raise RuntimeError(f"measuring {tree} failed:\n{done.stderr[-4000:]}")
        return json.loads(result.read_text())


@contextlib.contextmanager
def worktree(rev: str):
    """A temporary git worktree of ``rev`` (removed afterwards)."""
    tmp = Path(tempfile.mkdtemp(prefix="throughput-baseline-"))
    path = tmp / "tree"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), rev],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], capture_output=True
        )
        with contextlib.suppress(OSError):
            tmp.rmdir()


def alternate(args: argparse.Namespace) -> dict:
    """Current tree against ``args.baseline``, alternating subprocess runs ``args.repeats`` times."""
    with worktree(args.baseline) as base:
        runs: dict[str, list[dict]] = {"current": [], "baseline": []}
        for r in range(args.repeats):
            for label, tree in (("baseline", base), ("current", REPO)):
                print(f"{label}, round {r + 1}/{args.repeats} ...", file=sys.stderr, flush=True)
                runs[label].append(run_child(args, tree))
    out: dict[str, Any] = {"runs": runs}
    metrics = {"training": "samples_per_s", "demos": "demos_per_minute", "eval": "episodes_per_minute"}
    for what, key in metrics.items():
        if what not in args.what:
            continue
        cur = [r[what][key] for r in runs["current"]]
        base = [r[what][key] for r in runs["baseline"]]
        out[what] = {
            "current": statistics.median(cur),
            "baseline": statistics.median(base),
            "ratio": statistics.median([c / b for c, b in zip(cur, base, strict=True)]),
            "ratio_runs": [c / b for c, b in zip(cur, base, strict=True)],
        }
        if what == "training":
            cc = [r[what]["cpu_s_per_sample"] for r in runs["current"]]
            bc = [r[what]["cpu_s_per_sample"] for r in runs["baseline"]]
            out[what]["cpu_ratio"] = statistics.median([b / c for c, b in zip(cc, bc, strict=True)])
    return out


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes, training and profile only (CI)")
    ap.add_argument("--what", nargs="*", default=None, choices=["training", "profile", "demos", "eval"])
    ap.add_argument("--baseline", help="git revision to measure alternately against the current tree")
    ap.add_argument(
        "--variants", nargs="*", default=None, help=f"engine options side by side: {list(VARIANTS)}"
    )
    ap.add_argument("--loss-steps", type=int, default=0, help="loss curves of fp32 and the fast options")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the recipe's)")
    ap.add_argument("--steps", type=int, default=8, help="training steps per measurement")
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of the median")
    ap.add_argument("--demos", type=int, default=2, help="generation attempts")
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--episode-steps", type=int, default=80)
    ap.add_argument("--eval-variants", action="store_true", help="evaluation settings side by side (--run)")
    ap.add_argument("--run", type=Path, help="a trained recipe run whose policy --eval-variants evaluates")
    ap.add_argument("--tasks", type=lambda v: [int(t) for t in v.split(",")], help="--eval-variants tasks")
    ap.add_argument("--init-states", type=int, default=4, help="--eval-variants init states per task")
    ap.add_argument("--workers", type=int, default=2, help="--eval-variants simulator processes")
    ap.add_argument("--out", type=Path, default=HERE.parent / "results")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.eval_variants:
        if args.run is None or not (args.run / "checkpoint").is_dir():
            ap.error(f"--eval-variants: --run must be a trained recipe run folder, got {args.run}")
        result = {"machine": machine_facts()}
        result.update(evaluation_variants(args.run, args.tasks, args.init_states, args.workers, args.repeats))
        print_evaluation_variants(result)
        print(f"wrote {write_results(args.out / 'throughput_eval.json', result)}")
        return result
    if args.what is None:
        args.what = ["training", "profile"] if args.quick else ["training", "profile", "demos", "eval"]
    cfg = recipe_config(args.quick)
    if args.quick:
        args.steps, args.warmup, args.repeats = min(args.steps, 4), 1, 1
        args.what = [w for w in args.what if w in ("training", "profile")]
        args.threads = args.threads or 1
    args.threads = args.threads or cfg.train.threads
    if args.child is not None:
        args.child.write_text(json.dumps(measure(args)))
        return {}
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"machine": machine_facts(), "threads": args.threads, "args": vars(args)}
    data = recipe_dataset(cfg, args.quick)
    if args.variants is not None:
        names = args.variants or list(VARIANTS)
        unknown = sorted(set(names) - set(VARIANTS))
        if unknown:
            ap.error(f"--variants: unknown {unknown}; known: {list(VARIANTS)}")
        results["variants"] = compare_variants(cfg, data, names, args.steps, args.warmup, args.repeats)
        rows = [
            [
                n,
                f"{v['samples_per_s']:.1f}",
                f"{v['ratio']:.2f}",
                f"{v['cpu_ratio']:.2f}",
                " ".join(f"{x:.2f}" for x in v["ratio_runs"]),
            ]
            for n, v in results["variants"].items()
        ]
        print(markdown_table(["variant", "samples/s", "ratio", "CPU-time ratio", "ratio per round"], rows))
    if args.loss_steps:
        results["loss_curves"] = loss_curves(cfg, data, args.loss_steps, ["fp32", "bf16 math fused"])
        c = results["loss_curves"]
        print(
            markdown_table(
                ["step", *c],
                [[s, *(f"{c[n]['loss'][i]:.4f}" for n in c)] for i, s in enumerate(c["fp32"]["step"])],
            )
        )
    if "profile" in args.what:
        size, min_time = (256, 0.05) if args.quick else (1024, 0.5)
        peaks = {
            "fp32": matmul_peak(size, torch.float32, min_time),
            "bf16": matmul_peak(size, torch.bfloat16, min_time),
        }
        profiles = {
            name: profile_step(cfg, data, VARIANTS[name], args.repeats)
            for name in ("fp32", "bf16 math fused")
        }
        results["profile"] = {"matmul_peak_gflops": peaks, "steps": profiles}
        print_profile(profiles, peaks)
    measured = [w for w in args.what if w != "profile"]
    if measured and args.baseline:
        args.what = measured
        results["baseline"] = {"rev": args.baseline, **alternate(args)}
        rows = [
            [w, f"{v['baseline']:.2f}", f"{v['current']:.2f}", f"{v['ratio']:.2f}"]
            for w, v in results["baseline"].items()
            if isinstance(v, dict) and "ratio" in v
        ]
        print(markdown_table(["measure", f"{args.baseline}", "current", "ratio"], rows))
    elif measured:
        args.what = measured
        results["current"] = measure(args)
        print(json.dumps(results["current"], indent=1))
    name = "throughput_quick.json" if args.quick else "throughput.json"
    print(f"wrote {write_results(args.out / name, results)}")
    return results


if __name__ == "__main__":
    main()
