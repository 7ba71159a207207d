"""How a recipe is named and changed: presets, ``KEY=VALUE`` settings by path, and the flat names of
the recipe before it was nested (still read, and converted in old run folders).

A setting's key is its path in [`RecipeConfig`][flowvla.recipes.config.RecipeConfig]
(``train.lr``, ``eval.replan_every``, ``policy.head.dim``); every flat key of the old recipe
(``lr``, ``replan_every``, ``head_dim``) is still accepted and read as its path
(`FLAT_KEYS`). A value of the wrong type or out of range is
refused in one line naming the key as typed and its path: ``lr (train.lr): expected a float, got 'abc'``.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flowvla.checks import MissingPathError, SettingError
from flowvla.io import write_json_atomic
from flowvla.recipes.config import FLAT_KEYS, RecipeConfig

__all__ = [
    "FLAT_KEYS",
    "PRESETS",
    "convert_flat_recipe",
    "flat_settings",
    "is_flat_recipe",
    "load_recipe",
    "parse_settings",
    "preset",
    "save_recipe",
    "setting_paths",
    "training_settings",
    "with_settings",
]


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "libero_object": {"data": {"tasks": list(range(10))}, "train": {"steps": 8000, "max_minutes": 120.0}},
    "toy": {
        "data": {"tasks": [0], "demos_per_task": 1, "image_size": 32, "workers": 1},
        "policy": {
            "conv_channels": [8, 16],
            "lm_dim": 32,
            "horizon": 8,
            "head": {"dim": 32, "num_heads": 1, "depth": 1},
            "loss": {"repeats": 1},
        },
        "train": {"batch_size": 4, "steps": 4},
        "eval": {"replan_every": 8, "init_states": 1, "max_steps": 16, "workers": 1},
    },
}
"""Named recipes: changes to the [`RecipeConfig`][flowvla.recipes.config.RecipeConfig] defaults, nested
as the config. ``default``: the one-command CPU run (2 libero_object tasks, about an hour on 2 cores,
every phase included); ``libero_object``: all 10 tasks; ``toy``: a seconds-long plumbing check."""


def setting_paths() -> list[str]:
    """Every setting's path (``"train.lr"``, ``"policy.head.dim"`` ...), in the config's order."""
    return list(flat_settings(RecipeConfig()))


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{path}."))
        else:
            out[path] = v
    return out


def _resolve(key: str, value: Any, paths: set[str]) -> dict[str, Any]:
    """``{path: value}`` for the setting ``key`` (a path, a part of one, or a flat key)."""
    if key in paths:
        return {key: value}
    if any(p.startswith(f"{key}.") for p in paths):  # a whole part: its keys, each by path
        if not isinstance(value, Mapping):
            raise SettingError(key, f"expected a mapping of settings, got {value!r}")
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_resolve(f"{key}.{k}", v, paths))
        return out
    if key in FLAT_KEYS:
        target = FLAT_KEYS[key]
        return {target: value} if isinstance(target, str) else target(value)
    near = difflib.get_close_matches(key, sorted(paths | set(FLAT_KEYS)), n=3)
    hint = (
        f"; did you mean {' or '.join(near)}?" if near else "; see flowvla.recipes.settings.setting_paths()"
    )
    raise SettingError(key, f"not a recipe setting{hint}")


def with_settings(cfg: RecipeConfig, settings: Mapping[str, Any]) -> RecipeConfig:
    """``cfg`` with ``settings`` changed (keys: paths, parts as nested mappings, or flat keys), checked.

    Raises:
        SettingError: an unknown key, or a value of the wrong type or out of range; the message names
            the key as given and, when that was not its path, the path: ``lr (train.lr): ...``.
    """
    paths = set(setting_paths())
    values = _flatten(cfg.to_dict())
    typed: dict[str, str] = {}  # path -> the key the user gave, for messages
    for key, value in settings.items():
        for path, v in _resolve(key, value, paths).items():
            values[path] = v
            typed[path] = key
    nested: dict[str, Any] = {}
    for path, v in values.items():
        *parts, leaf = path.split(".")
        node = nested
        for part in parts:
            node = node.setdefault(part, {})
        node[leaf] = v
    try:
        return RecipeConfig.from_dict(nested)
    except SettingError as e:
        key = typed.get(e.path)
        if key is None or key == e.path:
            raise
        raise SettingError(f"{key} ({e.path})", e.problem) from None


def preset(name: str = "default", /, **overrides: Any) -> RecipeConfig:
    """The recipe ``name`` from [`PRESETS`][flowvla.recipes.settings.PRESETS], with ``overrides``
    (flat keys as keywords, ``lr=1e-3``; paths through a mapping, ``**{"eval.replan_every": 4}``).
    ``None`` is a value too: ``max_minutes=None`` lifts the time limit, ``noise_bursts=None`` injects
    the noise at every step."""
    if name not in PRESETS:
        raise SettingError("preset", f"choose one of {sorted(PRESETS)}, got {name!r}")
    return with_settings(RecipeConfig(name=name), {**PRESETS[name], **overrides})


def parse_settings(items: Iterable[str]) -> dict[str, Any]:
    """``["train.lr=2e-3", "eval.solver=heun"]`` -> ``{"train.lr": 0.002, "eval.solver": "heun"}``:
    command-line settings, values read as JSON (a bare word is a string), keys checked (a path or a
    flat key); values are checked when the recipe is built
    ([`with_settings`][flowvla.recipes.settings.with_settings]).

    Raises:
        SettingError: an item without ``=``, or a key that is no setting (naming it and near ones).
    """
    paths = set(setting_paths())
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SettingError(item, "write KEY=VALUE, e.g. train.lr=2e-3")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        _resolve(key, parsed if not isinstance(parsed, Mapping) else {}, paths)  # refuse unknown keys now
        out[key] = parsed
    return out


def is_flat_recipe(d: Mapping[str, Any]) -> bool:
    """Whether ``d`` is a recipe as saved before it was nested (no ``data`` / ``policy`` / ``train`` /
    ``eval`` part)."""
    return not {"data", "policy", "train", "eval"} & set(d)


def convert_flat_recipe(d: Mapping[str, Any]) -> dict[str, Any]:
    """A flat recipe dict (an old run folder's ``recipe.json``) in the nested form
    ([`RecipeConfig.to_dict`][flowvla.recipes.config.RecipeConfig.to_dict]); settings it lacks (saved
    before they existed) take their defaults.

    Raises:
        SettingError: a key that was never a recipe setting.
    """
    unknown = sorted(set(d) - set(FLAT_KEYS))
    if unknown:
        raise SettingError(unknown[0], "not a setting of the flat recipe")
    return with_settings(RecipeConfig(), dict(d)).to_dict()


def flat_settings(cfg: RecipeConfig) -> dict[str, Any]:
    """``{path: value}`` for every setting of ``cfg`` (``{"train.lr": 0.002, ...}``)."""
    return _flatten(cfg.to_dict())


def training_settings(cfg: RecipeConfig) -> dict[str, Any]:
    """``{path: value}`` of the settings that decide the trained weights: all but the ``eval`` part
    and the run's ``name``."""
    return {k: v for k, v in flat_settings(cfg).items() if k != "name" and not k.startswith("eval.")}


RECIPE_FILE = "recipe.json"


def load_recipe(out_dir: str | os.PathLike) -> RecipeConfig:
    """The recipe a run folder was made with (a flat ``recipe.json`` of an older run is converted).

    Raises:
        MissingPathError: the folder holds no ``recipe.json``.
    """
    path = Path(out_dir) / RECIPE_FILE
    if not path.is_file():
        raise MissingPathError(f"{out_dir}: no {RECIPE_FILE} here; give a recipe run folder")
    d = json.loads(path.read_text())
    return RecipeConfig.from_dict(convert_flat_recipe(d) if is_flat_recipe(d) else d)


def save_recipe(cfg: RecipeConfig, out_dir: str | os.PathLike) -> None:
    """Write ``cfg`` to ``out_dir/recipe.json``, nested as
    [`RecipeConfig.to_dict`][flowvla.recipes.config.RecipeConfig.to_dict]."""
    write_json_atomic(Path(out_dir) / RECIPE_FILE, cfg.to_dict())
