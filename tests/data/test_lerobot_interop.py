"""LeRobot datasets both ways, checked against the real ``lerobot`` package (v3.0, lerobot 0.4.4).

1. ``lerobot``'s own writer (``LeRobotDataset.create`` / ``add_frame`` / ``save_episode`` /
   ``finalize``), with views stored as video and as images: flowvla's ``LeRobotSource`` reads the
   episodes, frames, values, tasks per frame and timestamps that were written, and the pixels that
   ``lerobot``'s own ``LeRobotDataset`` decodes, in the same orientation.
2. flowvla's writer (``export_lerobot``): ``lerobot``'s ``LeRobotDataset`` loads what it writes.

The frames are asymmetric blocks (``helpers.block_frames``), so a flip or a rotation is a large error.
These tests need ``lerobot``, which brings its own torch; CI runs them in a virtualenv of their own
(``.ci/run``, step "lerobot"). Nothing here reaches the network: every dataset lives under ``tmp_path``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("lerobot")
pytest.importorskip("av")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local root must never fall back to the hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from lerobot.datasets.lerobot_dataset import LeRobotDataset

from flowvla.data.dataset import ChunkDataset
from flowvla.data.lerobot import LeRobotSource
from flowvla.data.lerobot_export import export_lerobot, main

from .helpers import BlockSource, write_official_hdf5

FPS = 10
LENGTHS = [12, 5, 7]
VIEWS = ["observation.images.front", "observation.images.wrist"]
REPO = "flowvla/interop"  # a name only: root= is always given


def lerobot_decoder() -> str:
    """lerobot's default video backend where it works here (torchcodec needs FFmpeg's shared
    libraries), else its PyAV backend."""
    try:
        import torchcodec.decoders  # noqa: F401

        return "torchcodec"
    except Exception:
        return "pyav"


def write_with_lerobot(root, storage: str, vcodec: str, h: int, w: int, block: int) -> BlockSource:
    """Episodes of ``BlockSource`` (task changes at frame 10) written by lerobot's recording API."""
    src = BlockSource(LENGTHS, switch=10, h=h, w=w, block=block)
    feats = {
        k: {"dtype": storage, "shape": (h, w, 3), "names": ["height", "width", "channels"]} for k in VIEWS
    }
    feats["observation.state"] = {"dtype": "float32", "shape": (8,), "names": None}
    feats["action"] = {"dtype": "float32", "shape": (7,), "names": None}
    ds = LeRobotDataset.create(
        REPO, fps=FPS, features=feats, root=root, use_videos=storage == "video", vcodec=vcodec,
        video_backend=lerobot_decoder(),
    )  # fmt: skip
    for e, n in enumerate(LENGTHS):
        actions, states, tasks = src.actions(e), src.states(e), src.frame_instructions(e)
        for t in range(n):
            views = src.images(e, t).transpose(0, 2, 3, 1)  # [V, H, W, 3], as a camera gives them
            frame = {k: views[i] for i, k in enumerate(VIEWS)}
            frame.update({"observation.state": states[t], "action": actions[t], "task": tasks[t]})
            ds.add_frame(frame)
        ds.save_episode(parallel_encoding=False)
    ds.finalize()
    return src


# (storage, lerobot's encoder, frame size, block size): lerobot's default AV1 wants 64 px or more.
CASES = {
    "video-av1": ("video", "libsvtav1", 64, 96, 16),
    "video-h264": ("video", "h264", 32, 48, 8),
    "image": ("image", "libsvtav1", 32, 48, 8),
}


@pytest.fixture(scope="module", params=list(CASES))
def written(request, tmp_path_factory):
    storage, vcodec, h, w, block = CASES[request.param]
    root = tmp_path_factory.mktemp(request.param) / "ds"
    src = write_with_lerobot(root, storage, vcodec, h, w, block)
    return request.param, root, src


def assert_close_frames(got: np.ndarray, want: np.ndarray, lossless: bool) -> None:
    err = np.abs(got.astype(int) - want.astype(int))
    if lossless:
        assert err.max() == 0
    else:  # coding noise moves a pixel by a few levels; a flip, a rotation or a wrong frame by tens
        # (lerobot encodes at crf 30: a mean error of 3-4 levels)
        assert err.mean() < 5 and err[..., 2, :, :].mean() < 10 and np.percentile(err, 99) < 30, err.mean()


def test_flowvla_reads_what_lerobot_wrote(written):
    case, root, src = written
    lr = LeRobotSource(root)
    assert lr.version == "v3.0" and lr.image_keys == VIEWS
    assert lr.state_key == "observation.state" and lr.action_key == "action"
    assert len(lr) == len(LENGTHS) and [lr.episode_length(e) for e in range(len(lr))] == LENGTHS
    for e, n in enumerate(LENGTHS):
        np.testing.assert_array_equal(lr.actions(e), src.actions(e))
        np.testing.assert_array_equal(lr.states(e), src.states(e))
        np.testing.assert_allclose(lr.timestamps(e), np.arange(n) / FPS, atol=1e-6)
        assert lr.frame_instructions(e) == src.frame_instructions(e)
        for t in range(n):
            assert_close_frames(lr.images(e, t), src.images(e, t), lossless=case == "image")
    # The task changes at frame 10 of episode 0: its item 11 carries the second task.
    ds = ChunkDataset(lr, horizon=4)
    assert ds[9]["instruction"] == "pick block 0" and ds[11]["instruction"] == "put it down"


def test_flowvla_decodes_as_lerobot_does(written):
    case, root, _ = written
    ours = LeRobotSource(root)
    theirs = LeRobotDataset(REPO, root=root, video_backend=lerobot_decoder())
    assert len(theirs) == sum(LENGTHS) and theirs.num_episodes == len(LENGTHS)
    for i in np.random.default_rng(0).permutation(len(theirs)):  # shuffled: random access both sides
        item = theirs[int(i)]
        e, t = int(item["episode_index"]), int(item["frame_index"])
        assert item["task"] == ours.frame_instructions(e)[t]
        np.testing.assert_array_equal(item["action"].numpy(), ours.actions(e)[t])
        np.testing.assert_array_equal(item["observation.state"].numpy(), ours.states(e)[t])
        assert float(item["timestamp"]) == pytest.approx(ours.timestamps(e)[t], abs=1e-6)
        views = ours.images(e, t)
        for v, key in enumerate(VIEWS):
            pixels = (item[key].numpy() * 255).round().astype(int)  # [3, H, W] float in [0, 1]
            # Same file, same frame: equal up to the colour conversion of the decoder.
            assert np.abs(pixels - views[v]).max() <= (0 if case == "image" else 3)


@pytest.mark.parametrize("codec", ["libx264", "libsvtav1"])
def test_lerobot_reads_what_flowvla_wrote(tmp_path, codec):
    size = {"libx264": (32, 48, 8), "libsvtav1": (64, 96, 16)}[codec]
    src = BlockSource([12, 6], switch=10, h=size[0], w=size[1], block=size[2])
    export_lerobot(src, tmp_path / "ds", fps=FPS, codec=codec)
    ds = LeRobotDataset(REPO, root=tmp_path / "ds", video_backend=lerobot_decoder())
    assert len(ds) == 18 and ds.num_episodes == 2 and ds.fps == FPS
    assert ds.meta.video_keys == ["observation.images.image", "observation.images.wrist_image"]
    assert ds.meta.total_tasks == 3 and ds.meta.stats["action"]["mean"].shape == (7,)
    ours = LeRobotSource(tmp_path / "ds")
    for i in range(len(ds)):
        item = ds[i]
        e, t = int(item["episode_index"]), int(item["frame_index"])
        assert item["task"] == src.frame_instructions(e)[t]
        np.testing.assert_array_equal(item["action"].numpy(), src.actions(e)[t])
        np.testing.assert_array_equal(item["observation.state"].numpy(), src.states(e)[t])
        assert float(item["timestamp"]) == pytest.approx(t / FPS, abs=1e-6)
        for v, key in enumerate(ds.meta.video_keys):
            pixels = (item[key].numpy() * 255).round().astype(int)
            assert_close_frames(pixels, src.images(e, t)[v], lossless=False)
            assert np.abs(pixels - ours.images(e, t)[v]).max() <= 3


def test_lerobot_reads_exported_hdf5_demonstrations(tmp_path):
    write_official_hdf5(tmp_path / "a.hdf5", [4, 6], instruction="open the drawer", h=32, w=48)
    assert main([str(tmp_path / "a.hdf5"), str(tmp_path / "ds"), "--no-progress"]) == 0
    ds = LeRobotDataset(REPO, root=tmp_path / "ds", video_backend=lerobot_decoder())
    assert len(ds) == 10 and ds.num_episodes == 2 and ds.fps == 20
    assert {ds[i]["task"] for i in range(len(ds))} == {"open the drawer"}
    assert tuple(ds[0]["observation.images.agentview_rgb"].shape) == (3, 32, 48)
