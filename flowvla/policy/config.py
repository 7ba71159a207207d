"""The policy's configuration: one JSON-serialisable dataclass that names every part.

``PolicyConfig.to_dict()`` / ``from_dict()`` round-trip exactly (nested configs included), so a saved
policy rebuilds the same architecture without any code or arguments.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FusionConfig", "HeadConfig", "LossConfig", "PolicyConfig", "RouterConfig"]


@dataclass
class HeadConfig:
    """The flow head ([`FlowActionHead`][flowvla.dit.head.FlowActionHead] arguments)."""

    dim: int = 256
    depth: int = 4
    num_heads: int = 4
    block_pattern: str = "self_cross"
    positions: str = "learned"
    num_future_tokens: int = 0
    mlp: str = "gelu"
    mlp_ratio: float = 4.0
    qk_norm: bool = False
    #: ``"token"``, ``"adaln"`` (FiLM-style modulation of every block by the state) or ``"both"``.
    state_conditioning: str = "token"
    dropout: float = 0.0
    #: the head also takes a step size (a shortcut student: see
    #: [`distill_policy_shortcut`][flowvla.policy.shortcut_distill.distill_policy_shortcut]).
    step_conditioning: bool = False


@dataclass
class RouterConfig:
    """Which VLM layers the head reads: ``kind`` is ``"fixed"``, ``"scalar_mix"``, ``"sample_gated"``
    or ``"topk"``; ``layers`` is a [`select_layers`][flowvla.routing.base.select_layers] rule (the fixed
    choice, or the candidates of a learned router)."""

    kind: str = "fixed"
    layers: Any = "last"
    k: int = 2
    temperature: float = 1.0
    hidden_dim: int = 128
    #: weight of the top-k router's load-balancing loss in the total loss.
    aux_weight: float = 0.01


@dataclass
class FusionConfig:
    """The geometry branch: ``kind`` is ``"none"`` or a ``FUSIONS`` name.

    Geometry tokens come from depth (``depth`` in the batch) back-projected with the batch's
    intrinsics, or with ``fallback_fovy`` (degrees) when a batch has none, and camera-to-world
    extrinsics when given (world frame), else the camera frame.
    """

    kind: str = "none"
    encoder: str = "fourier"  # "fourier" (Ego3D-like) or "mlp" (LLaVA-3D-like)
    geo_dim: int = 64
    window: int = 3
    cross_view: bool = False
    num_heads: int = 4
    fallback_fovy: float = 45.0
    depth_kind: str = "z"
    far: float | None = None
    center: tuple[float, float, float] = (0.0, 0.0, 1.0)
    scale: float = 1.0


@dataclass
class LossConfig:
    """Training objective: flow matching plus optional regularisers on the predicted clean chunk."""

    time_sampler: str = "beta"  # "beta" (pi0 / GR00T), "uniform", "logit_normal"
    repeats: int = 1
    smoothness_weight: float = 0.0  # squared 2nd differences of the predicted chunk
    jerk_weight: float = 0.0  # squared 3rd differences
    synonym_weight: float = 0.0  # paraphrased instruction -> same chunk
    contrast_weight: float = 0.0  # opposite instruction -> a chunk at least `contrast_margin` away
    contrast_margin: float = 1.0


@dataclass
class PolicyConfig:
    """Everything that defines a policy's architecture and defaults.

    Attributes:
        backbone: the backbone's architecture spec (``backbone.spec()``; ``kind`` names its class).
        horizon: ``H``, actions per chunk.
        action_dim: ``A``.
        state_dim: ``S``; shorter states are zero-padded (``state_mask`` marks real entries), longer
            ones are an error unless ``truncate_state``.
        num_views: ``V``, camera views per sample.
        truncate_state: drop trailing state entries beyond ``state_dim`` instead of raising.
        action_normalization: ``"quantile"``, ``"mean_std"`` or ``"none"``.
        state_normalization: the same, for the state.
        solver: default solver of ``predict_action``.
        steps: default solver steps.
        image_token_dropout: training only: fraction of image tokens hidden from the head.
        language_token_dropout: training only: fraction of text tokens hidden from the head.
        freeze: backbone part to freeze (``"all"``, ``"vision"``, ``"language"``, ...) or None.
        keypoints: ``K`` spatial-softmax keypoints per view read from the vision encoder's patch
            tokens ([`SpatialSoftmax`][flowvla.backbones.keypoints.SpatialSoftmax]) and given to the
            head beside the state (its conditioning vector is ``[state, V * K * 2 coordinates]``):
            a short path from pixels to actions next to the language model; 0: off.
        keypoint_temperature: initial (learned) softmax temperature of the keypoints. At 1 the
            softmax over cells starts nearly uniform on normalised features, every keypoint sits
            near the image centre and a short training run barely moves it; a low value starts
            them peaked, so they follow what they respond to from the first step.
        head: the flow head.
        router: the layer router.
        fusion: the geometry branch.
        loss: the training objective.
    """

    backbone: dict[str, Any]
    horizon: int = 16
    action_dim: int = 7
    state_dim: int = 8
    num_views: int = 2
    truncate_state: bool = False
    action_normalization: str = "quantile"
    state_normalization: str = "mean_std"
    solver: str = "heun"
    steps: int = 5
    image_token_dropout: float = 0.0
    language_token_dropout: float = 0.0
    freeze: str | None = None
    keypoints: int = 0
    keypoint_temperature: float = 1.0
    head: HeadConfig = field(default_factory=HeadConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        # Canonical JSON form (tuples -> lists, ...), so a config equals itself after save and load.
        self.backbone = json.loads(json.dumps(self.backbone))
        self.fusion.center = tuple(self.fusion.center)
        if self.keypoints < 0:
            raise ValueError(f"keypoints: must be >= 0, got {self.keypoints}")
        if not self.keypoint_temperature > 0:
            raise ValueError(f"keypoint_temperature: must be > 0, got {self.keypoint_temperature}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PolicyConfig:
        """Inverse of [`to_dict`][flowvla.policy.config.PolicyConfig.to_dict]; unknown keys are an error (a
        config from a newer version)."""
        nested = {"head": HeadConfig, "router": RouterConfig, "fusion": FusionConfig, "loss": LossConfig}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"config: unknown keys {sorted(unknown)}")
        kwargs = dict(d)
        for name, sub in nested.items():
            if name in kwargs and isinstance(kwargs[name], dict):
                sub_known = {f.name for f in dataclasses.fields(sub)}
                bad = set(kwargs[name]) - sub_known
                if bad:
                    raise ValueError(f"config.{name}: unknown keys {sorted(bad)}")
                kwargs[name] = sub(**kwargs[name])
        return cls(**kwargs)
