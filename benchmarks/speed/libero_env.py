"""LIBERO simulator costs on this machine: construct, reset, physics, rendering, and whole episodes.

    python benchmarks/speed/libero_env.py                       # the four standard suites, task 0
    python benchmarks/speed/libero_env.py --suites libero_object --episode-steps 280 --out results.json

Prints a table and writes JSON (default ``benchmarks/results/libero_env.json``). "Episode" times run a
fixed number of steps of a constant action chunk (``--chunk`` actions per plan) twice: rendering both
cameras at every step, as an env with camera observables does, and rendering only when the policy
re-plans (flowvla's ``LiberoEnv``). Policy compute is excluded: this is the simulator's share.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from flowvla.profiling import Stopwatch, markdown_table, write_results


def timed(fn, repeat: int = 1) -> float:
    """Mean wall seconds of ``repeat`` calls, no warm-up call: a simulator's calls change its state."""
    with Stopwatch() as clock:
        for _ in range(repeat):
            fn()
    return clock.wall / repeat


def bench_suite(suite: str, task: int, size: int, steps: int, episode_steps: int, chunk: int) -> dict:
    from flowvla.envs.libero import LiberoEnv

    out: dict = {"suite": suite, "task": task, "image_size": size}
    with Stopwatch() as construct:
        env = LiberoEnv(suite, task, image_size=size, depth=True)
    out["construct_s"] = construct.wall
    out["instruction"] = env.instruction
    out["reset_hard_s"] = timed(lambda: env.reset(init_state=0), 3)
    rng = np.random.default_rng(0)
    env.reset(init_state=0)
    zero = np.array([0.0] * 6 + [-1.0])
    out["physics_steps_per_s_zero"] = steps / timed(lambda: [env.step(zero) for _ in range(steps)])
    env.reset(init_state=0)
    acts = rng.uniform(-1, 1, size=(steps, 7))
    out["physics_steps_per_s_random"] = steps / timed(lambda: [env.step(a) for a in acts])
    for cam in env.cameras:
        env.render_camera(cam)  # first render of a camera warms caches
        out[f"render_{cam}_rgb_ms"] = 1000 * timed(lambda c=cam: env.render_camera(c), 10)
        out[f"render_{cam}_rgbd_ms"] = 1000 * timed(lambda c=cam: env.render_camera(c, depth=True), 10)
    out["observe_rgb_ms"] = 1000 * timed(lambda: env.observe(depth=False), 10)
    out["observe_rgbd_cameras_ms"] = 1000 * timed(lambda: env.observe(depth=True), 10)

    def episode(render_every: int) -> float:
        env.reset(init_state=1)
        with Stopwatch() as clock:
            for i in range(episode_steps):
                if i % render_every == 0:
                    env.observe(depth=False)
                env.step(zero)
        return clock.wall

    out["episode_steps"] = episode_steps
    out["episode_render_every_step_s"] = episode(1)
    out[f"episode_render_every_{chunk}_s"] = episode(chunk)
    out["episode_physics_only_s"] = episode(episode_steps + 1) - out["observe_rgb_ms"] / 1000
    out["on_demand_speedup"] = out["episode_render_every_step_s"] / out[f"episode_render_every_{chunk}_s"]
    env.close()
    return out


def bench_soft_reset(suite: str, task: int) -> float:
    from flowvla.envs.libero import LiberoEnv

    env = LiberoEnv(suite, task, image_size=128, hard_reset=False)
    env.reset(init_state=0)
    t = timed(lambda: env.reset(init_state=0), 3)
    env.close()
    return t


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--suites", nargs="+", default=["libero_spatial", "libero_object", "libero_goal", "libero_10"]
    )
    p.add_argument("--task", type=int, default=0)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=200, help="steps for the physics rate")
    p.add_argument("--episode-steps", type=int, default=300)
    p.add_argument("--chunk", type=int, default=8, help="re-plan interval for the on-demand episode")
    p.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "results" / "libero_env.json"
    )
    args = p.parse_args(argv)

    from flowvla.envs.libero_setup import prepare_libero

    with Stopwatch() as setup:
        paths = prepare_libero()
    setup_s = setup.wall
    rows = [
        bench_suite(s, args.task, args.size, args.steps, args.episode_steps, args.chunk) for s in args.suites
    ]
    soft = bench_soft_reset(args.suites[0], args.task)
    cols = [
        ("suite", "suite", "{}"),
        ("construct_s", "build s", "{:.1f}"),
        ("reset_hard_s", "reset s", "{:.2f}"),
        ("physics_steps_per_s_zero", "phys/s 0", "{:.0f}"),
        ("physics_steps_per_s_random", "phys/s rnd", "{:.0f}"),
        ("render_agentview_rgb_ms", "agent ms", "{:.0f}"),
        ("render_robot0_eye_in_hand_rgb_ms", "wrist ms", "{:.0f}"),
        ("observe_rgbd_cameras_ms", "obs+depth ms", "{:.0f}"),
        ("episode_render_every_step_s", "ep every s", "{:.1f}"),
        (f"episode_render_every_{args.chunk}_s", f"ep 1/{args.chunk} s", "{:.1f}"),
        ("episode_physics_only_s", "ep phys s", "{:.1f}"),
        ("on_demand_speedup", "speedup", "{:.1f}x"),
    ]
    print(f"LIBERO, GL={paths.gl_backend}, {args.size}px, episodes of {args.episode_steps} steps")
    print(markdown_table([h for _, h, _ in cols], [[f.format(r[k]) for k, _, f in cols] for r in rows]))
    print(f"setup {setup_s:.2f} s; soft reset (hard_reset=False) {soft:.2f} s on {args.suites[0]}")
    result = {
        "gl": paths.gl_backend,
        "args": vars(args),
        "setup_s": setup_s,
        "soft_reset_s": soft,
        "suites": rows,
    }
    print(f"wrote {write_results(args.out, result)}")
    return result


if __name__ == "__main__":
    main()
