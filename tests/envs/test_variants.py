"""compare_variants: the same episodes for every variant, the first as the reference."""

from __future__ import annotations

import pytest

from flowvla.envs.rollout import ConstantPolicy, RandomPolicy, RolloutConfig
from flowvla.envs.variants import compare_variants, format_table


def test_a_variant_may_not_change_the_episodes_compared(tmp_path):
    base = RolloutConfig(suite="libero_object", tasks=[0], init_states=[0], progress=False)
    for overrides in ({"init_states": [1]}, {"seed": 3}, {"tasks": [1]}):
        with pytest.raises(ValueError, match=r"variants\['v'\]: may not change"):
            compare_variants(ConstantPolicy(), base, {"v": overrides}, tmp_path)
    with pytest.raises(ValueError, match="at least one"):
        compare_variants(ConstantPolicy(), base, {}, tmp_path)
    with pytest.raises(ValueError, match="not usable as a folder name"):
        compare_variants(ConstantPolicy(), base, {"a/b": {}}, tmp_path)


def test_rows_share_the_episodes_and_measure_against_the_first(tmp_path):
    pytest.importorskip("libero", reason="LIBERO is not installed (see docs/libero.md)")
    from flowvla.envs.libero_setup import LiberoSetupError, prepare_libero

    try:
        prepare_libero()
    except LiberoSetupError as err:
        pytest.skip(str(err))
    base = RolloutConfig(suite="libero_object", tasks=[0], init_states=[0, 1], image_size=32, progress=False)
    variants = {
        "short": {"max_steps": 3},
        "long": {"max_steps": 6},
        # A variant may run another policy (a distilled student, ...): here one that moves.
        "other": {"max_steps": 6, "policy": RandomPolicy(horizon=4, seed=1), "policy_id": {"name": "random"}},
    }
    rows = compare_variants(ConstantPolicy(horizon=4), base, variants, tmp_path)
    short, long, other = rows
    assert [r["variant"] for r in rows] == ["short", "long", "other"]
    assert other["second_diff"] > 0 and other["overrides"] == {
        "max_steps": 6,
        "policy_id": {"name": "random"},
    }
    assert short["mean_steps"] == 3 and long["mean_steps"] == 6 and long["episodes"] == 2
    assert short["delta_points"] == 0 and short["latency_ratio"] == 1 and long["successes"] == 0
    assert long["overrides"] == {"max_steps": 6}
    # Standing still: no acceleration at all.
    assert long["second_diff"] == 0 and long["third_diff"] == 0
    assert (tmp_path / "long" / "episodes.jsonl").exists()
    assert "short" in format_table(rows).splitlines()[1]
