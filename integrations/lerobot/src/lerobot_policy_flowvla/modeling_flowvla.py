"""``FlowVLAPolicy``: a flowvla [`VLAPolicy`][flowvla.policy.VLAPolicy] behind LeRobot's policy interface.

LeRobot hands the policy batches of its own keys; this module maps them onto flowvla's batch
contract ([`flowvla.data.batch`][flowvla.data.batch]) and back::

    observation.images.<view> [B, 3, h, w] (each view)  ->  images      [B, V, 3, S, S] (resized to S,
                                                                                 mirrored if asked)
    observation.state         [B, S_state]              ->  state       [B, S_state]
    task                      list[str]                 ->  instruction list[str]
    action                    [B, H, A]                 ->  actions     [B, H, A]
    action_is_pad             [B, H]                    ->  action_mask [B, H] (negated)

A checkpoint is LeRobot's ``config.json`` (this policy's
[`FlowVLAConfig`][lerobot_policy_flowvla.FlowVLAConfig]) beside ``flowvla/``, the inner policy as
flowvla itself saves it (weights, architecture, tokenizer, statistics). Loading reads that folder
with flowvla's own loader, so a policy goes from flowvla to LeRobot and back bit-exact.
"""

from __future__ import annotations

import builtins
import os
from collections import deque
from pathlib import Path
from typing import Any, TypeVar

import torch
from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.utils.constants import ACTION
from torch import Tensor

from flowvla.backbones.composed import ComposedBackbone
from flowvla.policy import VLAPolicy
from lerobot_policy_flowvla.configuration_flowvla import FlowVLAConfig

__all__ = ["FLOWVLA_DIR", "FlowVLAPolicy", "flowvla_batch"]

#: The subfolder of a LeRobot checkpoint that holds the flowvla policy.
FLOWVLA_DIR = "flowvla"
_PAD = "action_is_pad"
_TASK = "task"
T = TypeVar("T", bound="FlowVLAPolicy")


def flowvla_batch(config: FlowVLAConfig, batch: dict[str, Any], *, training: bool) -> dict[str, Any]:
    """A LeRobot batch as flowvla's batch (see the module docs); ``training`` adds the actions."""
    missing = [k for k in (*config.image_keys, _TASK) if k not in batch]
    if missing:
        raise KeyError(f"batch: missing {missing} (a flowvla policy reads {config.image_keys} and 'task')")
    tasks = batch[_TASK]
    images = torch.stack([_sized(batch[k], config.image_size) for k in config.image_keys], dim=1)
    out: dict[str, Any] = {
        "images": images.flip(-1) if config.mirror_views else images,
        "instruction": [tasks] if isinstance(tasks, str) else list(tasks),
    }
    if config.state_key is not None:
        out["state"] = batch[config.state_key]
    if training:
        out["actions"] = batch[ACTION]
        if _PAD in batch:
            out["action_mask"] = ~batch[_PAD]
    return out


def _sized(view: Tensor, size: int) -> Tensor:
    """``[B, 3, h, w]`` resized to the policy's ``size`` (LeRobot's LIBERO env renders 256 px whatever
    the dataset's size was); a view of the right size passes untouched."""
    if tuple(view.shape[-2:]) == (size, size):
        return view
    if view.dtype == torch.uint8:
        view = view.float() / 255
    # Area averaging: anti-aliased when shrinking, and exact on a block-upsampled view.
    return torch.nn.functional.interpolate(view, size=(size, size), mode="area")


class FlowVLAPolicy(PreTrainedPolicy):
    """A flowvla policy that ``lerobot-train`` trains and ``lerobot-eval`` runs.

    Args:
        config: the settings and the dataset's features (LeRobot fills ``input_features`` /
            ``output_features``).
        dataset_stats: unused here: LeRobot's processors normalise with them.
        dataset_meta: the training dataset's metadata; its task texts train the tokenizer.
        vla: an existing flowvla policy to wrap (loading, exporting); built fresh when ``None``.
    """

    config_class = FlowVLAConfig
    name = "flowvla"

    def __init__(
        self,
        config: FlowVLAConfig,
        dataset_stats: dict[str, dict[str, Tensor]] | None = None,
        dataset_meta: Any = None,
        vla: VLAPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(config)
        config.validate_features()
        self.config: FlowVLAConfig = config
        if vla is None:
            tasks = list(getattr(dataset_meta, "tasks", None).index) if dataset_meta is not None else []
            vla = _build(config, tasks)
        # flowvla's conv encoder keeps its weights channels-last; LeRobot checkpoints the optimizer's
        # moments (shaped like the weights) with safetensors, which refuses non-contiguous tensors.
        self.vla = vla.to(memory_format=torch.contiguous_format)
        self.reset()

    def get_optim_params(self) -> Any:
        return self.parameters()

    def reset(self) -> None:
        """Forget the queued actions (LeRobot calls this at every episode start)."""
        self._queue: deque[Tensor] = deque(maxlen=self.config.n_action_steps)

    def forward(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        """Flow-matching loss of a LeRobot training batch, and its terms for logging."""
        losses = self.vla(flowvla_batch(self.config, batch, training=True))
        return losses.loss, {"flow_loss": float(losses.action.detach())}

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Any], **kwargs: Any) -> Tensor:
        """``[B, H, A]`` action chunk (normalised as LeRobot's postprocessor expects) for an observation."""
        if kwargs.get("noise") is not None:
            raise ValueError("noise: a flowvla policy seeds its noise with policy.sampling_seed")
        actions, _ = self.vla.predict_action(
            flowvla_batch(self.config, batch, training=False),
            seed=self.config.sampling_seed,
            diagnostics=False,
        )
        return actions

    @torch.no_grad()
    def select_action(self, batch: dict[str, Any], **kwargs: Any) -> Tensor:
        """``[B, A]``: the next action, from a chunk predicted every ``n_action_steps`` steps."""
        self.eval()
        if not self._queue:
            chunk = self.predict_action_chunk(batch, **kwargs)[:, : self.config.n_action_steps]
            self._queue.extend(chunk.transpose(0, 1))
        return self._queue.popleft()

    # ---- persistence ----------------------------------------------------------------------------
    def _save_pretrained(self, save_directory: Path) -> None:
        self.config._save_pretrained(save_directory)
        self.vla.save_pretrained(Path(save_directory) / FLOWVLA_DIR)

    @classmethod
    def from_pretrained(
        cls: builtins.type[T],
        pretrained_name_or_path: str | os.PathLike,
        *,
        config: FlowVLAConfig | None = None,
        **kwargs: Any,
    ) -> T:
        """Load a checkpoint written by ``save_pretrained`` (a local folder: LeRobot's checkpoints,
        or a hub snapshot downloaded beforehand)."""
        path = Path(pretrained_name_or_path)
        inner = path / FLOWVLA_DIR
        if not inner.is_dir():
            raise FileNotFoundError(
                f"pretrained_name_or_path: {path} holds no {FLOWVLA_DIR}/ folder (not a flowvla checkpoint, "
                "or not a local folder)"
            )
        if config is None:
            # Parsed through the registry: the file's "type" picks the class (the subclass itself
            # refuses that key).
            config = PreTrainedConfig.from_pretrained(path, cli_overrides=kwargs.get("cli_overrides", []))
        if not isinstance(config, FlowVLAConfig):
            raise TypeError(
                f"pretrained_name_or_path: {path} is a {type(config).__name__} checkpoint, not flowvla's"
            )
        vla = VLAPolicy.from_pretrained(inner, device=config.device or "cpu")
        policy = cls(config, vla=vla)
        policy.to(config.device)
        policy.eval()
        return policy


def _build(config: FlowVLAConfig, tasks: list[str]) -> VLAPolicy:
    """A fresh flowvla policy for ``config``: the composed backbone (tokenizer trained on ``tasks``)."""
    vision = {"vision": config.vision}
    if config.vision == "conv":
        vision.update(
            patch_size=2 ** len(config.conv_channels),
            vision_dim=config.conv_channels[-1],
            conv_channels=config.conv_channels,
            conv_blocks=config.conv_blocks,
        )
    else:
        vision.update(
            patch_size=config.vit_patch_size, vision_dim=config.vit_dim, vision_layers=config.vit_layers
        )
    backbone = ComposedBackbone.tiny(
        sorted(set(tasks)),
        image_size=config.image_size,
        lm_type=config.lm_type,
        lm_dim=config.lm_dim,
        lm_layers=config.lm_layers,
        num_heads=config.num_heads,
        vocab_size=config.vocab_size,
        seed=config.seed,
        **vision,
    )
    torch.manual_seed(config.seed)
    return VLAPolicy(config.policy_config(backbone.spec()), backbone)
