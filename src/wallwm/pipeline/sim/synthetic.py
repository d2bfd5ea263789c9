"""A built-in, dependency-free simulated robot: a top-down gripper moving blocks on a table.

It exists so that ``make demo`` and the tests have real-looking episodes (video, actions, proprio,
instruction, ground-truth events) on any machine, without MuJoCo. A scripted closed-loop expert
runs one of three tasks through explicit phases; every phase change is a ground-truth event start.

- ``pick-place``: reach, descend, grasp, lift, carry, lower, release, retreat.
- ``push``: reach behind the block, descend, push it to the goal, retreat.
- ``reach``: reach the goal, touch down, retreat.

State is ``[x, y, z, opening]`` (metres, opening in [0, 1]); actions are ``[vx, vy, vz, grip]``
velocity commands (m/s) with ``grip`` = +1 close / -1 open, like MetaWorld's Sawyer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from wallwm.pipeline.sources.folder import write_folder_episode

TASKS = ("pick-place", "push", "reach")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (230, 200, 40),
}
TABLE_M = 1.0  # the table is a 1 m x 1 m square
HIGH_Z, LOW_Z = 0.20, 0.02


@dataclass
class SynthConfig:
    """Options of the synthetic recorder."""

    episodes: int = 6
    tasks: tuple[str, ...] = TASKS
    size: int = 96
    fps: float = 20.0
    seed: int = 0
    action_noise: float = 0.1
    max_speed_mps: float = 0.6
    cameras: tuple[str, ...] = ("top",)
    #: Per-pixel Gaussian sensor noise (std in grey levels): real cameras are never noise-free,
    #: and noise makes video decoding cost what it costs on real recordings.
    noise_std: float = 0.0


@dataclass
class _World:
    gripper: npt.NDArray[np.float64]  # x, y, z
    opening: float
    block: npt.NDArray[np.float64]  # x, y
    goal: npt.NDArray[np.float64]
    held: bool = False
    trace: list[dict[str, Any]] = field(default_factory=list)


_Ctrl = Callable[["_World"], tuple[np.ndarray, float, bool]]


def _phases(
    task: str, color: str
) -> list[tuple[str, Callable[[_World], tuple[np.ndarray, float, bool]]]]:
    """(name, controller) per phase; a controller returns (target xyz, grip cmd, done?)."""

    def at(target: np.ndarray, tol: float = 0.015) -> Callable[[_World], bool]:
        return lambda w: bool(np.linalg.norm(w.gripper - target) < tol)

    def goto(target_fn: Callable[[_World], np.ndarray], grip: float, tol: float = 0.015) -> _Ctrl:
        def ctrl(w: _World) -> tuple[np.ndarray, float, bool]:
            target = target_fn(w)
            return target, grip, at(target, tol)(w)

        return ctrl

    def wait_grip(grip: float) -> _Ctrl:
        def ctrl(w: _World) -> tuple[np.ndarray, float, bool]:
            done = w.opening <= 0.05 if grip > 0 else w.opening >= 0.95
            return w.gripper.copy(), grip, done

        return ctrl

    def above(xy_fn: Callable[[_World], np.ndarray], z: float) -> Callable[[_World], np.ndarray]:
        return lambda w: np.array([*xy_fn(w), z])

    def block(w: _World) -> np.ndarray:
        return w.block

    def goal(w: _World) -> np.ndarray:
        return w.goal

    if task == "pick-place":
        return [
            (f"reach the {color} block", goto(above(block, HIGH_Z), -1.0)),
            (f"lower to the {color} block", goto(above(block, LOW_Z), -1.0)),
            (f"grasp the {color} block", wait_grip(1.0)),
            (f"lift the {color} block", goto(above(block, HIGH_Z), 1.0)),
            ("carry it over the goal", goto(above(goal, HIGH_Z), 1.0)),
            ("lower it onto the goal", goto(above(goal, LOW_Z + 0.03), 1.0)),
            (f"release the {color} block", wait_grip(-1.0)),
            ("retreat upwards", goto(above(goal, HIGH_Z), -1.0)),
        ]
    if task == "push":

        def behind(w: _World) -> np.ndarray:
            direction = (w.goal - w.block) / (np.linalg.norm(w.goal - w.block) + 1e-9)
            return w.block - 0.08 * direction

        def push_target(w: _World) -> np.ndarray:
            direction = (w.goal - w.block) / (np.linalg.norm(w.goal - w.block) + 1e-9)
            return w.goal - 0.06 * direction

        return [
            (f"move behind the {color} block", goto(above(behind, HIGH_Z), 1.0)),
            ("lower to the table", goto(above(behind, LOW_Z), 1.0)),
            (f"push the {color} block to the goal", goto(above(push_target, LOW_Z), 1.0, 0.02)),
            ("retreat upwards", goto(above(push_target, HIGH_Z), 1.0)),
        ]
    return [
        ("reach above the goal", goto(above(goal, HIGH_Z), -1.0)),
        ("touch the goal", goto(above(goal, LOW_Z), -1.0)),
        ("retreat upwards", goto(above(goal, HIGH_Z), -1.0)),
    ]


def instruction_for(task: str, color: str) -> str:
    """Our own instruction text per task (the simulator is ours, so is the wording)."""
    return {
        "pick-place": f"pick up the {color} block and place it on the goal",
        "push": f"push the {color} block to the goal",
        "reach": "reach the goal marker",
    }[task]


def _render(w: _World, size: int, color: tuple[int, int, int], camera: str) -> np.ndarray:
    import cv2

    img = np.full((size, size, 3), (200, 180, 150), dtype=np.uint8)

    def px(xy: np.ndarray) -> tuple[int, int]:
        return int(xy[0] / TABLE_M * (size - 1)), int(xy[1] / TABLE_M * (size - 1))

    r = max(2, size // 16)
    cv2.circle(img, px(w.goal), r + 2, (90, 90, 90), 2)
    cx, cy = px(w.block)
    cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), color, -1)
    gx, gy = px(w.gripper[:2])
    scale = 1.0 + 2.5 * float(w.gripper[2])  # nearer the camera = larger
    gap = int((2 + 6 * w.opening) * scale * size / 96)
    finger = int(3 * scale * size / 96) + 1
    cv2.circle(img, (gx + 2, gy + 3), int(finger * 1.5), (150, 130, 110), -1)  # shadow
    for side in (-1, 1):
        cv2.rectangle(
            img,
            (gx + side * gap - finger // 2, gy - finger),
            (gx + side * gap + finger // 2, gy + finger),
            (30, 30, 30),
            -1,
        )
    if camera != "top":  # a second, mirrored view so multi-camera code paths get exercised
        img = np.ascontiguousarray(img[:, ::-1])
    return img


def simulate_episode(task: str, rng: np.random.Generator, cfg: SynthConfig) -> dict[str, Any]:
    """Run the scripted expert once; returns signals, frames, instruction and events."""
    color = str(rng.choice(list(COLORS)))
    block = rng.uniform(0.2, 0.8, size=2)
    goal = rng.uniform(0.2, 0.8, size=2)
    while np.linalg.norm(goal - block) < 0.3:
        goal = rng.uniform(0.2, 0.8, size=2)
    w = _World(np.array([*rng.uniform(0.1, 0.9, size=2), HIGH_Z]), 1.0, block, goal)
    dt = 1.0 / cfg.fps
    speed = cfg.max_speed_mps * rng.uniform(0.7, 1.0)
    actions: list[list[float]] = []
    states: list[list[float]] = []
    frames: dict[str, list[np.ndarray]] = {c: [] for c in cfg.cameras}
    events: list[dict[str, Any]] = []
    for name, ctrl in _phases(task, color):
        events.append({"start_frame": len(actions), "name": name})
        for _ in range(int(6 * cfg.fps)):  # a phase never runs longer than 6 s
            target, grip, done = ctrl(w)
            if done and len(actions) > int(events[-1]["start_frame"]):
                break
            velocity = np.clip((target - w.gripper) / dt, -speed, speed)
            velocity = velocity + rng.normal(0, cfg.action_noise * speed * 0.3, size=3)
            states.append([*w.gripper, w.opening])
            actions.append([*velocity, grip])
            for cam in cfg.cameras:
                img = _render(w, cfg.size, COLORS[color], cam)
                if cfg.noise_std > 0:
                    noise = rng.normal(0.0, cfg.noise_std, size=img.shape)
                    img = np.clip(img + noise, 0, 255).astype(np.uint8)
                frames[cam].append(img)
            w.gripper = np.clip(w.gripper + velocity * dt, [0, 0, 0], [TABLE_M, TABLE_M, 0.4])
            w.opening = float(np.clip(w.opening - grip * dt * 4.0, 0.0, 1.0))
            near = bool(np.linalg.norm(w.gripper[:2] - w.block) < 0.05 and w.gripper[2] < 0.06)
            if task == "pick-place":
                w.held = (w.held or (near and w.opening < 0.3)) and w.opening < 0.5
                if w.held:
                    w.block = w.gripper[:2].copy()
            elif task == "push" and w.gripper[2] < 0.06:
                offset = w.block - w.gripper[:2]
                if np.linalg.norm(offset) < 0.07:  # contact: the block is shoved ahead
                    w.block = w.gripper[:2] + 0.07 * offset / (np.linalg.norm(offset) + 1e-9)
    success = bool(np.linalg.norm(w.block - w.goal) < 0.08) if task != "reach" else True
    return {
        "task": task,
        "instruction": instruction_for(task, color),
        "actions": np.asarray(actions, dtype=np.float32),
        "states": np.asarray(states, dtype=np.float32),
        "frames": {c: np.stack(f) for c, f in frames.items()},
        "events": events,
        "success": success,
    }


def record_synthetic(out: str | Path, cfg: SynthConfig) -> list[Path]:
    """Record ``cfg.episodes`` episodes (tasks round-robin) in the folder format under ``out``."""
    rng = np.random.default_rng(cfg.seed)
    written = []
    for i in range(cfg.episodes):
        task = cfg.tasks[i % len(cfg.tasks)]
        ep = simulate_episode(task, rng, cfg)
        written.append(
            write_folder_episode(
                out,
                f"{task}-{cfg.seed:03d}-{i:04d}",
                instruction=ep["instruction"],
                fps=cfg.fps,
                actions_TA=ep["actions"],
                states_TS=ep["states"],
                gripper_T=ep["states"][:, 3],
                frames_by_camera=ep["frames"],
                robot="wallwm-synthetic-gripper",
                events=ep["events"],
                extra_meta={
                    "task": task,
                    "success": ep["success"],
                    "simulator": "wallwm.synthetic",
                },
            )
        )
    return written
