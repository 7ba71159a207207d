"""The training loop: losses fall, checkpoints are complete, and a resumed run equals an uninterrupted one."""

import json

import pytest
import torch

from flowvla.policy import VLAPolicy
from flowvla.training import StepBatchSampler, TrainConfig, latest_checkpoint, train
from tests.policy.helpers import make_batch, tiny_policy


class ItemList(torch.utils.data.Dataset):
    def __init__(self, n=6):
        batch = make_batch(n)
        self.items = [{k: v[i] for k, v in batch.items()} for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _weights(policy):
    return {k: v.clone() for k, v in policy.state_dict().items()}


def test_step_batch_sampler_is_a_function_of_the_step():
    full = list(StepBatchSampler(10, 4, 0, 6, seed=3))
    tail = list(StepBatchSampler(10, 4, 3, 6, seed=3))
    assert full[3:] == tail and len(set(map(tuple, full))) > 1
    assert all(len(set(b)) == 4 for b in full)


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
    a, b = _weights(straight), _weights(resumed)
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
