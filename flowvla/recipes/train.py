"""The recipe's training phase: a fresh (or resumed) policy trained by [`flowvla.training.train`][]."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowvla.recipes.libero import RecipeConfig, build_policy

__all__ = ["load_trained", "train_config", "train_policy"]


def train_config(cfg: RecipeConfig, out: Path, *, progress: bool = True) -> Any:
    """The [`TrainConfig`][flowvla.training.TrainConfig] of a recipe (with held-out demonstrations,
    the validation loss every quarter of the steps and at the last)."""
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
        val_every=max(1, cfg.steps // 4) if cfg.val_demos_per_task else 0,
        val_batches=8,
        progress=progress,
    )


def train_policy(
    cfg: RecipeConfig, dataset: Any, out: Path, *, progress: bool = True, val_dataset: Any = None
) -> tuple[Any, dict]:
    """Train (or resume) the recipe's policy in ``out``; returns ``(policy with the weights
    ``cfg.eval_weights`` names, report)``. ``val_dataset``: held-out items for the validation loss."""
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
        report = train(policy, dataset, tc, val_dataset=val_dataset)
    finally:
        flowvla.typing.set_typecheck(was)
    return VLAPolicy.from_pretrained(out / "checkpoint", weights=cfg.eval_weights), report


def load_trained(cfg: RecipeConfig, checkpoint: Path) -> tuple[Any, dict]:
    """The policy of another run's ``checkpoint`` (``<run>/checkpoint``) for ``cfg``, which may differ
    from that run's recipe only in how it is evaluated; returns ``(policy, that run's training report
    with "reused_from")``."""
    import json

    from flowvla.policy import VLAPolicy
    from flowvla.recipes.libero import load_recipe, training_settings

    run_dir = Path(checkpoint).parent
    theirs = training_settings(load_recipe(run_dir))
    ours = training_settings(cfg)
    differ = sorted(k for k in ours if theirs.get(k) != ours[k])
    if differ:
        raise ValueError(f"trained={str(checkpoint)!r} was trained with other settings: {differ}")
    run_file = run_dir / "run.json"
    report = json.loads(run_file.read_text()).get("train", {}) if run_file.is_file() else {}
    policy = VLAPolicy.from_pretrained(checkpoint, weights=cfg.eval_weights)
    return policy, {**report, "reused_from": str(checkpoint)}
