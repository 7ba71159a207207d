"""The four standard-suite presets: each holds the protocol the field reports LIBERO by (all 10 tasks,
50 official init states, the suite's step limit, 10 settling steps) within 2 hours of training."""

import json
import re

import pytest

from flowvla.envs.libero import LIBERO_SUITES
from flowvla.envs.rollout_config import RolloutConfig
from flowvla.recipes.config import RecipeConfig
from flowvla.recipes.settings import PRESETS, SUITE_PRESETS, preset

#: The step limits of the standard protocol (OpenVLA, OpenVLA-OFT, openpi), written out here so a
#: change to the suite table is caught.
PROTOCOL_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520}


def test_there_is_one_preset_per_standard_suite_in_the_fields_order():
    assert SUITE_PRESETS == tuple(PROTOCOL_STEPS)
    assert set(SUITE_PRESETS) <= set(PRESETS)


@pytest.mark.parametrize("name", SUITE_PRESETS)
def test_a_suite_preset_runs_the_standard_protocol_on_its_own_suite(name):
    cfg = preset(name)
    assert RecipeConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.name == name and cfg.data.suite == name
    assert cfg.data.tasks == list(range(10)) == list(range(LIBERO_SUITES[name].num_tasks))
    assert cfg.eval.init_states == 50
    assert cfg.train.max_minutes is not None and cfg.train.max_minutes <= 120
    # Evaluation: the suite's own step limit and 10 settling steps, as the records will state them.
    rollout = RolloutConfig(suite=name, init_states=cfg.eval.init_states, max_steps=cfg.eval.max_steps)
    assert rollout.step_limit == PROTOCOL_STEPS[name]
    assert rollout.outcome_settings()["step_limit"] == PROTOCOL_STEPS[name]
    assert rollout.settle_steps == 10 and len(rollout.init_states) == 50
    # Demonstrations: bounded by the same limit (None is the suite's), after the same settling.
    gen = cfg.data.generate_config("unused", depth=False, seed=0, progress=False)
    assert gen.suites == [name] and gen.max_steps is None and gen.settle_steps == 10
    assert gen.demos_per_task >= 50
    # A task the expert cannot solve is still evaluated: the table counts all 10.
    assert cfg.data.unsolved_tasks == "train_without"


def test_the_suite_presets_share_their_cache_only_with_runs_of_the_same_suite():
    keys = {name: preset(name).data_key() for name in SUITE_PRESETS}
    assert len(set(keys.values())) == len(keys)
    assert all(key.startswith(f"{name}_") for name, key in keys.items())
    # libero_object's preset is the measured 10-task run of issue 11: its demonstrations and the
    # default's are one cache.
    assert keys["libero_object"] == preset("default").data_key()


def test_the_forty_task_preset_is_the_four_suites_read_from_their_own_caches():
    from flowvla.recipes.settings import ALL_SUITES_PRESET

    cfg = preset(ALL_SUITES_PRESET)
    assert cfg.data.suites == list(SUITE_PRESETS) and cfg.data.tasks == list(range(10))
    assert RecipeConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    # Its demonstrations are the suite presets' own: the same folders, nothing to generate again.
    assert [cfg.suite_data_key(s) for s in SUITE_PRESETS] == [preset(s).data_key() for s in SUITE_PRESETS]
    for s in SUITE_PRESETS:
        own = preset(s).data.generate_config("x", depth=False, seed=0, progress=False)
        assert cfg.data.generate_config("x", depth=False, seed=0, progress=False, suite=s) == own
    # Evaluated by the same protocol on every suite, within twice a suite preset's training.
    assert cfg.eval == preset("libero_spatial").eval
    assert cfg.train.max_minutes <= 240 and cfg.data.unsolved_tasks == "train_without"
    with pytest.raises(ValueError, match=r"^suite: name one of"):
        cfg.data.generate_config("x", depth=False, seed=0)
    with pytest.raises(ValueError, match=r"^suite: 'libero_90' is not one of"):
        cfg.data.generate_config("x", depth=False, seed=0, suite="libero_90")


@pytest.mark.parametrize(
    "suite, problem",
    [
        ("libero_goal+libero_goal", "each once"),
        ("libero_goal+libero_100", "or several joined by '+'"),
        ("libero_goal+", "or several joined by '+'"),
    ],
)
def test_a_bad_list_of_suites_is_refused_by_name(suite, problem):
    from flowvla.checks import SettingError

    with pytest.raises(SettingError, match=rf"^data.suite: .*{re.escape(problem)}"):
        preset("default", **{"data.suite": suite})
    assert (
        preset("default", **{"data.suite": "libero_goal + libero_10"}).data.suite == "libero_goal+libero_10"
    )
