"""One recorded expert episode as a LIBERO demonstration file: its observations rendered by
restoring each recorded state ([`render_episode`][flowvla.recipes.demo_files.render_episode]) and
written in LIBERO's HDF5 layout ([`write_demo`][flowvla.recipes.demo_files.write_demo])."""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any

import numpy as np

from flowvla.data.hdf5 import view_name
from flowvla.envs.libero import LiberoEnv
from flowvla.typing import Float, typechecked

__all__ = ["render_episode", "write_demo"]


@typechecked
def render_episode(
    env: LiberoEnv, states: Float[np.ndarray, "T D"], images: bool = True, image_stride: int = 1
) -> dict[str, np.ndarray]:
    """Observations of a recorded episode, rendered by restoring each state in turn.

    Args:
        env: the task's env; it renders with its own ``cameras``, ``image_size`` and ``depth``.
        states: ``[T, D]`` recorded simulator states.
        images: render views (else proprioception only).
        image_stride: render views at steps ``0, k, 2k, ...`` only (proprioception at every step).

    Returns:
        ``obs`` arrays for [`add_demo`][flowvla.data.hdf5.LiberoHDF5Writer.add_demo] (``<view>_rgb [T, H,
        W, 3]``, ``ee_states [T, 6]``, ``gripper_states [T, 2]``, ``joint_states [T, 7]``, with depth
        ``<view>_depth``, ``<view>_intrinsics``, ``<view>_extrinsics``) plus ``robot_states [T, 9]``.
    """
    cols: dict[str, list[np.ndarray]] = {}
    for t, s in enumerate(states):
        env.set_sim_state(s)
        p = env.proprio()
        row = {
            "ee_states": np.concatenate([p["eef_pos"], p["eef_axis_angle"]]),
            "gripper_states": p["gripper_qpos"],
            "joint_states": p["joint_pos"],
            "robot_states": np.concatenate([p["gripper_qpos"], p["eef_pos"], p["eef_quat"]]),
        }
        if images and t % image_stride == 0:
            obs = env.observe()
            for v, cam in enumerate(env.cameras):
                key = view_name(cam)
                row[f"{key}_rgb"] = obs["images"][v].transpose(1, 2, 0)
                if "depth" in obs:
                    row[f"{key}_depth"] = obs["depth"][v]
                    row[f"{key}_intrinsics"] = obs["intrinsics"][v]
                    row[f"{key}_extrinsics"] = obs["extrinsics"][v]
        for k, v in row.items():
            cols.setdefault(k, []).append(v)
    return {k: np.stack(v) for k, v in cols.items()}


@typechecked
def write_demo(
    path: str | os.PathLike,
    env: LiberoEnv,
    actions: Float[np.ndarray, "T 7"],
    states: Float[np.ndarray, "T D"],
    init_state: Float[np.ndarray, " D"],
    *,
    images: bool = True,
    attrs: dict[str, Any] | None = None,
    image_convention: str = "opengl",
    compression: str | None = None,
    image_stride: int = 1,
    executed_actions: Float[np.ndarray, "T 7"] | None = None,
) -> Path:
    """Render a recorded episode ([`render_episode`][flowvla.recipes.demo_files.render_episode]) and
    write it as a one-demo LIBERO HDF5 file.

    Args:
        path: the file to (over)write, atomically.
        env: the task's env, used for rendering and for the file's task attributes.
        actions: ``[T, 7]`` actions.
        states: ``[T, D]`` simulator state before each action.
        init_state: ``[D]`` the state the episode was reset to (the demo's ``init_state`` attr).
        images: render views (else proprioception only).
        attrs: extra attributes of the demo group.
        image_convention: how images are stored (see
            [`LiberoHDF5Writer`][flowvla.data.hdf5.LiberoHDF5Writer]).
        compression: h5py compression of images.
        image_stride: render views every ``k`` steps (see [`flowvla.data.hdf5`][flowvla.data.hdf5]).
        executed_actions: ``[T, 7]`` what the env executed, where noise made it differ from ``actions``.
    """
    from flowvla.data.hdf5 import LiberoHDF5Writer

    obs = render_episode(env, states, images=images, image_stride=image_stride)
    robot_states = obs.pop("robot_states")
    with LiberoHDF5Writer.for_env(
        path,
        _described_by_task_language(env),
        image_convention=image_convention,
        compression=compression,
        overwrite=True,
    ) as w:
        w.add_demo(
            actions=actions,
            obs=obs,
            states=states,
            robot_states=robot_states,
            model_file=env.model_xml(),
            init_state=init_state,
            attrs=attrs,
            image_stride=image_stride if images else 1,
            executed_actions=executed_actions,
        )
    return Path(path)


def _described_by_task_language(env: LiberoEnv) -> Any:
    """``env`` as [`for_env`][flowvla.data.hdf5.LiberoHDF5Writer.for_env] sees it, but with the task's
    benchmark instruction as ``language_instruction``.

    The BDDL text LIBERO puts in ``problem_info`` differs from the benchmark's task language (what
    evaluations, [`LiberoEnv`][flowvla.envs.libero.LiberoEnv] and LIBERO's own training code use) in 25 of
    the 40 standard tasks ("pick the akita black bowl ..." vs "pick up the black bowl ..."); a policy
    trained on the generated files must read the instruction it will be evaluated with.
    """
    info = {**env.problem_info, "language_instruction": env.instruction}
    return types.SimpleNamespace(env_kwargs=env.env_kwargs, problem_info=info, task=env.task)
