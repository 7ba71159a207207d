"""The training loop on one process: losses fall, checkpoints are complete, a resumed run equals an
uninterrupted one, and the engine's options (accumulation, EMA, validation, the non-finite guard,
mixtures, time budget, mixed precision) do what they say."""

import json
import math

import pytest
import torch

from flowvla.policy import VLAPolicy
from flowvla.training import NonFiniteLossError, TrainConfig, latest_checkpoint, read_trainer_state, train
from tests.policy.helpers import make_batch, tiny_policy
from tests.training.helpers import ItemList, TaskItems, max_difference, weights


def test_resumed_training_ends_where_an_uninterrupted_run_ends(tmp_path):
    data = ItemList()
    cfg = dict(steps=4, batch_size=3, lr=1e-3, warmup_steps=1, save_every=2, log_every=1)
    straight = tiny_policy()
    train(straight, data, TrainConfig(out_dir=str(tmp_path / "a"), **cfg))

    first = tiny_policy()
    report = train(first, data, TrainConfig(out_dir=str(tmp_path / "b"), **cfg), stop_after=2)
    assert report["step"] == 2
    resumed = tiny_policy(seed=1)  # a different init: everything must come from the checkpoint
    report = train(resumed, data, TrainConfig(out_dir=str(tmp_path / "b"), **cfg))
    assert report["resumed_from"] == 2 and report["step"] == 4
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_checkpoint_loads_as_a_policy(tmp_path):
    policy = tiny_policy()
    train(policy, ItemList(), TrainConfig(out_dir=str(tmp_path), steps=2, batch_size=2, save_every=1))
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None and (ckpt / "trainer_state.pt").is_file()
    batch = make_batch(2, actions=False)
    loaded = VLAPolicy.from_pretrained(ckpt)
    assert torch.equal(policy.predict_action(batch, seed=0)[0], loaded.predict_action(batch, seed=0)[0])
    assert not list(tmp_path.glob(".checkpoint*"))  # no temporary directories left behind


def test_loss_falls_on_a_fixed_batch(tmp_path):
    losses = []
    train(
        tiny_policy(),
        ItemList(4),
        TrainConfig(
            out_dir=str(tmp_path), steps=60, batch_size=4, lr=3e-3, warmup_steps=5, save_every=60, log_every=1
        ),
        on_log=lambda row: losses.append(row["action"]),
    )
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10


def test_resuming_with_other_statistics_is_refused(tmp_path):
    train(tiny_policy(), ItemList(), TrainConfig(out_dir=str(tmp_path), steps=2, batch_size=2), stop_after=1)
    with pytest.raises(ValueError, match="statistics"):
        train(tiny_policy(stats=False), ItemList(), TrainConfig(out_dir=str(tmp_path), steps=2, batch_size=2))


def rows_of(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_accumulating_micro_steps_trains_like_one_big_batch(tmp_path):
    # The flow draws of a step are made for the whole batch and sliced, so splitting the batch only
    # changes float sums (with all-valid masks, the mean of two half-batch losses is the full one).
    cfg = dict(steps=3, batch_size=4, lr=1e-3, warmup_steps=1, save_every=3)
    whole, split = tiny_policy(), tiny_policy()
    train(whole, ItemList(8), TrainConfig(out_dir=str(tmp_path / "a"), **cfg))
    report = train(
        split, ItemList(8), TrainConfig(out_dir=str(tmp_path / "b"), gradient_accumulation_steps=2, **cfg)
    )
    assert report["gradient_accumulation_steps"] == 2
    assert max_difference(weights(whole), weights(split)) < 1e-5
    with pytest.raises(ValueError, match="batch_size: 4 does not split into 1 processes x 3"):
        train(
            tiny_policy(),
            ItemList(8),
            TrainConfig(out_dir=str(tmp_path / "c"), gradient_accumulation_steps=3, **cfg),
        )


def test_ema_validation_and_resume_are_reproducible(tmp_path):
    data, held_out = ItemList(8), ItemList(4, seed=1)
    cfg = dict(steps=4, batch_size=2, lr=3e-3, warmup_steps=1, save_every=2, log_every=1, ema_decay=0.5)
    cfg.update(val_every=2, val_batches=2)
    straight = tiny_policy()
    report = train(straight, data, TrainConfig(out_dir=str(tmp_path / "a"), **cfg), val_dataset=held_out)
    assert report["val_losses"]["loss"] > 0 and report["ema_val_losses"]["loss"] > 0
    interrupted = TrainConfig(out_dir=str(tmp_path / "b"), **cfg)
    train(tiny_policy(), data, interrupted, stop_after=3, val_dataset=held_out)  # stops between saves
    resumed = tiny_policy(seed=1)
    train(resumed, data, interrupted, val_dataset=held_out)

    assert all(
        torch.equal(a, b) for a, b in zip(weights(straight).values(), weights(resumed).values(), strict=True)
    )
    a, b = tmp_path / "a" / "checkpoint", tmp_path / "b" / "checkpoint"
    for name in ("model.safetensors", "model_ema.safetensors"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    # The validation loss depends only on the weights: the same in both runs, step by step.
    val = [[r for r in rows_of(tmp_path / d) if r.get("event") == "validation"] for d in "ab"]
    assert [r["step"] for r in val[0]] == [2, 4]
    assert val[0] == val[1]
    rows = [r for r in rows_of(tmp_path / "a") if "event" not in r]
    assert all(r["grad_norm"] > 0 and r["samples_per_s"] > 0 and r["skipped"] == 0 for r in rows)

    # Evaluation gets the average by default; the raw weights on request.
    ema_policy, raw_policy = VLAPolicy.from_pretrained(a), VLAPolicy.from_pretrained(a, weights="raw")
    assert ema_policy.loaded_weights == "model_ema.safetensors"
    assert all(
        torch.equal(x, y)
        for x, y in zip(weights(raw_policy).values(), weights(straight).values(), strict=True)
    )
    assert max_difference(weights(ema_policy), weights(raw_policy)) > 1e-4
    assert read_trainer_state(a)["ema_updates"] == 4


def test_validation_needs_held_out_data(tmp_path):
    with pytest.raises(ValueError, match=r"val_every: validation is on but train\(\) got no val_dataset"):
        train(
            tiny_policy(), ItemList(), TrainConfig(out_dir=str(tmp_path), steps=1, batch_size=2, val_every=1)
        )


def test_non_finite_steps_are_skipped_and_counted(tmp_path):
    data = ItemList(6, poison=[0])  # item 0 has actions of 1e30: its loss is infinite
    before = tiny_policy()
    report = train(
        before, data, TrainConfig(out_dir=str(tmp_path), steps=8, batch_size=2, log_every=1, nan_patience=8)
    )
    rows = rows_of(tmp_path)
    bad = [r for r in rows if r.get("event") == "non_finite"]
    assert bad and report["skipped"] == len(bad) and rows[-1]["skipped"] == len(bad)
    assert all(0 in [i["index"] for mb in r["micro_batches"] for i in mb["items"]] for r in bad)
    assert all(torch.isfinite(v).all() for v in weights(before).values())


def test_consecutive_non_finite_steps_stop_with_a_report_and_keep_the_checkpoint(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path), steps=10, batch_size=2, save_every=1, nan_patience=3)
    train(tiny_policy(), ItemList(6), cfg, stop_after=2)
    good = (tmp_path / "checkpoint" / "model.safetensors").read_bytes()
    poisoned = ItemList(6, poison=range(6))
    with pytest.raises(NonFiniteLossError, match="3 consecutive steps") as caught:
        train(tiny_policy(), poisoned, cfg)
    report = caught.value.report
    assert report["step"] == 5 and report["consecutive"] == 3 and len(report["bad_steps"]) == 3
    micro = report["bad_steps"][-1]["micro_batches"][0]
    assert micro["losses"]["loss"] in ("inf", "nan") and len(micro["items"]) == 2
    assert json.loads((tmp_path / "non_finite_report.json").read_text())["step"] == 5
    assert (tmp_path / "checkpoint" / "model.safetensors").read_bytes() == good
    assert read_trainer_state(tmp_path / "checkpoint")["step"] == 2


def test_resuming_with_a_longer_schedule_is_refused_unless_asked(tmp_path):
    cfg = dict(out_dir=str(tmp_path), batch_size=2, warmup_steps=1)
    train(tiny_policy(), ItemList(), TrainConfig(steps=2, **cfg))
    with pytest.raises(ValueError, match=r"steps=2 -> 4.*allow_schedule_change=True"):
        train(tiny_policy(), ItemList(), TrainConfig(steps=4, **cfg))
    report = train(tiny_policy(), ItemList(), TrainConfig(steps=4, allow_schedule_change=True, **cfg))
    assert report["resumed_from"] == 2 and report["step"] == 4


def test_time_budget_stops_cleanly_with_a_checkpoint(tmp_path, monkeypatch):
    import flowvla.training.engine as engine
    import flowvla.training.processes as processes

    class Clock:  # each reading is 10 s later: the 1-minute budget ends after a few steps
        now = 0.0

        def perf_counter(self):
            self.now += 10.0
            return self.now

    clock = Clock()  # one clock for the loop and its budget
    monkeypatch.setattr(engine, "time", clock)
    monkeypatch.setattr(processes, "time", clock)
    cfg = TrainConfig(out_dir=str(tmp_path), steps=50, batch_size=2, save_every=100, max_minutes=1.0)
    report = train(tiny_policy(), ItemList(), cfg)
    assert report["stopped"] == "max_minutes" and 0 < report["step"] < 50
    assert read_trainer_state(tmp_path / "checkpoint")["step"] == report["step"]
    monkeypatch.undo()
    assert (
        train(
            tiny_policy(),
            ItemList(),
            TrainConfig(
                out_dir=str(tmp_path),
                steps=report["step"] + 1,
                batch_size=2,
                save_every=100,
                allow_schedule_change=True,
            ),
        )["step"]
        == report["step"] + 1
    )


def test_task_weights_reach_the_batches(tmp_path):
    data = TaskItems(["x"] * 3 + ["y"] * 3)
    seen = []
    policy = tiny_policy()
    forward = policy.forward
    policy.forward = lambda batch, **kw: (seen.extend(batch["item_id"].tolist()), forward(batch, **kw))[1]
    cfg = TrainConfig(out_dir=str(tmp_path), steps=3, batch_size=4, task_weights={"y": 0.0})
    train(policy, {"demos": data}, cfg)
    assert len(seen) == 12 and set(seen) <= {0, 1, 2}


def test_bf16_autocast_on_the_cpu(tmp_path):
    policy = tiny_policy()
    report = train(
        policy, ItemList(), TrainConfig(out_dir=str(tmp_path), steps=2, batch_size=2, mixed_precision="bf16")
    )
    assert report["mixed_precision"] == "bf16" and math.isfinite(report["last_losses"]["loss"])
    assert all(p.dtype == torch.float32 for p in policy.parameters())  # float32 master weights
    assert "_original_forward" not in policy.__dict__  # Accelerate's autocast wrapper is removed
    loaded = VLAPolicy.from_pretrained(tmp_path / "checkpoint")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())


def test_bf16_with_math_attention_and_a_fused_optimizer_resumes_bit_exactly(tmp_path):
    # The CPU's fast configuration: a run stopped and resumed ends with the uninterrupted run's
    # float32 weights, and every logged loss and gradient norm is finite.
    fast = dict(mixed_precision="bf16", attention_backend="math", optimizer_impl="fused")
    cfg = dict(steps=4, batch_size=3, lr=1e-3, warmup_steps=1, save_every=2, log_every=1, **fast)
    rows = []
    straight = tiny_policy()
    train(straight, ItemList(), TrainConfig(out_dir=str(tmp_path / "a"), **cfg), on_log=rows.append)
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in rows)
    train(tiny_policy(), ItemList(), TrainConfig(out_dir=str(tmp_path / "b"), **cfg), stop_after=2)
    resumed = tiny_policy(seed=1)
    train(resumed, ItemList(), TrainConfig(out_dir=str(tmp_path / "b"), **cfg))
    a, b = weights(straight), weights(resumed)
    assert all(a[k].dtype == torch.float32 or not a[k].is_floating_point() for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("impl", ["for_loop", "foreach", "fused"])
def test_optimizer_implementations_follow_one_update_rule(tmp_path, impl):
    cfg = dict(steps=3, batch_size=2, lr=1e-3, warmup_steps=1, save_every=3)
    default, chosen = tiny_policy(), tiny_policy()
    train(default, ItemList(), TrainConfig(out_dir=str(tmp_path / "a"), **cfg))
    train(chosen, ItemList(), TrainConfig(out_dir=str(tmp_path / "b"), optimizer_impl=impl, **cfg))
    assert max_difference(weights(default), weights(chosen)) < 1e-6


def test_math_attention_computes_the_same_losses_in_float32(tmp_path):
    losses = {}
    for backend in (None, "math"):
        rows = []
        cfg = TrainConfig(
            out_dir=str(tmp_path / str(backend)), steps=2, batch_size=2, attention_backend=backend
        )
        train(tiny_policy(), ItemList(), cfg, on_log=rows.append)
        losses[backend] = [r["loss"] for r in rows]
    assert losses[None] == pytest.approx(losses["math"], rel=1e-5)


class RandomlyAugmented(ItemList):
    """Items whose images depend on the global RNG, as augmentation draws do."""

    def __getitem__(self, i):
        item = dict(super().__getitem__(i))
        item["images"] = torch.randint_like(item["images"], 0, 255)
        return item


def test_data_workers_make_the_items_the_training_process_makes(tmp_path):
    cfg = dict(steps=4, batch_size=3, lr=1e-3, warmup_steps=1, save_every=2)
    in_process, in_workers, resumed = tiny_policy(), tiny_policy(), tiny_policy(seed=1)
    train(in_process, RandomlyAugmented(), TrainConfig(out_dir=str(tmp_path / "a"), **cfg))
    workers = TrainConfig(out_dir=str(tmp_path / "b"), num_workers=2, **cfg)
    train(in_workers, RandomlyAugmented(), workers)
    resume = TrainConfig(out_dir=str(tmp_path / "c"), num_workers=2, **cfg)
    train(tiny_policy(), RandomlyAugmented(), resume, stop_after=1)  # odd: the workers' turns shift
    train(resumed, RandomlyAugmented(), resume)
    a, b, c = weights(in_process), weights(in_workers), weights(resumed)
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)


def test_progress_bar_on_request(tmp_path, capsys):
    train(tiny_policy(), ItemList(), TrainConfig(out_dir=str(tmp_path), steps=2, batch_size=2, progress=True))
    assert "2/2" in capsys.readouterr().err


def test_fsdp_options_take_accelerates_names():
    from flowvla.training.processes import fsdp_plugin

    # Both the plugin's field names and the fsdp_-prefixed keys of an `accelerate config` file.
    options = {
        "fsdp_version": 2,
        "fsdp_transformer_layer_cls_to_wrap": ["DiTBlock"],
        "reshard_after_forward": True,
    }
    plugin = fsdp_plugin(options)
    assert plugin.fsdp_version == 2 and plugin.transformer_cls_names_to_wrap == ["DiTBlock"]
    assert plugin.reshard_after_forward is True
    with pytest.raises(ValueError, match="fsdp: 'fsdp_sharding' is not an option"):
        fsdp_plugin({"fsdp_sharding": "FULL"})
