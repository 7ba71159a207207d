"""The reference LIBERO recipe: scripted demonstrations -> parity check -> train -> evaluate -> report.

One call, [`run_recipe`][flowvla.recipes.libero.run_recipe], runs every phase of the main job and
writes a run folder::

    <out>/recipe.json            the recipe (every setting, so the run can be repeated)
    <out>/parity.json            the train/eval parity check (refuses to go on when it fails)
    <out>/checkpoint/            the trained policy (EMA weights) with its trainer state
    <out>/log.jsonl              training losses, learning rate, throughput
    <out>/loss.png               the loss curve
    <out>/eval/                  per-episode records, summary.json, one video per task
    <out>/success.json           the success table: per task and overall, with Wilson intervals
    <out>/sensitivity.json       the sensitivity check of the trained policy
    <out>/report.md              one page tying them together

Demonstrations come from a cache folder (generated once by the scripted expert, reused after), so
a second run of the same recipe goes straight to training. Every phase resumes: an interrupted run
continues where it stopped when started again with the same ``out``.

The policy is the library's [`VLAPolicy`][flowvla.policy.VLAPolicy]: a GroupNorm ResNet per view
([`ConvEncoder`][flowvla.backbones.conv.ConvEncoder]) whose feature-map tokens and the instruction
go through a small causal language model ([`ComposedBackbone`][flowvla.backbones.ComposedBackbone]),
a layer router, and the flow-matching DiT head that integrates action chunks from noise; the head also
reads spatial-softmax keypoints of each view's feature map beside the state (a short path from
pixels to actions, without which the trained policy ignored its images). Presets
([`PRESETS`][flowvla.recipes.libero.PRESETS]) size it for a budget.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowvla.checks import check_nonnegative
from flowvla.cli import as_index_list
from flowvla.io import write_json_atomic

__all__ = [
    "EVAL_SETTINGS",
    "PRESETS",
    "RecipeConfig",
    "build_dataset",
    "build_policy",
    "build_val_dataset",
    "default_cache_dir",
    "parse_settings",
    "preset",
    "run_recipe",
    "tokenizer_texts",
    "training_settings",
]


@dataclasses.dataclass
class RecipeConfig:
    """Every setting of a LIBERO recipe run (JSON round-trips through ``dataclasses.asdict``).

    Attributes:
        name: the preset it came from.
        suite: LIBERO suite.
        tasks: task indices trained on and evaluated.
        demos_per_task: scripted demonstrations per task.
        image_size: rendered and encoded size (square), for data and evaluation alike.
        image_stride: demonstrations render views every ``k``-th step (training items are those
            steps; actions keep every step).
        cameras: views, in order.
        use_state: condition the policy on the proprioceptive state (False: images and instruction
            only; the policy then has no state input at all).
        action_noise: DART-style noise injected into the scripted expert's executed translation
            actions while its clean corrections are the labels (see
            [`GenerateConfig`][flowvla.recipes.generate.GenerateConfig]); 0: clean demonstrations
            (``noise_bursts`` then has nothing to schedule and is dropped).
        noise_bursts: ``[length, gap]``: inject ``action_noise`` in bursts of ``length`` steps about
            ``gap`` steps apart, with the expert's recovery executed clean in between (chunks are
            masked from the next perturbed step on, see
            [`ChunkDataset`][flowvla.data.dataset.ChunkDataset]); None: at every step (which hurt:
            the recipe's chunk labels then hold little beyond their first step).
        object_scatter: move each object of every demonstration's fresh layout to a random point
            within this distance (m) before the expert starts
            ([`GenerateConfig`][flowvla.recipes.generate.GenerateConfig]'s ``object_scatter_m``):
            layouts wider than LIBERO's placement regions; 0: LIBERO's own.
        vision: the per-view image encoder: ``"conv"`` (a GroupNorm ResNet,
            [`ConvEncoder`][flowvla.backbones.conv.ConvEncoder]), ``"vit"`` (a small SigLIP-style
            ViT with the ConvEncoder's patch size and last width) or ``"timm:<model>"`` (a
            random-init timm model with GroupNorm, e.g. ``"timm:resnet18"``; needs the ``timm`` extra).
        conv_channels: the ConvEncoder's widths (output stride ``2 ** len``).
        conv_blocks: residual blocks per ConvEncoder stage (0: one plain convolution per stage).
        keypoints: spatial-softmax keypoints per view given straight to the flow head (see
            ``PolicyConfig.keypoints``); 0: the head sees the images only through the language model.
        keypoint_temperature: their initial softmax temperature (``PolicyConfig.keypoint_temperature``).
        state_conditioning: how the head takes its conditioning vector (state, keypoints):
            ``"token"``, ``"adaln"`` or ``"both"`` (see ``HeadConfig``).
        lm_dim: width of the language model.
        lm_layers: its depth.
        num_heads: attention heads of the language model.
        head_dim: width of the flow head (DiT).
        head_depth: its blocks.
        router: how the head reads the language model's hidden layers: ``"fixed"``,
            ``"scalar_mix"``, ``"sample_gated"`` or ``"topk"`` (``RouterConfig.kind``).
        router_layers: which layers (a [`select_layers`][flowvla.routing.base.select_layers] rule:
            ``"all"``, ``"last"``, an index ...): the fixed choice or the learned router's candidates.
        fusion: the 2D-3D geometry branch fused into the image tokens (``"none"`` or a ``FUSIONS``
            name: ``"global"``, ``"gated"``, ``"region"`` ...); anything but ``"none"`` renders metric
            depth into the demonstrations and at evaluation.
        smoothness_weight: weight of the squared 2nd differences of the predicted clean chunk.
        jerk_weight: weight of its squared 3rd differences.
        synonym_weight: weight of the synonym-consistency loss (the chunk for an instruction reworded
            by ``SYNONYMS`` must match; the word tables' variants join the tokenizer's texts).
        contrast_weight: weight of the contrast loss (the chunk for the opposite instruction must be
            at least a margin away).
        horizon: actions per predicted chunk.
        flow_repeats: flow-matching time/noise draws per sample and step (they share one encoding).
        time_sampler: the flow-matching time distribution.
        batch_size: samples per step.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        steps: optimizer steps.
        max_minutes: stop training after this long even if ``steps`` are not done (None: no limit).
        ema_decay: decay of the weights' exponential moving average used for evaluation (0: off).
        shift: random-shift augmentation in pixels (pad and crop back), 0: off.
        threads: torch threads for training.
        val_demos_per_task: further demonstrations per task, held out of training, for the flow
            loss on unseen episodes (logged at the end of training; 0: none).
        init_states: official init states evaluated per task (the first ``n``).
        replan_every: actions executed from each chunk before predicting again.
        temporal_ensemble: ACT's temporal ensembling weight decay at evaluation (see
            [`RolloutConfig`][flowvla.envs.rollout.RolloutConfig]); None: off.
        replan_at_gripper: at evaluation, cut each chunk before its first gripper toggle and re-plan
            there (``RolloutConfig.replan_at_gripper``).
        solver: ODE solver at evaluation.
        solver_steps: solver steps at evaluation.
        eval_weights: which weights are evaluated: ``"auto"`` (EMA when trained with it), ``"ema"``
            or ``"raw"``.
        eval_workers: simulator processes for evaluation.
        gen_workers: processes for generating demonstrations.
        video: which evaluation episodes get a video (see ``RolloutConfig.video``).
        max_steps: episode step limit (default: the suite's).
        seed: seeds data generation, training and evaluation.
    """

    name: str = "default"
    suite: str = "libero_object"
    tasks: list[int] = dataclasses.field(default_factory=lambda: [0, 1])
    demos_per_task: int = 50
    image_size: int = 96
    image_stride: int = 3
    vision: str = "conv"
    cameras: list[str] = dataclasses.field(default_factory=lambda: ["agentview", "robot0_eye_in_hand"])
    conv_channels: list[int] = dataclasses.field(default_factory=lambda: [32, 64, 128, 256])
    use_state: bool = True
    action_noise: float = 0.3
    noise_bursts: list[int] | None = dataclasses.field(default_factory=lambda: [6, 30])
    object_scatter: float = 0.0
    conv_blocks: int = 1
    keypoints: int = 32
    keypoint_temperature: float = 1.0
    state_conditioning: str = "both"
    lm_dim: int = 128
    lm_layers: int = 1
    num_heads: int = 4
    head_dim: int = 128
    head_depth: int = 4
    router: str = "scalar_mix"
    router_layers: Any = "all"
    fusion: str = "none"
    smoothness_weight: float = 0.0
    jerk_weight: float = 0.0
    synonym_weight: float = 0.0
    contrast_weight: float = 0.0
    horizon: int = 16
    flow_repeats: int = 4
    time_sampler: str = "beta"
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    steps: int = 2000
    max_minutes: float | None = 28.0
    ema_decay: float = 0.999
    shift: int = 6
    threads: int = 2
    val_demos_per_task: int = 0
    init_states: int = 50
    replan_every: int = 8
    temporal_ensemble: float | None = None
    replan_at_gripper: bool = False
    solver: str = "euler"
    solver_steps: int = 10
    eval_weights: str = "auto"
    eval_workers: int = 2
    gen_workers: int = 2
    video: str = "first"
    max_steps: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        from flowvla.envs.libero import LIBERO_SUITES

        if self.suite not in LIBERO_SUITES:
            raise ValueError(f"suite={self.suite!r}: choose one of {sorted(LIBERO_SUITES)}")
        n = LIBERO_SUITES[self.suite].num_tasks
        self.tasks = as_index_list(self.tasks, "tasks")
        if not self.tasks or any(not 0 <= t < n for t in self.tasks):
            raise ValueError(f"tasks={self.tasks}: give task indices in [0, {n}) of {self.suite}")
        stride = 2 ** len(self.conv_channels)
        if self.vision in ("conv", "vit") and self.image_size % stride:
            raise ValueError(
                f"image_size={self.image_size} is not a multiple of the encoder's stride {stride}"
            )
        if self.vision not in ("conv", "vit") and not self.vision.startswith("timm:"):
            raise ValueError(f"vision={self.vision!r}: choose 'conv', 'vit' or 'timm:<model name>'")
        if self.eval_weights not in ("auto", "ema", "raw"):
            raise ValueError(f"eval_weights={self.eval_weights!r}: choose 'auto', 'ema' or 'raw'")
        if self.val_demos_per_task < 0:
            raise ValueError(f"val_demos_per_task must be >= 0, got {self.val_demos_per_task}")
        for name in ("smoothness_weight", "jerk_weight", "synonym_weight", "contrast_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if isinstance(self.router_layers, (list, tuple)):
            self.router_layers = [int(v) for v in self.router_layers]
        for name in ("demos_per_task", "batch_size", "steps", "horizon", "init_states", "replan_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.replan_every > self.horizon:
            raise ValueError(f"replan_every={self.replan_every} exceeds the chunk horizon {self.horizon}")
        if not 0 < self.init_states <= 50:
            raise ValueError(f"init_states={self.init_states}: LIBERO has 50 official init states per task")
        check_nonnegative("action_noise", self.action_noise)
        check_nonnegative("object_scatter", self.object_scatter, "metres")
        if self.action_noise == 0:
            self.noise_bursts = None  # no noise to schedule: the same clean demonstrations
        if self.noise_bursts is not None:
            if len(self.noise_bursts) != 2:
                raise ValueError(f"noise_bursts={self.noise_bursts}: give [length, gap], e.g. [6, 30]")
            self.noise_bursts = [int(v) for v in self.noise_bursts]
        self.cameras = list(self.cameras)
        self.conv_channels = [int(c) for c in self.conv_channels]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RecipeConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"recipe: unknown settings {sorted(unknown)}")
        return cls(**d)

    def data_key(self) -> str:
        """The cache folder name of this recipe's demonstrations (what was rendered, how)."""
        cams = "+".join(c.removeprefix("robot0_") for c in self.cameras)
        stride = f"_every{self.image_stride}" if self.image_stride > 1 else ""
        noise = f"_dart{self.action_noise:g}" if self.action_noise > 0 else ""
        if self.noise_bursts:
            noise += "_bursts{}x{}".format(*self.noise_bursts)
        depth = "_depth" if self.needs_depth else ""
        scatter = f"_scatter{100 * self.object_scatter:g}cm" if self.object_scatter > 0 else ""
        return f"{self.suite}_{self.image_size}px{stride}_{cams}{depth}{noise}{scatter}_seed{self.seed}"

    @property
    def needs_depth(self) -> bool:
        """Whether the demonstrations and the evaluation render metric depth (the geometry branch's input)."""
        return self.fusion != "none"

    @property
    def instruction_pairs(self) -> bool:
        """Whether training items carry a synonym and an opposite instruction (for the language losses)."""
        return self.synonym_weight > 0 or self.contrast_weight > 0


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "libero_object": {"tasks": list(range(10)), "steps": 8000, "max_minutes": 120.0},
    "toy": {
        "tasks": [0],
        "demos_per_task": 1,
        "image_size": 32,
        "conv_channels": [8, 16],
        "lm_dim": 32,
        "head_dim": 32,
        "head_depth": 1,
        "horizon": 8,
        "replan_every": 8,
        "flow_repeats": 1,
        "batch_size": 4,
        "steps": 4,
        "init_states": 1,
        "max_steps": 16,
        "eval_workers": 1,
        "gen_workers": 1,
    },
}
"""Named recipes: overrides of the [`RecipeConfig`][flowvla.recipes.libero.RecipeConfig] defaults.
``default``: the one-command CPU run (2 libero_object tasks, about an hour on 2 cores, every phase
included); ``libero_object``: all 10 tasks; ``toy``: a seconds-long plumbing check."""


def parse_settings(items: Sequence[str]) -> dict[str, Any]:
    """``["lr=2e-3", "solver=heun"]`` -> ``{"lr": 0.002, "solver": "heun"}``: command-line settings,
    values read as JSON (a bare word is a string).

    Raises:
        ValueError: an item without ``=``, or a key that is not a
            [`RecipeConfig`][flowvla.recipes.libero.RecipeConfig] field (naming it).
    """
    known = {f.name for f in dataclasses.fields(RecipeConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"setting {item!r}: write KEY=VALUE, e.g. lr=2e-3")
        if key not in known:
            raise ValueError(f"setting {key!r} is not a recipe setting; choose from {sorted(known)}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def preset(name: str = "default", **overrides: Any) -> RecipeConfig:
    """The recipe ``name`` from [`PRESETS`][flowvla.recipes.libero.PRESETS], with ``overrides``
    (``None`` is a value too: ``max_minutes=None`` lifts the time limit, ``noise_bursts=None`` injects
    the noise at every step)."""
    if name not in PRESETS:
        raise ValueError(f"preset={name!r}: choose one of {sorted(PRESETS)}")
    settings = {**PRESETS[name], **overrides}
    return RecipeConfig(name=name, **settings)


def default_cache_dir() -> Path:
    """Where generated demonstrations are cached: ``$FLOWVLA_CACHE`` or ``~/.cache/flowvla``."""
    return Path(os.environ.get("FLOWVLA_CACHE", Path.home() / ".cache" / "flowvla")) / "demos"


# ------------------------------------------------------------------------------------- the parts
def build_dataset(
    cfg: RecipeConfig,
    files: Sequence[str | os.PathLike],
    augment: bool = True,
    *,
    episodes_per_task: int | None = None,
    preload: bool = True,
) -> Any:
    """The training items of ``files`` (first ``demos_per_task`` demonstrations of each task file),
    with the benchmark's instruction wording and random-shift augmentation.

    ``episodes_per_task`` reads only that many of them (at most ``demos_per_task``); ``preload=False``
    reads frames on access instead of loading them all first (for a few items of a large cache).
    """
    count = cfg.demos_per_task if episodes_per_task is None else min(episodes_per_task, cfg.demos_per_task)
    return _chunks(cfg, files, first=0, count=count, augment=augment, preload=preload)


def build_val_dataset(cfg: RecipeConfig, files: Sequence[str | os.PathLike]) -> Any:
    """The held-out items: the ``val_demos_per_task`` demonstrations after the training ones in each
    task file, unaugmented; None when the recipe holds none out."""
    if not cfg.val_demos_per_task:
        return None
    return _chunks(cfg, files, first=cfg.demos_per_task, count=cfg.val_demos_per_task, augment=False)


def _chunks(
    cfg: RecipeConfig,
    files: Sequence[str | os.PathLike],
    *,
    first: int,
    count: int,
    augment: bool,
    preload: bool = True,
) -> Any:
    from flowvla.data.augment import ImageAugment
    from flowvla.data.dataset import ChunkDataset, HDF5Source
    from flowvla.data.hdf5 import image_keys_of

    source = HDF5Source(
        files,
        episodes_per_file=count,
        first_episode=first,
        preload=preload,
        instruction="from_bddl_file_name",
        image_keys=image_keys_of(cfg.cameras),
    )
    aug = ImageAugment(shift=cfg.shift) if augment and cfg.shift else None
    return ChunkDataset(
        source,
        cfg.horizon,
        augment=aug,
        geometry=cfg.needs_depth,
        instruction_pairs=cfg.instruction_pairs,
        seed=cfg.seed,
    )


def tokenizer_texts(cfg: RecipeConfig, instructions: Sequence[str]) -> list[str]:
    """The texts the recipe's tokenizer is trained on: the task instructions and, when a language loss
    trains on rewordings, their ``SYNONYMS`` / ``OPPOSITES`` variants (so those words are tokens too).
    The held-out paraphrases are never added."""
    from flowvla.processing.instructions import SYNONYMS, opposite, rewrite

    texts = set(instructions)
    if cfg.instruction_pairs:
        texts |= {rewrite(t, SYNONYMS) for t in instructions} | {opposite(t) for t in instructions}
    return sorted(texts)


def _vision(cfg: RecipeConfig) -> Any:
    """The ``vision`` argument of ``ComposedBackbone.tiny`` for ``cfg.vision``."""
    if not cfg.vision.startswith("timm:"):
        return cfg.vision
    import torch

    from flowvla.backbones.timm_encoders import TimmEncoder

    torch.manual_seed(cfg.seed)
    return TimmEncoder(cfg.vision.removeprefix("timm:"), image_size=cfg.image_size, norm_layer="groupnorm")


def build_policy(cfg: RecipeConfig, dataset: Any) -> Any:
    """A fresh [`VLAPolicy`][flowvla.policy.VLAPolicy] for ``cfg``, with ``dataset``'s statistics and a
    tokenizer trained on its instructions."""
    from flowvla.backbones.composed import ComposedBackbone
    from flowvla.policy import FusionConfig, HeadConfig, LossConfig, PolicyConfig, RouterConfig, VLAPolicy

    source = dataset.source
    texts = tokenizer_texts(cfg, [source.instruction(e) for e in range(len(source))])
    item = dataset[0]
    views, _, height, width = item["images"].shape
    if (height, width) != (cfg.image_size, cfg.image_size) or views != len(cfg.cameras):
        raise ValueError(
            f"dataset: {views} views of {height}x{width} but the recipe wants {len(cfg.cameras)} views of "
            f"{cfg.image_size}x{cfg.image_size}; regenerate the demonstrations for this recipe"
        )
    backbone = ComposedBackbone.tiny(
        texts,
        image_size=cfg.image_size,
        vision=_vision(cfg),
        patch_size=2 ** len(cfg.conv_channels),
        vision_dim=cfg.conv_channels[-1],
        vision_layers=2,
        conv_channels=cfg.conv_channels,
        conv_blocks=cfg.conv_blocks,
        lm_dim=cfg.lm_dim,
        lm_layers=cfg.lm_layers,
        num_heads=cfg.num_heads,
        vocab_size=512,
        seed=cfg.seed,
    )
    config = PolicyConfig(
        backbone=backbone.spec(),
        horizon=cfg.horizon,
        action_dim=int(item["actions"].shape[-1]),
        state_dim=int(item["state"].shape[-1]) if cfg.use_state else 0,
        num_views=views,
        head=HeadConfig(
            dim=cfg.head_dim,
            depth=cfg.head_depth,
            num_heads=max(1, cfg.head_dim // 32),
            state_conditioning=cfg.state_conditioning,
        ),
        keypoints=cfg.keypoints,
        keypoint_temperature=cfg.keypoint_temperature,
        router=RouterConfig(kind=cfg.router, layers=cfg.router_layers),
        fusion=FusionConfig(kind=cfg.fusion),
        loss=LossConfig(
            time_sampler=cfg.time_sampler,
            repeats=cfg.flow_repeats,
            smoothness_weight=cfg.smoothness_weight,
            jerk_weight=cfg.jerk_weight,
            synonym_weight=cfg.synonym_weight,
            contrast_weight=cfg.contrast_weight,
        ),
        solver=cfg.solver,
        steps=cfg.solver_steps,
    )
    return VLAPolicy(config, backbone, dataset.stats())


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_recipe(cfg: RecipeConfig, out_dir: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """Run every phase of ``cfg`` into ``out_dir`` (see module docs); returns the run's summary."""
    from flowvla.recipes.job import run_job

    return run_job(cfg, Path(out_dir), **kwargs)


EVAL_SETTINGS = frozenset(
    {
        "name",
        "init_states",
        "replan_every",
        "temporal_ensemble",
        "replan_at_gripper",
        "solver",
        "solver_steps",
        "eval_weights",
        "eval_workers",
        "video",
        "max_steps",
    }
)
"""Settings that change only how a trained policy is evaluated (or what the run is called)."""


def training_settings(cfg: RecipeConfig) -> dict[str, Any]:
    """The settings that decide the trained weights: every setting but ``EVAL_SETTINGS``."""
    return {k: v for k, v in cfg.to_dict().items() if k not in EVAL_SETTINGS}


def load_recipe(out_dir: str | os.PathLike) -> RecipeConfig:
    """The recipe a run folder was made with."""
    return RecipeConfig.from_dict(json.loads((Path(out_dir) / "recipe.json").read_text()))


def save_recipe(cfg: RecipeConfig, out_dir: str | os.PathLike) -> None:
    write_json_atomic(Path(out_dir) / "recipe.json", cfg.to_dict())


def elapsed(t0: float) -> str:
    s = time.perf_counter() - t0
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"
