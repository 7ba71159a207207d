"""The training checkpoint: one [`VLAPolicy.save_pretrained`][flowvla.policy.policy.VLAPolicy.save_pretrained]
directory, ``<out_dir>/checkpoint``, replaced atomically at every save.

It holds ``model.safetensors`` (raw weights), ``model_ema.safetensors`` (averaged weights, with EMA on),
config, statistics, tokenizer and ``trainer_state.pt``: the optimizer state keyed by parameter name,
the step, the EMA update count, the counters of skipped steps and the
[`TrainConfig`][flowvla.training.config.TrainConfig] as a dict. All of it comes from the same step. Nothing
random needs saving: every draw of a step is seeded from the step number.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from flowvla.policy.policy import EMA_WEIGHTS_FILE, TRAINER_STATE_FILE, WEIGHTS_FILE

__all__ = [
    "CHECKPOINT_DIR",
    "full_model_state",
    "latest_checkpoint",
    "optimizer_state",
    "read_trainer_state",
    "restore_optimizer",
]

CHECKPOINT_DIR = "checkpoint"
# 2: optimizer state keyed by parameter name (torch.distributed.checkpoint's full form), so it loads
# into a plain, DDP or FSDP-sharded policy alike. 1 (no key): index-keyed, from the first loop.
STATE_FORMAT = 2


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """``<out_dir>/checkpoint`` if a complete checkpoint is there."""
    ckpt = Path(out_dir) / CHECKPOINT_DIR
    return ckpt if (ckpt / WEIGHTS_FILE).is_file() else None


def read_trainer_state(ckpt: str | os.PathLike) -> dict[str, Any] | None:
    """The trainer state of a checkpoint directory, or None if it has none."""
    path = Path(ckpt) / TRAINER_STATE_FILE
    if not path.is_file():
        return None
    return torch.load(path, weights_only=False, map_location="cpu")


def _options(**kw: bool):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole weights of a (possibly sharded) model on the CPU, on the main process (others get
    an empty dict). Every process must call it: with a sharded model it gathers."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options(cpu_offload=True))


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The whole optimizer state keyed by parameter name, on the CPU (on the main process; others may
    get an empty dict). Every process must call it: with a sharded model it gathers."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))


def restore_optimizer(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Load what [`optimizer_state`][flowvla.training.checkpoint.optimizer_state] saved (or a format-1
    index-keyed state) into ``optimizer``; every process passes the whole state."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    if state.get("format", 1) < 2:
        optimizer.load_state_dict(state["optimizer"])
        return
    # Not strict: parameters that never received a gradient (unused branches) have no Adam state.
    set_optimizer_state_dict(model, optimizer, state["optimizer"], options=_options(strict=False))


def ema_weights_path(ckpt: str | os.PathLike) -> Path:
    return Path(ckpt) / EMA_WEIGHTS_FILE
