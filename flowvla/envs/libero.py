"""LIBERO tasks as environments that speak flowvla's batch contract, rendering only on demand.

A LIBERO step at 20 Hz costs about 6 ms of physics but 40-150 ms per camera to render with a
software renderer, so [`LiberoEnv`][flowvla.envs.libero.LiberoEnv] never renders inside
[`LiberoEnv.step`][flowvla.envs.libero.LiberoEnv.step]: a policy that executes an action chunk asks for pixels
with [`LiberoEnv.observe`][flowvla.envs.libero.LiberoEnv.observe] only when it re-plans. The images it returns
are pixel-identical to the ``agentview_image`` / ``robot0_eye_in_hand_image`` observations of LIBERO's
``OffScreenRenderEnv``, made upright (``raw[::-1]``).

Observation (one environment, unbatched; [`flowvla.data.batch.collate`][flowvla.data.batch.collate] stacks
them):

| key | shape / type | meaning |
|---|---|---|
| ``images`` | ``[V, 3, H, W]`` uint8 | upright RGB, views in ``cameras`` order |
| ``instruction`` | ``str`` | the task's language instruction |
| ``state`` | ``[8]`` float32 | eef position (m), eef axis-angle (rad), gripper finger qpos (2) |
| ``depth`` | ``[V, H, W]`` float32 | metric z-depth (m); only with ``depth=True`` |
| ``intrinsics`` | ``[V, 3, 3]`` float32 | ``K`` for the upright image (OpenCV); with depth |
| ``extrinsics`` | ``[V, 4, 4]`` float32 | camera-to-world pose, OpenCV axes; with depth |

The 8-D state is the layout of the LIBERO LeRobot/RLDS ports (``ee_states`` + ``gripper_states`` of
the original HDF5 files). Actions are LIBERO's 7-D deltas for the OSC_POSE controller: ``[dx, dy,
dz]`` and an axis-angle ``[rx, ry, rz]`` in ``[-1, 1]`` (scaled to 5 cm and 0.5 rad per step, world
frame), then the gripper, ``-1`` open and ``+1`` close.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from flowvla.envs import cameras as cam
from flowvla.envs.libero_setup import prepare_libero, quiet_stdout
from flowvla.typing import Float, Shaped, typechecked

__all__ = [
    "ACTION_DIM",
    "DEFAULT_CAMERAS",
    "DUMMY_ACTION",
    "LIBERO_SUITES",
    "STATE_DIM",
    "LiberoEnv",
    "LiberoTask",
    "StepResult",
    "SuiteInfo",
    "get_task",
    "list_tasks",
    "quat_to_axis_angle",
    "scene_names",
    "task_goal",
]

ACTION_DIM = 7
STATE_DIM = 8
DEFAULT_CAMERAS = ("agentview", "robot0_eye_in_hand")
_FREE_JOINT = 0  # mjtJoint.mjJNT_FREE
#: Zero motion, gripper open: what LIBERO evaluations send while objects settle after a reset.
DUMMY_ACTION = np.array([0.0] * 6 + [-1.0])


@dataclasses.dataclass(frozen=True)
class SuiteInfo:
    """A LIBERO task suite. ``max_steps``: the episode step limit used by OpenVLA, OpenVLA-OFT, openpi
    and LeRobot evaluations (about the longest training demonstration of the suite), not counting the
    ``settle_steps`` after reset."""

    name: str
    num_tasks: int
    max_steps: int


LIBERO_SUITES: dict[str, SuiteInfo] = {
    s.name: s
    for s in (
        SuiteInfo("libero_spatial", 10, 220),
        SuiteInfo("libero_object", 10, 280),
        SuiteInfo("libero_goal", 10, 300),
        SuiteInfo("libero_10", 10, 520),
        SuiteInfo("libero_90", 90, 400),
    )
}


@dataclasses.dataclass(frozen=True)
class LiberoTask:
    """One task: where its BDDL and init-state files are and what it asks for."""

    suite: str
    index: int
    name: str
    instruction: str
    bddl_file: str
    init_states_file: str


def _check_suite(suite: str) -> SuiteInfo:
    if suite not in LIBERO_SUITES:
        raise ValueError(f"suite={suite!r} is not a LIBERO suite; choose one of {sorted(LIBERO_SUITES)}")
    return LIBERO_SUITES[suite]


def list_tasks(suite: str) -> list[LiberoTask]:
    """All tasks of ``suite`` in LIBERO's official order (task order 0)."""
    _check_suite(suite)
    prepare_libero()
    from libero.libero import benchmark, get_libero_path

    with quiet_stdout():  # LIBERO prints its task order on every construction
        bench = benchmark.get_benchmark_dict()[suite](task_order_index=0)
    bddl_root, init_root = get_libero_path("bddl_files"), get_libero_path("init_states")
    return [
        LiberoTask(
            suite=suite,
            index=i,
            name=t.name,
            instruction=t.language,
            bddl_file=os.path.join(bddl_root, t.problem_folder, t.bddl_file),
            init_states_file=os.path.join(init_root, t.problem_folder, t.init_states_file),
        )
        for i, t in enumerate(bench.tasks)
    ]


@functools.lru_cache(maxsize=256)
def _parsed_goal(bddl_file: str) -> tuple[tuple[str, ...], ...]:
    from libero.libero.envs.bddl_utils import robosuite_parse_problem

    return tuple(tuple(str(a) for a in p) for p in robosuite_parse_problem(bddl_file)["goal_state"])


def task_goal(task: LiberoTask) -> list[list[str]]:
    """The goal conjunction of ``task``'s BDDL file, as LIBERO parses it (``[["on", "akita_black_bowl_1",
    "flat_stove_1_cook_region"]]``)."""
    return [list(p) for p in _parsed_goal(task.bddl_file)]


@functools.lru_cache(maxsize=256)
def _declared_names(bddl_file: str) -> frozenset[str]:
    from libero.libero.envs.bddl_utils import robosuite_parse_problem

    p = robosuite_parse_problem(bddl_file)
    names = {n for kind in ("objects", "fixtures") for group in p[kind].values() for n in group}
    return frozenset(names | set(p["regions"]))


def scene_names(task: LiberoTask) -> frozenset[str]:
    """The objects, fixtures and regions ``task``'s BDDL file declares (``"basket_1"``,
    ``"basket_1_contain_region"``): every name a goal of this scene can refer to, read without
    building the simulator."""
    prepare_libero()
    return _declared_names(task.bddl_file)


def get_task(suite: str, index: int) -> LiberoTask:
    """Task ``index`` of ``suite``; a clear error when the index is out of range."""
    info = _check_suite(suite)
    if not 0 <= index < info.num_tasks:
        raise IndexError(f"task index={index} out of range for {suite} ({info.num_tasks} tasks)")
    return list_tasks(suite)[index]


@typechecked
def quat_to_axis_angle(quat: Float[np.ndarray, " 4"]) -> Float[np.ndarray, " 3"]:
    """Axis-angle (rad) of an ``(x, y, z, w)`` quaternion, the same map as robosuite's
    ``quat2axisangle`` (which LIBERO's datasets used), without mutating its input."""
    w = float(np.clip(quat[3], -1.0, 1.0))
    den = math.sqrt(1.0 - w * w)
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return np.asarray(quat[:3], dtype=np.float64) * 2.0 * math.acos(w) / den


@dataclasses.dataclass
class StepResult:
    """What [`LiberoEnv.step`][flowvla.envs.libero.LiberoEnv.step] returns: the env's reward, whether the task
    is solved, the env's info dict. Observations are not part of a step: ask
    [`LiberoEnv.observe`][flowvla.envs.libero.LiberoEnv.observe]."""

    reward: float
    success: bool
    info: dict[str, Any]


def _image_size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    return int(h), int(w)


class LiberoEnv:
    """One LIBERO task, stepped with physics only and rendered when
    [`observe`][flowvla.envs.libero.LiberoEnv.observe] is called.

    Args:
        suite: ``libero_spatial``, ``libero_object``, ``libero_goal``, ``libero_10`` or ``libero_90``.
        task_index: the task's index in the suite's official order.
        image_size: rendered ``H`` (= ``W``) or ``(H, W)``; render at the size the policy wants,
            rendering cost hardly depends on it.
        cameras: view names, in the order of the ``V`` axis.
        depth: also return metric depth, intrinsics and extrinsics from
            [`observe`][flowvla.envs.libero.LiberoEnv.observe].
        render: build the offscreen renderer; ``False`` gives a physics-only env (scripted experts,
            state replays) on which [`observe`][flowvla.envs.libero.LiberoEnv.observe] raises.
        controller: robosuite controller (LIBERO uses ``OSC_POSE``).
        hard_reset: rebuild the MuJoCo model on every [`reset`][flowvla.envs.libero.LiberoEnv.reset], as
            LIBERO's own evaluation does (about 2 s a reset). ``False`` keeps it (0.2 s): its fixtures
            and the gripper's command are put back as a freshly loaded model has them before each
            reset, so an episode from the same state and seed is the same bit for bit either way.
        gl_backend: passed to [`prepare_libero`][flowvla.envs.libero_setup.prepare_libero].
        assets: passed to [`prepare_libero`][flowvla.envs.libero_setup.prepare_libero].

    Use as a context manager or call [`close`][flowvla.envs.libero.LiberoEnv.close].
    """

    def __init__(
        self,
        suite: str,
        task_index: int,
        *,
        image_size: int | tuple[int, int] = 128,
        cameras: Sequence[str] = DEFAULT_CAMERAS,
        depth: bool = False,
        render: bool = True,
        controller: str = "OSC_POSE",
        hard_reset: bool = True,
        gl_backend: str | None = None,
        assets: str | None = None,
    ) -> None:
        self.info = _check_suite(suite)
        self.height, self.width = _image_size(image_size)
        if isinstance(cameras, str) or not cameras:
            raise ValueError(f"cameras must be a non-empty sequence of camera names, got {cameras!r}")
        self.cameras = tuple(cameras)
        self.depth = bool(depth)
        self.render_enabled = bool(render)
        prepare_libero(assets=assets, gl_backend=gl_backend)
        self.task = get_task(suite, task_index)

        from libero.libero.envs.env_wrapper import ControlEnv

        # Cameras are not robosuite observables here (use_camera_obs=False): robosuite would render
        # them on every step. The names still go in so the renderer sizes its buffers for them.
        self.env_kwargs: dict[str, Any] = dict(
            bddl_file_name=self.task.bddl_file,
            controller=controller,
            use_camera_obs=False,
            has_renderer=False,
            has_offscreen_renderer=self.render_enabled,
            ignore_done=True,
            hard_reset=hard_reset,
            camera_names=list(self.cameras),
            camera_heights=self.height,
            camera_widths=self.width,
            camera_depths=self.depth,
            control_freq=20,
        )
        self.raw = ControlEnv(**self.env_kwargs)
        unknown = [c for c in self.cameras if c not in self.raw.sim.model.camera_names]
        if unknown:
            names = list(self.raw.sim.model.camera_names)
            self.raw.close()
            raise ValueError(f"cameras {unknown} are not in this scene; available: {names}")
        self._init_states: np.ndarray | None = None
        self._last_obs: dict[str, Any] | None = None
        self.steps = 0
        #: Applied to the ``[V, 3, H, W]`` uint8 images of every
        #: [`observe`][flowvla.envs.libero.LiberoEnv.observe] (e.g. a perturbation's pixel noise);
        #: cleared by every reset.
        self.image_filter: Callable[[np.ndarray], np.ndarray] | None = None
        #: The task whose goal and instruction this episode has, when not its own (see
        #: [`set_goal`][flowvla.envs.libero.LiberoEnv.set_goal]).
        self.goal_task: LiberoTask | None = None
        self._undo: list[Callable[[], None]] = []

    # ----------------------------------------------------------------------------------------- info
    @property
    def suite(self) -> str:
        return self.info.name

    @property
    def instruction(self) -> str:
        """The instruction of the episode's task (another task's after
        [`set_goal`][flowvla.envs.libero.LiberoEnv.set_goal])."""
        return (self.goal_task or self.task).instruction

    @property
    def max_steps(self) -> int:
        return self.info.max_steps

    @property
    def sim(self) -> Any:
        """robosuite's ``MjSim`` (``.model`` / ``.data`` delegate to MuJoCo's)."""
        return self.raw.env.sim

    @property
    def init_states(self) -> Float[np.ndarray, "N D"]:
        """The task's official initial simulator states (``[50, D]`` flattened ``time, qpos, qvel``)."""
        if self._init_states is None:
            import torch

            # The files are torch pickles of numpy arrays; weights_only cannot read them.
            self._init_states = np.asarray(torch.load(self.task.init_states_file, weights_only=False))
        return self._init_states

    @property
    def problem_info(self) -> dict[str, str]:
        """``problem_name``, ``domain_name``, ``language_instruction`` as LIBERO's HDF5 files store them."""
        return {
            "problem_name": self.raw.problem_name,
            "domain_name": self.raw.domain_name,
            "language_instruction": self.raw.language_instruction,
        }

    def model_xml(self) -> str:
        """The current MuJoCo model as XML (LIBERO's HDF5 ``model_file`` attribute)."""
        return self.sim.model.get_xml()

    # -------------------------------------------------------------------------------------- control
    def reset(
        self,
        init_state: int | np.ndarray | None = None,
        seed: int | None = None,
        settle_steps: int = 0,
        perturb: Callable[[LiberoEnv], Any] | None = None,
    ) -> Float[np.ndarray, " D"]:
        """Reset the task and return the flattened initial simulator state.

        Args:
            init_state: index of one of the task's official init states, a flattened state of
                your own, or ``None`` for a fresh layout from LIBERO's own BDDL region sampler.
            seed: seeds ``numpy.random`` (LIBERO's samplers use it) before resetting.
            settle_steps: steps of ``DUMMY_ACTION`` after the reset so objects come to rest, as
                LIBERO evaluations do (10); the returned state is the one before them.
            perturb: called with this env once the state is loaded, before settling (see
                [`Perturbation`][flowvla.envs.perturb.Perturbation]); the returned state includes
                its changes.
        """
        # Undo the last episode's changes to the model first, on the model they were made in: a
        # reset that keeps the model (hard_reset=False) would carry them into this episode.
        while self._undo:
            self._undo.pop()()
        self.image_filter = None
        if seed is not None:
            self.raw.seed(seed)
        if not self.env_kwargs["hard_reset"]:
            self._forget_last_episode()
        self.raw.reset()
        if init_state is not None:
            if isinstance(init_state, (int, np.integer)):
                n = len(self.init_states)
                if not 0 <= int(init_state) < n:
                    raise IndexError(f"init_state={init_state} out of range: this task has {n} init states")
                state = self.init_states[int(init_state)]
            else:
                state = np.asarray(init_state, dtype=np.float64)
                expected = self.get_sim_state().shape
                if state.shape != expected:
                    raise ValueError(
                        f"init_state has shape {state.shape}; this task's states have {expected}"
                    )
            self._last_obs = self.raw.set_init_state(state)
        else:
            self._last_obs = self.raw.env._get_observations(force_update=True)
        if perturb is not None:
            perturb(self)
        initial = self.get_sim_state()
        self.steps = 0
        for _ in range(settle_steps):
            self.step(DUMMY_ACTION)
        self.steps = 0
        return initial

    def _forget_last_episode(self) -> None:
        # What a rebuilt model starts from and a kept one would carry over from the last episode, so
        # that an episode in a kept model is the rebuilt model's bit for bit (tested).
        self._unplace_fixtures()
        for robot in self.raw.env.robots:
            # The gripper integrates its open / close commands into a position target that robosuite's
            # reset leaves as the last episode ended (closed, say): the fingers would start out
            # moving towards it.
            gripper = getattr(robot, "gripper", None)
            if gripper is not None and hasattr(gripper, "current_action"):
                gripper.current_action = np.zeros_like(gripper.current_action)

    def _unplace_fixtures(self) -> None:
        # LIBERO places an object on a fixture's site (a bowl on the stove's cook region, on the
        # cabinet's top) at the fixture's new placement plus the site's position in the current
        # simulation, which a freshly loaded model computes with every fixture at the origin: the
        # site's offset on its fixture. A kept model holds its fixtures where the last reset placed
        # them, so their position would count twice (a bowl drawn 0.9 m above the stove, falling
        # off it as the layout settles). Put them where a freshly loaded model has them; the
        # reset places them again.
        m = self.sim.model
        for fixture in self.raw.env.fixtures_dict.values():
            body = m.body_name2id(fixture.root_body)
            m.body_pos[body] = 0.0
            m.body_quat[body] = (1.0, 0.0, 0.0, 0.0)

    def restore_on_reset(self, undo: Callable[[], None]) -> None:
        """Have the next [`reset`][flowvla.envs.libero.LiberoEnv.reset] call ``undo`` before anything
        else (the last registered first): how a change to the model (a camera, a light, a material,
        the goal) lasts one episode, whether or not the reset rebuilds the model."""
        self._undo.append(undo)

    def set_goal(self, task_index: int) -> None:
        """Score this episode on task ``task_index``'s goal (a task of the same suite), in this task's
        scene, and make its instruction the episode's, until the next reset.

        Raises:
            ValueError: the goal names an object, fixture or region this scene does not have.
        """
        other = get_task(self.suite, task_index)
        goal = task_goal(other)
        problem = self.raw.env.parsed_problem
        missing = sorted({n for p in goal for n in p[1:]} - set(self.raw.env.object_states_dict))
        if missing:
            raise ValueError(
                f"task_index: the goal of task {task_index} ({other.name}) names {missing}, which the "
                f"scene of {self.task.name} does not have"
            )
        own_goal, own_task = problem["goal_state"], self.goal_task
        problem["goal_state"] = goal
        self.goal_task = other

        def undo() -> None:
            problem["goal_state"] = own_goal
            self.goal_task = own_task

        self.restore_on_reset(undo)

    def step(self, action: Shaped[np.ndarray, " 7"] | Sequence[float]) -> StepResult:
        """Apply one 7-D delta action (physics only, nothing is rendered)."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (ACTION_DIM,):
            raise ValueError(f"action must have shape ({ACTION_DIM},), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action contains NaN or Inf: {a}")
        obs, reward, _, info = self.raw.step(a)
        self._last_obs = obs
        self.steps += 1
        return StepResult(reward=float(reward), success=self.success(), info=info)

    def success(self) -> bool:
        """Whether the task's BDDL goal holds now (cheap, no rendering)."""
        return bool(self.raw.check_success())

    def get_sim_state(self) -> Float[np.ndarray, " D"]:
        """Flattened MuJoCo state ``[time, qpos, qvel]``, as in the init-state files and HDF5 ``states``."""
        return np.asarray(self.raw.get_sim_state(), dtype=np.float64)

    def set_sim_state(self, state: Float[np.ndarray, " D"]) -> None:
        """Restore a state from [`get_sim_state`][flowvla.envs.libero.LiberoEnv.get_sim_state] (and refresh
        the proprioception)."""
        self._last_obs = self.raw.regenerate_obs_from_state(np.asarray(state, dtype=np.float64))

    def hold_robot_pose(self) -> None:
        """Make the arm's controller hold the pose the arm is in now.

        LIBERO's reset leaves the operational-space controller aiming at the pose of its own default
        layout; restoring a state with the arm elsewhere (a joint offset, a recorded mid-episode
        state) would let the first actions pull the hand back towards that stale goal (turning it by
        degrees while settling). Official init states start at the default pose, so LIBERO's own
        evaluations never call this.
        """
        controller = self.raw.env.robots[0].controller
        controller.update(force=True)
        controller.reset_goal()

    def place_fixtures(self, model_xml: str) -> dict[str, list[float]]:
        """Put the scene's fixed bodies where ``model_xml`` (a recorded demo's ``model_file``) has them.

        LIBERO's reset samples a new placement for the fixtures too (cabinets, stoves, racks: bodies
        without a free joint, placed inside their BDDL regions; in libero_goal they move by 1-2 cm
        between resets), and a flattened simulator state holds only joint positions and velocities.
        So a recorded state restored after a fresh reset brings the objects back but leaves the
        fixtures where this reset put them: a re-render differs from the recorded frame, and a replay
        runs against a shifted stove or cabinet. Call this after
        [`reset`][flowvla.envs.libero.LiberoEnv.reset] (or from its ``perturb`` hook) and before
        [`set_sim_state`][flowvla.envs.libero.LiberoEnv.set_sim_state].

        Args:
            model_xml: the MuJoCo XML the episode was recorded in (the HDF5 ``model_file``
                attribute, from [`model_xml`][flowvla.envs.libero.LiberoEnv.model_xml]).

        Returns:
            body name -> ``[dx, dy, dz]`` it moved, for the bodies that moved.

        Raises:
            ValueError: the XML does not parse, or gives a body of this scene an orientation as
                anything but ``quat`` (MuJoCo writes ``quat``; other forms are not converted here).
        """
        import xml.etree.ElementTree as ET

        try:
            world = ET.fromstring(model_xml).find("worldbody")
        except ET.ParseError as e:
            raise ValueError(f"model_xml: not MuJoCo XML ({e})") from None
        if world is None:
            raise ValueError("model_xml: no <worldbody>; pass a demo's model_file")
        m = self.sim.model
        moved: dict[str, list[float]] = {}
        for body in world.findall("body"):
            name = body.get("name")
            if name is None or name not in m.body_names:
                continue
            i = m.body_name2id(name)
            if any(int(m.jnt_type[j]) == _FREE_JOINT for j in range(m.njnt) if m.jnt_bodyid[j] == i):
                continue  # a movable object: its pose is in the simulator state
            other = [k for k in ("axisangle", "euler", "xyaxes", "zaxis") if body.get(k) is not None]
            if other:
                raise ValueError(f"model_xml: body {name!r} gives its orientation as {other[0]!r}, not quat")
            pos = np.array(body.get("pos", "0 0 0").split(), dtype=np.float64)
            quat = np.array(body.get("quat", "1 0 0 0").split(), dtype=np.float64)
            delta = pos - np.asarray(m.body_pos[i])
            if np.abs(delta).max() > 0 or np.abs(quat - np.asarray(m.body_quat[i])).max() > 0:
                moved[name] = delta.tolist()
            m.body_pos[i] = pos
            m.body_quat[i] = quat / np.linalg.norm(quat)
        self.sim.forward()
        return moved

    # ---------------------------------------------------------------------------------- observation
    def proprio(self) -> dict[str, np.ndarray]:
        """The robot's proprioception from the last step or reset: ``eef_pos [3]``, ``eef_quat [4]``
        (x, y, z, w), ``eef_axis_angle [3]``, ``gripper_qpos [2]``, ``joint_pos [7]``."""
        o = self._last_obs
        if o is None:
            o = self.raw.env._get_observations(force_update=True)
        quat = np.asarray(o["robot0_eef_quat"], dtype=np.float64)
        return {
            "eef_pos": np.asarray(o["robot0_eef_pos"], dtype=np.float64),
            "eef_quat": quat,
            "eef_axis_angle": quat_to_axis_angle(quat),
            "gripper_qpos": np.asarray(o["robot0_gripper_qpos"], dtype=np.float64),
            "joint_pos": np.asarray(o["robot0_joint_pos"], dtype=np.float64),
        }

    def state(self) -> Float[np.ndarray, " 8"]:
        """The 8-D policy state: eef position, eef axis-angle, gripper finger positions."""
        p = self.proprio()
        return np.concatenate([p["eef_pos"], p["eef_axis_angle"], p["gripper_qpos"]]).astype(np.float32)

    def _require_renderer(self) -> None:
        if not self.render_enabled:
            raise RuntimeError(
                "this LiberoEnv was built with render=False; build it with render=True to observe"
            )

    def render_camera(
        self, camera: str, depth: bool = False, height: int | None = None, width: int | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Render one camera: upright ``[H, W, 3]`` uint8 RGB and, with ``depth``, ``[H, W]`` metres."""
        self._require_renderer()
        h, w = height or self.height, width or self.width
        out = self.sim.render(camera_name=camera, width=w, height=h, depth=depth)
        rgb, z = out if depth else (out, None)
        rgb = np.ascontiguousarray(rgb[::-1])
        if z is None:
            return rgb, None
        return rgb, cam.zbuffer_to_metres(np.ascontiguousarray(z[::-1]), *self.clip_planes())

    def render_geom_ids(self, camera: str) -> np.ndarray:
        """Upright ``[H, W]`` int32 map of the MuJoCo geom id seen at each pixel (-1: nothing).

        robosuite's own segmentation decoder overflows uint8 arithmetic under numpy 2, so the
        segment colours are decoded here.
        """
        import mujoco

        self._require_renderer()
        ctx = self.sim._render_context_offscreen
        # Segmentation ignores transparency, so the alpha-0 sites robosuite hides (regions, grip
        # markers) would cover the geoms behind them: leave sites out.
        sitegroup = ctx.vopt.sitegroup.copy()
        ctx.vopt.sitegroup[:] = 0
        try:
            ctx.render(
                width=self.width,
                height=self.height,
                camera_id=self.sim.model.camera_name2id(camera),
                segmentation=True,
            )
            rgb = np.empty((self.height, self.width, 3), dtype=np.uint8)
            mujoco.mjr_readPixels(
                rgb=rgb, depth=None, viewport=mujoco.MjrRect(0, 0, self.width, self.height), con=ctx.con
            )
        finally:
            ctx.vopt.sitegroup[:] = sitegroup
        rgb = rgb.astype(np.int64)
        segid = rgb[..., 0] + rgb[..., 1] * 256 + rgb[..., 2] * 65536 - 1  # colour 0 = background
        lut = np.full(ctx.scn.ngeom + 1, -1, dtype=np.int32)
        for i in range(ctx.scn.ngeom):
            g = ctx.scn.geoms[i]
            if g.segid != -1 and g.objtype == mujoco.mjtObj.mjOBJ_GEOM:
                lut[g.segid] = g.objid
        segid[(segid < 0) | (segid >= ctx.scn.ngeom)] = ctx.scn.ngeom
        return np.ascontiguousarray(lut[segid][::-1])

    def clip_planes(self) -> tuple[float, float]:
        """MuJoCo's near / far clip distances in metres."""
        m = self.sim.model
        return float(m.vis.map.znear * m.stat.extent), float(m.vis.map.zfar * m.stat.extent)

    def camera_intrinsics(self, camera: str) -> Float[np.ndarray, "3 3"]:
        """``K`` of ``camera`` for this env's image size (OpenCV, pixel centres at integers)."""
        cid = self.sim.model.camera_name2id(camera)
        return cam.intrinsics_from_fovy(float(self.sim.model.cam_fovy[cid]), self.height, self.width)

    def camera_extrinsics(self, camera: str) -> Float[np.ndarray, "4 4"]:
        """Camera-to-world pose of ``camera`` (OpenCV axes) at the current simulator state."""
        cid = self.sim.model.camera_name2id(camera)
        d = self.sim.data
        return cam.camera_to_world_opencv(
            np.array(d.cam_xpos[cid], dtype=np.float64),
            np.array(d.cam_xmat[cid], dtype=np.float64).reshape(3, 3),
        )

    def observe(self, depth: bool | None = None) -> dict[str, Any]:
        """Render all cameras now and return the observation dict (see the module docs).

        Args:
            depth: override the env's ``depth`` setting for this call.
        """
        self._require_renderer()
        want_depth = self.depth if depth is None else bool(depth)
        rgbs, depths = [], []
        for c in self.cameras:
            rgb, z = self.render_camera(c, depth=want_depth)
            rgbs.append(rgb.transpose(2, 0, 1))
            depths.append(z)
        images = np.stack(rgbs)
        if self.image_filter is not None:
            images = self.image_filter(images)
        obs: dict[str, Any] = {
            "images": images,
            "instruction": self.instruction,
            "state": self.state(),
        }
        if want_depth:
            obs["depth"] = np.stack(depths).astype(np.float32)
            obs["intrinsics"] = np.stack([self.camera_intrinsics(c) for c in self.cameras]).astype(np.float32)
            obs["extrinsics"] = np.stack([self.camera_extrinsics(c) for c in self.cameras]).astype(np.float32)
        return obs

    # ------------------------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Free the simulator and its GL context."""
        raw = getattr(self, "raw", None)
        if raw is not None and hasattr(raw, "env"):
            raw.close()
        self.raw = None

    def __enter__(self) -> LiberoEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"LiberoEnv({self.suite!r}, {self.task.index}, {self.instruction!r}, "
            f"{self.height}x{self.width}, cameras={self.cameras}, depth={self.depth})"
        )
