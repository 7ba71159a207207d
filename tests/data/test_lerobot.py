"""LeRobot layout: v2.1 with images in parquet rows, v3.0 with one MP4 for many episodes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("PIL")

from flowvla.data.dataset import ChunkDataset
from flowvla.data.lerobot import LeRobotSource

from .helpers import (
    episode_arrays,
    stored_rot180,
    upright_frames,
    write_lerobot_v21,
    write_lerobot_v30_video,
)


def test_v21_images_in_parquet(tmp_path):
    write_lerobot_v21(tmp_path, [4, 6, 3], ["pick the bowl", "open the drawer"])
    src = LeRobotSource(tmp_path, image_convention="upright_mirrored")  # a LIBERO port's storage
    assert (
        src.image_keys == ["image", "wrist_image"]
        and src.state_key == "state"
        and src.action_key == "actions"
    )
    assert len(src) == 3 and [src.episode_length(e) for e in range(3)] == [4, 6, 3]
    assert [src.instruction(e) for e in range(3)] == ["pick the bowl", "open the drawer", "pick the bowl"]
    for e, n in enumerate([4, 6, 3]):
        a, s = episode_arrays(e, n)
        np.testing.assert_allclose(src.actions(e), a, rtol=1e-6)  # rows were stored reversed
        np.testing.assert_allclose(src.states(e), s, rtol=1e-6)
        for t in (0, n - 1):
            img = src.images(e, t)
            assert img.shape == (2, 3, 12, 16)
            np.testing.assert_array_equal(img[0].transpose(1, 2, 0), upright_frames(e, n, view=0)[t])
            np.testing.assert_array_equal(img[1].transpose(1, 2, 0), upright_frames(e, n, view=1)[t])
    item = ChunkDataset(src, horizon=8)[5]
    assert item["action_mask"].tolist() == [True, True, True, True, True, False, False, False]


def test_v30_video(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    lengths = [5, 7]
    write_lerobot_v30_video(tmp_path, lengths, ["stack the blocks"])
    src = LeRobotSource(tmp_path, image_convention="upright_mirrored")
    assert src.version == "v3.0" and src.image_keys == ["observation.images.image"]
    assert src.instruction(1) == "stack the blocks"
    for e, n in enumerate(lengths):
        frames = np.stack([src.images(e, t)[0] for t in range(n)]).astype(int)  # [T, 3, H, W]
        red = frames[:, 0, 16, 24]
        np.testing.assert_allclose(red, (40 + 20 * e + 8 * np.arange(n)) % 200, atol=6)  # lossy coding
        # Upright: the green marker is at the top-left after undoing the 180-degree storage.
        assert frames[:, 1, 2, 2].min() > 200 and frames[:, 1, 29, 29].max() < 60


def test_missing_pieces_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"info\.json"):
        LeRobotSource(tmp_path)
    write_lerobot_v21(tmp_path / "d", [2], ["x"])
    with pytest.raises(KeyError, match="state_key"):
        LeRobotSource(tmp_path / "d", state_key="observation.state")
    with pytest.raises(KeyError, match="image"):
        LeRobotSource(tmp_path / "d", image_keys=["state"])
    with pytest.raises(ValueError, match="image_convention"):
        LeRobotSource(tmp_path / "d", image_convention="upside")


def test_default_reads_images_as_stored(tmp_path):
    """An ordinary dataset is never flipped behind the user's back: the default is the stored pixels."""
    write_lerobot_v21(tmp_path, [3], ["pick the bowl"])
    stored = stored_rot180(upright_frames(0, 3, 12, 16, 0))
    assert LeRobotSource(tmp_path).image_convention == "opencv"
    np.testing.assert_array_equal(LeRobotSource(tmp_path).images(0, 1)[0].transpose(1, 2, 0), stored[1])


def test_renamed_convention_warns_and_means_mirrored(tmp_path):
    write_lerobot_v21(tmp_path, [3], ["pick the bowl"])
    with pytest.warns(DeprecationWarning, match="upright_mirrored"):
        old = LeRobotSource(tmp_path, image_convention="opengl_rot180")
    new = LeRobotSource(tmp_path, image_convention="upright_mirrored")
    np.testing.assert_array_equal(old.images(0, 2), new.images(0, 2))


@pytest.mark.parametrize("convention", ["opencv", "opengl", "upright_mirrored", "rotated_180"])
def test_every_convention_round_trips(convention):
    """Storing an upright picture in a convention and reading it back gives the picture again."""
    from flowvla.data.hdf5 import _from_upright, to_upright

    img = upright_frames(0, 2, 12, 16, 0)
    assert np.array_equal(to_upright(_from_upright(img, convention), convention), img)
    if convention != "opencv":  # every other convention really moves pixels (the frames are asymmetric)
        assert not np.array_equal(_from_upright(img, convention), img)
