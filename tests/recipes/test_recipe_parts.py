"""The LIBERO recipe's parts that need no simulator: presets, the dataset and policy it builds, reports."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("h5py")
pytest.importorskip("transformers")

from flowvla.recipes.libero import PRESETS, RecipeConfig, build_dataset, build_policy, preset
from flowvla.recipes.report import format_success_table, loss_curve_png, success_table, write_report
from tests.data.helpers import write_official_hdf5


def test_every_preset_is_valid_and_round_trips_through_json():
    for name in PRESETS:
        cfg = preset(name)
        assert cfg.name == name
        assert RecipeConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"tasks": [10]}, "tasks"),
        ({"tasks": []}, "tasks"),
        ({"image_size": 100}, "stride"),
        ({"replan_every": 20, "horizon": 16}, "replan_every"),
        ({"init_states": 51}, "init_states"),
        ({"steps": 0}, "steps"),
        ({"suite": "libero_101"}, "suite"),
    ],
)
def test_bad_settings_are_named(overrides, match):
    with pytest.raises(ValueError, match=match):
        preset("default", **overrides)
    with pytest.raises(ValueError, match="preset"):
        preset("huge")
    with pytest.raises(ValueError, match="colour: not a recipe setting"):
        RecipeConfig.from_dict({**RecipeConfig().to_dict(), "colour": "red"})


def test_cache_key_names_what_was_rendered():
    a, b = preset("default", image_stride=1, action_noise=0.0), preset("default", image_stride=3)
    assert a.data_key() != b.data_key() and "96px" in a.data_key() and "every3" in b.data_key()
    noisy = preset("default", image_stride=1, action_noise=0.2, noise_bursts=None)
    assert "dart0.2" in noisy.data_key() and noisy.data_key() != a.data_key()
    bursts = preset("default", image_stride=1, action_noise=0.2, noise_bursts=[6, 30])
    assert bursts.data_key() == noisy.data_key().replace("_seed", "_bursts6x30_seed")
    # The default injects noise in bursts; without noise there is nothing to schedule.
    assert "_dart0.3_bursts6x30_" in preset("default").data_key()
    assert a.data.noise_bursts is None and "dart" not in a.data_key()
    with pytest.raises(ValueError, match="noise_bursts"):
        preset("default", noise_bursts=[6])
    # Scattered layouts are other demonstrations: a folder of their own.
    scattered = preset("default", object_scatter=0.04)
    assert scattered.data_key() == preset("default").data_key().replace("_seed", "_scatter4cm_seed")
    for bad in (-0.01, float("nan")):
        with pytest.raises(ValueError, match=r"object_scatter \(data.object_scatter\): must be"):
            preset("default", object_scatter=bad)


@settings(max_examples=30, deadline=None)
@given(
    amounts=st.lists(
        st.sampled_from(["robot_joint_offset_rad", "light_intensity", "camera_shift_m", "scene_tint"]),
        unique=True,
        max_size=3,
    ).flatmap(lambda names: st.fixed_dictionaries({n: st.sampled_from([0.0, 0.02, 0.05]) for n in names})),
    reordered=st.booleans(),
)
def test_demonstrations_under_a_perturbation_are_their_own_dataset(amounts, reordered):
    from flowvla.envs.perturb import Perturbation
    from flowvla.recipes.settings import parse_settings, with_settings

    given_ = dict(reversed(amounts.items())) if reordered else amounts
    cfg = with_settings(preset("default"), parse_settings([f"data.perturbation={json.dumps(given_)}"]))
    on = {k: v for k, v in amounts.items() if v}
    # Only the axes that are on are kept, in any order: nothing on is LIBERO's own scenes.
    assert cfg.data.perturbation == (on or None)
    assert (cfg.data_key() == preset("default").data_key()) == (not on)
    assert cfg.data_key() == preset("default", **{"data.perturbation": on or None}).data_key()
    # The generator draws exactly these axes; the setting survives the run folder's JSON.
    gen = cfg.data.generate_config("out", depth=False, seed=0).perturbation
    assert gen == (Perturbation(**on) if on else None)
    assert RecipeConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_a_perturbation_changes_the_dataset_by_every_amount_and_bad_ones_are_named():
    keys = {
        preset("default", **{"data.perturbation": {"light_intensity": v}}).data_key() for v in (0.1, 0.2, 0.3)
    }
    assert len(keys) == 3
    for bad, match in [
        ({"light": 0.3}, r"data.perturbation: unknown fields \['light'\]"),
        ({"light_intensity": -1}, "data.perturbation: light_intensity: must be"),
        ({"changed_task": True}, "data.perturbation: changed_task is an evaluation axis"),
        ("strong", "data.perturbation: expected a mapping"),
    ]:
        with pytest.raises(ValueError, match=match):
            preset("default", **{"data.perturbation": bad})
    with pytest.raises(ValueError, match=r"data\.perturbation: object_shift_m and data\.object_scatter"):
        preset("default", object_scatter=0.02, **{"data.perturbation": {"object_shift_m": 0.02}})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    paths = [root / "a.hdf5", root / "b.hdf5"]
    write_official_hdf5(paths[0], [9, 7, 8], "pick up the soup and place it in the basket", h=16, w=16)
    write_official_hdf5(paths[1], [6], "pick up the cheese and place it in the basket", h=16, w=16)
    return paths


def test_dataset_keeps_the_first_demos_per_task_and_the_policy_trains(files):
    import torch

    from flowvla.data.batch import collate

    cfg = preset("toy", image_size=16, conv_channels=[8, 8], demos_per_task=2, horizon=4, replan_every=4)
    ds = build_dataset(cfg, files)
    assert len(ds.source) == 3 and len(ds) == 9 + 7 + 6
    policy = build_policy(cfg, ds)
    assert policy.config.horizon == 4 and policy.backbone.vision_source == "conv"
    assert policy.config.loss.repeats == cfg.policy.loss.repeats == 1
    batch = collate([ds[i] for i in (0, 10, 20)])
    opt = torch.optim.AdamW(policy.parameters(), 1e-3)
    # Fixed flow-matching draws: the loss of fresh random draws is too noisy to compare over 15 steps.
    g = torch.Generator().manual_seed(0)
    noise, t = torch.randn(3, 4, 7, generator=g), torch.rand(3, generator=g)
    first = None
    for _ in range(15):
        loss = policy(batch, noise=noise, t=t).loss
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first
    actions, _ = policy.predict_action({k: batch[k] for k in ("images", "instruction", "state")}, seed=0)
    assert actions.shape == (3, 4, 7) and torch.isfinite(actions).all()


@pytest.mark.parametrize(
    "cameras, views", [(["agentview"], [0]), (["robot0_eye_in_hand", "agentview"], [1, 0])]
)
def test_the_dataset_holds_the_recipes_cameras_in_its_order(files, cameras, views):
    # A one-camera recipe once read the default two views and failed on its own one-view demos.
    both = build_dataset(preset("toy", image_size=16, demos_per_task=2), files, augment=False)
    some = build_dataset(
        preset("toy", image_size=16, demos_per_task=2, cameras=cameras), files, augment=False
    )
    for i in (0, 10):
        assert (some[i]["images"] == both[i]["images"][views]).all()


def test_observation_batches_sample_each_task_through_its_episodes(files):
    from flowvla.recipes.job import observation_batch, sensitivity_batch

    cfg = preset("toy", image_size=16, conv_channels=[8, 8], demos_per_task=2, horizon=4, replan_every=4)
    # Both files name the same task (their BDDL file names are equal), so a task's first episodes are
    # file a's two.
    batch = observation_batch(cfg, files, per_task=2, points=(0.0, 0.5))
    assert batch["images"].shape[0] == 4 and set(batch) == {"images", "instruction", "state"}
    ds = build_dataset(cfg, files, augment=False)
    first = ds[0]["images"], ds[4]["images"], ds[9]["images"], ds[9 + 3]["images"]  # episode lengths 9, 7
    for got, want in zip(batch["images"], first, strict=True):
        assert (got == want).all()
    assert sensitivity_batch(cfg, files, per_task=3)["images"].shape[0] == 3
    with pytest.raises(ValueError, match="points"):
        observation_batch(cfg, files, per_task=1, points=(1.0,))


def test_policy_refuses_data_of_another_size(files):
    cfg = preset("toy", image_size=32)
    with pytest.raises(ValueError, match="regenerate"):
        build_policy(cfg, build_dataset(cfg, files))


def _summary_rows():
    return [
        {"suite": "libero_object", "task_index": t, "task_name": f"t{t}", "instruction": f"do {t}",
         "init_state": i, "success": (t + i) % 3 != 0, "steps": 100 + i, "time_total": 1.0}
        for t in (0, 1) for i in range(5)
    ]  # fmt: skip


def _summary():
    from flowvla.envs.rollout import summarize

    return summarize(_summary_rows())


def test_success_table_and_report(tmp_path):
    table = success_table(_summary())
    assert table["overall"]["episodes"] == 10 and len(table["tasks"]) == 2
    o = table["overall"]
    assert o["ci95"][0] <= o["success_rate"] <= o["ci95"][1]
    md = format_success_table(table)
    assert "libero_object/0" in md and f"{o['successes']}/10" in md
    (tmp_path / "log.jsonl").write_text(
        "\n".join(json.dumps({"step": s, "action": 1.0 / s}) for s in range(1, 30)) + "\n"
    )
    assert loss_curve_png(tmp_path / "log.jsonl", tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 1000
    run = {
        "recipe": preset("default").to_dict(),
        "success": table,
        "phases": {"data": {"seconds": 60.0, "note": "generated"}, "train": {"seconds": 120.0}},
        "sensitivity": {
            "baseline_l2": 0.0,
            "image_l2": 0.5,
            "synonym_l2": 0.1,
            "opposite_l2": 0.3,
            "checks": {"deterministic": True},
        },
    }
    text = write_report(tmp_path, run).read_text()
    assert "Success" in text and "loss.png" in text and "| **total** | **3.0** |" in text
    # Only the measured distances get a column, each under its own name.
    assert "| same input | other images | paraphrase | opposite instruction |" in text
    assert "| 0.0000 | 0.5000 | 0.1000 | 0.3000 |" in text and "other depth" not in text
    run["sensitivity"].update(geometry_l2=0.25, held_out_l2=0.2)
    text = write_report(tmp_path, run).read_text()
    assert "| 0.0000 | 0.5000 | 0.2500 | 0.1000 | 0.2000 | 0.3000 |" in text
    assert "| other images | other depth, same images | paraphrase | held-out paraphrase |" in text
    assert "Layers the flow head reads" not in text
    run["sensitivity"]["layer_usage"] = {
        "per_block": [[0.25, 0.75]],
        "per_layer": [0.25, 0.75],
        "sample_spread": 0.1,
    }
    text = write_report(tmp_path, run).read_text()
    assert "| layer | 0 | 1 |" in text and "| router weight | 0.250 | 0.750 |" in text and "0.100" in text
    assert np.isclose(o["success_rate"], o["successes"] / 10)


def test_command_line_settings_are_json_and_must_exist():
    from flowvla.recipes.libero import parse_settings

    got = parse_settings(["lr=2e-3", "solver=heun", "tasks=[0,3]", "action_noise=0"])
    assert got == {"lr": 2e-3, "solver": "heun", "tasks": [0, 3], "action_noise": 0}
    assert preset("default", **got).data.tasks == [0, 3]
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_settings(["lr"])
    with pytest.raises(ValueError, match="colour: not a recipe setting"):
        parse_settings(["colour=red"])


@pytest.mark.parametrize(
    "typed, tasks",
    [("tasks=1,8", [1, 8]), ("tasks=0-2,7", [0, 1, 2, 7]), ("tasks=3", [3]), ("tasks=[1,8]", [1, 8])],
)
def test_task_lists_from_the_command_line_are_read_as_index_lists(typed, tasks):
    from flowvla.recipes.libero import parse_settings

    assert preset("default", **parse_settings([typed])).data.tasks == tasks


def test_a_task_string_is_never_read_digit_by_digit():
    # list("18") would be [1, 8], two valid libero_object tasks: a silent wrong run.
    with pytest.raises(
        ValueError, match=r"tasks \(data.tasks\): give task indices in \[0, 10\) .* got \[18\]"
    ):
        preset("default", tasks="18")


def test_failures_are_counted_by_outcome():
    from flowvla.envs.rollout import summarize

    rows = [
        {**r, "outcome": {"outcome": "success" if r["success"] else o}}
        for r, o in zip(_summary_rows(), ["hover", "missed_grasp"] * 5, strict=True)
    ]
    table = success_table(summarize(rows))
    failed = 10 - table["overall"]["successes"]
    assert sum(v for k, v in table["overall"]["outcomes"].items() if k != "success") == failed
    assert table["overall"]["outcomes"].get("success", 0) == table["overall"]["successes"]
    md = format_success_table(table)
    assert ("hover" in md) or ("missed_grasp" in md)


def test_a_policy_without_state_ignores_it(files):
    import torch

    from flowvla.data.batch import collate

    cfg = preset("toy", image_size=16, conv_channels=[8, 16], use_state=False)
    dataset = build_dataset(cfg, files)
    policy = build_policy(cfg, dataset).eval()
    assert policy.config.state_dim == 0
    batch = collate([dataset[0], dataset[1]])
    inputs = {k: batch[k] for k in ("images", "instruction", "state")}
    a, _ = policy.predict_action(inputs, seed=0, diagnostics=False)
    b, _ = policy.predict_action(
        {**inputs, "state": torch.randn_like(inputs["state"])}, seed=0, diagnostics=False
    )
    torch.testing.assert_close(a, b)
    assert float(policy(batch).loss.detach()) > 0


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"vision": "resnet"}, "vision"),
        ({"eval_weights": "best"}, "eval_weights"),
        ({"val_demos_per_task": -1}, "val_demos_per_task"),
        ({"contrast_weight": -0.1}, "contrast_weight"),
    ],
)
def test_bad_ablation_settings_are_named(overrides, match):
    with pytest.raises(ValueError, match=match):
        preset("default", **overrides)


def test_a_geometry_branch_renders_depth_into_its_own_cache():
    plain, fused = preset("default"), preset("default", fusion="gated")
    assert not plain.needs_depth and "depth" not in plain.data_key()
    assert fused.needs_depth and fused.data_key() == plain.data_key().replace("_dart", "_depth_dart")


def test_training_settings_leave_out_only_how_a_policy_is_evaluated():
    import flowvla.recipes.libero as libero
    from flowvla.recipes.libero import training_settings

    base = preset("default")
    evaluated = preset("default", solver="midpoint", solver_steps=5, replan_every=4, eval_weights="raw")
    assert training_settings(evaluated) == training_settings(base)
    assert training_settings(preset("default", lr=1e-3)) != training_settings(base)
    assert not any(k.startswith("eval.") for k in training_settings(base))
    # The frozenset that recovered the grouping is gone; its old name says what replaced it.
    with pytest.raises(AttributeError, match=r"RecipeConfig\.eval"):
        libero.EVAL_SETTINGS


def test_a_run_saved_before_a_setting_existed_still_resumes(tmp_path):
    from flowvla.recipes.job import check_resumable
    from tests.recipes.test_settings import flat_dict

    cfg = preset("toy")
    old = flat_dict(cfg)
    for key in ("fusion", "router", "val_demos_per_task", "eval_weights"):
        old.pop(key)  # a flat recipe.json written by an older version
    (tmp_path / "recipe.json").write_text(json.dumps(old))
    check_resumable(cfg, tmp_path)
    with pytest.raises(ValueError, match=r"\['policy.fusion.kind'\] differ"):
        check_resumable(preset("toy", fusion="gated"), tmp_path)
    # How many processes and environments run it decides only how fast: a run resumes with others.
    check_resumable(
        preset("toy", **{"eval.workers": 3, "eval.envs_per_worker": 4, "data.workers": 2}), tmp_path
    )


def test_an_eval_variant_reuses_only_a_checkpoint_trained_the_same_way(tmp_path):
    from flowvla.recipes.libero import save_recipe
    from flowvla.recipes.train import load_trained

    save_recipe(preset("toy"), tmp_path)
    with pytest.raises(ValueError, match=r"other settings: \['train.lr'\]"):
        load_trained(preset("toy", lr=1e-3), tmp_path / "checkpoint")


@pytest.fixture(scope="module")
def depth_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe_depth")
    paths = [root / "a.hdf5", root / "b.hdf5"]
    for path, lengths, thing in ((paths[0], [9, 7, 8], "soup"), (paths[1], [6, 5], "cheese")):
        text = f"pick up the {thing} and place it in the basket"
        bddl = f"libero/bddl_files/libero_object/{text.replace(' ', '_')}.bddl"
        write_official_hdf5(path, lengths, text, h=16, w=16, depth=True, bddl_file_name=bddl)
    return paths


def test_the_ablation_factors_build_a_policy_that_trains(depth_files):
    import torch

    from flowvla.data.batch import collate
    from flowvla.recipes.libero import build_val_dataset

    cfg = preset(
        "toy",
        image_size=16,
        conv_channels=[8, 8],
        demos_per_task=1,
        val_demos_per_task=1,
        horizon=4,
        replan_every=4,
        lm_layers=2,
        router="topk",
        router_layers="all",
        fusion="gated",
        smoothness_weight=0.1,
        jerk_weight=0.1,
        synonym_weight=0.5,
        contrast_weight=0.5,
    )
    ds = build_dataset(cfg, depth_files)
    val = build_val_dataset(cfg, depth_files)
    # Training: the first demo of each file; held out: the second.
    assert [ds.source.episode_length(e) for e in range(2)] == [9, 6]
    assert [val.source.episode_length(e) for e in range(2)] == [7, 5]
    assert val.augment is None and build_val_dataset(preset("toy"), depth_files) is None
    policy = build_policy(cfg, ds)
    assert policy.fusion is not None and policy.observation_settings()["depth"]
    assert policy.config.router.kind == "topk" and policy.config.loss.contrast_weight == 0.5
    # The tokenizer learned the reworded instructions' words, so "grab" is not split into letters.
    tok = policy.backbone.tokenizer
    assert len(tok.tokenize("grab")) < len("grab")
    batch = collate([ds[i] for i in (0, 5, 10)])
    assert batch["instruction_opposite"][0].startswith("put down") and "depth" in batch
    opt = torch.optim.AdamW(policy.parameters(), 1e-2)
    for _ in range(3):  # the head's zero-initialised outputs ignore the instruction at first
        losses = policy(batch)
        opt.zero_grad()
        losses.loss.backward()
        opt.step()
    for name in ("loss", "smoothness", "jerk", "synonym", "contrast"):
        assert torch.isfinite(getattr(losses, name)), name
    assert losses.contrast > 0 and losses.synonym > 0 and losses.smoothness > 0


def test_the_training_budget_is_the_runs_not_one_calls(files, tmp_path):
    # A sweep run again once trained on past its spent budget and evaluated other weights.
    from flowvla.recipes.train import train_config, train_policy
    from flowvla.training import train

    cfg = preset(
        "toy", image_size=16, conv_channels=[8, 8], demos_per_task=2, horizon=4, replan_every=4, steps=6,
        max_minutes=1.0,
    )  # fmt: skip
    ds = build_dataset(cfg, files)
    assert train_config(cfg, tmp_path, minutes_spent=0.25).max_minutes == pytest.approx(0.75)
    with pytest.raises(ValueError, match="budget"):
        train_config(cfg, tmp_path, minutes_spent=1.0)
    train(build_policy(cfg, ds), ds, train_config(cfg, tmp_path, progress=False), stop_after=3)
    log = tmp_path / "log.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    last = max(i for i, r in enumerate(rows) if "event" not in r and "seconds" in r)

    def spent(seconds):
        rows[last]["seconds"] = seconds
        log.write_text("".join(json.dumps(r) + "\n" for r in rows))

    spent(61.0)  # as if the first call had stopped on its budget at step 3
    weights = (tmp_path / "checkpoint" / "model.safetensors").read_bytes()
    _, report = train_policy(cfg, ds, tmp_path, progress=False)
    assert report == {"step": 3, "resumed_from": 3, "stopped": "max_minutes", "trained_this_call": False}
    assert (tmp_path / "checkpoint" / "model.safetensors").read_bytes() == weights
    spent(1.0)  # budget left: the run resumes and finishes its steps
    _, report = train_policy(cfg, ds, tmp_path, progress=False)
    assert report["resumed_from"] == 3 and report["step"] == 6 and report["stopped"] == "steps"
