"""``FlowVLAConfig``: the LeRobot configuration of a flowvla policy (``--policy.type=flowvla``).

Every field is a LeRobot command-line setting (``--policy.head_depth=6``). The fields name the parts
of flowvla's [`PolicyConfig`][flowvla.policy.PolicyConfig] that a user picks (backbone, router, fusion,
head, objective, solver);
[`policy_config`][lerobot_policy_flowvla.configuration_flowvla.FlowVLAConfig.policy_config] turns
them, with the shapes LeRobot reads from the dataset, into that config. Normalisation is LeRobot's
(its processors, with the dataset's statistics): the flowvla policy inside sees normalised
state and actions and normalises nothing itself, unless it was exported from flowvla's own recipe
(then ``normalization_mapping`` is ``IDENTITY`` and the policy keeps its own statistics).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import FeatureType, NormalizationMode
from lerobot.optim.optimizers import AdamWConfig
from lerobot.optim.schedulers import CosineDecayWithWarmupSchedulerConfig
from lerobot.utils.constants import ACTION, OBS_STATE

from flowvla.policy import FusionConfig, HeadConfig, LossConfig, PolicyConfig, RouterConfig
from flowvla.processing.tokenizers import SPECIAL_TOKENS

#: The byte-level BPE tokenizer's floor: 256 bytes, the special tokens and ``<image>``.
_MIN_VOCAB = 256 + len(SPECIAL_TOKENS) + 1

__all__ = ["FlowVLAConfig"]

_VISIONS = ("conv", "vit")
_ROUTERS = ("fixed", "scalar_mix", "sample_gated", "topk")


@PreTrainedConfig.register_subclass("flowvla")
@dataclass
class FlowVLAConfig(PreTrainedConfig):
    """A flowvla flow-matching VLA policy under LeRobot.

    Attributes:
        chunk_size: ``H``, actions per predicted chunk.
        n_action_steps: actions of each chunk executed before the next prediction (LeRobot's queue).
        normalization_mapping: LeRobot normalisation per feature type.
        vision: the backbone's vision encoder, ``"conv"`` (a GroupNorm ResNet) or ``"vit"``.
        conv_channels: stage widths of the conv encoder (its patch grid is ``2 ** len(...)`` px).
        conv_blocks: residual blocks per conv stage.
        vit_patch_size: patch size of the ViT.
        vit_dim: width of the ViT.
        vit_layers: depth of the ViT.
        lm_type: the ``transformers`` decoder type of the language model (``llama``, ``qwen2``, ...).
        lm_dim: width of the language model.
        lm_layers: depth of the language model.
        num_heads: attention heads of the backbone.
        vocab_size: size of the BPE tokenizer trained on the dataset's task texts.
        keypoints: spatial-softmax keypoints per view given to the head beside the state (0: off).
        use_state: read ``observation.state`` (when the dataset has it).
        head_dim: width of the flow head (a DiT cross-attending to the routed VLM layers).
        head_depth: blocks of the flow head.
        head_num_heads: attention heads of the flow head.
        state_conditioning: how the head reads the state: ``"token"``, ``"adaln"`` or ``"both"``.
        router: which VLM layers the head reads: ``"fixed"``, ``"scalar_mix"``, ``"sample_gated"``,
            ``"topk"``.
        router_layers: the router's candidate layers (``"all"``, ``"last"``, ...).
        fusion: the 2D-3D fusion (``"none"``: LeRobot datasets carry no depth maps).
        time_sampler: flow-matching time distribution (``"beta"``, ``"uniform"``, ``"logit_normal"``).
        flow_repeats: noise draws per sample and step.
        solver: ODE solver of the action chunk (``"euler"``, ``"heun"``, ``"midpoint"``, ...).
        solver_steps: solver steps.
        mirror_views: flip every view left-right before the policy reads it. LeRobot's LIBERO
            environment turns LIBERO's renders by 180 degrees (its ``LiberoProcessorStep``, the
            convention of the HuggingFaceVLA/libero datasets), which is flowvla's upright view
            mirrored; a policy trained on flowvla's own demonstrations needs ``true`` there.
        sampling_seed: seeds the initial noise of every chunk (the same observation then gives the
            same chunk); ``None`` draws it from torch's global generator.
        seed: initialisation seed of the weights.
        optimizer_lr: peak learning rate of the AdamW preset.
        optimizer_weight_decay: AdamW weight decay.
        optimizer_grad_clip_norm: gradient clipping norm.
        scheduler_warmup_steps: linear warm-up steps of the cosine preset.
        scheduler_decay_steps: cosine decay steps.
        scheduler_decay_lr: learning rate at the end of the decay.
    """

    n_obs_steps: int = 1
    chunk_size: int = 16
    n_action_steps: int = 8
    normalization_mapping: dict[str, NormalizationMode] = field(
        default_factory=lambda: {
            "VISUAL": NormalizationMode.IDENTITY,
            "STATE": NormalizationMode.MEAN_STD,
            "ACTION": NormalizationMode.MIN_MAX,
        }
    )
    vision: str = "conv"
    conv_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    conv_blocks: int = 1
    vit_patch_size: int = 8
    vit_dim: int = 128
    vit_layers: int = 2
    lm_type: str = "llama"
    lm_dim: int = 128
    lm_layers: int = 1
    num_heads: int = 4
    vocab_size: int = 512
    keypoints: int = 32
    use_state: bool = True
    head_dim: int = 128
    head_depth: int = 4
    head_num_heads: int = 4
    state_conditioning: str = "both"
    router: str = "scalar_mix"
    router_layers: str = "all"
    fusion: str = "none"
    time_sampler: str = "beta"
    flow_repeats: int = 4
    solver: str = "euler"
    solver_steps: int = 10
    mirror_views: bool = False
    sampling_seed: int | None = None
    seed: int = 0
    optimizer_lr: float = 2e-3
    optimizer_weight_decay: float = 1e-4
    optimizer_grad_clip_norm: float = 1.0
    scheduler_warmup_steps: int = 100
    scheduler_decay_steps: int = 2000
    scheduler_decay_lr: float = 2e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        # Settings are checked here, when LeRobot parses the command line, before any data is read.
        checks = [
            (self.n_obs_steps == 1, "n_obs_steps", "1 (the policy reads the current observation)"),
            (self.chunk_size >= 1, "chunk_size", "an integer >= 1"),
            (
                1 <= self.n_action_steps <= self.chunk_size,
                "n_action_steps",
                "1 <= n_action_steps <= chunk_size",
            ),
            (self.vision in _VISIONS, "vision", f"one of {_VISIONS}"),
            (self.router in _ROUTERS, "router", f"one of {_ROUTERS}"),
            (
                self.fusion == "none",
                "fusion",
                "'none' (LeRobot datasets carry no depth for the geometry branch)",
            ),
            (self.solver_steps >= 1, "solver_steps", "an integer >= 1"),
            (self.keypoints >= 0, "keypoints", "an integer >= 0"),
            (self.vocab_size >= _MIN_VOCAB, "vocab_size", f"an integer >= {_MIN_VOCAB} (byte-level BPE)"),
            (self.head_dim % self.head_num_heads == 0, "head_dim", "a multiple of head_num_heads"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise ValueError(f"policy.{name}: expected {expected}, got {getattr(self, name)!r}")

    # ---- what LeRobot asks of a policy config --------------------------------------------------------
    @property
    def observation_delta_indices(self) -> None:
        return None

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(self.chunk_size))

    @property
    def reward_delta_indices(self) -> None:
        return None

    def get_optimizer_preset(self) -> AdamWConfig:
        return AdamWConfig(
            lr=self.optimizer_lr,
            weight_decay=self.optimizer_weight_decay,
            grad_clip_norm=self.optimizer_grad_clip_norm,
        )

    def get_scheduler_preset(self) -> CosineDecayWithWarmupSchedulerConfig:
        return CosineDecayWithWarmupSchedulerConfig(
            num_warmup_steps=self.scheduler_warmup_steps,
            num_decay_steps=self.scheduler_decay_steps,
            peak_lr=self.optimizer_lr,
            decay_lr=self.scheduler_decay_lr,
        )

    def validate_features(self) -> None:
        """The dataset's features fit a flowvla policy: square views of one size, a 1-D action."""
        views = self.image_features
        if not views:
            raise ValueError("input_features: a flowvla policy needs at least one observation.images.* view")
        shapes = {tuple(ft.shape) for ft in views.values()}
        if len(shapes) != 1:
            raise ValueError(f"input_features: every view must have one shape, got {sorted(shapes)}")
        c, h, w = next(iter(shapes))
        if c != 3 or h != w:
            raise ValueError(f"input_features: views must be square RGB (3, S, S), got {(c, h, w)}")
        action = self.action_feature
        if action is None or len(action.shape) != 1:
            raise ValueError(
                f"output_features: expected a 1-D '{ACTION}' feature, got {self.output_features}"
            )

    # ---- flowvla's side ---------------------------------------------------------------------------
    @property
    def image_keys(self) -> list[str]:
        """The dataset's view keys, in the order the policy stacks them (``V``)."""
        return list(self.image_features)

    @property
    def image_size(self) -> int:
        return int(next(iter(self.image_features.values())).shape[-1])

    @property
    def state_key(self) -> str | None:
        """``observation.state`` when the policy reads it, else ``None``."""
        ft = self.robot_state_feature
        return OBS_STATE if self.use_state and ft is not None and ft.type is FeatureType.STATE else None

    def policy_config(self, backbone_spec: dict) -> PolicyConfig:
        """The flowvla [`PolicyConfig`][flowvla.policy.PolicyConfig] these settings and features describe."""
        state = self.robot_state_feature if self.state_key else None
        return PolicyConfig(
            backbone=backbone_spec,
            horizon=self.chunk_size,
            action_dim=int(self.action_feature.shape[0]),
            state_dim=int(state.shape[0]) if state is not None else 0,
            num_views=len(self.image_keys),
            action_normalization="none",
            state_normalization="none",
            solver=self.solver,
            steps=self.solver_steps,
            keypoints=self.keypoints,
            head=HeadConfig(
                dim=self.head_dim,
                depth=self.head_depth,
                num_heads=self.head_num_heads,
                state_conditioning=self.state_conditioning,
            ),
            router=RouterConfig(kind=self.router, layers=self.router_layers),
            fusion=FusionConfig(kind=self.fusion),
            loss=LossConfig(time_sampler=self.time_sampler, repeats=self.flow_repeats),
        )
