"""The floor to beat: a plain regression policy trained on the same demonstrations as the recipe.

No language model, no flow matching: one small CNN per view (four stride-2 3x3 convolutions 32-64-128-128
with GroupNorm), spatial-softmax keypoints, the proprioceptive state and a one-hot of the task, and an
MLP that regresses a chunk of actions with an L1 loss; random-shift augmentation and EMA weights, as
the field's small-data visual-imitation recipes do. It speaks the rollout runner's ``predict_action``
contract, so it is evaluated by exactly the same code, on the same official init states, as the
flowvla policy.

    python benchmarks/libero/baseline.py --data DEMO_FOLDER \\
        --tasks 0,1 --demos-per-task 25 --minutes 10 --init-states 50 --out benchmarks/results/baseline

``--steps N`` trains a fixed number of steps instead of a wall-clock budget (the learning-rate
schedule then runs over the steps): the fair choice on a machine shared with other jobs, where a
minute budget buys fewer steps.

Prints the success table and writes ``<out>/baseline.json`` (training steps, minutes, success per task
with Wilson intervals) next to the rollout records.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from flowvla.cli import index_list
from flowvla.data.augment import ImageAugment
from flowvla.data.batch import collate
from flowvla.data.dataset import ChunkDataset, HDF5Source
from flowvla.data.hdf5 import find_demo_files
from flowvla.data.stats import Normalizer
from flowvla.io import write_json_atomic


class SpatialSoftmax(nn.Module):
    """Feature map ``[B, C, H, W]`` -> expected (x, y) of each of ``K`` learned keypoint maps ``[B, 2K]``."""

    def __init__(self, channels: int, keypoints: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, keypoints, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _b, _, h, w = x.shape
        att = self.proj(x).flatten(2).softmax(-1)  # [B, K, HW]
        ys, xs = torch.meshgrid(
            torch.linspace(-1, 1, h, device=x.device),
            torch.linspace(-1, 1, w, device=x.device),
            indexing="ij",
        )
        grid = torch.stack([xs.flatten(), ys.flatten()], -1)  # [HW, 2]
        return (att @ grid).flatten(1)


def conv_tower(keypoints: int) -> nn.Module:
    layers: list[nn.Module] = []
    c = 3
    for o in (32, 64, 128, 128):
        layers += [nn.Conv2d(c, o, 3, 2, 1), nn.GroupNorm(8, o), nn.ReLU(inplace=True)]
        c = o
    return nn.Sequential(*layers, SpatialSoftmax(c, keypoints))


class RegressionBaseline(nn.Module):
    """Per-view CNN + spatial softmax + state + task one-hot -> MLP -> ``[H, A]`` chunk (L1 loss)."""

    def __init__(
        self,
        tasks: list[str],
        views: int,
        state_dim: int,
        horizon: int,
        action_dim: int,
        stats: dict[str, Any],
        keypoints: int = 32,
        hidden: int = 256,
    ) -> None:
        super().__init__()
        self.tasks, self.horizon, self.action_dim = list(tasks), horizon, action_dim
        self.towers = nn.ModuleList(conv_tower(keypoints) for _ in range(views))
        self.mlp = nn.Sequential(
            nn.Linear(views * 2 * keypoints + state_dim + len(tasks), hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, horizon * action_dim),
        )
        self.actions = Normalizer(stats["actions"], "quantile")
        self.state = Normalizer(stats["state"], "mean_std")

    def _features(self, batch: dict[str, Any]) -> torch.Tensor:
        img = batch["images"].float() / 255.0
        feats = [tower(img[:, v] - 0.5) for v, tower in enumerate(self.towers)]
        state = self.state.normalize(batch["state"].float())
        onehot = torch.zeros(len(img), len(self.tasks))
        for i, text in enumerate(batch["instruction"]):
            if text in self.tasks:
                onehot[i, self.tasks.index(text)] = 1.0
        return torch.cat([*feats, state, onehot], -1)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        pred = self.mlp(self._features(batch)).view(-1, self.horizon, self.action_dim)
        target = self.actions.normalize(batch["actions"].float())
        mask = batch["action_mask"].float()[..., None]
        return ((pred - target).abs() * mask).sum() / (mask.sum() * self.action_dim).clamp_min(1)

    @torch.no_grad()
    def predict_action(self, batch: dict[str, Any], **_: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        pred = self.mlp(self._features(batch)).view(-1, self.horizon, self.action_dim)
        return self.actions.unnormalize(pred), {}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", nargs="+", required=True, help="demonstration files or folders")
    ap.add_argument("--tasks", type=index_list, default=[0, 1], help="task indices evaluated, e.g. 0,1")
    ap.add_argument("--suite", default="libero_object")
    ap.add_argument("--demos-per-task", type=int, default=None)
    budget_arg = ap.add_mutually_exclusive_group()
    budget_arg.add_argument(
        "--minutes", type=float, default=None, help="training wall-clock budget (default 10)"
    )
    budget_arg.add_argument("--steps", type=int, default=None, help="train this many steps instead")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--horizon", type=int, default=8)
    ap.add_argument("--replan-every", type=int, default=8)
    ap.add_argument("--shift", type=int, default=4)
    ap.add_argument("--ema-decay", type=float, default=0.995)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--init-states", type=int, default=50)
    ap.add_argument("--eval-workers", type=int, default=2)
    ap.add_argument(
        "--max-steps", type=int, default=None, help="step limit per episode (default: the suite's)"
    )
    ap.add_argument("--out", default="benchmarks/results/libero_baseline")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.steps is not None and a.steps < 1:
        ap.error(f"--steps: must be >= 1, got {a.steps}")
    if a.minutes is not None and not a.minutes > 0:
        ap.error(f"--minutes: must be > 0, got {a.minutes}")
    if a.steps is None and a.minutes is None:
        a.minutes = 10.0
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    source = HDF5Source(
        find_demo_files(a.data),
        episodes_per_file=a.demos_per_task,
        instruction="from_bddl_file_name",
        preload=True,
    )
    dataset = ChunkDataset(source, a.horizon, augment=ImageAugment(shift=a.shift) if a.shift else None)
    tasks = sorted({source.instruction(e) for e in range(len(source))})
    item = dataset[0]
    model = RegressionBaseline(
        tasks,
        item["images"].shape[0],
        item["state"].shape[0],
        a.horizon,
        item["actions"].shape[1],
        dataset.stats(),
    )
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(
        dataset, a.batch_size, shuffle=True, collate_fn=collate, drop_last=True
    )
    t0, step, done = time.perf_counter(), 0, False

    def progress() -> float:
        """The fraction of the budget spent: steps taken, or minutes passed."""
        if a.steps is not None:
            return step / a.steps
        return (time.perf_counter() - t0) / (a.minutes * 60)

    from tqdm.auto import tqdm

    # Steps when counting steps, else tenths of a percent of the minute budget.
    bar = tqdm(total=a.steps or 1000, desc="train", unit="step" if a.steps else "‰", file=sys.stderr)
    while not done:
        for batch in loader:
            frac = min(1.0, progress())
            for g in opt.param_groups:
                g["lr"] = a.lr * 0.5 * (1 + math.cos(math.pi * frac))
            loss = model(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            decay = min(a.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
                    pe.lerp_(p, 1 - decay)
            bar.update((step if a.steps else int(1000 * min(1.0, progress()))) - bar.n)
            if step % 50 == 0:
                bar.set_postfix(l1=f"{float(loss):.4f}")
            if progress() >= 1.0:
                done = True
                break
    bar.close()
    minutes = (time.perf_counter() - t0) / 60
    print(
        f"trained {step} steps of {a.batch_size} in {minutes:.1f} min; last L1 {float(loss):.4f}",
        file=sys.stderr,
    )
    from flowvla.envs.rollout import RolloutConfig, evaluate

    torch.set_num_threads(1)
    size = int(item["images"].shape[-1])
    summary = evaluate(
        ema,
        RolloutConfig(
            suite=a.suite,
            tasks=a.tasks,
            init_states=a.init_states,
            replan_every=a.replan_every,
            image_size=size,
            state_dim=int(item["state"].shape[0]),
            out_dir=str(Path(a.out) / "eval"),
            workers=a.eval_workers,
            max_steps=a.max_steps,
            seed=a.seed,
        ),
    )
    result = {
        "steps": step,
        "train_minutes": minutes,
        "demos": len(source),
        "params": sum(p.numel() for p in model.parameters()),
        "successes": summary["successes"],
        "episodes": summary["episodes"],
        "success_rate": summary["success_rate"],
        "ci95": summary["ci95"],
        "tasks": {
            k: {kk: v[kk] for kk in ("successes", "episodes", "ci95")} for k, v in summary["tasks"].items()
        },
        "args": vars(a),
    }
    write_json_atomic(Path(a.out) / "baseline.json", result)
    print(
        json.dumps(
            {k: result[k] for k in ("steps", "train_minutes", "success_rate", "ci95", "tasks")}, indent=1
        )
    )
    return result


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
