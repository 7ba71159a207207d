"""The training engine: [`train`][flowvla.training.engine.train] on HF Accelerate (DDP, FSDP, mixed precision,
gradient accumulation), EMA, a non-finite-step guard, validation, and task-mixture sampling.

See [`flowvla.training.engine`][flowvla.training.engine] for how runs stay reproducible across resumes
and process counts, and [`flowvla.training.checkpoint`][flowvla.training.checkpoint] for the checkpoint
layout.
"""

from flowvla.training.checkpoint import CHECKPOINT_DIR, latest_checkpoint, read_trainer_state
from flowvla.training.config import TrainConfig, lr_factor
from flowvla.training.ema import EMA
from flowvla.training.engine import NonFiniteLossError, train
from flowvla.training.sampling import (
    Mixture,
    StepBatchSampler,
    build_mixture,
    item_tasks,
    mix_seed,
    task_weights_from_success,
)

__all__ = [
    "CHECKPOINT_DIR",
    "EMA",
    "Mixture",
    "NonFiniteLossError",
    "StepBatchSampler",
    "TrainConfig",
    "build_mixture",
    "item_tasks",
    "latest_checkpoint",
    "lr_factor",
    "mix_seed",
    "read_trainer_state",
    "task_weights_from_success",
    "train",
]
