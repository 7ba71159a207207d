"""The scripted LIBERO expert per task: success over fresh initial states, episode length, and the time
it costs to generate one kept demonstration.

    python benchmarks/libero/expert.py                                   # libero_object, 20 states
    python benchmarks/libero/expert.py --suites libero_spatial,libero_goal --states 20 --render 1

Each task runs the expert (physics only) from ``--states`` fresh layouts drawn by LIBERO's BDDL region
sampler, seeded exactly as ``flowvla.recipes.generate`` seeds its attempts, so a row predicts what
the generator keeps. Layouts in which an object falls while settling (the sampler occasionally puts
one over a table edge) are skipped and counted, as the generator skips them; their time still counts
towards the cost of a kept demonstration. The first ``--render`` successful episodes of each task
are also rendered and written as the generator does (both cameras, ``--image-size``), which gives
the cost of one kept demonstration: planning time of all attempts divided by the successes, plus the measured
render-and-write time (``--render 0``: the worker-seconds of planning alone). Failed episodes are
counted by the stage they ended in (``failed_in_stage``), and every attempt's index is recorded with how
it ended (``attempts``, ``failed_attempts``): attempt ``i`` is always the same layout, so a failure can be
replayed. Tasks whose goal the expert does not
support are listed with the reason.
Prints a table and writes JSON (default ``benchmarks/results/libero_expert.json``).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def bench_task(suite: str, task: int, states: int, render: int, size: int, seed: int) -> dict:
    from flowvla.envs.experts import UnsupportedGoalError, goal_predicates, make_expert, run_expert_episode
    from flowvla.envs.libero import LiberoEnv
    from flowvla.envs.rollout import wilson_interval
    from flowvla.recipes.generate import attempt_seed, init_state_distance, write_demo

    # The model kept between resets, as the generator keeps it: then attempt i's layout follows from its
    # seed alone. Rebuilt at every reset, a layout drawn around the fixtures depends on the resets
    # before it (libero_10 3: 4.7 cm), so the rows would measure other layouts than the generator's.
    env = LiberoEnv(suite, task, image_size=size, render=render > 0, hard_reset=False)
    row: dict = {"suite": suite, "task": task, "instruction": env.instruction}
    row["goal"] = " ".join(str(p) for p in goal_predicates(env))
    try:
        expert = make_expert(env)
    except UnsupportedGoalError as e:
        env.close()
        return {**row, "supported": False, "reason": str(e)}
    ok, steps, plan_s, render_s, min_dist = [], [], [], [], []
    stuck: list[str] = []
    attempts: list[dict] = []  # per attempt index: how it ended, so a failed layout can be replayed
    unstable = 0
    with tempfile.TemporaryDirectory() as tmp:
        i = -1
        while len(ok) < states and i < 3 * states:
            i += 1
            s = attempt_seed(seed, suite, task, i)
            t0 = time.perf_counter()
            fresh = env.reset(seed=s)
            min_dist.append(float(init_state_distance(fresh, env.init_states, int(env.sim.model.nq)).min()))
            ep = run_expert_episode(env, expert, fresh, seed=s)
            plan_s.append(time.perf_counter() - t0)
            if not ep.stable:
                unstable += 1  # the sampler put an object where it falls: not the expert's failure
                attempts.append({"attempt": i, "stable": False})
                continue
            ok.append(ep.success)
            steps.append(ep.steps)
            last = ep.stages[-1][0] if ep.stages else "-"
            attempts.append(
                {"attempt": i, "stable": True, "success": ep.success, "steps": ep.steps, "last_stage": last}
            )
            if not ep.success:
                # Where a failed episode was stuck: its last stage (the planner's name for it).
                stuck.append(last)
            if ep.success and len(render_s) < render:
                t1 = time.perf_counter()
                write_demo(Path(tmp) / f"{i}.hdf5", env, ep.actions, ep.states, ep.init_state)
                render_s.append(time.perf_counter() - t1)
    env.close()
    k, n = int(sum(ok)), len(ok)
    if n == 0:
        return {**row, "supported": True, "states": 0, "unstable_layouts_skipped": unstable}
    lo, hi = wilson_interval(k, n)
    kept_steps = [st for st, o in zip(steps, ok, strict=True) if o]
    plan_per_kept = sum(plan_s) / k if k else float("nan")
    return {
        **row,
        "supported": True,
        "states": n,
        "unstable_layouts_skipped": unstable,
        "successes": k,
        "success_rate": k / n,
        "ci95": [lo, hi],
        "mean_steps": float(np.mean(kept_steps)) if kept_steps else float("nan"),
        "mean_steps_all": float(np.mean(steps)),
        "plan_s_per_episode": float(np.mean(plan_s)),
        "plan_s_per_kept_demo": plan_per_kept,
        "render_write_s_per_demo": float(np.mean(render_s)) if render_s else None,
        "s_per_kept_demo": plan_per_kept + float(np.mean(render_s)) if render_s else None,
        "min_distance_to_official_init_m": float(min(min_dist)),
        "failed_in_stage": {name: stuck.count(name) for name in sorted(set(stuck))},
        "failed_attempts": [a["attempt"] for a in attempts if a["stable"] and not a["success"]],
        "attempts": attempts,
    }


def main() -> None:
    from flowvla.cli import index_list

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--suites", default="libero_object")
    p.add_argument("--tasks", type=index_list, default=None, help="e.g. 0,1 or 0-3,7 (default: all)")
    p.add_argument("--states", type=int, default=20, help="fresh initial states per task")
    p.add_argument("--render", type=int, default=1, help="kept episodes per task rendered and written")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", default=str(Path(__file__).resolve().parents[1] / "results" / "libero_expert.json")
    )
    a = p.parse_args()
    import torch

    torch.set_num_threads(1)
    from flowvla.envs.libero import LIBERO_SUITES
    from flowvla.io import write_json_atomic

    rows: list[dict] = []
    out = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "args": vars(a),
        "tasks": rows,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    for suite in a.suites.split(","):
        tasks = a.tasks if a.tasks else range(LIBERO_SUITES[suite].num_tasks)
        for t in tasks:
            r = bench_task(suite, t, a.states, a.render, a.image_size, a.seed)
            rows.append(r)
            if r["supported"] and r["states"] == 0:
                print(
                    f"{suite:15s} {t:2d}  no stable layout in {r['unstable_layouts_skipped']} tries",
                    flush=True,
                )
            elif r["supported"]:
                spk = f"{r['s_per_kept_demo']:.1f}" if r["s_per_kept_demo"] else "-"
                print(
                    f"{suite:15s} {t:2d}  {r['successes']:2d}/{r['states']:<2d}  "
                    f"{r['mean_steps']:5.0f} steps  "
                    f"plan {r['plan_s_per_episode']:4.1f} s/ep  {spk:>5s} s/kept demo  {r['instruction']}",
                    flush=True,
                )
            else:
                print(f"{suite:15s} {t:2d}  unsupported: {r['reason']}", flush=True)
            write_json_atomic(a.out, out)  # after every task, so a long run leaves partial results
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
