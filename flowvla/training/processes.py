"""The processes side of a training run: the Accelerator one
[`train`][flowvla.training.engine.train] call sets up (DDP, FSDP, mixed precision, gloo on the
CPU), the checks that a launch's processes train together, and the few collective helpers the loop
needs (weights from the main process, a time budget every process agrees on, a sharded norm as a
float).

[`make_accelerator`][flowvla.training.processes.make_accelerator] is the seam tests replace to reach
code paths Accelerate reserves for GPUs (``processes.make_accelerator = ...``; the engine looks it up
on this module at every call).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import torch

from flowvla.training.config import TrainConfig

__all__ = ["TimeBudget", "check_launch", "fsdp_plugin", "make_accelerator", "scalar", "sync_from_main"]

# Older and config-file spellings of the plugin's fields.
FSDP_ALIASES = {
    "transformer_layer_cls_to_wrap": "transformer_cls_names_to_wrap",
    "offload_params": "cpu_offload",
}


def fsdp_plugin(options: Mapping[str, Any]):
    """Accelerate's FSDP plugin from ``TrainConfig.fsdp``: the plugin's own field names, or the
    ``fsdp_``-prefixed keys of an ``accelerate config`` file; an unknown key is a ``ValueError``."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    known = {f.name for f in fields(FullyShardedDataParallelPlugin)}
    # Accelerate's loading through the main process expects every state-dict entry to be sharded,
    # which a persistent buffer (image mean/std, a router table) is not; train() makes the copies
    # equal itself ([`sync_from_main`][flowvla.training.processes.sync_from_main]).
    kwargs: dict[str, Any] = {"cpu_ram_efficient_loading": False}
    for key, value in options.items():
        name = key if key in known else FSDP_ALIASES.get(key.removeprefix("fsdp_"), key.removeprefix("fsdp_"))
        if name not in known:
            raise ValueError(
                f"fsdp: {key!r} is not an option of Accelerate's FSDP plugin; known: {sorted(known)}"
            )
        kwargs[name] = value
    return FullyShardedDataParallelPlugin(**kwargs)


@torch.no_grad()
def sync_from_main(module: torch.nn.Module, device: torch.device) -> None:
    """Give every process the main process's weights and buffers (FSDP, unlike DDP, shards each
    process's own copy as it finds it). One tensor at a time through ``device``, so NCCL can carry it
    without the whole model on the GPU."""
    import torch.distributed as dist

    for tensor in module.state_dict().values():
        moved = tensor.detach().to(device)
        dist.broadcast(moved, src=0)
        tensor.copy_(moved)


def make_accelerator(cfg: TrainConfig):
    """The Accelerator of one ``train`` call (tests replace this to reach code paths Accelerate
    reserves for GPUs)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs

    # Accelerate keeps its settings in a process-wide singleton and refuses a second Accelerator with
    # another precision; each train() call is a run of its own, so its settings start afresh (the
    # process group, held apart from them, is kept).
    AcceleratorState._reset_state(reset_partial_state=False)
    # Without a GPU, Accelerate sets up gloo only when told "cpu"; otherwise each process of a
    # torchrun launch would train alone.
    on_accelerator = (
        torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    )
    return Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps or 1,
        cpu=cfg.cpu or not on_accelerator,
        fsdp_plugin=None if cfg.fsdp is None else fsdp_plugin(cfg.fsdp),
        dynamo_backend=cfg.dynamo_backend,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=cfg.find_unused_parameters)],
        step_scheduler_with_optimizer=False,
    )


def check_launch(accelerator: Any, cfg: TrainConfig) -> None:
    """Refuse a launch whose processes would not train together: the launcher started more processes
    than Accelerate set up (each would train alone), or the launcher and ``cfg`` disagree on the
    gradient accumulation steps."""
    world = accelerator.num_processes
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != world:
        raise RuntimeError(
            f"the launcher started {launched} processes (WORLD_SIZE) but Accelerate set up {world}; "
            "each would train alone. Check the launcher and Accelerate configuration"
        )
    accum = accelerator.gradient_accumulation_steps
    if cfg.gradient_accumulation_steps is not None and accum != cfg.gradient_accumulation_steps:
        raise ValueError(
            f"cfg.gradient_accumulation_steps: {cfg.gradient_accumulation_steps}, but the launcher set "
            f"{accum} (ACCELERATE_GRADIENT_ACCUMULATION_STEPS); set one of them"
        )


def scalar(x: torch.Tensor | float) -> float:
    """A 0-d tensor as a float, gathered first when it is a DTensor (a gradient norm under FSDP2)."""
    if hasattr(x, "full_tensor"):  # a DTensor norm under FSDP2
        x = x.full_tensor()
    return float(x)


class TimeBudget:
    """Stops before a step that would end past ``max_minutes`` (decided on the main process)."""

    def __init__(self, minutes: float | None, t0: float) -> None:
        self.limit = None if minutes is None else minutes * 60.0
        self.t0, self.step_s = t0, 0.0

    def observe(self, seconds: float) -> None:
        self.step_s = seconds if self.step_s == 0 else 0.8 * self.step_s + 0.2 * seconds

    def exhausted(self, accelerator) -> bool:
        if self.limit is None:
            return False
        over = time.perf_counter() - self.t0 + self.step_s > self.limit
        if accelerator.num_processes == 1:
            return over
        from accelerate.utils import broadcast

        flag = torch.tensor([float(over)], device=accelerator.device)
        return bool(broadcast(flag, from_process=0).item() > 0)
