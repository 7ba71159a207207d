"""The recipe's training phase: a fresh (or resumed) policy trained by [`flowvla.training.train`][]."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowvla.recipes.libero import RecipeConfig, build_policy

__all__ = ["train_config", "train_policy"]


def train_config(cfg: RecipeConfig, out: Path, *, progress: bool = True) -> Any:
    """The [`TrainConfig`][flowvla.training.TrainConfig] of a recipe."""
    from flowvla.training import TrainConfig

    return TrainConfig(
        out_dir=str(out),
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_steps=min(200, max(1, cfg.steps // 20)),
        save_every=max(50, cfg.steps // 20),
        log_every=max(1, min(50, cfg.steps // 100)),
        seed=cfg.seed,
        ema_decay=cfg.ema_decay,
        max_minutes=cfg.max_minutes,
        progress=progress,
    )


def train_policy(cfg: RecipeConfig, dataset: Any, out: Path, *, progress: bool = True) -> tuple[Any, dict]:
    """Train (or resume) the recipe's policy in ``out``; returns ``(policy with EMA weights, report)``."""
    import flowvla.typing
    from flowvla.policy import VLAPolicy
    from flowvla.training import latest_checkpoint, train

    ckpt = latest_checkpoint(out)
    policy = VLAPolicy.from_pretrained(ckpt, weights="raw") if ckpt else build_policy(cfg, dataset)
    tc = train_config(cfg, out, progress=progress)
    # Shape checks cost about a millisecond per item and call: off while training, on again after.
    was = flowvla.typing.typecheck_enabled()
    flowvla.typing.set_typecheck(False)
    try:
        report = train(policy, dataset, tc)
    finally:
        flowvla.typing.set_typecheck(was)
    return VLAPolicy.from_pretrained(out / "checkpoint"), report
