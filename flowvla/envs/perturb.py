"""Perturbations of a LIBERO episode, in the spirit of LIBERO-PRO and LIBERO-Plus.

A policy that scores well on the 50 official init states may have memorised them: the same object
layouts, the same robot pose, the same camera, light and table, the same words. A
[`Perturbation`][flowvla.envs.perturb.Perturbation] changes one of those at a time (or several), after
the init state is loaded and before the objects settle, so an evaluation can report the drop, and
the demonstration generator can record under the same axes
(``GenerateConfig.perturbation``). Each axis is one field, its amount in physical units:

- ``object_shift_m`` (m): every free object (the movable ones) moves by exactly this on the table,
  each in its own random direction;
- ``object_scatter_m`` (m): every free object moves to a point drawn uniformly from the disc of this
  radius around it (the layouts ``RecipeConfig.object_scatter`` records demonstrations under);
- ``object_swap``: two free objects exchange places (x-y; each comes to rest at the height the other
  rested at): ``"any"`` two drawn ones, ``"target"`` the task's object and a drawn other one, or two
  named objects;
- ``robot_joint_offset_rad`` (rad): each arm joint turns by an amount drawn uniformly from
  ``[-r, r]``, kept inside its range; the controller's goal follows the new pose;
- ``camera_shift_m`` (m), ``camera_rotation_deg`` (degrees): the ``cameras`` move by exactly this
  distance and turn by exactly this angle about a random axis of their own frame (the depth
  branch's intrinsics and extrinsics follow, as they are read from the simulator);
- ``light_intensity`` (a fraction): every light of the scene and the headlight get brighter or
  dimmer by it (scaled by ``1 + s`` or ``1 - s``, drawn);
- ``light_rotation_deg`` (degrees): every light's direction turns by exactly this angle about a
  random axis perpendicular to it;
- ``scene_tint`` (a fraction of brightness): the table, floor and wall materials are tinted, each
  colour channel scaled by ``1 - s w``, ``w`` drawn from ``[0, 1]`` with its largest channel 1;
- ``scene_texture_swap``: the table, floor and wall materials each take another texture of the
  scene's, of the same kind (2D or cube);
- ``image_noise_std`` (pixel values, 0-255): Gaussian noise on every image the policy is given
  ([`LiberoEnv.observe`][flowvla.envs.libero.LiberoEnv.observe]), rounded and clipped;
- ``changed_task``: the episode is scored on another task of the suite whose goal the scene allows
  (drawn), and the policy is told that task's instruction.

Instructions reworded in held-out words or with object synonyms are a setting of the rollout itself
(``RolloutConfig.instructions``, built from the tables of
[`flowvla.processing.instructions`][flowvla.processing.instructions]), not of the simulator.

Every draw comes from the episode's seed, so a perturbed evaluation is as repeatable as a clean one.
Each axis changes what it names and nothing else: cameras, lights and materials are model fields the
physics never reads, so the simulator steps bit for bit as without them (``tests/envs``). A change to
the model lasts until the next [`LiberoEnv.reset`][flowvla.envs.libero.LiberoEnv.reset], which undoes
it whether or not it rebuilds the model (``hard_reset``).

Distractor objects are not an axis yet: LIBERO builds the scene's bodies from the task's BDDL file
when the environment is made (and again on every hard reset), so a new body means a BDDL (or XML)
of our own, with its own init states; moving an object the task already has is what
``object_shift_m`` / ``object_swap`` do.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from flowvla.checks import check_nonnegative
from flowvla.typing import Shaped, typechecked

__all__ = [
    "Perturbation",
    "add_image_noise",
    "changed_task_refusal",
    "free_objects",
    "jitter_cameras",
    "offset_robot_joints",
    "perturb_lights",
    "scatter_objects",
    "scene_materials",
    "scorable_task_indices",
    "scorable_tasks",
    "shift_objects",
    "swap_objects",
    "swap_scene_textures",
    "tint_scene",
]

_FREE_JOINT = 0  # mjtJoint.mjJNT_FREE
# The amounts of a Perturbation with their upper bounds (None: no bound); each must be >= 0.
_AMOUNTS: dict[str, tuple[float | None, str]] = {
    "object_shift_m": (None, "metres"),
    "object_scatter_m": (None, "metres"),
    "robot_joint_offset_rad": (0.5, "radians; larger offsets start the arm inside the table"),
    "camera_shift_m": (None, "metres"),
    "camera_rotation_deg": (180.0, "degrees"),
    "light_intensity": (0.99, "a fraction of the light's intensity"),
    "light_rotation_deg": (90.0, "degrees; beyond 90 the lights point away from the table"),
    "scene_tint": (1.0, "a fraction of the colour channel"),
    "image_noise_std": (255.0, "pixel values on the 0-255 scale"),
}
_SWAP_MODES = ("any", "target")
# The fields every record's settings hold (the first axes); later ones are recorded when set.
_RECORDED_ALWAYS = ("object_shift_m", "object_scatter_m", "camera_shift_m", "camera_rotation_deg", "cameras")
# Suites whose instructions pick an object by where it lies: another task's words there name no
# object its goal does, so a changed task cannot be scored.
_NO_CHANGED_TASK = {"libero_spatial": "its instructions name the bowl by where it lies"}


@dataclasses.dataclass(frozen=True)
class Perturbation:
    """What to change in every episode (all off: nothing, the official evaluation). See the module
    docs for what each axis does.

    Attributes:
        object_shift_m: distance every free object moves on the table (m).
        object_scatter_m: radius of the disc every free object's new place is drawn from, uniformly
            over its area (m); exclusive with ``object_shift_m``.
        object_swap: two free objects exchange places: ``""`` (off), ``"any"`` (two drawn),
            ``"target"`` (the task's first object of interest that moves and a drawn object not of
            interest), or two object names (``("alphabet_soup_1", "milk_1")``; body names also do).
        robot_joint_offset_rad: bound of the uniform offset drawn for each arm joint (rad, <= 0.5).
        camera_shift_m: distance each camera of ``cameras`` moves (m).
        camera_rotation_deg: angle each of them turns about a random axis (degrees).
        light_intensity: relative change of every light's intensity, brighter or dimmer (< 1).
        light_rotation_deg: angle every light's direction turns (degrees, <= 90).
        scene_tint: darkening of the most-changed colour channel of each table / floor / wall
            material (0: none, 1: that channel black).
        scene_texture_swap: give the table / floor / wall materials other textures of the scene.
        image_noise_std: standard deviation of the Gaussian noise added to the policy's images
            (pixel values, 0-255).
        changed_task: score the episode on another task of the suite that the scene allows, and
            tell the policy that task's instruction (not on libero_spatial; ``RolloutConfig.instructions``
            naming the task still overrides the words).
        cameras: the cameras jittered (default: the third-person view; the wrist camera rides on the
            robot).
    """

    object_shift_m: float = 0.0
    object_scatter_m: float = 0.0
    object_swap: str | Sequence[str] = ""
    robot_joint_offset_rad: float = 0.0
    camera_shift_m: float = 0.0
    camera_rotation_deg: float = 0.0
    light_intensity: float = 0.0
    light_rotation_deg: float = 0.0
    scene_tint: float = 0.0
    scene_texture_swap: bool = False
    image_noise_std: float = 0.0
    changed_task: bool = False
    cameras: Sequence[str] = ("agentview",)

    def __post_init__(self) -> None:
        for name, (high, unit) in _AMOUNTS.items():
            value = check_nonnegative(name, getattr(self, name))
            if high is not None and value > high:
                raise ValueError(f"{name}: must be <= {high:g} ({unit}), got {value:g}")
            object.__setattr__(self, name, value)
        if self.object_shift_m and self.object_scatter_m:
            raise ValueError(
                "object_shift_m and object_scatter_m both move the objects: give one of them, got "
                f"{self.object_shift_m} and {self.object_scatter_m}"
            )
        for flag in ("scene_texture_swap", "changed_task"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag}: must be True or False, got {getattr(self, flag)!r}")
        swap = self.object_swap
        if isinstance(swap, str):
            if swap not in ("", *_SWAP_MODES):
                raise ValueError(f"object_swap: give 'any', 'target' or two object names, got {swap!r}")
        else:
            swap = tuple(str(s) for s in swap)
            if len(swap) != 2 or swap[0] == swap[1]:
                raise ValueError(f"object_swap: give two different object names, got {list(swap)}")
            object.__setattr__(self, "object_swap", swap)
        if isinstance(self.cameras, str):
            raise ValueError(f"cameras: give a sequence of camera names, got the string {self.cameras!r}")
        object.__setattr__(self, "cameras", tuple(self.cameras))

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> Perturbation:
        """The perturbation ``fields`` describe (as [`to_dict`][flowvla.envs.perturb.Perturbation.to_dict]
        writes them, or parsed from a command line's JSON); an unknown field is refused by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"perturbation: unknown fields {unknown}; known: {sorted(known)}")
        return cls(**fields)

    @property
    def active(self) -> bool:
        """Whether any axis is on."""
        return any(
            getattr(self, name) for name in (*_AMOUNTS, "object_swap", "scene_texture_swap", "changed_task")
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values, as records store them (read back by
        [`from_dict`][flowvla.envs.perturb.Perturbation.from_dict])."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            # Axes added later appear only when on, so the records of perturbed evaluations written
            # before they existed still match their settings (and resume).
            if f.name in _RECORDED_ALWAYS or value != f.default:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def split(self) -> tuple[Perturbation, Perturbation]:
        """``(layout, appearance)``: the axes that live in the simulator state (objects, the robot's
        joints, the task) and those only the renderer reads (cameras, lights, materials, pixel
        noise). Appearance may be applied after the physics of an episode has run (as the demonstration
        generator does before rendering a kept episode): the physics never reads it."""
        look = ("camera_shift_m", "camera_rotation_deg", "light_intensity", "light_rotation_deg")
        look += ("scene_tint", "scene_texture_swap", "image_noise_std")
        off = {f.name: f.default for f in dataclasses.fields(self) if f.name != "cameras"}
        layout = dataclasses.replace(self, **{k: off[k] for k in look})
        appearance = dataclasses.replace(self, **{k: v for k, v in off.items() if k not in look})
        return layout, appearance

    def check_suite(self, suite: str) -> None:
        """Refuse, before any episode runs, an axis that ``suite`` cannot have."""
        why = changed_task_refusal(suite) if self.changed_task else None
        if why is not None:
            raise ValueError(f"changed_task: not on {suite}: {why}")

    def apply(self, env: Any, rng: np.random.Generator) -> dict[str, Any]:
        """Perturb ``env`` (a reset [`LiberoEnv`][flowvla.envs.libero.LiberoEnv]) in place; returns what
        changed (JSON-ready), for the episode's record.

        The draws happen in a fixed order, each axis drawing only when it is on, so a perturbation
        with one axis draws as it did before other axes existed.
        """
        done: dict[str, Any] = {}
        if self.object_shift_m:
            done["objects"] = shift_objects(env, self.object_shift_m, rng)
        if self.object_scatter_m:
            done["objects"] = scatter_objects(env, self.object_scatter_m, rng)
        if self.camera_shift_m or self.camera_rotation_deg:
            done["cameras"] = jitter_cameras(
                env, self.cameras, self.camera_shift_m, self.camera_rotation_deg, rng
            )
        if self.object_swap:
            done["swap"] = swap_objects(env, *_swap_pair(env, self.object_swap, rng))
        if self.robot_joint_offset_rad:
            done["robot_joints"] = offset_robot_joints(env, self.robot_joint_offset_rad, rng)
        if self.light_intensity or self.light_rotation_deg:
            done["lights"] = perturb_lights(env, self.light_intensity, self.light_rotation_deg, rng)
        if self.scene_tint:
            done["scene_tint"] = tint_scene(env, self.scene_tint, rng)
        if self.scene_texture_swap:
            done["scene_textures"] = swap_scene_textures(env, rng)
        if self.image_noise_std:
            noise_rng = np.random.default_rng(int(rng.integers(2**63)))
            std = self.image_noise_std
            env.image_filter = lambda images: add_image_noise(images, std, noise_rng)
            done["image_noise_std"] = std
        if self.changed_task:
            self.check_suite(env.suite)
            tasks = scorable_tasks(env)
            if not tasks:
                raise ValueError(
                    f"changed_task: no other task of {env.suite} can be scored in task "
                    f"{env.task.index}'s scene ({env.task.name})"
                )
            task = tasks[int(rng.integers(len(tasks)))]
            env.set_goal(task)
            done["task"] = {"index": task, "name": env.goal_task.name, "instruction": env.instruction}
        return done


# ---------------------------------------------------------------------------------------- objects
def free_objects(env: Any) -> dict[str, int]:
    """Body name -> ``qpos`` address of the free joint of every movable object in ``env``'s scene."""
    m = env.sim.model
    out = {}
    for j in range(m.njnt):
        if int(m.jnt_type[j]) == _FREE_JOINT:
            out[m.body_id2name(int(m.jnt_bodyid[j]))] = int(m.jnt_qposadr[j])
    return out


def _unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    v = rng.normal(size=dim)
    return v / np.linalg.norm(v)


def shift_objects(env: Any, distance: float, rng: np.random.Generator) -> dict[str, list[float]]:
    """Move every free object by ``distance`` (m) in the table plane, each in a random direction.

    Returns:
        body name -> the ``[dx, dy]`` applied.
    """
    check_nonnegative("distance", distance, "metres")
    return _move_objects(env, lambda: distance, rng)


def scatter_objects(env: Any, radius: float, rng: np.random.Generator) -> dict[str, list[float]]:
    """Move every free object to a point drawn uniformly from the disc of ``radius`` (m) around it,
    in the table plane: layouts wider than LIBERO's placement regions, for training data that covers
    the shifts [`shift_objects`][flowvla.envs.perturb.shift_objects] evaluates.

    Returns:
        body name -> the ``[dx, dy]`` applied.
    """
    check_nonnegative("radius", radius, "metres")
    # sqrt of a uniform draw: uniform over the disc's area, not crowded at its centre.
    return _move_objects(env, lambda: radius * math.sqrt(rng.uniform()), rng)


def _move_objects(
    env: Any, distance: Callable[[], float], rng: np.random.Generator
) -> dict[str, list[float]]:
    """Move every free object by ``distance()`` (drawn per object) in its own random direction on the
    table; returns body name -> the ``[dx, dy]`` applied."""
    sim = env.sim
    moved = {}
    for name, adr in sorted(free_objects(env).items()):
        d = distance() * _unit(rng, 2)
        sim.data.qpos[adr : adr + 2] += d
        moved[name] = [round(float(v), 4) for v in d]
    sim.forward()
    return moved


def _object_body(env: Any, name: str) -> str:
    """The free body of object ``name`` (LIBERO names an object's body ``<name>_main``)."""
    bodies = free_objects(env)
    for candidate in (name, f"{name}_main"):
        if candidate in bodies:
            return candidate
    names = sorted(b.removesuffix("_main") for b in bodies)
    raise ValueError(f"object_swap: {name!r} is not a movable object of this scene; it has {names}")


def _swap_pair(env: Any, swap: str | Sequence[str], rng: np.random.Generator) -> tuple[str, str]:
    bodies = sorted(free_objects(env))
    if not isinstance(swap, str):
        return _object_body(env, swap[0]), _object_body(env, swap[1])
    if swap == "any":
        if len(bodies) < 2:
            raise ValueError(f"object_swap: this scene has {len(bodies)} movable objects; 2 are needed")
        i, j = rng.choice(len(bodies), size=2, replace=False)
        return bodies[int(i)], bodies[int(j)]
    interest = [f"{n}_main" for n in env.raw.env.obj_of_interest]
    targets = [b for b in interest if b in bodies]
    others = [b for b in bodies if b not in interest]
    if not targets or not others:
        lacks = "no movable object of interest" if not targets else "no other movable object"
        raise ValueError(f"object_swap='target': task {env.task.name} has {lacks} to swap")
    return targets[0], others[int(rng.integers(len(others)))]


def _lowest_point(env: Any, body: int) -> float:
    """Height (m) of the lowest corner of the collision geoms' boxes of ``body`` and the bodies below it."""
    m, d = env.sim.model, env.sim.data
    low = math.inf
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    for g in range(m.ngeom):
        if int(m.body_rootid[m.geom_bodyid[g]]) != body or not (m.geom_contype[g] or m.geom_conaffinity[g]):
            continue
        centre, half = np.asarray(m.geom_aabb[g][:3]), np.asarray(m.geom_aabb[g][3:])
        corners = (centre + signs * half) @ np.asarray(d.geom_xmat[g]).reshape(3, 3).T + d.geom_xpos[g]
        low = min(low, float(corners[:, 2].min()))
    return low if math.isfinite(low) else float(d.xpos[body][2])


def swap_objects(env: Any, first: str, second: str) -> dict[str, Any]:
    """Exchange the places of the free bodies ``first`` and ``second``: each takes the other's x-y
    position and is set at the height where the other's lowest point rested (so an object that
    stood on a plate or a cabinet is replaced by one standing there, not sunk into it); orientations
    stay.

    Returns:
        ``{"bodies": [first, second], "moved": {body: [dx, dy, dz]}}``.
    """
    bodies = free_objects(env)
    for name in (first, second):
        if name not in bodies:
            raise ValueError(f"object_swap: {name!r} is not a free body of this scene: {sorted(bodies)}")
    if first == second:
        raise ValueError(f"object_swap: give two different bodies, got {first!r} twice")
    m, qpos = env.sim.model, env.sim.data.qpos
    ids = {n: m.body_name2id(n) for n in (first, second)}
    low = {n: _lowest_point(env, ids[n]) for n in (first, second)}
    pos = {n: qpos[bodies[n] : bodies[n] + 3].copy() for n in (first, second)}
    moved = {}
    for a, b in ((first, second), (second, first)):
        new = np.array([pos[b][0], pos[b][1], pos[a][2] + low[b] - low[a]])
        qpos[bodies[a] : bodies[a] + 3] = new
        moved[a] = [round(float(v), 4) for v in new - pos[a]]
    env.sim.forward()
    return {"bodies": [first, second], "moved": moved}


# ------------------------------------------------------------------------------------------ robot
def offset_robot_joints(env: Any, max_offset: float, rng: np.random.Generator) -> dict[str, float]:
    """Turn each arm joint by an amount drawn uniformly from ``[-max_offset, max_offset]`` (rad),
    clipped so that no joint leaves its range (nor moves further than drawn); the gripper stays. The
    controller's goal is set to the new pose, so the settling steps hold it there (an OSC goal left
    at the old orientation would turn the hand back).

    Returns:
        joint name -> the offset applied (rad).
    """
    check_nonnegative("max_offset", max_offset, "radians")
    robot = env.raw.env.robots[0]
    m = env.sim.model
    state = env.get_sim_state()  # [time, qpos, qvel]
    margin = 1e-3  # stay off the limit itself, where the joint's constraint pushes back
    applied = {}
    for name in robot.robot_joints:
        j = m.joint_name2id(name)
        i = 1 + int(m.jnt_qposadr[j])
        q = state[i]
        lo, hi = (m.jnt_range[j] + [margin, -margin]) if m.jnt_limited[j] else (-math.inf, math.inf)
        new = float(np.clip(q + rng.uniform(-max_offset, max_offset), min(lo, q), max(hi, q)))
        state[i] = new
        applied[name] = round(new - q, 6)
    env.set_sim_state(state)
    env.hold_robot_pose()
    return applied


# ---------------------------------------------------------------------------------------- cameras
def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of ``(w, x, y, z)`` quaternions."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


def _change(env: Any, array: np.ndarray, index: Any, value: Any) -> None:
    """``array[index] = value`` in ``env``'s model, undone by its next reset (which need not rebuild
    the model)."""
    old = np.array(array[index], copy=True)
    array[index] = value

    def undo() -> None:
        array[index] = old

    env.restore_on_reset(undo)


def jitter_cameras(
    env: Any, cameras: Sequence[str], shift: float, rotation_deg: float, rng: np.random.Generator
) -> dict[str, dict[str, list[float]]]:
    """Move each camera by ``shift`` (m) and turn it by ``rotation_deg`` about a random axis of its
    own frame, in ``env``'s model (until the next reset).

    Returns:
        camera name -> ``{"shift": [dx, dy, dz], "axis": [x, y, z]}`` applied.
    """
    m = env.sim.model
    names = list(m.camera_names)
    unknown = [c for c in cameras if c not in names]
    if unknown:
        raise ValueError(f"cameras: {unknown} are not in this scene; available: {names}")
    done = {}
    for c in cameras:
        i = names.index(c)
        d = shift * _unit(rng, 3)
        axis = _unit(rng, 3)
        half = math.radians(rotation_deg) / 2
        turn = np.concatenate([[math.cos(half)], math.sin(half) * axis])
        _change(env, m.cam_pos, i, m.cam_pos[i] + d)
        q = _quat_mul(np.asarray(m.cam_quat[i], dtype=np.float64), turn)
        _change(env, m.cam_quat, i, q / np.linalg.norm(q))
        done[c] = {"shift": [round(float(v), 4) for v in d], "axis": [round(float(v), 4) for v in axis]}
    env.sim.forward()
    return done


# ------------------------------------------------------------------------------- light and colour
def perturb_lights(
    env: Any, intensity: float, rotation_deg: float, rng: np.random.Generator
) -> dict[str, Any]:
    """Scale every light of the scene and the headlight by ``1 + intensity`` or ``1 - intensity``
    (one draw for all), and turn each light's direction by exactly ``rotation_deg`` about a random
    axis perpendicular to it (until the next reset). Rendering only: the physics never reads them.

    Returns:
        ``{"scale": factor, "directions": {light: [x, y, z]}}`` (the new directions).
    """
    check_nonnegative("intensity", intensity)
    check_nonnegative("rotation_deg", rotation_deg, "degrees")
    if intensity >= 1:
        raise ValueError(f"intensity: must be < 1 (a fraction of the light), got {intensity}")
    m = env.sim.model
    scale = 1.0 + intensity * (1.0 if rng.uniform() < 0.5 else -1.0)
    if intensity:
        for field in ("light_diffuse", "light_ambient", "light_specular"):
            array = getattr(m, field)
            _change(env, array, slice(None), np.asarray(array) * scale)
        head = m.vis.headlight
        for field in ("diffuse", "ambient", "specular"):
            array = getattr(head, field)
            _change(env, array, slice(None), np.asarray(array) * scale)
    directions = {}
    theta = math.radians(rotation_deg)
    for i in range(int(m.nlight)):
        d = np.asarray(m.light_dir[i], dtype=np.float64)
        d = d / np.linalg.norm(d)
        axis = rng.normal(size=3)
        axis -= axis.dot(d) * d
        axis /= np.linalg.norm(axis)
        # Rodrigues with the axis perpendicular to d: the new direction is exactly theta away.
        new = d * math.cos(theta) + np.cross(axis, d) * math.sin(theta)
        if rotation_deg:
            _change(env, m.light_dir, i, new)
        directions[_name(m, "LIGHT", i)] = [round(float(v), 4) for v in new]
    env.sim.forward()
    return {"scale": scale, "directions": directions if rotation_deg else {}}


def _owned_prefixes(env: Any) -> tuple[str, ...]:
    """Name prefixes of the robot's and the task's objects' and fixtures' bodies and materials."""
    raw = env.raw.env
    return (*(f"{n}_" for n in (*raw.objects_dict, *raw.fixtures_dict)), "robot", "mount", "gripper")


def scene_materials(env: Any) -> dict[str, int]:
    """Material name -> id of the materials of the table, floor and walls: those of geoms that belong
    to neither the robot nor an object or fixture of the task."""
    m = env.sim.model
    owned = _owned_prefixes(env)
    scene, other = set(), set()
    for g in range(m.ngeom):
        mat = int(m.geom_matid[g])
        if mat < 0:
            continue
        root = m.body_id2name(int(m.body_rootid[m.geom_bodyid[g]])) or ""
        (other if root.startswith(owned) else scene).add(mat)
    return {_name(m, "MATERIAL", i): i for i in sorted(scene - other)}


def tint_scene(env: Any, strength: float, rng: np.random.Generator) -> dict[str, list[float]]:
    """Tint each of [`scene_materials`][flowvla.envs.perturb.scene_materials]: its colour channels are
    scaled by ``1 - strength * w``, ``w`` drawn uniformly from ``[0, 1]^3`` and rescaled so its largest
    channel is 1 (that channel is scaled by exactly ``1 - strength``). Until the next reset.

    Returns:
        material name -> the RGB scale applied.
    """
    check_nonnegative("strength", strength)
    if strength > 1:
        raise ValueError(f"strength: must be <= 1 (a fraction of the colour channel), got {strength}")
    m = env.sim.model
    done = {}
    for name, i in scene_materials(env).items():
        w = rng.uniform(size=3)
        factor = 1.0 - strength * w / w.max()
        rgba = np.asarray(m.mat_rgba[i], dtype=np.float64).copy()
        rgba[:3] *= factor
        _change(env, m.mat_rgba, i, rgba)
        done[name] = [round(float(v), 4) for v in factor]
    return done


def swap_scene_textures(env: Any, rng: np.random.Generator) -> dict[str, list[str]]:
    """Give each textured material of [`scene_materials`][flowvla.envs.perturb.scene_materials] another
    texture of the same kind (2D or cube), drawn from the colour textures of the scene's materials,
    used or not (LIBERO's scenes carry a spare table texture), never an object's. Until the next reset.

    Returns:
        material name -> ``[old texture, new texture]`` (materials with no other texture of their kind
        are left out).
    """
    import mujoco

    m = env.sim.model
    roles = int(mujoco.mjtTextureRole.mjNTEXROLE)
    rgb = int(mujoco.mjtTextureRole.mjTEXROLE_RGB)
    owned = _owned_prefixes(env)
    pool = sorted(
        {
            int(m.mat_texid[i, rgb])
            for i in range(int(m.nmat))
            if m.mat_texid[i, rgb] >= 0 and not _name(m, "MATERIAL", i).startswith(owned)
        }
    )
    # The renderer keeps its own copy of the materials' textures, made with its GL context.
    context = getattr(env.sim, "_render_context_offscreen", None)
    done = {}
    for name, i in scene_materials(env).items():
        old = int(m.mat_texid[i, rgb])
        if old < 0:
            continue
        choices = [t for t in pool if t != old and int(m.tex_type[t]) == int(m.tex_type[old])]
        if not choices:
            continue
        new = choices[int(rng.integers(len(choices)))]
        _change(env, m.mat_texid, (i, rgb), new)
        if context is not None:
            _change(env, context.con.mat_texid, i * roles + rgb, new)
        done[name] = [_name(m, "TEXTURE", old), _name(m, "TEXTURE", new)]
    return done


def _name(m: Any, kind: str, i: int) -> str:
    """MuJoCo's name of object ``i`` of ``kind`` (``"LIGHT"``, ``"MATERIAL"``, ...), or its index."""
    import mujoco

    raw = getattr(m, "_model", m)  # robosuite wraps MuJoCo's model
    return mujoco.mj_id2name(raw, getattr(mujoco.mjtObj, f"mjOBJ_{kind}"), int(i)) or str(i)


@typechecked
def add_image_noise(
    images: Shaped[np.ndarray, "*views 3 H W"], std: float, rng: np.random.Generator
) -> Shaped[np.ndarray, "*views 3 H W"]:
    """``images`` (uint8) plus Gaussian noise of ``std`` (pixel values, 0-255), rounded and clipped to
    ``[0, 255]``; a new array."""
    check_nonnegative("std", std, "pixel values")
    if images.dtype != np.uint8:
        raise ValueError(f"images: expected uint8 pixels, got {images.dtype}")
    noisy = images.astype(np.float64) + rng.normal(0.0, std, size=images.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------ tasks
def changed_task_refusal(suite: str) -> str | None:
    """Why ``suite``'s episodes cannot be told another task and scored on it, or None where they can
    (where a scene allows one: [`scorable_task_indices`][flowvla.envs.perturb.scorable_task_indices])."""
    return _NO_CHANGED_TASK.get(suite)


def scorable_task_indices(task: Any) -> list[int]:
    """The other tasks of ``task``'s suite whose goals name only objects, fixtures and regions its
    scene declares, read from the BDDL files without a simulator (what
    [`scorable_tasks`][flowvla.envs.perturb.scorable_tasks] finds in a built scene).

    Args:
        task: a [`LiberoTask`][flowvla.envs.libero.LiberoTask].
    """
    from flowvla.envs.libero import list_tasks, scene_names, task_goal

    present = scene_names(task)
    return [
        t.index
        for t in list_tasks(task.suite)
        if t.index != task.index and {n for p in task_goal(t) for n in p[1:]} <= present
    ]


def scorable_tasks(env: Any) -> list[int]:
    """The other tasks of ``env``'s suite whose goals name only objects, fixtures and regions of this
    scene (so [`LiberoEnv.set_goal`][flowvla.envs.libero.LiberoEnv.set_goal] can score them here).
    The scene's BDDL file declares the names its built model has (checked on all 40 scenes), so this is
    [`scorable_task_indices`][flowvla.envs.perturb.scorable_task_indices] of its task."""
    return scorable_task_indices(env.task)
