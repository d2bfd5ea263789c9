"""Record robosuite's Panda under its OSC_POSE controller with a phase-scripted expert.

A fourth embodiment for the segmentation suite, held out from every tuning: the action space of
robomimic's and LIBERO's datasets (7-D: end-effector position and rotation deltas scaled to
[-1, 1], and a +/-1 gripper command), 20 Hz control, an operational-space impedance controller
between the command and the arm. robosuite pins numpy and mujoco versions the project does not
use, so this script runs in a scratch venv of its own (see ``README.md`` here) and writes one
``.npz`` per episode; ``benchmarks/robosuite_support/to_folder.py`` turns them into a folder
source in the project's environment.

The expert (ours): phases of closed-loop position control -- each step commands the remaining
error to the phase's target, clipped to the phase's speed -- with the hand kept pointing down
(turned to a cube's faces where it grasps or places), and a switch to the next phase when the
gripper is within 1.2 cm and 8 degrees of the target (or the hand has been closing / opening
for a fixed time, or a phase has run out of steps). Each switch is a ground-truth event start;
the episode ends a few steps after success, and an episode that fails is recorded again from
the next seed (demonstrations keep successes). ``lift``: above the cube, down to it, close,
lift. ``stack``: above cube A, down, close, lift, above cube B, down onto it, open.

Variants: Gaussian action noise (a fraction of the command range, on the executed command, as
MetaWorld's and Jaco's recordings), and operator-like hesitations -- pauses of 8-20 steps and
4-8 step sideways swerves inside a motion phase, no decision (``--hesitations``).

Usage (scratch venv): ``python record_panda.py OUT --episodes 8 --noise 0.3 [--hesitations]``
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

#: The OSC_POSE controller's output for a command of 1 (metres): commands are errors over this.
POS_SCALE = 0.05
HOLD_STEPS = 12  # how long the hand closes or opens before the arm moves on
PHASE_LIMIT = 80  # steps before a phase that never reaches its target gives up
TOLERANCE_M = 0.012
ROT_SCALE = 0.5  # the controller's rotation output for a command of 1 (radians)
YAW_TOLERANCE = np.radians(8.0)
AFTER_SUCCESS = 5
RETRIES = 6  # seeds tried per episode before a failed one is kept


@dataclass(frozen=True)
class Phase:
    """One phase of the expert: where it moves, how fast, and the gripper command."""

    name: str
    target: str  # "above:<obj>", "at:<obj>", "lift:<obj>", "above_place", "place", "hold"
    speed: float  # max |command| per axis
    gripper: float  # -1 open, +1 closed
    hold_steps: int = 0  # a timed phase (the hand closing / opening), no target to reach
    align: str = ""  # turn the hand to this object's yaw (a cube's faces: modulo 90 degrees)


TASKS = {
    "lift": [
        Phase("move above the cube", "above:cube", 1.0, -1.0, align="cube"),
        Phase("lower the hand around the cube", "at:cube", 0.5, -1.0, align="cube"),
        Phase("close the gripper on the cube", "hold", 0.0, 1.0, HOLD_STEPS),
        Phase("lift the cube", "lift:cube", 0.8, 1.0),
    ],
    "stack": [
        Phase("move above the red cube", "above:cubeA", 1.0, -1.0, align="cubeA"),
        Phase("lower the hand around the red cube", "at:cubeA", 0.5, -1.0, align="cubeA"),
        Phase("close the gripper on the red cube", "hold", 0.0, 1.0, HOLD_STEPS),
        Phase("lift the red cube", "lift:cubeA", 0.8, 1.0),
        Phase("carry it above the green cube", "above_place", 1.0, 1.0, align="cubeB"),
        Phase("lower it onto the green cube", "place", 0.4, 1.0, align="cubeB"),
        Phase("open the gripper", "hold", 0.0, -1.0, HOLD_STEPS),
    ],
}
INSTRUCTIONS = {"lift": "pick up the cube", "stack": "stack the red cube on the green cube"}
ENVS = {"lift": "Lift", "stack": "Stack"}


def target_of(phase: Phase, obs: dict[str, np.ndarray], anchor: np.ndarray) -> np.ndarray:
    """The phase's target position for the gripper site."""
    kind, _, obj = phase.target.partition(":")
    base, height = {
        "above": (obs.get(f"{obj}_pos"), 0.10),
        "at": (obs.get(f"{obj}_pos"), 0.0),
        "lift": (anchor, 0.15),
        "above_place": (obs.get("cubeB_pos"), 0.10),
        "place": (obs.get("cubeB_pos"), 0.045),
    }.get(kind, (anchor, 0.0))  # "hold": where the phase started
    target: np.ndarray = np.asarray(base, dtype=np.float64) + np.array([0.0, 0.0, height])
    return target


@dataclass(frozen=True)
class Episode:
    """One recorded episode."""

    actions: np.ndarray
    states: np.ndarray
    gripper: np.ndarray
    labels: list[str]
    success_step: int | None


def _yaw(rot: np.ndarray) -> float:
    return float(np.arctan2(rot[1, 0], rot[0, 0]))


def turn_command(
    phase: Phase, obs: dict[str, np.ndarray], down: np.ndarray, yaw: float
) -> tuple[np.ndarray, float]:
    """The rotation command that keeps the hand pointing down at the phase's yaw, and the angle
    (radians) left to turn.

    The yaw is the phase's object's (a cube's faces: modulo 90 degrees, the nearest), or
    ``yaw`` held from the phase's start; ``down`` is the hand's orientation at reset.
    """
    from robosuite.utils.transform_utils import mat2quat, quat2axisangle, quat2mat

    current = quat2mat(obs["robot0_eef_quat"])
    if phase.align:
        quarter = np.pi / 2
        diff = _yaw(quat2mat(obs[f"{phase.align}_quat"])) - _yaw(current)
        yaw = _yaw(current) + float((diff + quarter / 2) % quarter - quarter / 2)
    turn = yaw - _yaw(down)
    about_z = np.array([[np.cos(turn), -np.sin(turn), 0.0], [np.sin(turn), np.cos(turn), 0.0],
                        [0.0, 0.0, 1.0]])  # fmt: skip
    error = quat2axisangle(mat2quat(about_z @ down @ current.T))
    return np.clip(error / ROT_SCALE * 2.0, -0.5, 0.5), float(np.linalg.norm(error))


def record_episode(task: str, seed: int, noise: float, hesitations: float) -> Episode:
    """One episode's commands, states, phases and success step."""
    import robosuite as suite
    from robosuite.controllers import load_composite_controller_config
    from robosuite.utils.transform_utils import quat2mat

    rng = np.random.default_rng(seed)
    config = load_composite_controller_config(controller="BASIC", robot="Panda")
    env = suite.make(
        ENVS[task],
        robots="Panda",
        controller_configs=config,
        has_renderer=False,
        has_offscreen_renderer=False,
        use_camera_obs=False,
        control_freq=20,
        horizon=400,
        ignore_done=True,
        seed=seed,  # the objects' placement
    )
    obs = env.reset()
    phases = TASKS[task]
    actions, states, gripper, labels = [], [], [], []
    k, since, anchor = 0, 0, obs["robot0_eef_pos"].copy()
    down = quat2mat(obs["robot0_eef_quat"])
    held_yaw = _yaw(down)
    pause_left, swerve_left, swerve_dir = 0, 0, np.zeros(3)
    disturb_at = -1
    success_step = None
    for step in range(400):
        phase = phases[k]
        pos = obs["robot0_eef_pos"]
        target = target_of(phase, obs, anchor)
        error = target - pos
        if phase.hold_steps:
            done = since >= phase.hold_steps
        else:
            aligned = turn_command(phase, obs, down, held_yaw)[1] < YAW_TOLERANCE
            done = (np.linalg.norm(error) < TOLERANCE_M and aligned) or since >= PHASE_LIMIT
        if done and k + 1 < len(phases):
            k, since, anchor = k + 1, 0, pos.copy()
            held_yaw = _yaw(quat2mat(obs["robot0_eef_quat"]))
            phase = phases[k]
            target = target_of(phase, obs, anchor)
            error = target - pos
            moving = not phase.hold_steps
            disturb_at = int(rng.integers(3, 15)) if moving and rng.random() < hesitations else -1
        move = np.clip(error / POS_SCALE, -phase.speed, phase.speed)
        if since == disturb_at and not phase.hold_steps:
            if rng.random() < 0.5:
                pause_left = int(rng.integers(8, 21))
            else:
                swerve_left = int(rng.integers(4, 9))
                side = np.array([-error[1], error[0], 0.0])
                swerve_dir = side / max(np.linalg.norm(side), 1e-6) * 0.4
        if pause_left > 0:
            move, pause_left = np.zeros(3), pause_left - 1
            since -= 1  # the operator's pause does not use up the phase's steps
        elif swerve_left > 0:
            move, swerve_left = move + swerve_dir, swerve_left - 1
        turn = turn_command(phase, obs, down, held_yaw)[0] if pause_left == 0 else np.zeros(3)
        command = np.concatenate([move, turn, [phase.gripper]])
        executed = command.copy()
        executed[:6] = np.clip(executed[:6] + noise * rng.standard_normal(6), -1.0, 1.0)
        states.append(np.concatenate([pos, obs["robot0_eef_quat"], obs["robot0_gripper_qpos"]]))
        gripper.append(float(obs["robot0_gripper_qpos"][0] - obs["robot0_gripper_qpos"][1]))
        actions.append(executed)
        labels.append(phase.name)
        obs, _, _, _ = env.step(executed)
        since += 1
        if success_step is None and env._check_success():
            success_step = step + 1
        if success_step is not None and step + 1 >= success_step + AFTER_SUCCESS:
            break
    env.close()
    return Episode(
        np.array(actions, dtype=np.float32),
        np.array(states, dtype=np.float32),
        np.array(gripper, dtype=np.float32),
        labels,
        success_step,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--noise", type=float, default=0.0)
    parser.add_argument("--hesitations", type=float, default=0.0)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shard", default="0/1", help="i/n: record every n-th episode from i")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    i_shard, n_shard = (int(x) for x in args.shard.split("/"))
    jobs = [(t, e) for t in args.tasks for e in range(args.episodes)]
    for n, (task, e) in enumerate(jobs):
        if n % n_shard != i_shard:
            continue
        seed = args.seed * 100_000 + list(TASKS).index(task) * 1_000 + e
        for attempt in range(RETRIES):  # demonstrations keep successes (as robomimic's, MimicGen's)
            ep = record_episode(task, seed + attempt * 500, args.noise, args.hesitations)
            if ep.success_step is not None:
                break
        key = f"panda-{task}-{args.seed:03d}-{e:04d}"
        np.savez(out / f"{key}.npz", actions=ep.actions, states=ep.states, gripper=ep.gripper)
        meta = {
            "task": task,
            "instruction": INSTRUCTIONS[task],
            "labels": ep.labels,
            "success_step": ep.success_step,
            "action_noise": args.noise,
            "hesitations": args.hesitations,
            "seed": seed + attempt * 500,
        }
        (out / f"{key}.json").write_text(json.dumps(meta))
        print(key, len(ep.labels), "success", ep.success_step, flush=True)


if __name__ == "__main__":
    main()
