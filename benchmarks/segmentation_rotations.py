"""Rotations written as other recorders write them: does the cut still find the same events?

A rotation has more than one set of numbers (an angle and the angle plus a turn; a quaternion
and its negative), and recorders differ in which they store. The suite's recordings
(``benchmarks/segmentation_robots.py``; record them with that script) are rewritten, without
changing a single rotation, the ways real datasets hold them:

- ALOHA's end-effector targets (a position and a ``wxyz`` quaternion per arm) with the gripper
  frame pointing down (each orientation composed with a half turn about x, as a product of the
  recorded numbers so nothing is renormalised) and then
  - ``quaternion w >= 0``: canonicalised, as many libraries return quaternions;
  - ``Euler xyz``: roll, pitch, yaw in radians, each wrapped into ``(-pi, pi]`` (DROID's
    Cartesian actions; a gripper pointing down sits at a roll of +-pi);
  - ``Euler xyz, degrees``: the same in degrees;
- Jaco's joint angles (its states, up to 6.4 rad here: its joints turn without end stops) as
  a Kinova arm's encoders report them, wrapped into ``[0, 2 pi)``, and into ``(-pi, pi]``;
- the Panda's end-effector quaternion in its states, with the gripper frame pointing down,
  canonicalised to ``w >= 0``.

Each rewrite is cut by the product path (the model chosen on the rewritten recording, as
``wallwm run`` would) with ``continuous_rotations`` on -- the default -- and off (the cut as it
was before, same run). Boundary F1 within 3 frames against the experts' own decisions, as in
the suite; "jumps an episode" counts the steps by more than half a turn or the sign flips the
rewrite put in.

    python benchmarks/segmentation_rotations.py [--root bench-data/robots] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from segmentation_robots import load, product_config, score

#: A rewrite of one episode's signals: (new signals, the jumps or flips it put in).
Rewrite = Callable[[Any], tuple[Any, int]]


def gripper_down(wxyz_T4: np.ndarray) -> np.ndarray:
    """``q (x) (0, 1, 0, 0)``: each orientation composed with a half turn about its x axis,
    as the product of the recorded numbers (linear in them: nothing is renormalised)."""
    w, x, y, z = wxyz_T4.T
    out: np.ndarray = np.stack([-x, w, z, -y], axis=1)
    return out


def canonical(wxyz_T4: np.ndarray) -> tuple[np.ndarray, int]:
    """Quaternions with ``w >= 0`` and how many frames flipped sign against the one before."""
    sign = np.where(wxyz_T4[:, 0] < 0, -1.0, 1.0)
    return wxyz_T4 * sign[:, None], int(np.count_nonzero(np.diff(sign)))


def euler_xyz(wxyz_T4: np.ndarray) -> np.ndarray:
    """Roll, pitch, yaw (extrinsic xyz, radians, each in ``(-pi, pi]``) of possibly
    unnormalised quaternions."""
    from scipy.spatial.transform import Rotation

    angles: np.ndarray = Rotation.from_quat(wxyz_T4[:, [1, 2, 3, 0]]).as_euler("xyz")
    return angles


def wraps(x_TD: np.ndarray, turn: float) -> int:
    """Steps by more than half a turn."""
    return int(np.count_nonzero(np.abs(np.diff(x_TD, axis=0)) > turn / 2))


def aloha_quaternions(s: Any) -> tuple[Any, int]:
    """ALOHA's targets with the gripper frame down, quaternions canonicalised."""
    actions = np.asarray(s.actions_TA, dtype=np.float64).copy()
    flips = 0
    for q in (slice(3, 7), slice(11, 15)):
        actions[:, q], n = canonical(gripper_down(actions[:, q]))
        flips += n
    return dataclasses.replace(s, actions_TA=actions), flips


def aloha_euler(degrees: bool) -> Rewrite:
    """ALOHA's targets with the gripper frame down, orientations as Euler angles."""

    def rewrite(s: Any) -> tuple[Any, int]:
        actions = np.asarray(s.actions_TA, dtype=np.float64)
        columns, jumps = [], 0
        for arm in (0, 8):
            angles = euler_xyz(gripper_down(actions[:, arm + 3 : arm + 7]))
            angles = np.degrees(angles) if degrees else angles
            jumps += wraps(angles, 360.0 if degrees else 2 * np.pi)
            columns += [actions[:, arm : arm + 3], angles, actions[:, arm + 7 : arm + 8]]
        grippers = [6, 13]
        out = dataclasses.replace(s, actions_TA=np.hstack(columns), gripper_action_dims=grippers)
        return out, jumps

    return rewrite


def jaco_wrapped(low: float) -> Rewrite:
    """Jaco's six arm joints wrapped into ``[low, low + 2 pi)``."""

    def rewrite(s: Any) -> tuple[Any, int]:
        states = np.asarray(s.states_TS, dtype=np.float64).copy()
        states[:, :6] = np.mod(states[:, :6] - low, 2 * np.pi) + low
        return dataclasses.replace(s, states_TS=states), wraps(states[:, :6], 2 * np.pi)

    return rewrite


def panda_quaternion(s: Any) -> tuple[Any, int]:
    """The Panda's state quaternion (dims 3-6) with the gripper frame down, canonicalised."""
    states = np.asarray(s.states_TS, dtype=np.float64).copy()
    states[:, 3:7], flips = canonical(gripper_down(states[:, 3:7]))
    return dataclasses.replace(s, states_TS=states), flips


REWRITES: dict[str, dict[str, Rewrite]] = {
    "aloha": {
        "quaternion w >= 0": aloha_quaternions,
        "Euler xyz": aloha_euler(degrees=False),
        "Euler xyz, degrees": aloha_euler(degrees=True),
    },
    "jaco": {
        "joints in [0, 2pi)": jaco_wrapped(0.0),
        "joints in [-pi, pi)": jaco_wrapped(-np.pi),
    },
    "panda": {"state quaternion w >= 0": panda_quaternion},
}
VARIANTS = ("noise0", "noise0.3", "hesitations")


def f1_of(episodes: list[dict[str, Any]], **stated: Any) -> float:
    """The product path's F1@3 on ``episodes`` (the model chosen on them)."""
    cfg, _ = product_config(episodes, **stated)
    return float(score(episodes, cfg)["overall"].f1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="bench-data/robots")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    print("| recording | rewritten as | jumps an episode | as recorded | rewritten, "
          "continuous_rotations off | rewritten (on: the default) |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|")
    for robot, rewrites in REWRITES.items():
        for variant in VARIANTS:
            root = Path(args.root) / f"{robot}-{variant}"
            if not (root / ".complete").exists():
                print(f"{root}: not recorded (benchmarks/segmentation_robots.py); skipped")
                continue
            episodes = load(root)
            recorded = f1_of(episodes)
            for name, rewrite in rewrites.items():
                rewritten, jumps = [], 0
                for ep in episodes:
                    s, n = rewrite(ep["signals"])
                    rewritten.append({**ep, "signals": s})
                    jumps += n
                off = f1_of(rewritten, continuous_rotations=False)
                on = f1_of(rewritten)
                row = {"recording": root.name, "rewrite": name, "recorded_f1": recorded,
                       "jumps_per_episode": jumps / len(episodes),
                       "off_f1": off, "on_f1": on}  # fmt: skip
                rows.append(row)
                print(f"| {root.name} | {name} | {row['jumps_per_episode']:.1f} | "
                      f"{recorded:.3f} | {off:.3f} | **{on:.3f}** |", flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
