"""The recipe's training phase: a fresh (or resumed) policy trained by [`flowvla.training.train`][]."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flowvla.recipes.config import RecipeConfig
from flowvla.recipes.parts import build_policy
from flowvla.recipes.settings import load_recipe, training_settings

__all__ = [
    "load_trained",
    "native_bf16_cpu",
    "train_config",
    "train_policy",
    "training_call_seconds",
    "training_seconds",
]


def train_config(cfg: RecipeConfig, out: Path, *, progress: bool = True, minutes_spent: float = 0.0) -> Any:
    """The [`TrainConfig`][flowvla.training.TrainConfig] of a recipe (with held-out demonstrations,
    the validation loss every quarter of the steps and at the last). ``minutes_spent``: training
    minutes earlier calls of this run used, taken off ``cfg.train.max_minutes`` (the budget is the run's,
    not one call's; it must not be spent already)."""
    t = cfg.train
    budget = None if t.max_minutes is None else t.max_minutes - minutes_spent
    if budget is not None and budget <= 0:
        raise ValueError(f"minutes_spent={minutes_spent:.1f}: the budget of {t.max_minutes} minutes is spent")
    import torch

    from flowvla.training import TrainConfig

    precision = t.precision
    if precision == "auto":
        precision = "bf16" if not torch.cuda.is_available() and native_bf16_cpu() else "fp32"
    bf16 = precision == "bf16"
    return TrainConfig(
        out_dir=str(out),
        steps=t.steps,
        batch_size=t.batch_size,
        lr=t.lr,
        weight_decay=t.weight_decay,
        warmup_steps=min(200, max(1, t.steps // 20)),
        save_every=max(50, t.steps // 20),
        log_every=max(1, min(50, t.steps // 100)),
        seed=cfg.seed,
        ema_decay=t.ema_decay,
        max_minutes=budget,
        val_every=max(1, t.steps // 4) if cfg.data.val_demos_per_task else 0,
        val_batches=8,
        progress=progress,
        mixed_precision="bf16" if bf16 else None,
        # PyTorch's flash kernel runs its bf16 backward 4x slower than its float32 one on the CPU.
        attention_backend="math" if bf16 and not torch.cuda.is_available() else None,
    )


def native_bf16_cpu() -> bool:
    """Whether this CPU has bf16 instructions (AVX-512 BF16 or AMX), where bf16 autocast pays; on
    others oneDNN emulates bf16 and the recipe trains in float32 (``train.precision="auto"``)."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def train_policy(
    cfg: RecipeConfig, dataset: Any, out: Path, *, progress: bool = True, val_dataset: Any = None
) -> tuple[Any, dict]:
    """Train (or resume) the recipe's policy in ``out``; returns ``(policy with the weights
    ``cfg.eval.weights`` names, report)``. ``val_dataset``: held-out items for the validation loss.

    ``cfg.train.max_minutes`` bounds the run's training summed over calls: a run resumed after its budget
    ran out trains no further (its report then says ``"trained_this_call": False``), so calling the
    job again gives the policy the first call evaluated.
    """
    import flowvla.typing
    from flowvla.policy import VLAPolicy
    from flowvla.training import latest_checkpoint, read_trainer_state, train

    ckpt = latest_checkpoint(out)
    state = read_trainer_state(ckpt) if ckpt else None
    # Minutes earlier calls trained; a checkpoint without trainer state is not resumed.
    spent = (training_seconds(out / "log.jsonl") or 0.0) / 60 if state is not None else 0.0
    if state is not None and cfg.train.max_minutes is not None and spent >= cfg.train.max_minutes:
        step = int(state["step"])
        report = {"step": step, "resumed_from": step, "stopped": "max_minutes", "trained_this_call": False}
        return VLAPolicy.from_pretrained(ckpt, weights=cfg.eval.weights), report
    policy = VLAPolicy.from_pretrained(ckpt, weights="raw") if ckpt else build_policy(cfg, dataset)
    tc = train_config(cfg, out, progress=progress, minutes_spent=spent)
    # Shape checks cost about a millisecond per item and call: off while training, on again after.
    was = flowvla.typing.typecheck_enabled()
    flowvla.typing.set_typecheck(False)
    try:
        report = train(policy, dataset, tc, val_dataset=val_dataset)
    finally:
        flowvla.typing.set_typecheck(was)
    return VLAPolicy.from_pretrained(out / "checkpoint", weights=cfg.eval.weights), report


def load_trained(cfg: RecipeConfig, checkpoint: Path) -> tuple[Any, dict]:
    """The policy of another run's ``checkpoint`` (``<run>/checkpoint``) for ``cfg``, which may differ
    from that run's recipe only in how it is evaluated; returns ``(policy, that run's training report
    with "reused_from")``."""
    from flowvla.policy import VLAPolicy

    run_dir = Path(checkpoint).parent
    theirs = training_settings(load_recipe(run_dir))
    ours = training_settings(cfg)
    differ = sorted(k for k in ours if theirs.get(k) != ours[k])
    if differ:
        raise ValueError(f"trained={str(checkpoint)!r} was trained with other settings: {differ}")
    run_file = run_dir / "run.json"
    report = json.loads(run_file.read_text()).get("train", {}) if run_file.is_file() else {}
    policy = VLAPolicy.from_pretrained(checkpoint, weights=cfg.eval.weights)
    return policy, {**report, "reused_from": str(checkpoint)}


def training_call_seconds(log_path: str | Path) -> list[float]:
    """Wall seconds of each training call that wrote the log ``log_path``, in order (a resumed run
    starts its ``seconds`` from 0 again); empty without a log. A call cut off (a session's end, a
    kill) counts up to its last row."""
    path = Path(log_path)
    if not path.is_file():
        return []
    calls: list[float] = []
    last = None
    for line in path.read_text().splitlines():
        row = json.loads(line) if line.strip() else {}
        sec = row.get("seconds")
        if "event" in row or not isinstance(sec, (int, float)):
            continue
        if last is None or sec < last:  # a new call
            calls.append(0.0)
        calls[-1] = last = float(sec)
    return calls


def training_seconds(log_path: str | Path) -> float | None:
    """Wall seconds of training summed over every call that wrote the log ``log_path`` (steps
    re-trained after a resume count, they were spent), or None without a log. A run's own
    ``train.seconds`` holds only its last call."""
    calls = training_call_seconds(log_path)
    return sum(calls) if Path(log_path).is_file() else None
