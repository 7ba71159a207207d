"""The LIBERO recipe's settings: one config per phase, nested in
[`RecipeConfig`][flowvla.recipes.config.RecipeConfig].

```
RecipeConfig(name, seed,
             data=DataConfig(...),      what demonstrations: suite, tasks, rendering, noise (generation)
             policy=ModelConfig(...),   the policy: encoders, language model, head, router, fusion, loss
             train=TrainingConfig(...), the optimisation: steps, batch, learning rate, EMA, budget
             eval=EvalConfig(...))      the closed-loop evaluation: init states, re-planning, solver
```

Each phase takes its own part: generation builds its
[`GenerateConfig`][flowvla.recipes.generate.GenerateConfig] from ``data``
([`DataConfig.generate_config`][flowvla.recipes.config.DataConfig.generate_config]), the policy is assembled
from ``policy`` (whose ``head``, ``router``, ``fusion`` and ``loss`` are the
[`PolicyConfig`][flowvla.policy.PolicyConfig]'s own parts), training reads ``train`` and every
closed-loop evaluation builds its [`RolloutConfig`][flowvla.envs.rollout_config.RolloutConfig] in
[`EvalConfig.rollout_config`][flowvla.recipes.config.EvalConfig.rollout_config]. What changes only how a
trained policy is evaluated is exactly ``eval`` (and the run's ``name``).

Every setting is checked against its type and range when the config is built (before any compute),
and refused in one line naming it ([`SettingError`][flowvla.checks.SettingError]). A command line
names a setting by its path (``eval.replan_every=4``, ``policy.head.dim=256``); the flat names of
the recipe before it was nested (``replan_every=4``) are read as their paths
(`FLAT_KEYS`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

from flowvla.checks import SettingError, check_fields, check_nonnegative, setting
from flowvla.cli import as_index_list
from flowvla.policy.config import FusionConfig, HeadConfig, LossConfig, RouterConfig

__all__ = [
    "FLAT_KEYS",
    "MAPPING_SETTINGS",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "RecipeConfig",
    "TrainingConfig",
]


def _index_list(value: Any, path: str) -> list[int]:
    return as_index_list(value, path)


def _pair_or_none(value: Any, path: str) -> list[int] | None:
    if value is None:
        return None
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(_is_int(v) and v >= 1 for v in value)
    ):
        raise SettingError(path, f"give [length, gap] (two integers >= 1), e.g. [6, 30]; got {value!r}")
    return [int(v) for v in value]


def _perturbation_fields(value: Any, path: str) -> dict[str, Any] | None:
    """A perturbation setting checked as the generator checks it, as the JSON-ready fields that are on
    (``None`` when none is)."""
    from flowvla.recipes.generate_config import demo_perturbation

    if value is None:
        return None
    if not isinstance(value, dict):
        raise SettingError(path, f"expected a mapping of Perturbation fields, got {value!r}")
    try:
        p = demo_perturbation(value)
    except ValueError as e:
        raise SettingError(path, str(e).removeprefix("perturbation: ")) from None
    if p is None:
        return None
    defaults = {f.name: f.default for f in dataclasses.fields(p)}
    defaults = {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}
    return {k: v for k, v in p.to_dict().items() if v != defaults.get(k)}


#: Settings whose value is itself a mapping (one setting, not a part of the recipe).
MAPPING_SETTINGS = frozenset({"data.perturbation"})


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _part(cls: type, value: Any, path: str) -> Any:
    """``value`` as the part ``cls`` (a dict from JSON is built, unknown keys refused)."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise SettingError(path, f"expected a mapping of {cls.__name__} settings, got {value!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise SettingError(f"{path}.{unknown[0]}", f"not a setting; choose from {sorted(known)}")
    return cls(**value)


def _head_dim(value: Any) -> dict[str, Any]:
    # The flat recipe derived the head's attention heads from its width (32 channels a head).
    heads = max(1, value // 32) if isinstance(value, int) and not isinstance(value, bool) else 4
    return {"policy.head.dim": value, "policy.head.num_heads": heads}


#: Every key of the flat recipe (before it was nested) -> its path, or a function of the value giving
#: ``{path: value}`` when one flat key set more than one thing.
FLAT_KEYS: dict[str, str | Callable[[Any], dict[str, Any]]] = {
    "name": "name",
    "seed": "seed",
    "suite": "data.suite",
    "tasks": "data.tasks",
    "demos_per_task": "data.demos_per_task",
    "val_demos_per_task": "data.val_demos_per_task",
    "image_size": "data.image_size",
    "image_stride": "data.image_stride",
    "cameras": "data.cameras",
    "action_noise": "data.action_noise",
    "noise_bursts": "data.noise_bursts",
    "object_scatter": "data.object_scatter",
    "gen_workers": "data.workers",
    "vision": "policy.vision",
    "conv_channels": "policy.conv_channels",
    "conv_blocks": "policy.conv_blocks",
    "lm_dim": "policy.lm_dim",
    "lm_layers": "policy.lm_layers",
    "num_heads": "policy.lm_heads",
    "use_state": "policy.use_state",
    "horizon": "policy.horizon",
    "keypoints": "policy.keypoints",
    "keypoint_temperature": "policy.keypoint_temperature",
    "state_conditioning": "policy.head.state_conditioning",
    "head_dim": _head_dim,
    "head_depth": "policy.head.depth",
    "router": "policy.router.kind",
    "router_layers": "policy.router.layers",
    "fusion": "policy.fusion.kind",
    "smoothness_weight": "policy.loss.smoothness_weight",
    "jerk_weight": "policy.loss.jerk_weight",
    "synonym_weight": "policy.loss.synonym_weight",
    "contrast_weight": "policy.loss.contrast_weight",
    "flow_repeats": "policy.loss.repeats",
    "time_sampler": "policy.loss.time_sampler",
    "steps": "train.steps",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "weight_decay": "train.weight_decay",
    "max_minutes": "train.max_minutes",
    "ema_decay": "train.ema_decay",
    "shift": "train.shift",
    "threads": "train.threads",
    "init_states": "eval.init_states",
    "replan_every": "eval.replan_every",
    "temporal_ensemble": "eval.temporal_ensemble",
    "replan_at_gripper": "eval.replan_at_gripper",
    "solver": "eval.solver",
    "solver_steps": "eval.solver_steps",
    "eval_weights": "eval.weights",
    "eval_workers": "eval.workers",
    "video": "eval.video",
    "max_steps": "eval.max_steps",
}


@dataclasses.dataclass
class DataConfig:
    """What demonstrations the recipe trains on (the scripted expert generates them once into a cache).

    Attributes:
        suite: LIBERO suite, or several joined by ``+`` (``"libero_goal+libero_10"``): one policy
            trained on all their tasks and evaluated on each suite by its own protocol. Each suite's
            demonstrations are generated into, and read from, the cache folder a run of that suite
            alone uses ([`suite_data_key`][flowvla.recipes.config.RecipeConfig.suite_data_key]), so
            a several-suite run reuses the single-suite runs' data where the rendering settings agree.
        tasks: task indices trained on and evaluated, in each suite (a list, or text such as
            ``"0-3,7"``).
        demos_per_task: scripted demonstrations per task used for training.
        val_demos_per_task: further demonstrations per task, held out of training, for the flow loss
            on unseen episodes (logged at the end of training; 0: none).
        image_size: rendered and encoded size (square), for data and evaluation alike.
        image_stride: demonstrations render views every ``k``-th step (training items are those
            steps; actions keep every step).
        cameras: views, in order.
        action_noise: DART-style noise injected into the scripted expert's executed translation
            actions while its clean corrections are the labels (see
            [`GenerateConfig`][flowvla.recipes.generate.GenerateConfig]); 0: clean demonstrations
            (``noise_bursts`` then has nothing to schedule and is dropped).
        noise_bursts: ``[length, gap]``: inject ``action_noise`` in bursts of ``length`` steps about
            ``gap`` steps apart, with the expert's recovery executed clean in between (chunks are
            masked from the next perturbed step on, see
            [`ChunkDataset`][flowvla.data.dataset.ChunkDataset]); None: at every step.
        object_scatter: move each object of every demonstration's fresh layout to a random point
            within this distance (m) before the expert starts (``GenerateConfig.object_scatter_m``):
            layouts wider than LIBERO's placement regions; 0: LIBERO's own.
        perturbation: the robustness axes every demonstration is recorded under, as
            [`Perturbation`][flowvla.envs.perturb.Perturbation] fields (``{"robot_joint_offset_rad":
            0.05, "light_intensity": 0.3}``; the generator's ``perturbation``), drawn per attempt
            from its seed: objects and robot before the expert starts, camera, lights, table and
            walls and pixel noise before the kept episode is rendered. ``changed_task`` is refused
            (an evaluation axis). ``None``: LIBERO's own scenes.
        workers: processes generating demonstrations.
        unsolved_tasks: a task for which the scripted expert did not give ``demos_per_task`` (and
            ``val_demos_per_task``) demonstrations: ``"error"`` stops the data phase naming it;
            ``"train_without"`` trains on the other tasks and still evaluates it, so a table by the
            standard protocol counts what the policy does there (and says it had no demonstrations).
    """

    path: ClassVar[str] = "data"

    suite: str = "libero_object"
    tasks: list[int] = setting(factory=lambda: [0, 1], parse=_index_list)
    demos_per_task: int = setting(50, ge=1)
    val_demos_per_task: int = setting(0, ge=0)
    image_size: int = setting(96, ge=8)
    image_stride: int = setting(3, ge=1)
    cameras: list[str] = dataclasses.field(default_factory=lambda: ["agentview", "robot0_eye_in_hand"])
    action_noise: float = setting(0.3, ge=0)
    noise_bursts: list[int] | None = setting(factory=lambda: [6, 30], parse=_pair_or_none)
    object_scatter: float = setting(0.0, ge=0)
    perturbation: dict[str, Any] | None = setting(None, parse=_perturbation_fields)
    workers: int = setting(2, ge=1)
    unsolved_tasks: str = setting("error", choices=("error", "train_without"))

    def __post_init__(self) -> None:
        from flowvla.envs.libero import LIBERO_SUITES

        check_fields(self, self.path)
        check_nonnegative("data.action_noise", self.action_noise)
        check_nonnegative("data.object_scatter", self.object_scatter, "metres")
        names = self.suites
        unknown = [s for s in names if s not in LIBERO_SUITES]
        if unknown or len(set(names)) != len(names):
            raise SettingError(
                "data.suite",
                f"choose one of {sorted(LIBERO_SUITES)}, or several joined by '+' (each once), "
                f"got {self.suite!r}",
            )
        self.suite = "+".join(names)  # one spelling: " + " and "+" name the same run
        n = min(LIBERO_SUITES[s].num_tasks for s in names)
        if not self.tasks or any(not 0 <= t < n for t in self.tasks):
            raise SettingError(
                "data.tasks", f"give task indices in [0, {n}) of {self.suite}, got {self.tasks}"
            )
        if not self.cameras:
            raise SettingError("data.cameras", "give at least one view, e.g. ['agentview']")
        if self.action_noise == 0:
            self.noise_bursts = None  # no noise to schedule: the same clean demonstrations
        if self.perturbation and self.object_scatter:
            moves = sorted({"object_shift_m", "object_scatter_m"} & set(self.perturbation))
            if moves:
                raise SettingError(
                    "data.perturbation", f"{moves[0]} and data.object_scatter both move the objects: give one"
                )

    @property
    def suites(self) -> list[str]:
        """The suites of ``suite``, in order (one for a single suite)."""
        return [s.strip() for s in self.suite.split("+")]

    @property
    def demos_needed(self) -> int:
        """Demonstrations per task the recipe reads: the training ones and the held-out ones."""
        return self.demos_per_task + self.val_demos_per_task

    def generate_config(
        self, out_dir: str, *, depth: bool, seed: int, progress: bool = True, suite: str | None = None
    ) -> Any:
        """The [`GenerateConfig`][flowvla.recipes.generate.GenerateConfig] of these demonstrations
        (of one of the ``suites``, ``suite``, when there are several)."""
        from flowvla.recipes.generate import GenerateConfig

        if suite is None:
            if len(self.suites) > 1:
                raise ValueError(f"suite: name one of {self.suites}; each is generated into its own folder")
            suite = self.suite
        elif suite not in self.suites:
            raise ValueError(f"suite: {suite!r} is not one of {self.suites}")
        return GenerateConfig(
            out_dir=out_dir,
            suites=[suite],
            tasks=self.tasks,
            demos_per_task=self.demos_needed,
            image_size=self.image_size,
            image_stride=self.image_stride,
            action_noise=self.action_noise,
            noise_bursts=self.noise_bursts,
            object_scatter_m=self.object_scatter,
            perturbation=self.perturbation,
            cameras=self.cameras,
            depth=depth,
            workers=self.workers,
            seed=seed,
            progress=progress,
        )


@dataclasses.dataclass
class ModelConfig:
    """The recipe's policy: per-view image encoders and a small language model
    ([`ComposedBackbone`][flowvla.backbones.ComposedBackbone]), and the
    [`PolicyConfig`][flowvla.policy.PolicyConfig] parts that read it.

    Attributes:
        vision: the per-view image encoder: ``"conv"`` (a GroupNorm ResNet,
            [`ConvEncoder`][flowvla.backbones.conv.ConvEncoder]), ``"vit"`` (a small SigLIP-style
            ViT with the ConvEncoder's patch size and last width) or ``"timm:<model>"`` (a
            random-init timm model with GroupNorm, e.g. ``"timm:resnet18"``; needs the ``timm`` extra).
        conv_channels: the ConvEncoder's widths (output stride ``2 ** len``).
        conv_blocks: residual blocks per ConvEncoder stage (0: one plain convolution per stage).
        lm_dim: width of the language model.
        lm_layers: its depth.
        lm_heads: its attention heads.
        use_state: condition the policy on the proprioceptive state (False: images and instruction
            only; the policy then has no state input at all).
        horizon: actions per predicted chunk.
        keypoints: spatial-softmax keypoints per view given straight to the flow head (see
            ``PolicyConfig.keypoints``); 0: the head sees the images only through the language model.
        keypoint_temperature: their initial softmax temperature.
        head: the flow head (DiT): ``dim``, ``depth``, ``num_heads``, ``state_conditioning`` ...
        router: how the head reads the language model's hidden layers (``kind``: ``"fixed"``,
            ``"scalar_mix"``, ``"sample_gated"`` or ``"topk"``; ``layers``: a
            [`select_layers`][flowvla.routing.base.select_layers] rule).
        fusion: the 2D-3D geometry branch fused into the image tokens (``kind``: ``"none"`` or a
            fusion name); anything but ``"none"`` renders metric depth into the demonstrations and at
            evaluation.
        loss: the training objective (``time_sampler``, ``repeats``: flow-matching draws per sample
            and step, and the weights of the smoothness, jerk, synonym and contrast losses).
    """

    path: ClassVar[str] = "policy"

    vision: str = "conv"
    conv_channels: list[int] = setting(factory=lambda: [32, 64, 128, 256], ge=1)
    conv_blocks: int = setting(1, ge=0)
    lm_dim: int = setting(128, ge=1)
    lm_layers: int = setting(1, ge=1)
    lm_heads: int = setting(4, ge=1)
    use_state: bool = True
    horizon: int = setting(16, ge=1)
    keypoints: int = setting(32, ge=0)
    keypoint_temperature: float = setting(1.0, gt=0)
    head: HeadConfig = dataclasses.field(
        default_factory=lambda: HeadConfig(dim=128, depth=4, num_heads=4, state_conditioning="both")
    )
    router: RouterConfig = dataclasses.field(
        default_factory=lambda: RouterConfig(kind="scalar_mix", layers="all")
    )
    fusion: FusionConfig = dataclasses.field(default_factory=FusionConfig)
    loss: LossConfig = dataclasses.field(default_factory=lambda: LossConfig(time_sampler="beta", repeats=4))

    def __post_init__(self) -> None:
        check_fields(self, self.path)
        if self.vision not in ("conv", "vit") and not self.vision.startswith("timm:"):
            raise SettingError(
                "policy.vision", f"choose 'conv', 'vit' or 'timm:<model name>', got {self.vision!r}"
            )
        for name, cls in (
            ("head", HeadConfig),
            ("router", RouterConfig),
            ("fusion", FusionConfig),
            ("loss", LossConfig),
        ):
            part = _part(cls, getattr(self, name), f"policy.{name}")
            check_fields(part, f"policy.{name}")
            setattr(self, name, part)
        for name in ("smoothness_weight", "jerk_weight", "synonym_weight", "contrast_weight"):
            check_nonnegative(f"policy.loss.{name}", getattr(self.loss, name))
        if self.loss.repeats < 1:
            raise SettingError("policy.loss.repeats", f"must be >= 1, got {self.loss.repeats}")
        if self.head.dim < 1 or self.head.depth < 1 or self.head.num_heads < 1:
            raise SettingError("policy.head", f"dim, depth and num_heads must be >= 1, got {self.head}")
        if self.head.dim % self.head.num_heads:
            raise SettingError(
                "policy.head.num_heads", f"{self.head.num_heads} does not divide dim {self.head.dim}"
            )
        if self.lm_dim % self.lm_heads:
            raise SettingError("policy.lm_heads", f"{self.lm_heads} does not divide lm_dim {self.lm_dim}")
        from flowvla.fusion import FUSIONS

        for path, value, allowed in (
            ("policy.head.state_conditioning", self.head.state_conditioning, ("token", "adaln", "both")),
            ("policy.router.kind", self.router.kind, ("fixed", "scalar_mix", "sample_gated", "topk")),
            ("policy.fusion.kind", self.fusion.kind, ("none", *sorted(FUSIONS))),
            ("policy.loss.time_sampler", self.loss.time_sampler, ("beta", "uniform", "logit_normal")),
        ):
            if value not in allowed:
                raise SettingError(path, f"choose one of {list(allowed)}, got {value!r}")
        if isinstance(self.router.layers, (list, tuple)):
            self.router.layers = [int(v) for v in self.router.layers]

    @property
    def needs_depth(self) -> bool:
        """Whether the demonstrations and the evaluation render metric depth (the geometry branch's input)."""
        return self.fusion.kind != "none"

    @property
    def instruction_pairs(self) -> bool:
        """Whether training items carry a synonym and an opposite instruction (for the language losses)."""
        return self.loss.synonym_weight > 0 or self.loss.contrast_weight > 0


@dataclasses.dataclass
class TrainingConfig:
    """How the recipe's policy is optimised (the [`TrainConfig`][flowvla.training.TrainConfig] of the
    training phase is built from it in [`train_config`][flowvla.recipes.train.train_config]).

    Attributes:
        steps: optimizer steps.
        batch_size: samples per step.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        max_minutes: stop training after this long even if ``steps`` are not done (None: no limit).
        ema_decay: decay of the weights' exponential moving average used for evaluation (0: off).
        shift: random-shift augmentation in pixels (pad and crop back), 0: off.
        threads: torch threads for training.
        precision: ``"bf16"``: bf16 autocast of the forward pass (float32 weights, optimizer state
            and EMA), with attention on PyTorch's math kernel on the CPU (see
            [`TrainConfig.attention_backend`][flowvla.training.TrainConfig]): about 1.36x the
            training samples/s on a CPU with AVX-512 BF16, the same loss curve
            (``benchmarks/speed/throughput.py``). ``"fp32"``: float32 throughout. ``"auto"``: bf16
            on a CPU with native bf16 instructions (AVX-512 BF16 or AMX) and no GPU, else fp32.
            The default stays ``"fp32"`` until a closed-loop run shows bf16's success within the
            fp32 recipe's interval (issue 37).
    """

    path: ClassVar[str] = "train"

    steps: int = setting(2000, ge=1)
    batch_size: int = setting(32, ge=1)
    lr: float = setting(2e-3, gt=0)
    weight_decay: float = setting(1e-4, ge=0)
    max_minutes: float | None = setting(28.0, gt=0)
    ema_decay: float = setting(0.999, ge=0, le=1)
    shift: int = setting(6, ge=0)
    threads: int = setting(2, ge=1)
    precision: str = setting("fp32", choices=("auto", "fp32", "bf16"))

    def __post_init__(self) -> None:
        check_fields(self, self.path)


@dataclasses.dataclass
class EvalConfig:
    """How a trained policy is evaluated in closed loop on official init states.

    Attributes:
        init_states: official init states evaluated per task (the first ``n``).
        replan_every: actions executed from each chunk before predicting again.
        temporal_ensemble: ACT's temporal ensembling weight decay (see
            [`RolloutConfig`][flowvla.envs.rollout_config.RolloutConfig]); None: off.
        replan_at_gripper: cut each chunk before its first gripper toggle and re-plan there.
        solver: ODE solver.
        solver_steps: solver steps.
        weights: which weights are evaluated: ``"auto"`` (EMA when trained with it), ``"ema"`` or
            ``"raw"``.
        workers: simulator processes.
        envs_per_worker: episodes of a task each process runs at once, planned in batches (see
            ``RolloutConfig.envs_per_worker``).
        video: which episodes get a video (see ``RolloutConfig.video``).
        max_steps: episode step limit (None: the suite's).
        video_size: the videos' frames are rendered at this size (each view square, side by side)
            after every control step, apart from the policy's observations, and captioned with the
            instruction, the step and the outcome (see ``RolloutConfig.video_size``; a 256 px frame
            costs about 0.1-0.15 s a view on 2 CPU cores, so 15-40 s for a 130-step episode);
            None: the policy's own observations at each re-plan, as before.
    """

    path: ClassVar[str] = "eval"

    init_states: int = setting(50, ge=1, le=50)
    replan_every: int = setting(8, ge=1)
    temporal_ensemble: float | None = setting(None, ge=0)
    replan_at_gripper: bool = False
    solver: str = "euler"
    solver_steps: int = setting(10, ge=1)
    weights: str = setting("auto", choices=("auto", "ema", "raw"))
    workers: int = setting(2, ge=1)
    envs_per_worker: int = setting(1, ge=1)
    video: str = setting("first", choices=("none", "failures", "successes", "all", "first"))
    max_steps: int | None = setting(None, ge=1)
    video_size: int | None = setting(256, ge=16)

    def __post_init__(self) -> None:
        check_fields(self, self.path)
        from flowvla.solvers import available_solvers

        if self.solver not in available_solvers():
            raise SettingError("eval.solver", f"choose one of {available_solvers()}, got {self.solver!r}")

    def rollout_config(
        self,
        policy: Any,
        *,
        suite: str,
        tasks: list[int] | None,
        cameras: list[str],
        out_dir: str | None,
        seed: int = 0,
        progress: bool = True,
        policy_id: dict[str, Any] | None = None,
        **extra: Any,
    ) -> Any:
        """The [`RolloutConfig`][flowvla.envs.rollout_config.RolloutConfig] that evaluates ``policy`` this way
        (its observation settings: image size, depth, state size, come from the policy itself).

        Args:
            policy: the [`VLAPolicy`][flowvla.policy.VLAPolicy] evaluated.
            suite: LIBERO suite.
            tasks: task indices (None: every task of the suite).
            cameras: views, in the order the policy was trained on.
            out_dir: where records and videos go.
            seed: seeds the episodes and the policy's noise.
            progress: show a progress bar.
            policy_id: names the policy in the records (default:
                [`policy_identity`][flowvla.policy.policy_identity] of ``policy``).
            **extra: further ``RolloutConfig`` fields (``perturbation``, ``instructions``,
                ``on_mismatch`` ...).
        """
        from flowvla.envs.rollout import RolloutConfig
        from flowvla.policy import policy_identity

        return RolloutConfig(
            suite=suite,
            tasks=tasks,
            init_states=self.init_states,
            replan_every=self.replan_every,
            temporal_ensemble=self.temporal_ensemble,
            replan_at_gripper=self.replan_at_gripper,
            max_steps=self.max_steps,
            **policy.observation_settings(),
            cameras=cameras,
            out_dir=out_dir,
            video=self.video,
            video_size=self.video_size,
            workers=self.workers,
            envs_per_worker=self.envs_per_worker,
            seed=seed,
            predict_kwargs={
                "seed": seed,
                "diagnostics": False,
                "solver": self.solver,
                "steps": self.solver_steps,
            },
            progress=progress,
            policy_id=policy_identity(policy) if policy_id is None else policy_id,
            **extra,
        )


_PARTS = {"data": DataConfig, "policy": ModelConfig, "train": TrainingConfig, "eval": EvalConfig}


@dataclasses.dataclass
class RecipeConfig:
    """Every setting of a LIBERO recipe run, one part per phase (JSON round-trips through
    [`to_dict`][flowvla.recipes.config.RecipeConfig.to_dict] / ``from_dict``).

    Attributes:
        name: the preset it came from.
        seed: seeds data generation, training and evaluation.
        data: the demonstrations.
        policy: the policy's architecture and objective.
        train: the optimisation.
        eval: the closed-loop evaluation.
    """

    name: str = "default"
    seed: int = setting(0, ge=0)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    policy: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        check_fields(self)
        for name, cls in _PARTS.items():
            setattr(self, name, _part(cls, getattr(self, name), name))
        stride = 2 ** len(self.policy.conv_channels)
        if self.policy.vision in ("conv", "vit") and self.data.image_size % stride:
            raise SettingError(
                "data.image_size",
                f"{self.data.image_size} is not a multiple of the encoder's stride {stride}",
            )
        if self.eval.replan_every > self.policy.horizon:
            raise SettingError(
                "eval.replan_every",
                f"{self.eval.replan_every} exceeds the chunk horizon {self.policy.horizon}",
            )

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are no attribute: the flat ones of before the nesting.
        path = _flat_path(name)
        if path is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        warnings.warn(f"RecipeConfig.{name} is now RecipeConfig.{path}", FutureWarning, stacklevel=2)
        value: Any = self
        for part in path.split("."):
            value = getattr(value, part)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        path = _flat_path(name) if name not in _RECIPE_FIELDS else None
        if path is not None:  # would set a new attribute nothing reads: a silent no-op
            raise AttributeError(f"RecipeConfig.{name} is now RecipeConfig.{path}; set that")
        super().__setattr__(name, value)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict, nested as the config."""
        return json_ready(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RecipeConfig:
        """Inverse of [`to_dict`][flowvla.recipes.config.RecipeConfig.to_dict]. Unknown settings are an
        error naming them; a flat dict (a ``recipe.json`` written before the recipe was nested) is
        refused, naming [`convert_flat_recipe`][flowvla.recipes.settings.convert_flat_recipe] (which
        [`load_recipe`][flowvla.recipes.settings.load_recipe] applies)."""
        if "suite" in d or "lr" in d:
            raise SettingError(
                "recipe",
                "a flat recipe (saved before it was nested): read it with load_recipe or convert_flat_recipe",
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SettingError(unknown[0], f"not a recipe setting; choose from {sorted(known)}")
        return cls(**d)

    def data_key(self) -> str:
        """The cache folder name of this recipe's demonstrations (what was rendered, how); for several
        suites, the suites' own folders are
        [`suite_data_key`][flowvla.recipes.config.RecipeConfig.suite_data_key]."""
        return self.suite_data_key(self.data.suite)

    def suite_data_key(self, suite: str) -> str:
        """The cache folder name of ``suite``'s demonstrations in this recipe: the one a run of
        ``suite`` alone with these rendering settings uses."""
        d = self.data
        cams = "+".join(c.removeprefix("robot0_") for c in d.cameras)
        stride = f"_every{d.image_stride}" if d.image_stride > 1 else ""
        noise = f"_dart{d.action_noise:g}" if d.action_noise > 0 else ""
        if d.noise_bursts:
            noise += "_bursts{}x{}".format(*d.noise_bursts)
        depth = "_depth" if self.needs_depth else ""
        scatter = f"_scatter{100 * d.object_scatter:g}cm" if d.object_scatter > 0 else ""
        if d.perturbation:
            # Named by a digest of its fields: any change of an axis or an amount is another dataset.
            text = json.dumps(d.perturbation, sort_keys=True)
            scatter += f"_perturbed-{hashlib.sha256(text.encode()).hexdigest()[:10]}"
        return f"{suite}_{d.image_size}px{stride}_{cams}{depth}{noise}{scatter}_seed{self.seed}"

    @property
    def needs_depth(self) -> bool:
        """Whether the demonstrations and the evaluation render metric depth (the geometry branch's input)."""
        return self.policy.needs_depth

    @property
    def instruction_pairs(self) -> bool:
        """Whether training items carry a synonym and an opposite instruction (for the language losses)."""
        return self.policy.instruction_pairs


_RECIPE_FIELDS = {f.name for f in dataclasses.fields(RecipeConfig)}


def _flat_path(name: str) -> str | None:
    """The path of a flat key of before the nesting (``"lr"`` -> ``"train.lr"``), else None."""
    target = FLAT_KEYS.get(name)
    if target is None or name in _RECIPE_FIELDS:
        return None
    return target if isinstance(target, str) else "policy.head.dim"


def json_ready(value: Any) -> Any:
    """``value`` with tuples as lists (JSON's form), so a config equals itself after save and load."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value
