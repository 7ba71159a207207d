"""Watchable episode videos: the text band above the frames (pure), and (with LIBERO) one frame per
control step at the video's own size, the policy's observations untouched, written at 20 fps."""

from __future__ import annotations

import numpy as np
import pytest

from flowvla.envs.closed_loop import EpisodeRecord, caption_episode, outcome_text
from flowvla.envs.video import caption_frames

pytest.importorskip("PIL")


def _frames(n=3, h=64, w=128):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_a_caption_is_drawn_in_a_band_above_the_unchanged_frame():
    frames = _frames()
    out = caption_frames(frames, "put the bowl on the plate", [f"step {i}" for i in range(3)])
    band = out[0].shape[0] - 64
    assert band > 0 and all(o.shape == (64 + band, 128, 3) and o.dtype == np.uint8 for o in out)
    assert caption_frames(_frames(1, h=63), "x")[0].shape[0] % 2 == 0  # H.264 needs even sizes
    for raw, captioned in zip(frames, out, strict=True):
        np.testing.assert_array_equal(captioned[band:], raw)
    # Text was drawn: the band is not its plain background, and each frame's own line differs.
    blank = caption_frames(frames, "", None)[0]
    assert blank.shape[0] < out[0].shape[0]
    assert len(np.unique(out[0][:band].reshape(-1, 3), axis=0)) > 1
    assert not np.array_equal(out[0][:band], out[1][:band])


def test_a_long_instruction_wraps_into_more_lines_never_wider_than_the_frame():
    short = caption_frames(_frames(1), "open the drawer")[0]
    text = "put the white mug on the left plate and put the yellow and white mug on the right plate"
    long = caption_frames(_frames(1), text)[0]
    assert long.shape[1] == 128 and long.shape[0] > short.shape[0]


def test_bad_frames_are_refused_naming_the_problem():
    with pytest.raises(ValueError, match="empty"):
        caption_frames([], "x")
    with pytest.raises(ValueError, match="footers"):
        caption_frames(_frames(2), "x", ["only one"])
    with pytest.raises(ValueError, match="one shape"):
        caption_frames([*_frames(1), *_frames(1, h=32)], "x")


def _record(success, steps=7, outcome="missed_grasp"):
    return EpisodeRecord(
        suite="libero_goal", task_index=3, task_name="t", instruction="open the top drawer",
        init_state=0, seed=0, success=success, steps=steps, step_limit=300, replans=1,
        time_total=0, time_policy=0, time_render=0, time_physics=0, time_reset=0,
        outcome={"outcome": "success" if success else outcome},
    )  # fmt: skip


def test_the_caption_says_the_outcome_and_each_frames_step():
    assert outcome_text(_record(True)) == "success at step 7"
    assert outcome_text(_record(False, outcome="not_opened")) == "failure: not_opened (7 steps)"
    # Every 3rd step rendered, the last step always: frames after steps 3, 6 and 7.
    frames = caption_episode(_frames(3), _record(False), every=3)
    assert len(frames) == 3
    assert len(frames) == 3 and len({f.shape for f in frames}) == 1
    band = frames[0].shape[0] - 64
    same = [np.full((64, 128, 3), 7, np.uint8)] * 3  # the same picture: only the step line differs
    bands = [f[:band] for f in caption_episode(same, _record(False), every=3)]
    assert not np.array_equal(bands[1], bands[2]) and not np.array_equal(bands[0], bands[1])


@pytest.mark.libero
def test_every_control_step_is_one_captioned_frame_at_the_video_size(libero_ready, tmp_path):
    import imageio.v2 as imageio

    from flowvla.envs.libero import LiberoEnv
    from flowvla.envs.rollout import ConstantPolicy, RolloutConfig, run_episode, simulate_episode

    cfg = RolloutConfig(
        suite="libero_object", tasks=[0], init_states=[0], max_steps=6, replan_every=4, image_size=32,
        video="first", video_size=256, out_dir=str(tmp_path), progress=False,
    )  # fmt: skip
    seen = []

    class Recording(ConstantPolicy):
        def predict_action(self, batch, **kw):
            seen.append(batch["images"].shape)
            return np.zeros((1, 4, 7)), {}

    with LiberoEnv("libero_object", 0, image_size=32) as env:
        rec, frames = run_episode(env, Recording(), cfg, 0, record_video=True)
    assert rec.steps == 6 and len(frames) == rec.steps  # one frame per control step
    assert all(f.shape == (256, 2 * 256, 3) for f in frames)  # agentview beside the wrist view
    assert all(s[-2:] == (32, 32) for s in seen)  # the policy still sees its own size
    assert rec.time_video > 0
    captioned = caption_episode(frames, rec)
    band = captioned[0].shape[0] - 256
    np.testing.assert_array_equal(captioned[-1][band:], frames[-1])
    assert not np.array_equal(captioned[-1][:band], np.full_like(captioned[-1][:band], 24))
    # The evaluation's episode writes it at the simulator's 20 Hz.
    rec = simulate_episode(Recording(), cfg, 0, 0)
    reader = imageio.get_reader(rec.video)
    assert reader.get_meta_data()["fps"] == pytest.approx(20.0)
    assert sum(1 for _ in reader) == rec.steps
