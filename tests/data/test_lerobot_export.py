"""flowvla's LeRobot v3.0 writer, read back by LeRobotSource: counts, values, tasks per frame, pixels,
orientation, random access. (tests/lerobot/ checks the same files with lerobot's own reader.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("pyarrow")
pytest.importorskip("av")

from flowvla.data.dataset import ChunkDataset, HDF5Source
from flowvla.data.lerobot import LeRobotSource
from flowvla.data.lerobot_export import export_lerobot, main

from .helpers import BlockSource, block_frames, episode_arrays, write_official_hdf5


def assert_close_frames(got: np.ndarray, want: np.ndarray) -> None:
    """Lossy coding moves a pixel by a few levels; a flip or a wrong frame by tens."""
    err = np.abs(got.astype(int) - want.astype(int))
    assert err.mean() < 3 and err[..., 2, :, :].mean() < 6 and np.percentile(err, 99) < 16, err.mean()


def test_round_trip_values_tasks_pixels(tmp_path):
    src = BlockSource([12, 5], switch=10)
    export_lerobot(src, tmp_path / "d", fps=10)
    lr = LeRobotSource(tmp_path / "d")
    assert lr.version == "v3.0" and lr.fps == 10
    assert lr.image_keys == ["observation.images.image", "observation.images.wrist_image"]
    assert len(lr) == 2 and [lr.episode_length(e) for e in range(2)] == [12, 5]
    for e, n in enumerate([12, 5]):
        np.testing.assert_array_equal(lr.actions(e), episode_arrays(e, n)[0].astype(np.float32))
        np.testing.assert_array_equal(lr.states(e), episode_arrays(e, n)[1].astype(np.float32))
        np.testing.assert_allclose(lr.timestamps(e), np.arange(n) / 10, atol=1e-6)
        assert lr.frame_instructions(e) == src.frame_instructions(e)
        for t in range(n):
            assert_close_frames(lr.images(e, t), src.images(e, t))
    # The task changes at frame 10: item 15 (episode 0, frame 10+) carries the second one.
    ds = ChunkDataset(lr, horizon=4)
    assert ds[5]["instruction"] == "pick block 0" and ds[10]["instruction"] == "put it down"
    info = json.loads((tmp_path / "d" / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 2 and info["total_frames"] == 17 and info["total_tasks"] == 3
    assert info["features"]["observation.images.image"]["info"]["video.codec"] == "h264"


def test_item_15_gets_the_second_task(tmp_path):
    export_lerobot(BlockSource([20], switch=10), tmp_path / "d", fps=10)
    ds = ChunkDataset(LeRobotSource(tmp_path / "d"), horizon=4)
    assert ds[15]["instruction"] == "put it down" and ds[9]["instruction"] == "pick block 0"
    names, ids = ds.item_tasks()
    assert [names[i] for i in ids[[0, 9, 10, 15]]] == ["pick block 0"] * 2 + ["put it down"] * 2


@settings(max_examples=4, deadline=None)
@given(data=st.data())
def test_shuffled_reads_equal_in_order_reads(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("d") / "d"
    export_lerobot(BlockSource([9, 6, 7]), root, fps=10, gop=data.draw(st.sampled_from([1, 2, 5])))
    keys = [(e, t) for e, n in enumerate([9, 6, 7]) for t in range(n)]
    in_order = LeRobotSource(root)
    want = {k: in_order.images(*k) for k in keys}
    shuffled = LeRobotSource(root, cache_bytes=data.draw(st.sampled_from([0, 3000, 10**8])))
    for k in data.draw(st.permutations(keys)):
        np.testing.assert_array_equal(shuffled.images(*k), want[k])
        assert shuffled._frames.size <= shuffled.cache_bytes


def test_hdf5_demonstrations_export(tmp_path):
    write_official_hdf5(tmp_path / "a.hdf5", [4, 6], instruction="open the drawer", h=32, w=48)
    hdf5 = HDF5Source([tmp_path / "a.hdf5"])
    assert main([str(tmp_path / "a.hdf5"), str(tmp_path / "d"), "--no-progress"]) == 0
    lr = LeRobotSource(tmp_path / "d")
    assert lr.fps == 20 and lr.image_keys == [
        "observation.images.agentview_rgb",
        "observation.images.eye_in_hand_rgb",
    ]
    assert [lr.episode_length(e) for e in range(2)] == [4, 6]
    assert lr.frame_instructions(1) == ["open the drawer"] * 6
    np.testing.assert_array_equal(lr.states(1), hdf5.states(1))
    # The helper's frames are pixel-fine patterns (not video-friendly): check orientation only.
    got, want = lr.images(1, 3).astype(int), hdf5.images(1, 3).astype(int)
    assert np.abs(got - want).mean() < np.abs(got - want[..., ::-1, :]).mean() / 3


def test_strided_views_hold_the_latest_render(tmp_path):
    class Strided(BlockSource):
        def observed_steps(self, e):
            return np.arange(0, self.lengths[e], 3)

        def images(self, e, t):
            assert t % 3 == 0
            return super().images(e, t)

    export_lerobot(Strided([7]), tmp_path / "d", fps=10)
    lr = LeRobotSource(tmp_path / "d")
    frames = block_frames(0, 7, view=0)
    for t in range(7):
        assert_close_frames(lr.images(0, t)[0], frames[t - t % 3].transpose(2, 0, 1))


def test_bad_arguments_are_named(tmp_path, capsys):
    export_lerobot(BlockSource([2]), tmp_path / "d", fps=10)
    with pytest.raises(FileExistsError, match="overwrite"):
        export_lerobot(BlockSource([2]), tmp_path / "d", fps=10)
    export_lerobot(BlockSource([3]), tmp_path / "d", fps=10, overwrite=True)
    assert LeRobotSource(tmp_path / "d").episode_length(0) == 3
    with pytest.raises(ValueError, match="fps"):
        export_lerobot(BlockSource([2]), tmp_path / "e")
    with pytest.raises(ValueError, match="fps"):
        export_lerobot(BlockSource([2]), tmp_path / "e", fps=7.5)
    with pytest.raises(ValueError, match="even"):
        export_lerobot(BlockSource([2], h=31), tmp_path / "e", fps=10)
    with pytest.raises(ValueError, match="codec"):
        export_lerobot(BlockSource([2]), tmp_path / "e", fps=10, codec="nope")
    assert not (tmp_path / "e").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    assert main([str(tmp_path / "missing.hdf5"), str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowvla-export-lerobot: error:") and err.count("\n") == 1
    with pytest.raises(ValueError, match="cache_bytes"):
        LeRobotSource(tmp_path / "d", cache_bytes=-1)
