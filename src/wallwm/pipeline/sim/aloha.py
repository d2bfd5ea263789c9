"""Bimanual ALOHA recorder (extra ``sim``): end-effector waypoint experts with known decisions.

The two ViperX arms of gym-aloha's end-effector scenes (``transfer-cube``, ``insertion``) are
driven by mocap targets: each step's action is 16-D -- per arm the gripper frame's position
(3, metres), orientation quaternion (wxyz) and the gripper opening (0 closed .. 1 open) -- and
the recorded state is the 14 joint positions (6 joints + the normalised gripper per arm): the
actions live in another space than the states, unlike MetaWorld's.

The expert is ours: an open-loop waypoint plan per task (:mod:`wallwm.pipeline.sim.waypoints`),
its keyframes placed from the objects' sampled poses with jittered durations; every keyframe
where an arm's commanded motion changes is a ground-truth event start, named after it. Optional
operator-like hesitations (the whole timeline holds) and corrections (a few millimetres' swerve)
are *not* decisions; ``action_noise`` jitters the commanded poses in units of the plan's own
median per-frame step.

``action_space="joint"`` records what a joint-space dataset of the same rollouts holds instead
(LeRobot's scripted ALOHA sim datasets replay the joint trajectory of an end-effector rollout):
each step's action is 14-D -- per arm the 6 joint positions the arm reached one step later and
the commanded gripper opening -- the same quantities as the state, a step ahead, and the
waypoints' kinks smoothed by the arm's own dynamics and curved by its kinematics.

The scenes and meshes come from the ``gym-aloha`` package; the simulation steps MuJoCo directly
(50 Hz control, the scene's own physics step), rendering only the recorded cameras at the
recorded size.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wallwm.pipeline.sim.waypoints import (
    Keyframe,
    Plan,
    add_corrections,
    add_hesitations,
    add_noise,
    changed_runs,
    commands,
    decisions,
)
from wallwm.pipeline.sources.folder import write_folder_episode

os.environ.setdefault("MUJOCO_GL", "egl")

TASKS = ("transfer-cube", "insertion")
INSTRUCTIONS = {
    "transfer-cube": "pick up the red cube with the right arm and hand it over to the left arm",
    "insertion": "pick up the peg and the socket and insert the peg into the socket",
}
FPS = 50.0
ARMS = ("left", "right")
ACTION_NAMES = [
    f"{arm}_{name}"
    for arm in ("left", "right")
    for name in ("x", "y", "z", "qw", "qx", "qy", "qz", "gripper")
]
STATE_NAMES = [
    f"{arm}_{j}"
    for arm in ("left", "right")
    for j in (
        "waist",
        "shoulder",
        "elbow",
        "forearm_roll",
        "wrist_angle",
        "wrist_rotate",
        "gripper",
    )
]
#: ``action_space="joint"``: the state's joints, one step ahead (grippers commanded)
JOINT_ACTION_NAMES = STATE_NAMES


@dataclass(frozen=True)
class AlohaConfig:
    """Options of ``wallwm sim aloha``."""

    tasks: tuple[str, ...] = TASKS
    episodes: int = 5
    cameras: tuple[str, ...] = ("top",)
    size: int = 128
    #: Std of the commanded poses' jitter, in units of the plan's median per-frame step.
    action_noise: float = 0.0
    #: Share of the plan's motions holding for 8-20 frames (the timeline stops: no decision).
    hesitations: float = 0.0
    #: Share of each arm's motions with a few millimetres' swerve out and back (no decision).
    corrections: float = 0.0
    seed: int = 0
    workers: int = 1
    #: ``ee``: the mocap targets (16-D); ``joint``: the joint positions reached (14-D).
    action_space: str = "ee"
    #: ``scripted``: the waypoint expert's linear moves; ``smooth``: a person's minimum-jerk
    #: reaches between the same keyframes at the same times (the decisions stay the plan's).
    operator: str = "scripted"

    def __post_init__(self) -> None:
        if self.action_space not in ("ee", "joint"):
            raise ValueError(f"action_space must be ee or joint, not {self.action_space!r}")
        if self.operator not in ("scripted", "smooth"):
            raise ValueError(f"operator must be scripted or smooth, not {self.operator!r}")


Quat = tuple[float, float, float, float]


@functools.cache
def start_poses() -> dict[str, tuple[np.ndarray, Quat]]:
    """Each gripper frame's pose (position, wxyz quaternion) at the arms' start joint angles."""
    import mujoco
    from gym_aloha.constants import ASSETS_DIR, START_ARM_POSE

    model = mujoco.MjModel.from_xml_path(
        str(ASSETS_DIR / "bimanual_viperx_end_effector_transfer_cube.xml")
    )
    data = mujoco.MjData(model)
    data.qpos[:16] = START_ARM_POSE
    mujoco.mj_forward(model, data)
    out = {}
    for arm in ARMS:
        body = model.body(f"vx300s_{arm}/gripper_link").id
        quat = data.xquat[body]
        out[arm] = (data.xpos[body].copy(), (quat[0], quat[1], quat[2], quat[3]))
    return out


def pitched(arm: str, degrees: float) -> Quat:
    """The arm's start orientation pitched about the gripper's own y axis (down for > 0)."""
    w1, x1, y1, z1 = start_poses()[arm][1]
    half = math.radians(degrees) / 2
    w2, y2 = math.cos(half), math.sin(half)
    # Hamilton product start * (w2, 0, y2, 0): a rotation in the gripper's own frame
    return (w1 * w2 - y1 * y2, x1 * w2 - z1 * y2, w1 * y2 + y1 * w2, z1 * w2 + x1 * y2)


def _at(xyz: Any, dx: float = 0.0, dy: float = 0.0, dz: float = 0.0) -> np.ndarray:
    """``xyz`` moved by an offset (metres)."""
    out: np.ndarray = np.asarray(xyz, dtype=np.float64) + np.array([dx, dy, dz])
    return out


class _Timeline:
    """Keyframes of one arm built in order: each a duration after the previous one."""

    def __init__(self, arm: str, rng: np.random.Generator) -> None:
        xyz, quat = start_poses()[arm]
        self.keys = [Keyframe(0, (xyz[0], xyz[1], xyz[2]), quat, 0.0, "start")]
        self.rng = rng

    @property
    def t(self) -> int:
        return self.keys[-1].t

    def to(
        self,
        frames: float,
        name: str,
        xyz: Any = None,
        quat: tuple[float, float, float, float] | None = None,
        gripper: float | None = None,
        at: int | None = None,
    ) -> int:
        """Add a keyframe ``frames`` (jittered +-20 %) after the last one, or at frame ``at``."""
        last = self.keys[-1]
        t = at if at is not None else last.t + max(4, round(frames * self.rng.uniform(0.8, 1.2)))
        self.keys.append(
            Keyframe(
                t,
                tuple(float(v) for v in (last.xyz if xyz is None else xyz)),  # type: ignore[arg-type]
                last.quat if quat is None else quat,
                last.gripper if gripper is None else gripper,
                name,
            )
        )
        return t


def _offset(rng: np.random.Generator) -> int:
    """How much later (or earlier) the other arm acts: together, or at least 6 frames apart.

    Two decisions a frame or two apart are one decision to any observer.
    """
    return int(rng.choice([0, 0, *range(-12, -5), *range(6, 13)]))


def plan_transfer_cube(cube: np.ndarray, rng: np.random.Generator) -> Plan:
    """Right arm picks the cube and carries it to the middle; the left arm takes it over."""
    right, left = _Timeline("right", rng), _Timeline("left", rng)
    meet = _at([0.0, 0.5, 0.25], *rng.uniform(-0.02, 0.02, 3))
    right.to(40, "open the right gripper", gripper=1.0)
    right.to(60, "move the right gripper above the cube", _at(cube, dz=0.1), pitched("right", 60))
    right.to(35, "lower the right gripper onto the cube", _at(cube, dz=-0.015))
    t_grasp = right.to(20, "close the right gripper on the cube", gripper=0.0)
    t_meet = right.to(70, "carry the cube to the handover point", _at(meet, dx=0.06),
                      pitched("right", 20))  # fmt: skip
    left.to(0, "open the left gripper", gripper=1.0, at=t_grasp + _offset(rng))
    left.to(0, "move the left gripper toward the handover point", _at(meet, dx=-0.15),
            pitched("left", 20), at=t_meet + _offset(rng))  # fmt: skip
    left.to(30, "reach the cube with the left gripper", _at(meet, dx=-0.02))
    t_closed = left.to(20, "close the left gripper on the cube", gripper=0.0)
    t_open = right.to(20, "open the right gripper", gripper=1.0, at=t_closed + 10)
    right.to(40, "move the right arm away", _at(meet, dx=0.2, dz=0.05))
    left.to(0, "carry the cube away with the left arm", _at(meet, dx=-0.15, dz=0.05),
            at=t_open + 20 + _offset(rng))  # fmt: skip
    left.to(40, "hold the cube")
    return Plan([left.keys, right.keys])


def plan_insertion(peg: np.ndarray, socket: np.ndarray, rng: np.random.Generator) -> Plan:
    """Each arm picks its part; both lift to the middle; the right arm inserts the peg."""
    right, left = _Timeline("right", rng), _Timeline("left", rng)
    meet = _at([0.0, 0.5, 0.18], *rng.uniform(-0.02, 0.02, 3))
    left.to(40, "open the left gripper", gripper=1.0)
    right.to(0, "open the right gripper", gripper=1.0, at=left.t + _offset(rng))
    left.to(60, "move the left gripper above the socket", _at(socket, dz=0.1), pitched("left", 60))
    right.to(0, "move the right gripper above the peg", _at(peg, dz=0.1), pitched("right", 60),
             at=left.t + _offset(rng))  # fmt: skip
    t_down = max(left.t, right.t) + 35
    left.to(0, "lower the left gripper onto the socket", _at(socket, dz=-0.015), at=t_down)
    right.to(0, "lower the right gripper onto the peg", _at(peg, dz=-0.015), at=t_down)
    t_closed = left.to(20, "close the left gripper on the socket", gripper=0.0)
    right.to(0, "close the right gripper on the peg", gripper=0.0, at=t_closed)
    t_lift = left.to(70, "lift the socket to the middle", _at(meet, dx=-0.12), pitched("left", 20))
    right.to(0, "lift the peg to the middle", _at(meet, dx=0.12), pitched("right", 20), at=t_lift)
    right.to(45, "insert the peg into the socket", _at(meet, dx=0.03))
    left.to(0, "hold the socket", at=right.t)
    right.to(0, "hold the peg in the socket", at=left.t)
    return Plan([left.keys, right.keys])


class AlohaSim:
    """One gym-aloha end-effector scene stepped by 16-D mocap commands."""

    def __init__(self, task: str, cameras: tuple[str, ...], size: int) -> None:
        """Load the scene of ``task`` (``transfer-cube`` or ``insertion``)."""
        import mujoco
        from gym_aloha.constants import ASSETS_DIR

        name = task.replace("-", "_")
        self.model = mujoco.MjModel.from_xml_path(
            str(ASSETS_DIR / f"bimanual_viperx_end_effector_{name}.xml")
        )
        self.model.vis.quality.shadowsize = 0
        self.model.vis.quality.offsamples = 0
        # each gripper frame follows its mocap target exactly (the scenes' welds otherwise keep
        # the offset the two bodies have in the model's reference pose)
        for i in range(2):
            self.model.eq_data[i, 3:6] = 0.0
            self.model.eq_data[i, 6:10] = [1.0, 0.0, 0.0, 0.0]
        self.data = mujoco.MjData(self.model)
        self.substeps = max(1, round((1.0 / FPS) / self.model.opt.timestep))
        self.renderer = mujoco.Renderer(self.model, size, size)
        self.cameras = cameras
        self.task = task

    def reset(self, poses: dict[str, np.ndarray]) -> None:
        """Arms at their start pose, grippers closed, objects at ``poses`` (joint -> xyz)."""
        import mujoco
        from gym_aloha.constants import PUPPET_GRIPPER_POSITION_CLOSE, START_ARM_POSE

        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:16] = START_ARM_POSE
        for i, arm in enumerate(ARMS):
            self.data.mocap_pos[i], self.data.mocap_quat[i] = start_poses()[arm]
        close = PUPPET_GRIPPER_POSITION_CLOSE
        self.data.ctrl[:] = [close, -close, close, -close]
        for joint, xyz in poses.items():
            adr = self.model.jnt_qposadr[self.model.joint(joint).id]
            self.data.qpos[adr : adr + 7] = [*xyz, 1.0, 0.0, 0.0, 0.0]
        mujoco.mj_forward(self.model, self.data)

    def step(self, command_16: np.ndarray) -> None:
        """Move the mocap targets and gripper set points, then one control period."""
        import mujoco
        from gym_aloha.constants import unnormalize_puppet_gripper_position as grip

        for i in range(2):
            c = command_16[8 * i : 8 * i + 8]
            self.data.mocap_pos[i] = c[:3]
            self.data.mocap_quat[i] = c[3:7] / max(np.linalg.norm(c[3:7]), 1e-9)
        g_left, g_right = grip(command_16[7]), grip(command_16[15])
        self.data.ctrl[:] = [g_left, -g_left, g_right, -g_right]
        mujoco.mj_step(self.model, self.data, nstep=self.substeps)

    def state(self) -> np.ndarray:
        """The 14 joint positions (grippers normalised 0 closed .. 1 open)."""
        from gym_aloha.constants import normalize_puppet_gripper_position as norm

        q = self.data.qpos
        return np.array([*q[:6], norm(q[6]), *q[8:14], norm(q[14])], dtype=np.float32)

    def render(self, camera: str) -> np.ndarray:
        """The current frame of ``camera``."""
        self.renderer.update_scene(self.data, camera=camera)
        frame: np.ndarray = self.renderer.render().copy()
        return frame

    def success(self) -> bool:
        """The task's own top reward.

        The cube held by the left gripper off the table, or the peg touching the socket's pin.
        """
        pairs = set()
        for c in self.data.contact[: self.data.ncon]:
            names = (self.model.geom(c.geom1).name, self.model.geom(c.geom2).name)
            pairs |= {names, names[::-1]}
        if self.task == "transfer-cube":
            held = ("red_box", "vx300s_left/10_left_gripper_finger") in pairs
            return held and ("red_box", "table") not in pairs
        return ("red_peg", "pin") in pairs

    def close(self) -> None:
        """Free the renderer's GL context."""
        self.renderer.close()


def _plan(task: str, rng: np.random.Generator) -> tuple[Plan, dict[str, np.ndarray]]:
    """A plan for ``task`` and the object poses it was made for."""
    if task == "transfer-cube":
        cube = np.array([rng.uniform(0.0, 0.2), rng.uniform(0.4, 0.6), 0.05])
        return plan_transfer_cube(cube, rng), {"red_box_joint": cube}
    peg = np.array([rng.uniform(0.1, 0.2), rng.uniform(0.4, 0.6), 0.05])
    socket = np.array([rng.uniform(-0.2, -0.1), rng.uniform(0.4, 0.6), 0.05])
    return plan_insertion(peg, socket, rng), {"red_peg_joint": peg, "blue_socket_joint": socket}


def joint_actions(states_TS: np.ndarray, executed_TA: np.ndarray) -> np.ndarray:
    """Joint-space actions of a rollout (T, 14): the joints one step later, gripper commands.

    The last step repeats its state (the arm holds). The gripper entries are the commanded
    openings (the 8th and 16th end-effector action), as a replayed dataset commands them.
    """
    ahead_TS = np.concatenate([states_TS[1:], states_TS[-1:]], 0).copy()
    ahead_TS[:, 6] = executed_TA[:, 7]
    ahead_TS[:, 13] = executed_TA[:, 15]
    return ahead_TS


def record_episode(task: str, index: int, cfg: AlohaConfig, out: Path) -> dict[str, Any]:
    """Record one episode of ``task``; returns its summary."""
    seed = cfg.seed * 100_003 + index
    rng = np.random.default_rng([seed, TASKS.index(task)])
    plan, poses = _plan(task, rng)
    plan = add_hesitations(plan, rng, cfg.hesitations)
    planned = commands(plan, smooth=cfg.operator == "smooth")
    truth = decisions(plan, planned)
    corrected = add_corrections(planned, plan, rng, cfg.corrections)
    executed = add_noise(corrected, 2, rng, cfg.action_noise)
    sim = AlohaSim(task, cfg.cameras, cfg.size)
    frames: dict[str, list[np.ndarray]] = {c: [] for c in cfg.cameras}
    states, success_at = [], None
    try:
        sim.reset(poses)
        for t, command in enumerate(executed):
            for camera, views in frames.items():
                views.append(sim.render(camera))
            states.append(sim.state())
            sim.step(command)
            if success_at is None and sim.success():
                success_at = t
    finally:
        sim.close()
    key = f"aloha-{task}-{cfg.seed:03d}-{index:04d}"
    states_TS = np.stack(states)
    actions_TA = executed if cfg.action_space == "ee" else joint_actions(states_TS, executed)
    write_folder_episode(
        out,
        key,
        instruction=INSTRUCTIONS[task],
        fps=FPS,
        actions_TA=actions_TA.astype(np.float32),
        frames_by_camera={c: np.stack(v) for c, v in frames.items()},
        states_TS=states_TS,
        robot="aloha",
        events=[{"start_frame": 0, "name": "start"}]
        + [{"start_frame": t, "name": name} for t, name in truth],
        extra_meta={
            "task": task,
            "simulator": "aloha",
            "success": success_at is not None,
            "success_step": success_at,
            "action_names": ACTION_NAMES if cfg.action_space == "ee" else JOINT_ACTION_NAMES,
            "state_names": STATE_NAMES,
            "action_space": cfg.action_space,
            "action_noise": cfg.action_noise,
            "operator": cfg.operator,
            "hesitations": [list(h) for h in plan.holds],
            # the swerves, as (arm, start frame, length): disturbances, not decisions
            "corrections": [
                [arm, start, length]
                for arm in range(2)
                for start, length in changed_runs(
                    planned[:, 8 * arm : 8 * arm + 8], corrected[:, 8 * arm : 8 * arm + 8]
                )
            ],
            "seed": seed,
        },
    )
    return {"key": key, "task": task, "frames": len(executed), "success": success_at is not None,
            "events": len(truth) + 1}  # fmt: skip


def record_aloha(
    out: str | Path,
    cfg: AlohaConfig,
    on_episode: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Record ``cfg.episodes`` episodes of every task in the folder format under ``out``."""
    from wallwm.pipeline.sim.parallel import record_tasks

    return record_tasks(record_episode, cfg, out, "ALOHA", TASKS, on_episode)
