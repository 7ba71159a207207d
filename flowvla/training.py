"""A small, resumable training loop for :class:`~flowvla.policy.VLAPolicy`.

Checkpoints are written with :meth:`VLAPolicy.save_pretrained` into ``<out_dir>/checkpoint`` (a
temporary directory swapped in by renames, holding weights, config, statistics, tokenizer and the
trainer state: optimizer, scheduler, step, RNG). A run killed at any moment resumes from the last
complete checkpoint; batches are drawn by step number, so a resumed run sees the same batches and,
on the same machine, ends with the same weights as an uninterrupted one. Losses go to
``<out_dir>/log.jsonl``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from flowvla.data.batch import collate
from flowvla.data.stats import load_stats
from flowvla.policy.policy import STATS_FILE, TRAINER_STATE_FILE, WEIGHTS_FILE, VLAPolicy

__all__ = ["StepBatchSampler", "TrainConfig", "latest_checkpoint", "train"]

CHECKPOINT_DIR = "checkpoint"


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train`.

    Attributes:
        out_dir: where checkpoints and logs go.
        steps: optimizer steps in total (a resumed run continues up to this).
        batch_size: samples per step.
        lr: peak learning rate (linear warm-up, cosine decay to 10%).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up length.
        grad_clip: clip the global gradient norm (0: off).
        save_every: checkpoint period in steps (and at the end).
        log_every: log period in steps.
        num_workers: DataLoader worker processes.
        seed: seeds batch sampling and the policy's random draws.
    """

    out_dir: str
    steps: int = 1000
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    grad_clip: float = 1.0
    save_every: int = 200
    log_every: int = 10
    num_workers: int = 0
    seed: int = 0


class StepBatchSampler(torch.utils.data.Sampler):
    """Batch indices as a function of the step number: batch ``s`` is the same whenever it is drawn.

    Args:
        dataset_size: number of items.
        batch_size: items per batch (with replacement across batches, without within one).
        start: the first step.
        stop: one past the last step.
        seed: base seed.
    """

    def __init__(self, dataset_size: int, batch_size: int, start: int, stop: int, seed: int = 0) -> None:
        if dataset_size < 1:
            raise ValueError("dataset_size: the dataset is empty")
        self.n, self.batch_size, self.start, self.stop, self.seed = (
            dataset_size,
            batch_size,
            start,
            stop,
            seed,
        )

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            if self.batch_size <= self.n:
                yield torch.randperm(self.n, generator=g)[: self.batch_size].tolist()
            else:
                yield torch.randint(0, self.n, (self.batch_size,), generator=g).tolist()


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def train(
    policy: VLAPolicy,
    dataset: torch.utils.data.Dataset,
    cfg: TrainConfig,
    *,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train ``policy`` on ``dataset`` (items of the batch contract), resuming from ``cfg.out_dir``.

    ``stop_after`` ends this call after that many steps (with a checkpoint), as a time-boxed job
    would; calling again continues the same schedule up to ``cfg.steps``.

    Returns:
        ``{"step", "resumed_from", "last_losses", "seconds"}``.
    """
    from safetensors.torch import load_model

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / CHECKPOINT_DIR
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    start = 0
    torch.manual_seed(cfg.seed)
    if (ckpt / TRAINER_STATE_FILE).is_file():
        saved_stats = load_stats(ckpt / STATS_FILE) if (ckpt / STATS_FILE).is_file() else {}
        if saved_stats != policy.stats:
            raise ValueError(
                f"policy: its normalisation statistics differ from the checkpoint's in {ckpt}; resume with "
                "the same data statistics (or start a new out_dir)"
            )
        state = torch.load(ckpt / TRAINER_STATE_FILE, weights_only=False)
        load_model(
            policy, str(ckpt / WEIGHTS_FILE), strict=True, device=str(next(policy.parameters()).device)
        )
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start = int(state["step"])
    resumed_from = start
    stop = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=StepBatchSampler(len(dataset), cfg.batch_size, start, stop, cfg.seed),
        collate_fn=collate,
        num_workers=cfg.num_workers,
        # Its own generator: a DataLoader otherwise draws its worker seed from the global RNG, which
        # would shift the policy's random draws after a resume.
        generator=torch.Generator().manual_seed(cfg.seed),
    )

    def save(step: int) -> None:
        trainer_state = {
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": torch.get_rng_state(),
            "step": step,
            "config": asdict(cfg),
        }
        policy.save_pretrained(ckpt, trainer_state=trainer_state)

    policy.train()
    t0 = time.perf_counter()
    last: dict[str, float] = {}
    step = start
    with open(out / "log.jsonl", "a") as log:
        for batch in loader:
            losses = policy(batch)
            opt.zero_grad(set_to_none=True)
            losses.loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            last = losses.as_floats()
            if step % cfg.log_every == 0 or step == cfg.steps:
                row = {
                    "step": step,
                    "lr": sched.get_last_lr()[0],
                    "seconds": time.perf_counter() - t0,
                    **last,
                }
                log.write(json.dumps(row) + "\n")
                log.flush()
                if on_log is not None:
                    on_log(row)
            if step % cfg.save_every == 0 or step == stop:
                save(step)
    return {
        "step": step,
        "resumed_from": resumed_from,
        "last_losses": last,
        "seconds": time.perf_counter() - t0,
    }


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """``<out_dir>/checkpoint`` if a complete checkpoint is there."""
    ckpt = Path(out_dir) / CHECKPOINT_DIR
    return ckpt if (ckpt / WEIGHTS_FILE).is_file() else None
