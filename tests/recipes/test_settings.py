"""The nested recipe's settings: paths, the old flat keys, presets, type and range checks, old run folders."""

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowvla.checks import SettingError
from flowvla.recipes.config import RecipeConfig
from flowvla.recipes.settings import (
    FLAT_KEYS,
    PRESETS,
    flat_settings,
    load_recipe,
    parse_settings,
    preset,
    save_recipe,
    setting_paths,
    with_settings,
)

FIXTURE = Path(__file__).parent / "fixtures" / "flat_recipe_v0"


def flat_dict(cfg: RecipeConfig) -> dict:
    """``cfg`` as the flat recipe of before the nesting would have saved it."""
    paths = flat_settings(cfg)
    out = {k: paths[p] for k, p in FLAT_KEYS.items() if isinstance(p, str)}
    out["head_dim"] = paths["policy.head.dim"]
    return out


def test_an_old_flat_run_folder_loads_as_the_recipe_it_was():
    # The fixture is preset("default") saved by the flat RecipeConfig, before the recipe was nested.
    old = json.loads((FIXTURE / "recipe.json").read_text())
    assert "lr" in old and "train" not in old
    assert set(old) == set(FLAT_KEYS)  # every key of the flat recipe has a path
    assert load_recipe(FIXTURE) == preset("default")


def test_a_converted_run_folder_is_saved_nested(tmp_path):
    shutil.copy(FIXTURE / "recipe.json", tmp_path / "recipe.json")
    cfg = load_recipe(tmp_path)
    save_recipe(cfg, tmp_path)
    assert set(json.loads((tmp_path / "recipe.json").read_text())) == {
        "name",
        "seed",
        "data",
        "policy",
        "train",
        "eval",
    }
    assert load_recipe(tmp_path) == cfg


def test_a_missing_run_folder_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no recipe\.json here"):
        load_recipe(tmp_path / "nowhere")


@pytest.mark.parametrize("key", sorted(FLAT_KEYS))
def test_every_flat_key_sets_its_path(key):
    # A value other than the default's, of the right type, for each old key.
    base = preset("default")
    changed = {
        "name": "mine", "seed": 3, "suite": "libero_spatial", "tasks": [3], "demos_per_task": 7,
        "val_demos_per_task": 2, "image_size": 128, "image_stride": 2, "cameras": ["agentview"],
        "action_noise": 0.1, "noise_bursts": [4, 20], "object_scatter": 0.02, "gen_workers": 3,
        "vision": "vit", "conv_channels": [16, 32, 64, 128], "conv_blocks": 2, "lm_dim": 64,
        "lm_layers": 2, "num_heads": 2, "use_state": False, "horizon": 12, "keypoints": 8,
        "keypoint_temperature": 0.5, "state_conditioning": "token", "head_dim": 64, "head_depth": 2,
        "router": "fixed", "router_layers": "last", "fusion": "gated", "smoothness_weight": 0.1,
        "jerk_weight": 0.2, "synonym_weight": 0.3, "contrast_weight": 0.4, "flow_repeats": 2,
        "time_sampler": "uniform", "steps": 10, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.0,
        "max_minutes": None, "ema_decay": 0.99, "shift": 0, "threads": 1, "init_states": 5,
        "replan_every": 4, "temporal_ensemble": 0.1, "replan_at_gripper": True, "solver": "heun",
        "solver_steps": 4, "eval_weights": "raw", "eval_workers": 1, "video": "none", "max_steps": 100,
    }[key]  # fmt: skip
    cfg = preset("default", **{key: changed})
    target = FLAT_KEYS[key]
    expected = {target: changed} if isinstance(target, str) else target(changed)
    got = flat_settings(cfg)
    for path, value in expected.items():
        assert got[path] == value != flat_settings(base)[path] or path == "policy.head.num_heads"
    # ... and by its path the same recipe comes out.
    assert with_settings(preset("default"), expected) == cfg
    # The old flat head_dim kept its 32 channels per attention head.
    if key == "head_dim":
        assert cfg.policy.head.num_heads == 2


def test_dotted_settings_from_the_command_line():
    got = parse_settings(["eval.replan_every=4", "policy.head.dim=64", "train.lr=1e-3", "data.tasks=0-2"])
    cfg = preset("default", **got)
    assert cfg.eval.replan_every == 4 and cfg.policy.head.dim == 64 and cfg.train.lr == 1e-3
    assert cfg.data.tasks == [0, 1, 2]
    # A whole part as a mapping changes only the keys it names.
    part = preset("default", **parse_settings(['policy.head={"depth": 2}']))
    assert part.policy.head.depth == 2 and part.policy.head.state_conditioning == "both"


@pytest.mark.parametrize(
    "item, message",
    [
        ("lr=abc", "lr (train.lr): expected a float, got 'abc'"),
        ("train.lr=abc", "train.lr: expected a float, got 'abc'"),
        ("steps=1.5", "steps (train.steps): expected an integer, got 1.5"),
        ("use_state=maybe", "use_state (policy.use_state): expected true or false, got 'maybe'"),
        ("eval.replan_every=0", "eval.replan_every: must be >= 1, got 0"),
        ("max_minutes=-1", "max_minutes (train.max_minutes): must be > 0, got -1.0"),
        ("eval.video=some", "eval.video: choose one of"),
        ("solver=rk5", "solver (eval.solver): choose one of"),
        ("fusion=fancy", "fusion (policy.fusion.kind): choose one of"),
        ("policy.head.dim=x", "policy.head.dim: expected an integer, got 'x'"),
        ("cameras=agentview", "cameras (data.cameras): expected a list of strings, got 'agentview'"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_setting(item, message):
    with pytest.raises(SettingError) as e:
        preset("default", **parse_settings([item]))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


@pytest.mark.parametrize("item", ["colour=red", "eval.colour=red", "policy.head.colour=1", "lr"])
def test_an_unknown_key_is_refused_when_parsed(item):
    with pytest.raises(SettingError):
        parse_settings([item])
    with pytest.raises(SettingError, match=r"did you mean train\.lr"):
        parse_settings(["train.lrr=1"])


@settings(max_examples=25, deadline=None)
@given(
    lr=st.floats(min_value=1e-6, max_value=1.0),
    steps=st.integers(1, 10_000),
    replan=st.integers(1, 16),
    noise=st.floats(0, 1),
)
def test_any_valid_recipe_round_trips_through_json(lr, steps, replan, noise):
    cfg = preset(
        "default", **{"train.lr": lr, "train.steps": steps, "eval.replan_every": replan}, action_noise=noise
    )
    again = RecipeConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert with_settings(RecipeConfig(), flat_settings(cfg)) == cfg


def test_presets_are_nested_and_every_path_is_a_setting():
    paths = set(setting_paths())
    for name, changes in PRESETS.items():
        assert all(k in ("data", "policy", "train", "eval", "seed") for k in changes), name
        assert preset(name).name == name
    assert {"eval.replan_every", "policy.head.dim", "train.lr", "data.tasks"} <= paths


def test_a_flat_dict_is_not_mistaken_for_a_nested_one():
    with pytest.raises(SettingError, match="load_recipe"):
        RecipeConfig.from_dict(json.loads((FIXTURE / "recipe.json").read_text()))


class _Policy:
    """What rollout_config reads of a policy: its observation settings."""

    def observation_settings(self):
        return {"image_size": 32, "depth": False, "state_dim": 8}


def test_the_eval_part_is_the_one_place_a_rollout_config_is_built():
    cfg = preset("default", **{"eval.replan_every": 4, "eval.solver": "heun", "eval.solver_steps": 3})
    rollout = cfg.eval.rollout_config(
        _Policy(), suite="libero_object", tasks=[0], cameras=["agentview"], out_dir="runs/x", seed=5,
        policy_id={"name": "p"}, progress=False,
    )  # fmt: skip
    assert (rollout.replan_every, rollout.init_states, rollout.image_size) == (4, list(range(50)), 32)
    assert rollout.predict_kwargs == {"seed": 5, "diagnostics": False, "solver": "heun", "steps": 3}
    assert rollout.video == cfg.eval.video and rollout.workers == cfg.eval.workers


def test_old_flat_attributes_read_through_with_a_warning_and_refuse_writes():
    cfg = preset("toy")
    for key, target in FLAT_KEYS.items():
        if key in ("name", "seed"):
            continue
        path = target if isinstance(target, str) else "policy.head.dim"
        with pytest.warns(FutureWarning, match=rf"RecipeConfig\.{key} is now RecipeConfig\.{path}"):
            assert getattr(cfg, key) == flat_settings(cfg)[path]
    with pytest.raises(AttributeError, match=r"is now RecipeConfig\.train\.lr; set that"):
        cfg.lr = 1.0  # would otherwise be a new attribute nothing reads
    with pytest.raises(AttributeError, match="no attribute 'colour'"):
        cfg.colour
