"""Kinova Jaco recorder (extra ``sim``): joint-velocity actions from a phase-scripted expert.

dm_control's manipulation scenes (``lift``: lift a Duplo brick; ``stack``: put one brick on the
other) with the 6-joint Jaco arm and its three-finger hand. The action is 9-D: the six joints'
velocities and the three fingers' velocities (closing > 0) -- a third action space next to
MetaWorld's end-effector deltas and ALOHA's absolute end-effector poses; the state is the six
joint angles and three finger angles.

The expert is ours: phases with closed-loop resolved-rate control -- the pinch site's position
error (and the orientation error from "pointing down") mapped to joint velocities through the
damped pseudo-inverse of the site's Jacobian, clipped to the actuators' limits -- and a switch
to the next phase when the site is within a tolerance of the phase's target (or the hand has
been closing/opening for a fixed time). Each switch is a ground-truth event start. Optional
operator-like hesitations stop the arm for 8-20 steps inside a motion (no decision);
``action_noise`` adds Gaussian noise of that fraction of each actuator's limit to the executed
command.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from wallwm.pipeline.sim.reach import Reacher
from wallwm.pipeline.sources.folder import write_folder_episode

os.environ.setdefault("MUJOCO_GL", "egl")

TASKS = ("lift", "stack")
INSTRUCTIONS = {
    "lift": "pick up the brick and lift it",
    "stack": "put the brick on top of the other brick",
}
SCENES = {"lift": "lift_brick_features", "stack": "stack_2_bricks_features"}
ACTION_NAMES = [*(f"joint_{i}_velocity" for i in range(1, 7)),
                *(f"finger_{i}_velocity" for i in range(1, 4))]  # fmt: skip
STATE_NAMES = [*(f"joint_{i}" for i in range(1, 7)), *(f"finger_{i}" for i in range(1, 4))]
FINGER_SPEED = 5.0  # the hand's actuator limit
HOLD_STEPS = 12  # how long the hand closes (or opens) before the arm moves on


@dataclass(frozen=True)
class JacoConfig:
    """Options of ``wallwm sim jaco``."""

    tasks: tuple[str, ...] = TASKS
    episodes: int = 5
    size: int = 128
    #: Std of the noise on the executed joint velocities, as a fraction of each limit.
    action_noise: float = 0.0
    #: Probability that each motion phase holds still for 8-20 steps part-way (no decision).
    hesitations: float = 0.0
    max_steps: int = 300
    seed: int = 0
    workers: int = 1
    #: How each motion phase is driven. ``scripted``: resolved-rate control at a constant gain
    #: (the command is affine in the error to the phase's target, clipped at the limits).
    #: ``smooth``: a person's point-to-point reach -- a minimum-jerk path from where the hand
    #: is to the target over a Fitts-like duration, tracked with the same gain -- so the
    #: commanded speed rises and falls within every phase (bell-shaped), the way teleoperated
    #: recordings move, and is near zero at most decisions instead of jumping there.
    operator: Literal["scripted", "smooth"] = "scripted"


@dataclass(frozen=True)
class Phase:
    """One phase of the expert: where the pinch site goes and what the hand does."""

    name: str
    target: np.ndarray | None  # pinch-site position; None: stay where it is
    fingers: float  # finger velocity command (+ closes)
    tolerance: float = 0.01  # metres: the phase ends once the site is this close
    steps: int | None = None  # or after this many steps (grasping, releasing)


def phases(task: str, brick: np.ndarray, other: np.ndarray | None) -> list[Phase]:
    """The expert's phases for ``task`` given the bricks' positions."""

    def up(xyz: np.ndarray, dz: float) -> np.ndarray:
        moved: np.ndarray = xyz + np.array([0.0, 0.0, dz])
        return moved

    grasp = up(brick, 0.005)
    out = [
        Phase("move above the brick", up(brick, 0.1), -FINGER_SPEED),
        Phase("lower the hand around the brick", grasp, -FINGER_SPEED, 0.006),
        Phase("close the fingers on the brick", None, FINGER_SPEED, steps=HOLD_STEPS),
        Phase("lift the brick", up(brick, 0.15), FINGER_SPEED),
    ]
    if task == "stack" and other is not None:
        out += [
            Phase("carry the brick above the other brick", up(other, 0.12), FINGER_SPEED),
            Phase("lower the brick onto the other brick", up(other, 0.045), FINGER_SPEED, 0.006),
            Phase("open the fingers", None, -FINGER_SPEED, steps=HOLD_STEPS),
            Phase("move the hand up", up(other, 0.15), -FINGER_SPEED),
        ]
    out.append(Phase("hold", None, out[-1].fingers, steps=15))
    return out


class _Controller:
    """Resolved-rate control of the pinch site: joint velocities toward a position, hand down."""

    def __init__(self, physics: Any) -> None:
        import mujoco

        self.mj = mujoco
        self.model, self.data = physics.model.ptr, physics.data.ptr
        self.site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE,
                                      "jaco_arm/jaco_hand/pinchsite")  # fmt: skip
        joints = [f"jaco_arm/joint_{i}" for i in range(1, 7)]
        ids = [mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, j) for j in joints]
        self.dofs = [int(self.model.jnt_dofadr[j]) for j in ids]
        fingers = [f"jaco_arm/jaco_hand/finger_{i}" for i in range(1, 4)]
        self.fingers = [
            int(self.model.jnt_qposadr[mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, f)])
            for f in fingers
        ]
        self.arm_q = [int(self.model.jnt_qposadr[j]) for j in ids]
        self.limits = physics.model.actuator_ctrlrange[:6, 1].copy()

    def position(self) -> np.ndarray:
        """Where the pinch site is."""
        return np.array(self.data.site_xpos[self.site], dtype=np.float64)

    def velocities(self, target: np.ndarray, gain: float = 4.0) -> np.ndarray:
        """Joint velocities (6) moving the site toward ``target`` with the hand pointing down."""
        return self.joint_rates(gain * (target - self.position()))

    def joint_rates(self, velocity: np.ndarray) -> np.ndarray:
        """Joint velocities (6) moving the site at ``velocity`` (m/s) with the hand down."""
        jacp, jacr = np.zeros((3, self.model.nv)), np.zeros((3, self.model.nv))
        self.mj.mj_jacSite(self.model, self.data, jacp, jacr, self.site)
        jac = np.vstack([jacp[:, self.dofs], jacr[:, self.dofs]])
        rot = np.array(self.data.site_xmat[self.site]).reshape(3, 3)
        # orientation error: the site's z axis onto world -z (its yaw left free)
        z_err = np.cross(rot[:, 2], [0.0, 0.0, -1.0])
        twist = np.concatenate([velocity, 2.0 * z_err])
        damped = jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(6), twist)
        clipped: np.ndarray = np.clip(damped, -self.limits, self.limits)
        return clipped

    def state(self) -> np.ndarray:
        """Joint angles (6) and finger angles (3)."""
        return np.array([self.data.qpos[i] for i in self.arm_q + self.fingers], dtype=np.float32)


def _bricks(observation: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """The brick to move and, in a two-brick scene, the one it goes onto.

    From the scene's observations; the other brick is the scene's first (fixed) one.
    """
    keys = sorted(k for k in observation if k.startswith("duplo") and k.endswith("/position"))
    positions = [np.asarray(observation[k], dtype=np.float64).reshape(3) for k in keys]
    return positions[-1], (positions[0] if len(positions) > 1 else None)


def record_episode(task: str, index: int, cfg: JacoConfig, out: Path) -> dict[str, Any]:
    """Record one episode of ``task`` with the phase-scripted expert; returns its summary."""
    from dm_control import manipulation

    seed = cfg.seed * 100_003 + index
    rng = np.random.default_rng([seed, TASKS.index(task)])
    env = manipulation.load(SCENES[task], seed=seed)
    brick, other = _bricks(env.reset().observation)
    physics = env.physics  # a reset rebuilds the scene: its physics only now
    control = _Controller(physics)
    plan = phases(task, brick, other)
    holds = {i: int(rng.integers(8, 21)) for i, p in enumerate(plan)
             if p.target is not None and rng.random() < cfg.hesitations}  # fmt: skip
    actions, states, frames, starts = [], [], [], [(0, plan[0].name)]
    phase, in_phase, hold_at = 0, 0, None
    reacher = (
        Reacher(control.position(), float(rng.uniform(0.8, 1.25)))  # this operator's pace
        if cfg.operator == "smooth"
        else None
    )
    for _step in range(cfg.max_steps):
        p = plan[phase]
        hesitating = hold_at is not None and hold_at < holds.get(phase, 0)
        if p.target is None:
            arm = np.zeros(6)
        elif reacher is not None:
            if not hesitating:  # a hesitation holds the reference where it is
                reacher.step(p.target, env.control_timestep())
            velocity = reacher.velocity + 4.0 * (reacher.position - control.position())
            arm = control.joint_rates(velocity)
        else:
            arm = control.velocities(p.target)
        if phase in holds and hold_at is None and in_phase == 6:
            hold_at = 0
        if hold_at is not None and hold_at < holds.get(phase, 0):
            arm, hold_at = np.zeros(6), hold_at + 1  # the operator hesitates: no decision
        action = np.concatenate([arm, np.full(3, p.fingers)])
        action[:6] += rng.normal(0.0, cfg.action_noise, 6) * control.limits
        action[:6] = np.clip(action[:6], -control.limits, control.limits)
        frames.append(physics.render(cfg.size, cfg.size, camera_id="front_close"))
        states.append(control.state())
        actions.append(action.astype(np.float32))
        timestep = env.step(action)
        observation = timestep.observation
        in_phase += 1
        if timestep.last():  # the scene's own time limit: the next step would reset it
            break
        done = (p.steps is not None and in_phase >= p.steps) or (
            p.target is not None
            and np.linalg.norm(control.position() - p.target) < p.tolerance
            and (hold_at is None or hold_at >= holds.get(phase, 0))
        )
        if done:
            if phase == len(plan) - 1:
                break
            phase, in_phase, hold_at = phase + 1, 0, None
            starts.append((len(actions), plan[phase].name))
    key = f"jaco-{task}-{cfg.seed:03d}-{index:04d}"
    final, _ = _bricks(observation)
    lifted = bool(final[2] > brick[2] + 0.05) if task == "lift" else None
    write_folder_episode(
        out,
        key,
        instruction=INSTRUCTIONS[task],
        fps=1.0 / env.control_timestep(),
        actions_TA=np.stack(actions),
        frames_by_camera={"front_close": np.stack(frames)},
        states_TS=np.stack(states),
        robot="jaco",
        events=[{"start_frame": t, "name": n} for t, n in starts if t < len(actions)],
        extra_meta={
            "task": task,
            "simulator": "dm_control-jaco",
            "success": lifted,
            "action_names": ACTION_NAMES,
            "state_names": STATE_NAMES,
            "action_noise": cfg.action_noise,
            "operator": cfg.operator,
            "hesitations": {plan[i].name: n for i, n in holds.items()},
            "seed": seed,
        },
    )
    return {"key": key, "task": task, "frames": len(actions), "success": lifted,
            "events": len(starts)}  # fmt: skip


def record_jaco(
    out: str | Path,
    cfg: JacoConfig,
    on_episode: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Record ``cfg.episodes`` episodes of every task in the folder format under ``out``."""
    from wallwm.pipeline.sim.parallel import record_tasks

    return record_tasks(record_episode, cfg, out, "Jaco", TASKS, on_episode)
