"""What a policy is, as evaluation records name it: its class, where it was loaded from, a hash of its
weights and the training step of its checkpoint.

[`evaluate`][flowvla.envs.rollout.evaluate] stores this identity (``RolloutConfig.policy_id``) in every
episode record, so an output folder written by one policy is never counted for another.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flowvla.policy.policy import TRAINER_STATE_FILE

__all__ = ["checkpoint_step", "policy_identity", "weights_digest"]


def weights_digest(module: nn.Module) -> str:
    """SHA-256 (hex) of ``module``'s state dict: every entry's name, dtype, shape and bytes, in name
    order.

    Equal for a policy and its [`save_pretrained`][flowvla.policy.policy.VLAPolicy.save_pretrained] /
    [`from_pretrained`][flowvla.policy.policy.VLAPolicy.from_pretrained] round trip, and on any device;
    different as soon as one value differs.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        # Raw bytes through a uint8 view: works for every dtype (bfloat16 has no numpy equivalent).
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def checkpoint_step(directory: str | os.PathLike) -> int | None:
    """The training step a checkpoint directory was saved at (its ``trainer_state.pt``), or None."""
    path = Path(directory) / TRAINER_STATE_FILE
    if not path.is_file():
        return None
    # mmap: the step is a few bytes beside optimizer moments twice the model's size; map, don't read.
    state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    step = state.get("step") if isinstance(state, dict) else None
    return int(step) if step is not None else None


def policy_identity(
    policy: Any, path: str | os.PathLike | None = None, *, step: int | None = None
) -> dict[str, Any]:
    """A JSON-safe identity of ``policy`` for ``RolloutConfig.policy_id``.

    Args:
        policy: the evaluated object; a ``torch.nn.Module`` gets a
            [`weights_digest`][flowvla.policy.identity.weights_digest].
        path: the directory it was loaded from (recorded as an absolute path; its training step is
            read from ``trainer_state.pt`` when there is one).
        step: the training step, overriding the one read from ``path``.

    Returns:
        ``{"class", "path", "weights_sha256", "step"}``; entries that do not apply are None.
    """
    cls = type(policy)
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "path": str(Path(path).resolve()) if path is not None else None,
        "weights_sha256": weights_digest(policy) if isinstance(policy, nn.Module) else None,
        "step": step if step is not None else (checkpoint_step(path) if path is not None else None),
    }
