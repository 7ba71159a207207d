"""An independent evaluator: one trained flowvla policy, scored by flowvla's LIBERO runner and by
LeRobot's (``lerobot-eval --env.type=libero``), on the same tasks and official init states.

Runs in a virtualenv that holds ``lerobot`` (0.4.4), the plugin (``integrations/lerobot``) and
``flowvla[libero]`` (see docs/lerobot.md for that environment, offline)::

    python benchmarks/libero/lerobot_eval.py RUN_DIR --tasks 0,1 --init-states 20 \\
        --out benchmarks/results/lerobot_eval

``RUN_DIR`` is a recipe run (``examples/libero_policy.py run``). The script

1. exports the policy the run evaluated (``RUN_DIR/checkpoint``, the recipe's evaluation weights) as
   a LeRobot checkpoint, with the recipe's sampling seed and re-planning period as LeRobot's queue
   length, and its views mirrored (``mirror_views``: LeRobot's LIBERO processor turns LIBERO's renders
   by 180 degrees, which is flowvla's upright view mirrored left-right);
2. checks that the two evaluators hand the policy the same thing: for every task, the first
   observation of LeRobot's environment and processors against flowvla's at the same init state
   (largest pixel difference of each view with and without the mirror; largest state difference);
3. runs ``lerobot-eval`` (one process per task, ``--jobs`` at once; the step limit flowvla holds the
   suite to, 10 settling steps in both). lerobot 0.4.4 renders its views at 256 px whatever
   ``--env.observation_height`` says (its config does not hand the size to the environment), so the
   plugin area-resizes them to the policy's size, where flowvla renders at that size directly: the
   one difference left in what the policy sees (step 2 measures it);
4. reads flowvla's own records of the same episodes from ``RUN_DIR/eval`` (or evaluates them again
   with ``--rerun``);
5. prints and writes (``lerobot_eval.json``, ``lerobot_eval.md``) success per task with Wilson
   intervals from both, and the paired count: episodes where the two agree, and where only one
   succeeded.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from flowvla.cli import index_list
from flowvla.envs.ledger import load_records
from flowvla.envs.metrics import wilson_interval
from flowvla.profiling import markdown_table, write_results

#: LeRobot's names of LIBERO's two views (``LiberoEnv``'s features map), in flowvla's camera order.
LEROBOT_VIEWS = {"agentview": "observation.images.image", "robot0_eye_in_hand": "observation.images.image2"}


def export_run_policy(run_dir: Path, out: Path) -> tuple[Any, Any]:
    """Write the run's evaluated policy as a LeRobot checkpoint in ``out``; returns (recipe, policy)."""
    from lerobot_policy_flowvla import export_policy

    from flowvla.policy import VLAPolicy
    from flowvla.recipes.settings import load_recipe

    cfg = load_recipe(run_dir)
    if len(cfg.data.suites) > 1:
        raise ValueError(
            f"run_dir: a policy of several suites ({cfg.data.suite}); this comparison runs one suite's "
            "tasks: compare a run of one suite"
        )
    unknown = [c for c in cfg.data.cameras if c not in LEROBOT_VIEWS]
    if unknown:
        raise ValueError(
            f"run_dir: views {unknown} have no LeRobot LIBERO name (known: {list(LEROBOT_VIEWS)})"
        )
    if cfg.eval.temporal_ensemble is not None or cfg.eval.replan_at_gripper:
        raise ValueError(
            "run_dir: its evaluation ensembles chunks or re-plans at gripper toggles, which LeRobot's "
            "action queue cannot do; compare a run evaluated with plain re-planning"
        )
    vla = VLAPolicy.from_pretrained(run_dir / "checkpoint", weights=cfg.eval.weights)
    export_policy(
        vla,
        out,
        image_keys=[LEROBOT_VIEWS[c] for c in cfg.data.cameras],
        n_action_steps=cfg.eval.replan_every,
        sampling_seed=cfg.seed,
        mirror_views=True,
    )
    return cfg, vla


def _step_limit(cfg: Any) -> int:
    """The episode step limit flowvla holds the run's suite to."""
    from flowvla.envs.libero import LIBERO_SUITES

    return cfg.eval.max_steps or LIBERO_SUITES[cfg.data.suite].max_steps


def _lerobot_env_config(suite: str, task: int, size: int, max_steps: int) -> Any:
    from lerobot.envs.configs import LiberoEnv as LiberoEnvConfig

    return LiberoEnvConfig(
        task=suite, task_ids=[task], observation_height=size, observation_width=size, episode_length=max_steps
    )


def compare_first_observation(cfg: Any, vla: Any, export_dir: Path, task: int, init_state: int = 0) -> dict:
    """What each evaluator hands the policy at the start of ``init_state`` of ``task``: the largest
    differences (pixels in ``[0, 1]``, state units) between LeRobot's batch, as the plugin turns it into
    flowvla's, and flowvla's own observation."""
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.envs.factory import make_env, make_env_pre_post_processors
    from lerobot.envs.utils import add_envs_task, preprocess_observation
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.utils.import_utils import register_third_party_plugins
    from lerobot_policy_flowvla.modeling_flowvla import flowvla_batch

    from flowvla.envs.libero import LiberoEnv

    register_third_party_plugins()
    size = vla.observation_settings()["image_size"]
    env_cfg = _lerobot_env_config(cfg.data.suite, task, size, _step_limit(cfg))
    policy_cfg = PreTrainedConfig.from_pretrained(export_dir)
    envs = make_env(env_cfg, n_envs=1)
    vec = envs[cfg.data.suite][task]
    try:
        for _ in range(init_state + 1):  # each reset moves LeRobot's env to its next init state
            obs, _ = vec.reset(seed=[cfg.seed])
        env_pre, _ = make_env_pre_post_processors(env_cfg=env_cfg, policy_cfg=policy_cfg)
        pre, _ = make_pre_post_processors(policy_cfg, pretrained_path=str(export_dir))
        batch = pre(env_pre(add_envs_task(vec, preprocess_observation(obs))))
    finally:
        vec.close()
    theirs = flowvla_batch(policy_cfg, batch, training=False)
    unmirrored = copy.copy(policy_cfg)
    unmirrored.mirror_views = False
    raw = flowvla_batch(unmirrored, batch, training=False)["images"]
    with LiberoEnv(cfg.data.suite, task, image_size=size, cameras=cfg.data.cameras) as env:
        env.reset(init_state=init_state, seed=cfg.seed, settle_steps=10)
        ours = env.observe()
    images = torch.from_numpy(ours["images"]).float()[None] / 255
    state = torch.as_tensor(ours["state"], dtype=torch.float32)[None]
    out = {
        "task": task,
        "init_state": init_state,
        "instruction_equal": theirs["instruction"] == [ours["instruction"]],
        "state_max_abs_diff": float((theirs["state"] - state[..., : theirs["state"].shape[-1]]).abs().max()),
    }
    for v, cam in enumerate(cfg.data.cameras):
        for name, seen in (("mirrored", theirs["images"]), ("unmirrored", raw)):
            diff = (seen[:, v] - images[:, v]).abs()
            out[f"{cam}_{name}_mean_abs_diff"] = float(diff.mean())
            out[f"{cam}_{name}_max_abs_diff"] = float(diff.max())
    return out


def start_lerobot_eval(
    cfg: Any, export_dir: Path, task: int, n: int, size: int, out: Path
) -> subprocess.Popen:
    """``lerobot-eval`` on ``n`` episodes of ``task`` (init states ``0 .. n-1``, one env), started."""
    command = [
        str(Path(sys.executable).with_name("lerobot-eval")),
        f"--policy.path={export_dir}",
        "--policy.device=cpu",
        "--env.type=libero",
        f"--env.task={cfg.data.suite}",
        f"--env.task_ids=[{task}]",
        f"--env.observation_height={size}",
        f"--env.observation_width={size}",
        f"--env.episode_length={_step_limit(cfg)}",
        f"--eval.n_episodes={n}",
        "--eval.batch_size=1",
        f"--seed={cfg.seed}",
        f"--output_dir={out}",
    ]
    out.mkdir(parents=True, exist_ok=True)
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MUJOCO_GL": "egl"}
    log = (out / "lerobot_eval.log").open("w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environ)


def lerobot_successes(out: Path) -> list[bool]:
    """Per-episode success (init states in order) from ``lerobot-eval``'s ``eval_info.json``."""
    info = json.loads((out / "eval_info.json").read_text())
    (task,) = info["per_task"]
    return [bool(s) for s in task["metrics"]["successes"]]


def flowvla_successes(records: list[dict], task: int, n: int) -> list[bool]:
    """flowvla's success on init states ``0 .. n-1`` of ``task`` from its episode records."""
    by_state = {r["init_state"]: bool(r["success"]) for r in records if r["task_index"] == task}
    missing = [i for i in range(n) if i not in by_state]
    if missing:
        raise ValueError(f"flowvla's records lack task {task} init states {missing}; use --rerun")
    return [by_state[i] for i in range(n)]


def _rate(wins: list[bool]) -> str:
    lo, hi = wilson_interval(sum(wins), len(wins))
    return f"{sum(wins)}/{len(wins)} [{100 * lo:.0f}, {100 * hi:.0f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a recipe run folder (examples/libero_policy.py run)")
    parser.add_argument("--tasks", type=index_list, default=None, help="task indices (default: the run's)")
    parser.add_argument("--init-states", type=int, default=20, help="official init states per task (first n)")
    parser.add_argument("--jobs", type=int, default=2, help="lerobot-eval processes at once")
    parser.add_argument("--rerun", action="store_true", help="evaluate with flowvla again instead of reading")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/lerobot_eval"))
    args = parser.parse_args(argv)
    if not (args.run_dir / "checkpoint").is_dir():
        parser.error(f"run_dir: {args.run_dir} holds no checkpoint/ (a finished recipe run is needed)")
    if not 1 <= args.init_states <= 50:
        parser.error(f"--init-states: expected 1..50, got {args.init_states}")

    from flowvla.envs.libero_setup import prepare_libero

    prepare_libero()  # LIBERO's config and the GL backend, exported to lerobot-eval's processes too
    t0 = time.perf_counter()
    export_dir = args.out / "policy"
    try:
        cfg, vla = export_run_policy(args.run_dir, export_dir)
    except ValueError as e:  # a run this comparison cannot take, named before anything runs
        parser.error(str(e))
    tasks = args.tasks if args.tasks is not None else list(cfg.data.tasks)
    size = vla.observation_settings()["image_size"]
    print(f"exported {args.run_dir}/checkpoint -> {export_dir} ({cfg.data.suite} tasks {tasks}, {size} px)")

    frames = [compare_first_observation(cfg, vla, export_dir, t) for t in tasks]
    print(
        markdown_table(
            list(frames[0]), [[f"{v:.3g}" if isinstance(v, float) else v for v in f.values()] for f in frames]
        )
    )

    t1 = time.perf_counter()
    pending, running, lerobot = list(tasks), {}, {}
    while pending or running:
        while pending and len(running) < args.jobs:
            t = pending.pop(0)
            running[t] = start_lerobot_eval(cfg, export_dir, t, args.init_states, size, args.out / f"task{t}")
        for t, proc in list(running.items()):
            if proc.poll() is not None:
                del running[t]
                if proc.returncode:
                    raise SystemExit(
                        f"lerobot-eval failed on task {t}: see {args.out}/task{t}/lerobot_eval.log"
                    )
                lerobot[t] = lerobot_successes(args.out / f"task{t}")
                print(
                    f"lerobot-eval task {t}: {_rate(lerobot[t])}  ({(time.perf_counter() - t1) / 60:.1f} min)"
                )
        time.sleep(2)
    lerobot_minutes = (time.perf_counter() - t1) / 60

    if args.rerun:
        from flowvla.recipes.job import evaluate_policy
        from flowvla.recipes.settings import with_settings

        rerun = with_settings(cfg, {"data.tasks": tasks, "eval.init_states": args.init_states})
        evaluate_policy(rerun, vla, args.out / "flowvla_eval", progress=False)
        records = load_records(args.out / "flowvla_eval" / "episodes.jsonl")
    else:
        records = load_records(args.run_dir / "eval" / "episodes.jsonl")
    ours = {t: flowvla_successes(records, t, args.init_states) for t in tasks}

    rows, results = (
        [],
        {"run_dir": str(args.run_dir), "suite": cfg.data.suite, "observations": frames, "tasks": {}},
    )
    for t in [*tasks, "all"]:
        a = [w for k in tasks for w in ours[k]] if t == "all" else ours[t]
        b = [w for k in tasks for w in lerobot[k]] if t == "all" else lerobot[t]
        pairs = list(zip(a, b, strict=True))
        both, only_f, only_l = (
            pairs.count((True, True)),
            pairs.count((True, False)),
            pairs.count((False, True)),
        )
        agree = sum(x == y for x, y in pairs)
        rows.append([t, _rate(a), _rate(b), f"{agree}/{len(pairs)}", only_f, only_l])
        results["tasks"][str(t)] = {
            "flowvla": a, "lerobot": b, "both": both, "only_flowvla": only_f, "only_lerobot": only_l,
            "flowvla_wilson": wilson_interval(sum(a), len(a)),
            "lerobot_wilson": wilson_interval(sum(b), len(b)),
        }  # fmt: skip
    header = [
        "task",
        "flowvla eval [95% CI]",
        "lerobot-eval [95% CI]",
        "same outcome",
        "only flowvla",
        "only lerobot",
    ]
    table = markdown_table(header, rows)
    print(table)
    results["minutes"] = {"total": (time.perf_counter() - t0) / 60, "lerobot_eval": lerobot_minutes}
    write_results(args.out / "lerobot_eval.json", results)
    (args.out / "lerobot_eval.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
