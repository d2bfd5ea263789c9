"""The suite's recordings written as other recorders write them: are the same events found?

The same rollouts (``benchmarks/segmentation_robots.py``; record them with that script), the
same decisions, only written down differently -- the ways real datasets hold them.

**Rotations.** A rotation has more than one set of numbers (an angle and the angle plus a
turn; a quaternion and its negative), and recorders differ in which they store:

- ALOHA's end-effector targets (a position and a ``wxyz`` quaternion per arm) with the gripper
  frame pointing down (each orientation composed with a half turn about x, as a product of the
  recorded numbers so nothing is renormalised) and then
  - ``quaternion w >= 0``: canonicalised, as many libraries return quaternions;
  - ``Euler xyz``: roll, pitch, yaw in radians, each wrapped into ``(-pi, pi]`` (DROID's
    Cartesian actions; a gripper pointing down sits at a roll of +-pi);
  - ``Euler xyz, degrees``: the same in degrees;
- Jaco's joint angles (its states, up to 6.4 rad here: its joints turn without end stops) as
  a Kinova arm's encoders report them, wrapped into ``[0, 2 pi)``, and into ``[-pi, pi)``;
- the Panda's end-effector quaternion in its states, with the gripper frame pointing down,
  canonicalised to ``w >= 0``.

Each rewrite is cut by the product path (the model chosen on the rewritten recording, as
``wallwm run`` would) with ``continuous_rotations`` on -- the default -- and off (the cut as it
was before, same run); "jumps an episode" counts the steps by more than half a turn or the sign
flips the rewrite put in.

**Held commands.** A command stream slower than the frames it is stored with (a leader arm
polled at 10 Hz beside 30 Hz cameras; a ROS bag whose action topic is slower than its camera,
each frame taking the latest command): every command held for ``k`` frames -- each frame takes
the command of the last frame that is a multiple of ``k`` -- for ``k`` of 2, 3 and 5, cut with
``read_held_samples`` on (the default) and off. A decision is then known only to within the
hold: at ``k = 5`` a true boundary may show up to 4 frames late, beyond the 3 frames of F1@3.

**States held.** The same with the state stream slower than the frames (a joint-state topic
slower than the camera): every state held for ``k`` frames while the commands move on, on the
robots whose law reads its states; ``read_held_samples`` on (the states read between their
samples) and off.

**Rows stored twice.** A recorder that is late for a sample stores the last one again: each
frame, with probability 3 % or 10 %, repeats the frame before -- its commands and states
alike (seeded) -- cut with ``read_held_samples`` on (the default: such rows are read as
missed samples) and off.

**Two streams.** A bimanual robot whose arms publish their commands on topics of their own
(a ROS bag with an action topic per arm), each slower than the frames: the first half of the
motion commands (ALOHA's left arm) held 3 frames and the second half 3 frames a frame later,
or held 2 and 3 frames, or 3 frames beside an arm sampled at every frame -- cut with
``read_held_samples`` on (the default: each stream found on its own, the cut on the slowest
one's samples) and off.

**Glitches.** A device or packet glitch: one motion command off by 30 % of its range for
one frame, on 1 % or 3 % of the frames (seeded) -- cut with ``mend_glitches`` on (the default:
a command off its neighbours for one frame only is read as their mean, where a model in time
reads the commands) and off.

**Frames dropped.** A recorder that falls behind skips the frame: the row is missing and the
timestamps leave a gap. Each episode with 3 % or 10 % of its frames dropped (seeded; never the
first or last), the timestamps of the frames kept, a decision whose frame was dropped moved to
the next frame stored -- cut with ``read_held_samples`` on (the default: the models in time
read the time axis, ``segmentation/gaps.py``) and off.

Boundary F1 within 3 frames against the experts' own decisions, as in the suite.

    python benchmarks/segmentation_recorders.py [--root bench-data/robots] [--json out.json]
        [--only rotations|holds|states|repeats|drops|streams|glitches]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
from collections.abc import Callable, Mapping
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
#: Recordings the holds are measured on: each robot's noise-free and noisy rollouts, and the
#: smooth operators where recorded (a model in time each, or a law on the state).
HELD_RECORDINGS = (
    "aloha-noise0", "aloha-noise0.3", "aloha-hesitations", "aloha-smooth", "aloha-joint-noise0",
    "jaco-noise0", "jaco-noise0.3", "jaco-smooth", "panda-noise0", "panda-noise0.3",
    "metaworld-noise0", "metaworld-noise0.3",
)  # fmt: skip
HOLDS = (2, 3, 5)
#: Recordings the held states are measured on: the robots whose law reads its states.
STATE_RECORDINGS = ("jaco-noise0", "jaco-noise0.3", "panda-noise0", "panda-noise0.3",
                    "metaworld-noise0", "metaworld-noise0.3")  # fmt: skip
#: Recordings the repeated rows are measured on, and the shares of frames repeated.
REPEAT_RECORDINGS = (
    "aloha-noise0", "aloha-noise0.3", "aloha-smooth", "aloha-joint-noise0", "jaco-noise0",
    "jaco-smooth", "panda-noise0", "metaworld-noise0",
)  # fmt: skip
REPEAT_SHARES = (0.03, 0.1)
#: Every robot, each model's recordings: the models in time read the time axis, a law on the
#: state the rows as stored.
DROP_RECORDINGS = (
    "aloha-noise0", "aloha-noise0.3", "aloha-smooth", "aloha-joint-noise0", "jaco-noise0",
    "jaco-smooth", "panda-noise0", "metaworld-noise0",
)  # fmt: skip
DROP_SHARES = (0.03, 0.1)
GLITCH_SHARES = (0.01, 0.03)
#: The robots with two arms, each model's recordings.
STREAM_RECORDINGS = ("aloha-noise0", "aloha-noise0.3", "aloha-smooth", "aloha-joint-noise0")
#: Each arm's (hold, phase): both at one rate a frame apart, at two rates, one arm not held.
STREAMS = {
    "held_3_apart": ((3, 3), (0, 1)),
    "held_2_and_3": ((2, 3), (0, 0)),
    "held_3_and_1": ((3, 1), (0, 0)),
}
#: A rewrite of one episode (signals, truth, frames) and its index.
Rewritten = Callable[[dict[str, Any], int], dict[str, Any]]


def f1_of(episodes: list[dict[str, Any]], **stated: Any) -> float:
    """The product path's F1@3 on ``episodes`` (the model chosen on them)."""
    cfg, _ = product_config(episodes, **stated)
    return float(score(episodes, cfg)["overall"].f1)


def held(s: Any, hold: int) -> Any:
    """``s`` with its commands held for ``hold`` frames (each frame takes the command of the
    last frame that is a multiple of ``hold``)."""
    actions = np.asarray(s.actions_TA)
    latest = (np.arange(len(actions)) // hold) * hold
    return dataclasses.replace(s, actions_TA=actions[latest])


def rotations(root: Path) -> list[dict[str, Any]]:
    """The rotation rewrites' table (printed) and rows."""
    rows: list[dict[str, Any]] = []
    print("| recording | rewritten as | jumps an episode | as recorded | rewritten, "
          "continuous_rotations off | rewritten (on: the default) |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|")
    for robot, rewrites in REWRITES.items():
        for variant in VARIANTS:
            folder = root / f"{robot}-{variant}"
            if not (folder / ".complete").exists():
                print(f"{folder}: not recorded (benchmarks/segmentation_robots.py); skipped")
                continue
            episodes = load(folder)
            recorded = f1_of(episodes)
            for name, rewrite in rewrites.items():
                rewritten, jumps = [], 0
                for ep in episodes:
                    s, n = rewrite(ep["signals"])
                    rewritten.append({**ep, "signals": s})
                    jumps += n
                off = f1_of(rewritten, continuous_rotations=False)
                on = f1_of(rewritten)
                row = {"recording": folder.name, "rewrite": name, "recorded_f1": recorded,
                       "jumps_per_episode": jumps / len(episodes),
                       "off_f1": off, "on_f1": on}  # fmt: skip
                rows.append(row)
                print(f"| {folder.name} | {name} | {row['jumps_per_episode']:.1f} | "
                      f"{recorded:.3f} | {off:.3f} | **{on:.3f}** |", flush=True)  # fmt: skip
    return rows


def states_held(s: Any, hold: int) -> Any:
    """``s`` with its states held for ``hold`` frames."""
    states = np.asarray(s.states_TS)
    latest = (np.arange(len(states)) // hold) * hold
    return dataclasses.replace(s, states_TS=states[latest])


def off_and_on(
    root: Path,
    names: tuple[str, ...],
    rewrites: Mapping[str, Rewritten],
    flag: str = "read_held_samples",
) -> list[dict[str, Any]]:
    """Per recording, each rewrite's F1 with the reading's ``flag`` off and on (a table row
    printed per recording). A rewrite takes an episode (signals, truth, frames) and its index."""
    rows: list[dict[str, Any]] = []
    for name in names:
        folder = root / name
        if not (folder / ".complete").exists():
            print(f"{folder}: not recorded (benchmarks/segmentation_robots.py); skipped")
            continue
        episodes = load(folder)
        row: dict[str, Any] = {"recording": name, "recorded_f1": f1_of(episodes)}
        cells = []
        for key, rewrite in rewrites.items():
            stored = [rewrite(ep, i) for i, ep in enumerate(episodes)]
            off = f1_of(stored, **{flag: False, "mend_glitches": False})  # nothing read
            on = f1_of(stored)
            row[key] = {"off_f1": off, "on_f1": on}
            cells.append(f"{off:.3f} / **{on:.3f}**")
        rows.append(row)
        print(f"| {name} | {row['recorded_f1']:.3f} | " + " | ".join(cells) + " |", flush=True)
    return rows


def _with(hold_fn: Callable[[Any, int], Any], hold: int) -> Rewritten:
    """A rewrite holding each episode's stream for ``hold`` frames."""
    return lambda ep, _index: {**ep, "signals": hold_fn(ep["signals"], hold)}


def _seeded(share: float) -> Rewritten:
    """A rewrite repeating ``share`` of each episode's rows, seeded by the episode's index."""
    return lambda ep, index: {**ep, "signals": repeated(ep["signals"], share, index)}


def holds(root: Path, of: str = "commands") -> list[dict[str, Any]]:
    """The held commands' (or states', ``of="states"``) table (printed) and rows."""
    hold_fn = held if of == "commands" else states_held
    print(f"| recording | as recorded | {of} held 2 frames: off / on | held 3: off / on | "
          "held 5: off / on |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    rewrites = {f"held_{k}": _with(hold_fn, k) for k in HOLDS}
    return off_and_on(root, HELD_RECORDINGS if of == "commands" else STATE_RECORDINGS, rewrites)


def repeated(s: Any, share: float, seed: int) -> Any:
    """``s`` with each frame, with probability ``share``, storing the frame before again
    (its commands and states alike)."""
    rng = np.random.default_rng(seed)
    index = np.arange(len(s.actions_TA))
    for t in range(1, len(index)):
        if rng.random() < share:
            index[t] = index[t - 1]
    states = None if s.states_TS is None else np.asarray(s.states_TS)[index]
    return dataclasses.replace(s, actions_TA=np.asarray(s.actions_TA)[index], states_TS=states)


def repeats(root: Path) -> list[dict[str, Any]]:
    """The repeated rows' table (printed) and rows."""
    print("| recording | as recorded | 3 % of rows stored twice: off / on | 10 %: off / on |")
    print("|---|---:|---:|---:|")
    rewrites = {f"repeated_{share}": _seeded(share) for share in REPEAT_SHARES}
    return off_and_on(root, REPEAT_RECORDINGS, rewrites)


def two_streams(s: Any, holds: tuple[int, int], phases: tuple[int, int]) -> Any:
    """``s`` with its motion commands' first and second halves (an arm each on ALOHA) on
    streams of their own: each half held for its ``holds`` frames from its ``phases``."""
    actions = np.asarray(s.actions_TA).copy()
    motion = [j for j in range(actions.shape[1]) if j not in set(s.gripper_action_dims)]
    t = np.arange(len(actions))
    for half, hold, phase in zip(
        (motion[: len(motion) // 2], motion[len(motion) // 2 :]), holds, phases, strict=True
    ):
        latest = np.maximum((t - phase) // hold * hold + phase, 0)
        actions[:, half] = np.asarray(s.actions_TA)[latest][:, half]
    return dataclasses.replace(s, actions_TA=actions)


def _streams(holds: tuple[int, int], phases: tuple[int, int]) -> Rewritten:
    """A rewrite putting each episode's two halves of commands on streams of their own."""
    return lambda ep, _index: {**ep, "signals": two_streams(ep["signals"], holds, phases)}


def streams(root: Path) -> list[dict[str, Any]]:
    """The two streams' table (printed) and rows."""
    print("| recording | as recorded | both held 3, a frame apart: off / on | held 2 and 3: "
          "off / on | held 3 and not held: off / on |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    rewrites = {name: _streams(holds, phases) for name, (holds, phases) in STREAMS.items()}
    return off_and_on(root, STREAM_RECORDINGS, rewrites)


def glitched(s: Any, share: float, seed: int) -> Any:
    """``s`` with ``share`` of its frames carrying a one-frame glitch: one motion command off
    by 30 % of its range (either way) for that frame (seeded; never the first or last two)."""
    rng = np.random.default_rng(seed)
    actions = np.array(s.actions_TA, dtype=np.float64)
    motion = [j for j in range(actions.shape[1]) if j not in set(s.gripper_action_dims)]
    frames = rng.choice(np.arange(2, len(actions) - 2), round(share * len(actions)), replace=False)
    for frame in frames:
        j = motion[rng.integers(len(motion))]
        actions[frame, j] += rng.choice([-1.0, 1.0]) * 0.3 * np.ptp(actions[:, j])
    return dataclasses.replace(s, actions_TA=actions)


def glitches(root: Path) -> list[dict[str, Any]]:
    """The glitches' table (printed) and rows: ``mend_glitches`` off and on."""
    print("| recording | as recorded | 1 % of frames glitched: off / on | 3 %: off / on |")
    print("|---|---:|---:|---:|")
    rewrites: dict[str, Rewritten] = {
        f"glitched_{share}": functools.partial(_glitched_at, share=share) for share in GLITCH_SHARES
    }
    return off_and_on(root, DROP_RECORDINGS, rewrites, flag="mend_glitches")


def _glitched_at(ep: dict[str, Any], index: int, share: float) -> dict[str, Any]:
    """:func:`glitched` of an episode, seeded by its index."""
    return {**ep, "signals": glitched(ep["signals"], share, index)}


def dropped(ep: dict[str, Any], share: float, seed: int) -> dict[str, Any]:
    """``ep`` with ``share`` of its frames (never the first or last) dropped, as a recorder
    that fell behind leaves them: the rows gone, each frame's timestamp kept (the gaps show),
    and a decision whose frame was dropped at the next frame stored."""
    s = ep["signals"]
    t_len = len(s.actions_TA)
    rng = np.random.default_rng(seed)
    gone = rng.choice(np.arange(1, t_len - 1), round(share * t_len), replace=False)
    kept = np.setdiff1d(np.arange(t_len), gone)

    def rows(x: Any) -> Any:
        return None if x is None else np.asarray(x)[kept]

    stored = dataclasses.replace(
        s,
        actions_TA=rows(s.actions_TA),
        states_TS=rows(s.states_TS),
        gripper_TG=rows(s.gripper_TG),
        timestamps_s=kept / s.fps,
    )
    truth = sorted({int(np.searchsorted(kept, t)) for t in ep["truth"]})
    return {**ep, "signals": stored, "truth": truth, "frames": len(kept)}


def _dropped_at(ep: dict[str, Any], index: int, share: float) -> dict[str, Any]:
    """:func:`dropped`, seeded by the episode's index."""
    return dropped(ep, share, index)


def drops(root: Path) -> list[dict[str, Any]]:
    """The dropped frames' table (printed) and rows."""
    print("| recording | as recorded | 3 % of frames dropped: off / on | 10 %: off / on |")
    print("|---|---:|---:|---:|")
    rewrites: dict[str, Rewritten] = {
        f"dropped_{share}": functools.partial(_dropped_at, share=share) for share in DROP_SHARES
    }
    return off_and_on(root, DROP_RECORDINGS, rewrites)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="bench-data/robots")
    parser.add_argument("--json", default=None)
    parts: dict[str, Callable[[Path], list[dict[str, Any]]]] = {
        "rotations": rotations,
        "holds": holds,
        "states": functools.partial(holds, of="states"),
        "repeats": repeats,
        "drops": drops,
        "streams": streams,
        "glitches": glitches,
    }
    parser.add_argument("--only", choices=tuple(parts), default=None)
    args = parser.parse_args()
    root = Path(args.root)
    results: dict[str, Any] = {}
    for name, part in parts.items():
        if args.only in (None, name):
            results[name] = part(root)
            print()
    if args.json:
        path = Path(args.json)
        kept = json.loads(path.read_text()) if args.only and path.exists() else {}
        path.write_text(json.dumps(kept | results, indent=1))  # --only: the other parts kept


if __name__ == "__main__":
    main()
