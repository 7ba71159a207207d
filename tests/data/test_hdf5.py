"""LIBERO HDF5 layout: reading official-style files, writer round trip, atomicity, merging."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

h5py = pytest.importorskip("h5py")

from flowvla.data.hdf5 import LiberoHDF5Reader, LiberoHDF5Writer, merge_hdf5, to_upright  # noqa: E402

from .helpers import episode_arrays, upright_frames, write_official_hdf5  # noqa: E402


def test_reads_official_layout_upright(tmp_path):
    path = tmp_path / "task_demo.hdf5"
    write_official_hdf5(path, [5, 3])
    r = LiberoHDF5Reader(path)
    assert len(r) == 2 and [r.episode_length(i) for i in range(2)] == [5, 3]
    assert r.instruction == "put the bowl on the plate"
    assert r.image_convention == "opengl"
    img = r.images(1, 2)
    assert img.shape == (2, 3, 12, 16) and img.dtype == np.uint8
    # Upright: row index grows downwards in channel 1, column index rightwards in channel 2.
    np.testing.assert_array_equal(img[0].transpose(1, 2, 0), upright_frames(1, 3, view=0)[2])
    np.testing.assert_array_equal(img[1].transpose(1, 2, 0), upright_frames(1, 3, view=1)[2])
    actions, states = episode_arrays(1, 3)
    np.testing.assert_allclose(r.actions(1), actions, rtol=1e-6)
    np.testing.assert_allclose(r.states(1), states, rtol=1e-6)
    assert r.geometry(0, 0) is None


def test_demo_order_is_numeric(tmp_path):
    path = tmp_path / "f.hdf5"
    write_official_hdf5(path, [2] * 12)
    assert LiberoHDF5Reader(path).demos[:4] == ["demo_0", "demo_1", "demo_2", "demo_3"]


def test_missing_obs_key_is_named(tmp_path):
    path = tmp_path / "f.hdf5"
    write_official_hdf5(path, [2])
    with pytest.raises(KeyError, match="wrist"):
        LiberoHDF5Reader(path, image_keys=("agentview_rgb", "wrist"))


@pytest.mark.parametrize("convention", ["opengl", "opencv"])
def test_writer_round_trip(tmp_path, convention):
    path = tmp_path / "out.hdf5"
    rng = np.random.default_rng(0)
    lengths = [4, 6]
    with LiberoHDF5Writer(
        path,
        env_name="Libero_Kitchen",
        problem_info={"language_instruction": "open it", "problem_name": "p", "domain_name": "d"},
        env_args={"type": 1},
        image_convention=convention,
    ) as w:
        for e, n in enumerate(lengths):
            actions, states = episode_arrays(e, n)
            depth = rng.uniform(0.5, 2.0, size=(n, 12, 16)).astype(np.float32)
            w.add_demo(
                actions=actions,
                states=np.arange(n * 5.0).reshape(n, 5),
                model_file="<mujoco/>",
                obs={
                    "agentview_rgb": upright_frames(e, n),
                    "eye_in_hand_rgb": upright_frames(e, n, view=1),
                    "ee_states": states[:, :6],
                    "gripper_states": states[:, 6:],
                    "agentview_depth": depth,
                    "eye_in_hand_depth": depth + 1,
                    "agentview_intrinsics": np.tile(np.eye(3), (n, 1, 1)),
                    "eye_in_hand_intrinsics": np.tile(np.eye(3), (n, 1, 1)),
                    "agentview_extrinsics": np.tile(np.eye(4), (n, 1, 1)),
                    "eye_in_hand_extrinsics": np.tile(np.eye(4), (n, 1, 1)),
                },
                attrs={"seed": e},
            )
    r = LiberoHDF5Reader(path)
    assert r.instruction == "open it" and r.image_convention == convention
    assert r.attrs["num_demos"] == 2 and r.attrs["total"] == sum(lengths)
    for e, n in enumerate(lengths):
        actions, states = episode_arrays(e, n)
        np.testing.assert_array_equal(r.actions(e), actions.astype(np.float32))
        np.testing.assert_array_equal(r.states(e), states.astype(np.float32))
        np.testing.assert_array_equal(
            r.images(e, slice(None))[:, 0].transpose(0, 2, 3, 1), upright_frames(e, n)
        )
        geo = r.geometry(e, n - 1)
        assert geo is not None and geo["depth"].shape == (2, 12, 16)
        np.testing.assert_allclose(geo["depth"][1] - geo["depth"][0], 1.0, rtol=1e-6)
        attrs = r.demo_attrs(e)
        assert attrs["num_samples"] == n and attrs["seed"] == e
        np.testing.assert_array_equal(attrs["init_state"], np.arange(5.0))
        obs = r.obs(e)
        np.testing.assert_array_equal(obs["ee_pos"], states[:, :3])  # derived like LIBERO's files
        with h5py.File(path) as f:
            d = f[f"data/demo_{e}"]
            assert d["dones"][-1] == 1 and d["dones"][:-1].sum() == 0
            stored = d["obs/agentview_rgb"][()]
        expected = upright_frames(e, n)[:, ::-1] if convention == "opengl" else upright_frames(e, n)
        np.testing.assert_array_equal(stored, expected)


def test_writer_is_atomic_on_error(tmp_path):
    path = tmp_path / "out.hdf5"
    with pytest.raises(ValueError, match="steps but actions"):
        with LiberoHDF5Writer(path, env_name="x", problem_info={"language_instruction": "x"}) as w:
            a, s = episode_arrays(0, 3)
            w.add_demo(actions=a, obs={"ee_states": s[:2, :6]})
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_writer_rejects_bad_input(tmp_path):
    w = LiberoHDF5Writer(tmp_path / "o.hdf5", env_name="x", problem_info={"language_instruction": "x"})
    a, _ = episode_arrays(0, 3)
    with pytest.raises(ValueError, match="agentview_rgb"):
        w.add_demo(actions=a, obs={"agentview_rgb": np.zeros((3, 3, 8, 8), np.uint8)})
    with pytest.raises(ValueError, match="NaN"):
        w.add_demo(actions=np.full((3, 7), np.nan), obs={})
    w.abort()
    assert not (tmp_path / "o.hdf5").exists()
    with pytest.raises(FileExistsError):
        (tmp_path / "exists.hdf5").write_text("x")
        LiberoHDF5Writer(tmp_path / "exists.hdf5", env_name="x", problem_info={"language_instruction": "x"})


def test_merge_renumbers_and_keeps_everything(tmp_path):
    parts = []
    for k in range(3):
        p = tmp_path / f"part{k}.hdf5"
        with LiberoHDF5Writer(p, env_name="x", problem_info={"language_instruction": "x"}) as w:
            for e in range(k + 1):
                a, s = episode_arrays(10 * k + e, 2 + e)
                w.add_demo(actions=a, obs={"ee_states": s[:, :6], "gripper_states": s[:, 6:]})
        parts.append(p)
    out = merge_hdf5(parts, tmp_path / "all.hdf5")
    r = LiberoHDF5Reader(out, image_keys=())
    assert len(r) == 6 and r.attrs["num_demos"] == 6 and r.attrs["total"] == 2 + 2 + 3 + 2 + 3 + 4
    firsts = [r.actions(i)[0, 0] for i in range(6)]
    assert firsts == [0, 10, 11, 20, 21, 22]


def test_merge_refuses_mixed_tasks(tmp_path):
    for k, lang in enumerate(["a", "b"]):
        with LiberoHDF5Writer(
            tmp_path / f"{k}.hdf5", env_name="x", problem_info={"language_instruction": lang}
        ) as w:
            w.add_demo(actions=np.zeros((2, 7)), obs={})
    with pytest.raises(ValueError, match="problem_info"):
        merge_hdf5([tmp_path / "0.hdf5", tmp_path / "1.hdf5"], tmp_path / "m.hdf5")
    assert not (tmp_path / "m.hdf5").exists()


def test_to_upright_conventions_are_involutions():
    img = upright_frames(0, 1)[0]
    for conv in ("opengl", "opencv", "upright_mirrored", "rotated_180"):
        np.testing.assert_array_equal(to_upright(to_upright(img, conv), conv), img)
    # The OpenVLA/LeRobot ports store raw[::-1, ::-1]; raw is upright[::-1].
    np.testing.assert_array_equal(to_upright(img[::-1][::-1, ::-1], "upright_mirrored"), img)
    # An upright picture turned upside down.
    np.testing.assert_array_equal(to_upright(img[::-1, ::-1], "rotated_180"), img)
    with pytest.raises(ValueError, match="convention"):
        to_upright(img, "sideways")


def test_problem_info_is_json(tmp_path):
    path = tmp_path / "o.hdf5"
    with LiberoHDF5Writer(path, env_name="x", problem_info={"language_instruction": "go"}) as w:
        w.add_demo(actions=np.zeros((1, 7)), obs={})
    with h5py.File(path) as f:
        assert json.loads(f["data"].attrs["problem_info"])["language_instruction"] == "go"


def test_find_demo_files_reads_each_demonstration_once(tmp_path):
    """A generator folder holds merged files beside their attempt files: only the merged ones count."""
    from flowvla.data.hdf5 import find_demo_files

    from .helpers import write_official_hdf5

    suite = tmp_path / "gen" / "libero_object"
    for task in ("pick_a", "pick_b"):
        (suite / task).mkdir(parents=True)
        for k in range(2):
            write_official_hdf5(suite / task / f"attempt_{k:06d}.hdf5", [3])
    write_official_hdf5(suite / "pick_a_demo.hdf5", [3, 3])  # pick_b is still being generated
    found = find_demo_files([tmp_path / "gen"])
    names = sorted(f"{f.parent.name}/{f.name}" for f in found)
    assert names == [
        "libero_object/pick_a_demo.hdf5",
        "pick_b/attempt_000000.hdf5",
        "pick_b/attempt_000001.hdf5",
    ]
    # The same file named twice (folder and file) is still read once.
    assert len(find_demo_files([tmp_path / "gen", suite / "pick_a_demo.hdf5"])) == 3
    with pytest.raises(FileNotFoundError, match="paths"):
        find_demo_files([tmp_path / "nothing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \.hdf5"):
        find_demo_files([tmp_path / "empty"])


@settings(deadline=None, max_examples=12)
@given(lengths=st.lists(st.integers(1, 9), min_size=1, max_size=3), stride=st.integers(1, 4))
def test_image_stride_items_are_the_rendered_steps_with_full_rate_actions(tmp_path_factory, lengths, stride):
    """Views rendered every k steps: items exist exactly at those steps, their views are the frames
    rendered there, and their action chunks still come from every step."""
    from flowvla.data.dataset import ChunkDataset, HDF5Source

    path = tmp_path_factory.mktemp("stride") / "s.hdf5"
    with LiberoHDF5Writer(path, env_name="x", problem_info={"language_instruction": "go"}) as w:
        for e, n in enumerate(lengths):
            actions, states = episode_arrays(e, n)
            frames = upright_frames(e, n)[::stride]
            w.add_demo(
                actions=actions,
                obs={
                    "agentview_rgb": frames,
                    "eye_in_hand_rgb": frames,
                    "ee_states": states[:, :6],
                    "gripper_states": states[:, 6:],
                },
                image_stride=stride,
            )
    reader = LiberoHDF5Reader(path)
    for preload in (False, True):
        ds = ChunkDataset(HDF5Source([path], preload=preload), horizon=3)
        assert len(ds) == sum(-(-n // stride) for n in lengths)
        for index in range(len(ds)):
            e, t = ds.locate(index)
            assert t % stride == 0 and t in reader.observed_steps(e)
            item = ds[index]
            np.testing.assert_array_equal(
                item["images"][0].numpy().transpose(1, 2, 0), upright_frames(e, lengths[e])[t]
            )
            actions, _ = episode_arrays(e, lengths[e])
            np.testing.assert_array_equal(item["actions"][0].numpy(), actions[t].astype(np.float32))
    if stride > 1 and max(lengths) > 1:
        e = int(np.argmax(lengths))
        with pytest.raises(IndexError, match="rendered every"):
            reader.images(e, 1)


def test_strided_views_must_have_one_frame_per_rendered_step(tmp_path):
    actions, _states = episode_arrays(0, 7)
    w = LiberoHDF5Writer(tmp_path / "o.hdf5", env_name="x", problem_info={"language_instruction": "x"})
    with pytest.raises(ValueError, match="ceil"):
        w.add_demo(actions=actions, obs={"agentview_rgb": upright_frames(0, 7)}, image_stride=3)
    with pytest.raises(ValueError, match="image_stride"):
        w.add_demo(actions=actions, obs={}, image_stride=0)
    w.abort()


def test_executed_actions_round_trip_and_survive_a_merge(tmp_path):
    """Demonstrations recorded with injected noise keep the clean labels as ``actions`` and what the
    simulator ran as ``executed_actions``; files without them replay their ``actions``."""
    parts = []
    for k in range(2):
        p = tmp_path / f"part{k}.hdf5"
        a, s = episode_arrays(k, 5)
        executed = a + 0.5 if k == 0 else None
        with LiberoHDF5Writer(p, env_name="x", problem_info={"language_instruction": "x"}) as w:
            w.add_demo(actions=a, obs={"ee_states": s[:, :6]}, executed_actions=executed)
        parts.append(p)
    r = LiberoHDF5Reader(merge_hdf5(parts, tmp_path / "all.hdf5"), image_keys=(), state_keys=("ee_states",))
    a0, _ = episode_arrays(0, 5)
    a1, _ = episode_arrays(1, 5)
    np.testing.assert_allclose(r.actions(0), a0, rtol=1e-6)
    np.testing.assert_allclose(r.executed_actions(0), a0 + 0.5, rtol=1e-6)
    np.testing.assert_allclose(r.executed_actions(1), a1, rtol=1e-6)
    w = LiberoHDF5Writer(tmp_path / "o.hdf5", env_name="x", problem_info={"language_instruction": "x"})
    with pytest.raises(ValueError, match="executed_actions"):
        w.add_demo(actions=a0, obs={}, executed_actions=a0[:3])
    w.abort()
