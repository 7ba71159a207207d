"""The recipe's parts: where its demonstrations are cached, its datasets, and its policy.

Each takes the [`RecipeConfig`][flowvla.recipes.config.RecipeConfig] and reads the part it needs.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowvla.recipes.config import RecipeConfig

__all__ = ["build_dataset", "build_policy", "build_val_dataset", "default_cache_dir", "tokenizer_texts"]


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
    count = (
        cfg.data.demos_per_task
        if episodes_per_task is None
        else min(episodes_per_task, cfg.data.demos_per_task)
    )
    return _chunks(cfg, files, first=0, count=count, augment=augment, preload=preload)


def build_val_dataset(cfg: RecipeConfig, files: Sequence[str | os.PathLike]) -> Any:
    """The held-out items: the ``val_demos_per_task`` demonstrations after the training ones in each
    task file, unaugmented; None when the recipe holds none out."""
    if not cfg.data.val_demos_per_task:
        return None
    return _chunks(
        cfg, files, first=cfg.data.demos_per_task, count=cfg.data.val_demos_per_task, augment=False
    )


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
        image_keys=image_keys_of(cfg.data.cameras),
    )
    aug = ImageAugment(shift=cfg.train.shift) if augment and cfg.train.shift else None
    return ChunkDataset(
        source,
        cfg.policy.horizon,
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
    """The ``vision`` argument of ``ComposedBackbone.tiny`` for ``cfg.policy.vision``."""
    vision = cfg.policy.vision
    if not vision.startswith("timm:"):
        return vision
    import torch

    from flowvla.backbones.timm_encoders import TimmEncoder

    torch.manual_seed(cfg.seed)
    return TimmEncoder(vision.removeprefix("timm:"), image_size=cfg.data.image_size, norm_layer="groupnorm")


def build_policy(cfg: RecipeConfig, dataset: Any) -> Any:
    """A fresh [`VLAPolicy`][flowvla.policy.VLAPolicy] for ``cfg``, with ``dataset``'s statistics and a
    tokenizer trained on its instructions."""
    from flowvla.backbones.composed import ComposedBackbone
    from flowvla.policy import PolicyConfig, VLAPolicy

    p, size = cfg.policy, cfg.data.image_size
    source = dataset.source
    texts = tokenizer_texts(cfg, [source.instruction(e) for e in range(len(source))])
    item = dataset[0]
    views, _, height, width = item["images"].shape
    if (height, width) != (size, size) or views != len(cfg.data.cameras):
        raise ValueError(
            f"dataset: {views} views of {height}x{width} but the recipe wants {len(cfg.data.cameras)} views "
            f"of {size}x{size}; regenerate the demonstrations for this recipe"
        )
    backbone = ComposedBackbone.tiny(
        texts,
        image_size=size,
        vision=_vision(cfg),
        patch_size=2 ** len(p.conv_channels),
        vision_dim=p.conv_channels[-1],
        vision_layers=2,
        conv_channels=p.conv_channels,
        conv_blocks=p.conv_blocks,
        lm_dim=p.lm_dim,
        lm_layers=p.lm_layers,
        num_heads=p.lm_heads,
        vocab_size=512,
        seed=cfg.seed,
    )
    config = PolicyConfig(
        backbone=backbone.spec(),
        horizon=p.horizon,
        action_dim=int(item["actions"].shape[-1]),
        state_dim=int(item["state"].shape[-1]) if p.use_state else 0,
        num_views=views,
        keypoints=p.keypoints,
        keypoint_temperature=p.keypoint_temperature,
        head=copy.deepcopy(p.head),
        router=copy.deepcopy(p.router),
        fusion=copy.deepcopy(p.fusion),
        loss=copy.deepcopy(p.loss),
        solver=cfg.eval.solver,
        steps=cfg.eval.solver_steps,
    )
    return VLAPolicy(config, backbone, dataset.stats())
