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
([`PRESETS`][flowvla.recipes.settings.PRESETS]) size it for a budget.

This module is the recipe's front: [`run_recipe`][flowvla.recipes.libero.run_recipe] and, re-exported,
the names a user of the recipe needs. The parts live one idea a module:
[`config`][flowvla.recipes.config] (the nested ``RecipeConfig``),
[`settings`][flowvla.recipes.settings] (presets, ``KEY=VALUE`` settings, old flat keys, run folders),
[`parts`][flowvla.recipes.parts] (datasets and policy), [`job`][flowvla.recipes.job] (the phases),
[`train`][flowvla.recipes.train], [`parity`][flowvla.recipes.parity], [`report`][flowvla.recipes.report].
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flowvla.recipes.config import DataConfig, EvalConfig, ModelConfig, RecipeConfig, TrainingConfig
from flowvla.recipes.job import run_job
from flowvla.recipes.parts import (
    build_dataset,
    build_policy,
    build_val_dataset,
    default_cache_dir,
    tokenizer_texts,
)
from flowvla.recipes.settings import (
    FLAT_KEYS,
    PRESETS,
    load_recipe,
    parse_settings,
    preset,
    save_recipe,
    training_settings,
    with_settings,
)

__all__ = [
    "FLAT_KEYS",
    "PRESETS",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "RecipeConfig",
    "TrainingConfig",
    "build_dataset",
    "build_policy",
    "build_val_dataset",
    "default_cache_dir",
    "load_recipe",
    "parse_settings",
    "preset",
    "run_recipe",
    "save_recipe",
    "tokenizer_texts",
    "training_settings",
    "with_settings",
]


def run_recipe(cfg: RecipeConfig, out_dir: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """Run every phase of ``cfg`` into ``out_dir`` (see module docs); returns the run's summary.
    ``kwargs`` go to [`run_job`][flowvla.recipes.job.run_job]."""
    return run_job(cfg, Path(out_dir), **kwargs)


def __getattr__(name: str) -> Any:
    if name == "EVAL_SETTINGS":
        raise AttributeError(
            "flowvla.recipes.libero.EVAL_SETTINGS was removed: the settings that change only how a policy "
            "is evaluated are RecipeConfig.eval (training_settings(cfg) gives the others)"
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
