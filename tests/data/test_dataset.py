"""Training items: chunk padding masks, state padding, stats, normalisation, collate, DataLoader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowvla.data.batch import collate, pad_state
from flowvla.data.dataset import ChunkDataset, EpisodeSubset, split_episodes
from flowvla.data.stats import FeatureStats, Normalizer, compute_stats, load_stats, save_stats

from .helpers import episode_arrays, upright_frames


class ArraySource:
    """In-memory EpisodeSource: episode e has length lengths[e]."""

    def __init__(self, lengths, state_dim=8, geometry=False):
        self.lengths, self.state_dim, self.geo = list(lengths), state_dim, geometry

    def __len__(self):
        return len(self.lengths)

    def episode_length(self, e):
        return self.lengths[e]

    def instruction(self, e):
        return f"task {e % 3}"

    def actions(self, e):
        return episode_arrays(e, self.lengths[e])[0].astype(np.float32)

    def states(self, e):
        return episode_arrays(e, self.lengths[e], self.state_dim)[1].astype(np.float32)

    def images(self, e, t):
        f = upright_frames(e, self.lengths[e], 8, 8)[t]
        return np.stack([f, f]).transpose(0, 3, 1, 2)

    def geometry(self, e, t):
        if not self.geo:
            return None
        return {
            "depth": np.ones((2, 8, 8), np.float32),
            "intrinsics": np.tile(np.eye(3, dtype=np.float32), (2, 1, 1)),
            "extrinsics": np.tile(np.eye(4, dtype=np.float32), (2, 1, 1)),
        }


@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=5), horizon=st.integers(1, 16), data=st.data()
)
def test_chunk_and_mask_at_episode_ends(lengths, horizon, data):
    src = ArraySource(lengths)
    ds = ChunkDataset(src, horizon=horizon)
    assert len(ds) == sum(lengths)
    index = data.draw(st.integers(0, len(ds) - 1))
    e, t = ds.locate(index)
    item = ds[index]
    n = lengths[e]
    expected_mask = np.arange(t, t + horizon) < n
    np.testing.assert_array_equal(item["action_mask"].numpy(), expected_mask)
    full = src.actions(e)
    np.testing.assert_array_equal(item["actions"].numpy(), full[np.minimum(np.arange(t, t + horizon), n - 1)])
    # Real actions are exactly the episode's from step t; the mask counts them.
    assert int(item["action_mask"].sum()) == min(horizon, n - t)
    np.testing.assert_array_equal(item["state"].numpy(), src.states(e)[t])
    assert item["instruction"] == f"task {e % 3}" and item["frame_index"] == t and item["episode_index"] == e


def test_every_step_is_one_item():
    ds = ChunkDataset(ArraySource([3, 1, 4]), horizon=2)
    pairs = [ds.locate(i) for i in range(len(ds))]
    assert pairs == [(0, 0), (0, 1), (0, 2), (1, 0), (2, 0), (2, 1), (2, 2), (2, 3)]
    with pytest.raises(IndexError):
        ds.locate(8)


@given(s0=st.integers(1, 20), dim=st.integers(1, 20))
def test_pad_state(s0, dim):
    x = np.arange(1, s0 + 1, dtype=np.float32)
    out, mask = pad_state(x, dim)
    n = min(s0, dim)
    assert out.shape == (dim,) and mask.shape == (dim,)
    np.testing.assert_array_equal(out[:n], x[:n])
    assert not out[n:].any() and mask.sum() == n and mask[:n].all()


def test_state_dim_in_items():
    ds = ChunkDataset(ArraySource([4], state_dim=8), horizon=2, state_dim=12)
    item = ds[1]
    assert item["state"].shape == (12,) and item["state_mask"].tolist() == [True] * 8 + [False] * 4
    ds = ChunkDataset(ArraySource([4], state_dim=8), horizon=2, state_dim=5)
    assert ds[1]["state"].shape == (5,) and bool(ds[1]["state_mask"].all())


@given(st.lists(st.integers(1, 30), min_size=1, max_size=4), st.integers(0, 2**31 - 1))
def test_stats_match_numpy(lengths, seed):
    rng = np.random.default_rng(seed)
    chunks = [rng.normal(size=(n, 3)) * [1, 10, 0] + [0, 5, 2] for n in lengths]
    s = compute_stats({"actions": chunks})["actions"]
    allx = np.concatenate(chunks)
    np.testing.assert_allclose(s.mean, allx.mean(0), atol=1e-12)
    np.testing.assert_allclose(s.std, allx.std(0), atol=1e-12)
    np.testing.assert_allclose(s.q01, np.percentile(allx, 1, axis=0), atol=1e-12)
    np.testing.assert_allclose(s.q99, np.percentile(allx, 99, axis=0), atol=1e-12)
    assert s.count == sum(lengths) and s.min == allx.min(0).tolist()


@pytest.mark.parametrize("mode", ["mean_std", "quantile"])
def test_normalizer_inverse_and_constant_dims(mode):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(3, 2, (500, 2)), np.full((500, 1), 7.0)], axis=1)
    stats = FeatureStats.from_array(x)
    norm = Normalizer(stats, mode=mode)
    y = norm.normalize(x.astype(np.float32))
    assert np.all(np.isfinite(y)) and np.allclose(y[:, 2], 0)  # constant dim: centred, not divided by 0
    np.testing.assert_allclose(norm.unnormalize(y), x, rtol=1e-5, atol=1e-5)
    if mode == "quantile":
        qs = np.percentile(y[:, :2], [1, 99], axis=0)
        np.testing.assert_allclose(qs, [[-1, -1], [1, 1]], atol=1e-5)
    else:
        np.testing.assert_allclose(y[:, :2].mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(y[:, :2].std(0), 1, atol=1e-4)
    t = torch.from_numpy(x.astype(np.float32))
    torch.testing.assert_close(norm.unnormalize(norm.normalize(t)), t, rtol=1e-5, atol=1e-4)


def test_normalizer_leaves_padding_alone():
    stats = FeatureStats.from_array(np.random.default_rng(0).normal(size=(100, 3)))
    x = np.zeros((4, 5), np.float32)
    x[:, :3] = 1
    y = Normalizer(stats, "mean_std").normalize(x)
    assert not y[:, 3:].any()
    with pytest.raises(ValueError, match="dims"):
        Normalizer(stats).normalize(np.zeros((2, 2), np.float32))


def test_stats_save_load_round_trip(tmp_path):
    ds = ChunkDataset(ArraySource([5, 7]), horizon=3)
    stats = ds.stats()
    path = save_stats(stats, tmp_path / "stats.json", meta={"source": "unit"})
    loaded = load_stats(path)
    assert set(loaded) == {"actions", "state"} and loaded["actions"] == stats["actions"]
    assert json.loads(path.read_text())["_meta"] == {"source": "unit"}


def test_normalised_items():
    src = ArraySource([6, 9])
    stats = ChunkDataset(src, horizon=4).stats()
    norms = {"actions": Normalizer(stats["actions"]), "state": Normalizer(stats["state"], "mean_std")}
    ds = ChunkDataset(src, horizon=4, normalizers=norms, state_dim=10)
    item = ds[3]
    e, t = ds.locate(3)
    raw = ChunkDataset(src, horizon=4)[3]
    np.testing.assert_allclose(
        norms["actions"].unnormalize(item["actions"].numpy()), raw["actions"].numpy(), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        item["state"][:8].numpy(), norms["state"].normalize(src.states(e)[t][None])[0], rtol=1e-6
    )
    assert not item["state"][8:].any()


def test_collate_into_batch_contract():
    ds = ChunkDataset(ArraySource([3, 4], geometry=True), horizon=5, state_dim=10, geometry=True)
    batch = collate([ds[i] for i in range(4)])
    assert batch["images"].shape == (4, 2, 3, 8, 8) and batch["images"].dtype == torch.uint8
    assert batch["state"].shape == (4, 10) and batch["state"].dtype == torch.float32
    assert batch["state_mask"].dtype == torch.bool
    assert batch["actions"].shape == (4, 5, 7) and batch["action_mask"].shape == (4, 5)
    assert batch["depth"].shape == (4, 2, 8, 8) and batch["intrinsics"].shape == (4, 2, 3, 3)
    assert batch["extrinsics"].shape == (4, 2, 4, 4)
    assert batch["instruction"] == ["task 0"] * 3 + ["task 1"]
    assert batch["frame_index"].tolist() == [0, 1, 2, 0]


def test_collate_errors_name_the_problem():
    ds = ChunkDataset(ArraySource([3]), horizon=2)
    a, b = ds[0], dict(ds[1])
    del b["state"]
    with pytest.raises(ValueError, match="state"):
        collate([a, b])
    c = dict(ds[1])
    c["state"] = torch.zeros(3)
    with pytest.raises(ValueError, match="'state' has different shapes"):
        collate([a, c])
    with pytest.raises(ValueError, match="empty"):
        collate([])


def test_dataloader_with_workers(tmp_path):
    from .helpers import write_official_hdf5

    pytest.importorskip("h5py")
    from flowvla.data.dataset import HDF5Source

    paths = [tmp_path / "a.hdf5", tmp_path / "b.hdf5"]
    write_official_hdf5(paths[0], [5, 4], instruction="a")
    write_official_hdf5(paths[1], [3], instruction="b")
    ds = ChunkDataset(HDF5Source(paths), horizon=4)
    assert len(ds) == 12
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert sum(len(b["instruction"]) for b in batches) == 12
    assert batches[-1]["instruction"][-3:] == ["b", "b", "b"]
    first = batches[0]["images"][0, 0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(first, upright_frames(0, 5)[0])


def test_episodes_per_file_keeps_the_first_demos_of_each_file(tmp_path):
    from .helpers import write_official_hdf5

    pytest.importorskip("h5py")
    from flowvla.data.dataset import HDF5Source

    paths = [tmp_path / "a.hdf5", tmp_path / "b.hdf5"]
    write_official_hdf5(paths[0], [5, 4, 6], instruction="a")
    write_official_hdf5(paths[1], [3], instruction="b")
    src = HDF5Source(paths, episodes_per_file=2)
    assert [src.instruction(e) for e in range(len(src))] == ["a", "a", "b"]
    assert [src.episode_length(e) for e in range(len(src))] == [5, 4, 3]
    with pytest.raises(ValueError, match="episodes_per_file"):
        HDF5Source(paths, episodes_per_file=0)
    preloaded = HDF5Source(paths, episodes_per_file=2, preload=True)
    for e, t in [(0, 0), (1, 3), (2, 2)]:
        np.testing.assert_array_equal(preloaded.images(e, t), src.images(e, t))


def test_first_episode_reads_the_held_out_demos_after_the_training_ones(tmp_path):
    from .helpers import write_official_hdf5

    pytest.importorskip("h5py")
    from flowvla.data.dataset import HDF5Source

    paths = [tmp_path / "a.hdf5", tmp_path / "b.hdf5"]
    write_official_hdf5(paths[0], [5, 4, 6, 7], instruction="a")
    write_official_hdf5(paths[1], [3, 8], instruction="b")
    train = HDF5Source(paths, episodes_per_file=2)
    held_out = HDF5Source(paths, episodes_per_file=1, first_episode=2)
    assert [train.episode_length(e) for e in range(len(train))] == [5, 4, 3, 8]
    assert [held_out.episode_length(e) for e in range(len(held_out))] == [6]  # b has no third demo
    rest = HDF5Source(paths, first_episode=1, preload=True)
    assert [rest.episode_length(e) for e in range(len(rest))] == [4, 6, 7, 8]
    np.testing.assert_array_equal(rest.images(3, 5), train.images(3, 5))
    with pytest.raises(ValueError, match="no episodes"):
        HDF5Source(paths, first_episode=4)
    with pytest.raises(ValueError, match="first_episode"):
        HDF5Source(paths, first_episode=-1)


def test_instruction_pairs_give_every_item_a_synonym_and_an_opposite():
    from flowvla.processing.instructions import SYNONYMS, opposite, rewrite

    class Tasks(ArraySource):
        def instruction(self, e):
            return ["pick up the soup and place it in the basket", "open the drawer"][e % 2]

    ds = ChunkDataset(Tasks([3, 2, 4]), horizon=2, instruction_pairs=True)
    for k in range(len(ds)):
        item = ds[k]
        assert item["instruction_synonym"] == rewrite(item["instruction"], SYNONYMS)
        assert item["instruction_opposite"] == opposite(item["instruction"])
    assert "instruction_synonym" not in ChunkDataset(Tasks([3]), horizon=2)[0]
    with pytest.raises(ValueError, match="no opposite rule applies to 'task 0'"):
        ChunkDataset(ArraySource([3]), horizon=2, instruction_pairs=True)


def test_bad_arguments():
    with pytest.raises(ValueError, match="horizon"):
        ChunkDataset(ArraySource([3]), horizon=0)
    with pytest.raises(ValueError, match="geometry"):
        ChunkDataset(ArraySource([3]), horizon=2, geometry=True)
    with pytest.raises(ValueError, match="normalizers"):
        ChunkDataset(ArraySource([3]), horizon=2, normalizers={"image": None})


def test_item_tasks_label_every_item_with_its_instruction():
    ds = ChunkDataset(ArraySource([3, 2, 4, 1]), horizon=2)  # instructions "task 0/1/2/0"
    names, ids = ds.item_tasks()
    assert names == ["task 0", "task 1", "task 2"]
    assert [names[i] for i in ids] == [ds.source.instruction(ds.locate(k)[0]) for k in range(len(ds))]


def test_split_episodes_holds_out_whole_episodes_per_task():
    src = ArraySource([2] * 11)  # task 0: 4 episodes, task 1: 4, task 2: 3
    train, val = split_episodes(src, 0.25, seed=1)
    assert sorted(train.episodes + val.episodes) == list(range(11))
    val_tasks = [val.instruction(e) for e in range(len(val))]
    assert sorted(val_tasks) == ["task 0", "task 1", "task 2"]  # at least one each, never all
    assert split_episodes(src, 0.25, seed=1)[1].episodes == val.episodes
    item = ChunkDataset(val, horizon=2)[0]
    original = ChunkDataset(src, horizon=2)
    e0 = val.episodes[0]
    assert np.array_equal(item["actions"].numpy(), original[original._starts[e0]]["actions"].numpy())
    single = ArraySource([2])
    assert len(split_episodes(single, 0.5)[1]) == 0  # a task with one episode stays in training
    with pytest.raises(ValueError, match="val_fraction"):
        split_episodes(src, 1.0)
    with pytest.raises(ValueError, match="out of range"):
        EpisodeSubset(src, [11])


class SwitchingTaskSource(ArraySource):
    """Episode e's task changes from 'first e' to 'second e' at step switch[e] (as LeRobot can store)."""

    def __init__(self, lengths, switch):
        super().__init__(lengths)
        self.switch = list(switch)

    def instruction(self, e):
        return self.frame_instructions(e)[0]

    def frame_instructions(self, e):
        return [f"{'first' if t < self.switch[e] else 'second'} {e}" for t in range(self.lengths[e])]


def test_item_carries_the_task_of_its_frame():
    """The task changes at frame 10: item 15 carries the second task, item 5 the first."""
    ds = ChunkDataset(SwitchingTaskSource([20], [10]), horizon=4)
    assert ds[5]["instruction"] == "first 0" and ds[15]["instruction"] == "second 0"
    names, ids = ds.item_tasks()
    assert names == ["first 0", "second 0"] and ids.tolist() == [0] * 10 + [1] * 10


@given(
    episodes=st.lists(
        st.integers(1, 12).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))), max_size=4
    ),
    data=st.data(),
)
def test_per_frame_tasks_reach_items_and_task_labels(episodes, data):
    episodes = [(20, 10), *episodes]
    lengths, switch = [n for n, _ in episodes], [k for _, k in episodes]
    src = SwitchingTaskSource(lengths, switch)
    keep = data.draw(st.permutations(range(len(lengths))))
    for source in (src, EpisodeSubset(src, keep)):
        ds = ChunkDataset(source, horizon=3)
        names, ids = ds.item_tasks()
        assert len(ids) == len(ds)
        for index in range(len(ds)):
            e, t = ds.locate(index)
            want = source.frame_instructions(e)[t]
            assert ds[index]["instruction"] == want == names[ids[index]]


def test_one_instruction_per_episode_without_frame_tasks():
    ds = ChunkDataset(ArraySource([3, 2]), horizon=2)
    assert [ds[i]["instruction"] for i in range(len(ds))] == ["task 0"] * 3 + ["task 1"] * 2
    assert EpisodeSubset(ArraySource([3, 2]), [1]).frame_instructions(0) == ["task 1"] * 2


def test_frame_tasks_of_the_wrong_length_are_refused():
    class Short(SwitchingTaskSource):
        def frame_instructions(self, e):
            return super().frame_instructions(e)[:-1]

    with pytest.raises(ValueError, match="frame_instructions"):
        ChunkDataset(Short([4], [2]), horizon=2)


def test_subset_keeps_the_steps_that_have_views():
    class Strided(ArraySource):
        def observed_steps(self, e):
            return np.arange(0, self.lengths[e], 3)

        def images(self, e, t):
            assert t % 3 == 0, "asked for a step without views"
            return super().images(e, t)

    sub = EpisodeSubset(Strided([7, 5]), [1])
    assert sub.observed_steps(0).tolist() == [0, 3]
    ds = ChunkDataset(sub, horizon=2)
    assert len(ds) == 2 and ds[1]["frame_index"] == 3
    assert EpisodeSubset(ArraySource([4]), [0]).observed_steps(0).tolist() == [0, 1, 2, 3]


class PerturbedSource(ArraySource):
    """ArraySource whose episodes were recorded with noise executed at the given steps."""

    def __init__(self, lengths, perturbed):
        super().__init__(lengths)
        self.perturbed = perturbed

    def perturbed_steps(self, e):
        out = np.zeros(self.lengths[e], dtype=bool)
        out[[t for t in self.perturbed[e] if t < self.lengths[e]]] = True
        return out


@given(
    length=st.integers(1, 30),
    noisy=st.lists(st.integers(0, 29), max_size=8),
    horizon=st.integers(1, 16),
    data=st.data(),
)
def test_chunks_stop_at_the_first_perturbed_step_after_t(length, noisy, horizon, data):
    """Label t + h is kept iff no noise was executed in [t, t + h): the state it answers was reached
    by clean steps from the observed one. The label at t itself always stays."""
    src = PerturbedSource([length], [noisy])
    ds = ChunkDataset(src, horizon=horizon)
    t = data.draw(st.integers(0, length - 1))
    mask = ds[t]["action_mask"].numpy()
    p = src.perturbed_steps(0)
    for h in range(horizon):
        expected = t + h < length and not p[t : t + h].any()
        assert mask[h] == expected, (t, h, np.flatnonzero(p))
    assert mask[0]
    # Turned off, only the episode's end masks; a clean source masks as before.
    off = ChunkDataset(src, horizon=horizon, mask_perturbed=False)[t]["action_mask"].numpy()
    np.testing.assert_array_equal(off, np.arange(t, t + horizon) < length)
    clean = ChunkDataset(PerturbedSource([length], [[]]), horizon=horizon)[t]["action_mask"].numpy()
    np.testing.assert_array_equal(clean, off)


def test_perturbed_steps_are_read_from_executed_actions(tmp_path):
    from flowvla.data.dataset import HDF5Source, perturbed_steps
    from flowvla.data.hdf5 import LiberoHDF5Writer

    a, s = episode_arrays(0, 9)
    executed = a.copy()
    executed[[2, 3, 7], 0] += 0.25
    path = tmp_path / "noisy.hdf5"
    with LiberoHDF5Writer(path, env_name="x", problem_info={"language_instruction": "x"}) as w:
        w.add_demo(actions=a, obs={"ee_states": s[:, :6]}, executed_actions=executed)
        w.add_demo(actions=a, obs={"ee_states": s[:, :6]})
    src = HDF5Source([path], image_keys=(), state_keys=("ee_states",))
    np.testing.assert_array_equal(np.flatnonzero(src.perturbed_steps(0)), [2, 3, 7])
    assert not src.perturbed_steps(1).any()
    sub = EpisodeSubset(src, [0])
    np.testing.assert_array_equal(sub.perturbed_steps(0), src.perturbed_steps(0))
    with pytest.raises(ValueError, match="executed has shape"):
        perturbed_steps(a, a[:3])
