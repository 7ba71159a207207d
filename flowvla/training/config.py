"""[`TrainConfig`][flowvla.training.config.TrainConfig], the learning-rate schedule, and the rule for
resuming.

Engine options keep Accelerate's names (``mixed_precision``, ``gradient_accumulation_steps``, ``cpu``,
``fsdp`` with the fields of Accelerate's ``FullyShardedDataParallelPlugin``, ``dynamo_backend``,
``find_unused_parameters``), so what a user knows from ``accelerate config`` carries over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["SCHEDULE_FIELDS", "TrainConfig", "check_schedule", "lr_factor"]

MIXED_PRECISION = ("no", "bf16", "fp16")
ATTENTION_BACKENDS = ("math", "flash", "efficient", "cudnn")
OPTIMIZER_IMPLS = ("for_loop", "foreach", "fused")
SAMPLING = ("task", "item")
# The fields that define the learning rate at every step: resuming with other values changes the
# schedule under a half-trained model.
SCHEDULE_FIELDS = ("steps", "lr", "warmup_steps")


@dataclass
class TrainConfig:
    """Hyper-parameters of [`train`][flowvla.training.engine.train].

    Attributes:
        out_dir: where checkpoints and logs go.
        steps: optimizer steps in total (a resumed run continues up to this).
        batch_size: samples per optimizer step over all processes and accumulation micro-steps (the
            global batch); each process draws ``batch_size / (processes * accumulation)`` of them per
            micro-step, so the same ``batch_size`` trains the same way on any number of processes.
        lr: peak learning rate (linear warm-up, cosine decay to 10%).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up length.
        grad_clip: clip the global gradient norm (0: off; the norm is logged either way).
        save_every: checkpoint period in steps (and at the end).
        log_every: log period in steps.
        num_workers: DataLoader worker processes (per process) that make the items ahead of the
            step; each micro-batch's RNG seed travels with its indices, so the items (augmentation
            draws included) are those the training process would make, and a resumed run stays
            bit-identical. On 2 cores a worker competes with the torch threads for the CPU.
        seed: seeds batch sampling and every random draw of a step.
        gradient_accumulation_steps: micro-steps per optimizer step (Accelerate's name). ``None``
            takes the launcher's value (``accelerate launch --gradient_accumulation_steps``), else 1.
        mixed_precision: ``"no"``, ``"bf16"`` or ``"fp16"`` (Accelerate's name): autocast of the
            forward pass; weights, optimizer state and EMA stay float32. ``None`` takes the
            launcher's value (``accelerate launch --mixed_precision``), else ``"no"``.
        fsdp: shard the policy with FSDP: options of Accelerate's ``FullyShardedDataParallelPlugin``
            (``{"fsdp_version": 2, "reshard_after_forward": True, "transformer_cls_names_to_wrap":
            [...]}``; the ``fsdp_``-prefixed keys of an ``accelerate config`` file work too).
            ``None`` takes the launcher's (``accelerate launch --use_fsdp ...``). Accelerate shards
            only on accelerators (GPUs); on the CPU it trains data-parallel instead.
        cpu: train on the CPU even where a GPU is available (Accelerate's name).
        find_unused_parameters: let DDP handle parameters that receive no gradient in a step (a
            policy usually has some: an unused vision pooling head, unused router branches).
        dynamo_backend: compile the policy with ``torch.compile`` on this backend (Accelerate's name,
            e.g. ``"inductor"``); ``None``: eager, or the launcher's ``--dynamo_backend``.
        ema_decay: keep an exponential moving average of the trainable weights with this decay
            (0: off). The effective decay warms up as ``min(ema_decay, (1 + n) / (10 + n))`` after
            ``n`` updates. Saved as ``model_ema.safetensors`` beside the raw weights.
        val_every: validation period in steps (0: off; also run at the last step); needs
            ``val_dataset``.
        val_batches: validation batches per evaluation (the same batches and draws every time).
        val_batch_size: samples per validation batch (default: ``batch_size`` divided by the
            accumulation steps).
        nan_patience: stop after this many consecutive steps with a non-finite loss or gradient
            (each one is skipped and logged).
        sampling: ``"task"``: uniform over tasks (a task's chunks share its weight), ``"item"``:
            uniform over chunks. A dataset without task labels is sampled uniformly over items.
        task_weights: relative weight per task name (the instruction), multiplying the
            ``sampling`` base weight; unnamed tasks weigh 1. See
            [`task_weights_from_success`][flowvla.training.sampling.task_weights_from_success].
        dataset_weights: with several named datasets, the probability mass of each dataset
            (relative; unnamed datasets weigh 1). ``None``: datasets are not balanced against each
            other (the ``sampling`` rule applies across all of them).
        progress: show a progress bar with an ETA (tqdm, on the main process only).
        max_minutes: wall-clock budget of one ``train`` call: stop before a step that would end
            past it, with a checkpoint (``report["stopped"] == "max_minutes"``).
        allow_schedule_change: resume even if ``steps``, ``lr`` or ``warmup_steps`` differ from the
            checkpoint's (the schedule is then recomputed for the new values, so the rate jumps);
            refused by default.
        attention_backend: the kernel ``scaled_dot_product_attention`` uses in training and
            validation forward passes (``"math"``, ``"flash"``, ``"efficient"``, ``"cudnn"``;
            ``None``: PyTorch's choice). On the CPU under bf16 autocast, ``"math"`` (two matmuls and a
            float32 softmax) trains about 1.4x faster than PyTorch's choice, whose bf16 flash backward
            runs 4x slower than its float32 one (torch 2.13; see ``benchmarks/speed/throughput.py``).
        optimizer_impl: AdamW's implementation: ``"for_loop"`` (one parameter at a time),
            ``"foreach"`` (multi-tensor kernels) or ``"fused"`` (one fused kernel; CPU and CUDA);
            ``None``: PyTorch's default for the device. All follow the same update rule and state, so
            a checkpoint resumes under any of them.
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
    gradient_accumulation_steps: int | None = None
    mixed_precision: str | None = None
    fsdp: dict[str, Any] | None = None
    cpu: bool = False
    find_unused_parameters: bool = True
    dynamo_backend: str | None = None
    ema_decay: float = 0.0
    val_every: int = 0
    val_batches: int = 4
    val_batch_size: int | None = None
    nan_patience: int = 5
    sampling: str = "task"
    task_weights: dict[str, float] | None = field(default=None)
    dataset_weights: dict[str, float] | None = field(default=None)
    progress: bool = False
    max_minutes: float | None = None
    allow_schedule_change: bool = False
    attention_backend: str | None = None
    optimizer_impl: str | None = None

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "save_every", "log_every", "val_batches", "nan_patience")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "num_workers", "val_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("gradient_accumulation_steps", "val_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}: must be >= 1 (or None), got {value}")
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip: must be >= 0 (0: off), got {self.grad_clip}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay: must be in [0, 1) (0: off), got {self.ema_decay}")
        if self.mixed_precision is not None and self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"mixed_precision: expected one of {MIXED_PRECISION} or None, got {self.mixed_precision!r}"
            )
        if self.attention_backend is not None and self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(
                f"attention_backend: expected one of {ATTENTION_BACKENDS} or None, "
                f"got {self.attention_backend!r}"
            )
        if self.optimizer_impl is not None and self.optimizer_impl not in OPTIMIZER_IMPLS:
            raise ValueError(
                f"optimizer_impl: expected one of {OPTIMIZER_IMPLS} or None, got {self.optimizer_impl!r}"
            )
        if self.sampling not in SAMPLING:
            raise ValueError(f"sampling: expected one of {SAMPLING}, got {self.sampling!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes: must be > 0 (or None), got {self.max_minutes}")
        for name in ("task_weights", "dataset_weights"):
            weights = getattr(self, name)
            if weights is None:
                continue
            bad = {k: w for k, w in weights.items() if not (math.isfinite(w) and w >= 0)}
            if bad:
                raise ValueError(f"{name}: weights must be finite and >= 0, got {bad}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """A config from ``asdict`` output; unknown keys (from a newer version) are refused by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"data: unknown TrainConfig fields {unknown}")
        return cls(**data)


def lr_factor(step: int, steps: int, warmup_steps: int) -> float:
    """Learning-rate multiplier of optimizer step ``step`` (0-based): linear warm-up over
    ``warmup_steps``, then cosine decay to 0.1 at ``steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def check_schedule(saved: dict[str, Any], cfg: TrainConfig, step: int, where: str) -> None:
    """Refuse to resume at ``step`` when the schedule fields differ from the checkpoint's config
    ``saved``, unless ``cfg.allow_schedule_change``.

    Raises:
        ValueError: naming the changed fields, the learning rate before and after, and the flag.
    """
    changed = {
        k: (saved[k], getattr(cfg, k)) for k in SCHEDULE_FIELDS if k in saved and saved[k] != getattr(cfg, k)
    }
    if not changed or cfg.allow_schedule_change:
        return
    old = saved.get("lr", cfg.lr) * lr_factor(
        step, saved.get("steps", cfg.steps), saved.get("warmup_steps", cfg.warmup_steps)
    )
    new = cfg.lr * lr_factor(step, cfg.steps, cfg.warmup_steps)
    what = ", ".join(f"{k}={a} -> {b}" for k, (a, b) in changed.items())
    raise ValueError(
        f"cfg: the checkpoint in {where} was trained with another learning-rate schedule ({what}); "
        f"resuming at step {step} would move the rate from {old:.3g} to {new:.3g}. Resume with the "
        f"checkpoint's values, or pass TrainConfig(allow_schedule_change=True) to accept the new schedule"
    )
