"""Open-loop waypoint experts: commands interpolated between keyframes, with known decisions.

A plan is a list of keyframes per arm, each holding a command (position, quaternion, gripper)
at a frame; commands between keyframes are linear in time (quaternions component-wise, as the
ACT authors' scripted experts do). Every keyframe where some arm's commanded motion changes is
one decision of the expert: the ground-truth event starts.

Operator-like disturbances that are *not* decisions can be added:

- hesitations: the whole timeline holds for a few frames inside a motion (every arm stops,
  then carries on to the same keyframe; later keyframes move later);
- corrections: one arm's position swerves by a few millimetres and comes back inside a motion;
- noise: Gaussian jitter on every commanded position and quaternion, in units of the plan's own
  median per-frame step (so 0.3 means the same on a slow arm and a fast one).

Pure numpy; the simulators execute the commands and record what was executed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Keyframe:
    """One arm's command at frame ``t``: position (3), quaternion wxyz (4), gripper (0..1)."""

    t: int
    xyz: tuple[float, float, float]
    quat: tuple[float, float, float, float]
    gripper: float
    name: str = ""

    def vector(self) -> FloatArray:
        """The command as an 8-vector (xyz, quaternion, gripper)."""
        return np.array([*self.xyz, *self.quat, self.gripper], dtype=np.float64)


@dataclass
class Plan:
    """Keyframes per arm (the first of each at frame 0); commands are interpolated between."""

    arms: list[list[Keyframe]]
    #: Frames where the timeline holds (hesitations): (frame, length).
    holds: list[tuple[int, int]] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        """Frames of the plan, holds included (one past the last keyframe)."""
        return max(arm[-1].t for arm in self.arms) + 1 + sum(n for _, n in self.holds)


def interpolate(keys: list[Keyframe], frames: int, smooth: bool = False) -> FloatArray:
    """Commands (T, 8) of one arm: linear between keyframes, held after the last.

    ``smooth``: the pose (position and quaternion) moves as a person's reach instead -- a
    minimum-jerk path from rest at one keyframe to rest at the next in the same time (Flash &
    Hogan: ``10 s^3 - 15 s^4 + 6 s^5`` of the way at ``s`` of the time), so the speed rises and
    falls within every move and only the jerk changes at a decision; the gripper stays linear.
    """
    times = np.array([k.t for k in keys], dtype=np.float64)
    values = np.stack([k.vector() for k in keys])
    t = np.arange(frames, dtype=np.float64)
    pose_t = t
    if smooth and len(times) > 1:
        k = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 2)
        span = np.maximum(times[k + 1] - times[k], 1.0)
        s = np.clip((t - times[k]) / span, 0.0, 1.0)
        pose_t = times[k] + span * s**3 * (10.0 - 15.0 * s + 6.0 * s**2)
    columns = [np.interp(pose_t if d < 7 else t, times, values[:, d]) for d in range(8)]
    return np.stack(columns, axis=1)


def _warp(plan_frames: int, holds: list[tuple[int, int]]) -> npt.NDArray[np.int64]:
    """The plan frame shown at every recorded frame: a hold repeats its frame."""
    extra = dict.fromkeys(range(plan_frames), 0)
    for at, length in holds:
        extra[at] += length
    return np.array([t for t in range(plan_frames) for _ in range(1 + extra[t])], dtype=np.int64)


def commands(plan: Plan, smooth: bool = False) -> FloatArray:
    """Every arm's commands, (T, 8 x arms), with the plan's holds applied.

    ``smooth``: a person's reaches between the keyframes (:func:`interpolate`).
    """
    plan_frames = max(arm[-1].t for arm in plan.arms) + 1
    warp = _warp(plan_frames, plan.holds)
    return np.concatenate(
        [interpolate(keys, plan_frames, smooth)[warp] for keys in plan.arms], axis=1
    )


def recorded_frame(plan: Plan, t_plan: int) -> int:
    """The recorded frame at which plan frame ``t_plan`` is reached (after earlier holds)."""
    return t_plan + sum(n for at, n in plan.holds if at < t_plan)


def decisions(
    plan: Plan, commands_TD: FloatArray, tol: float = 1e-9, min_gap: int = 5
) -> list[tuple[int, str]]:
    """The expert's decisions: recorded frames where some arm's commanded motion changes.

    A keyframe counts when the command's velocity (any of its 8 dims) differs before and after
    it -- a keyframe on a straight line at the same speed changes nothing and is no decision.
    Keyframes of different arms fewer than ``min_gap`` frames apart are one moment (0.1 s at
    50 Hz): the first stands for both.
    """
    out: dict[int, str] = {}
    for arm, keys in enumerate(plan.arms):
        seg = commands_TD[:, 8 * arm : 8 * arm + 8]
        for key in keys[1:]:
            t = recorded_frame(plan, key.t)
            if not 1 <= t < len(commands_TD) - 1:
                continue
            before = seg[t] - seg[t - 1]
            after = seg[t + 1] - seg[t]
            if np.abs(after - before).max() > tol:
                out.setdefault(t, key.name)
    kept: list[tuple[int, str]] = []
    for t, name in sorted(out.items()):
        if not kept or t - kept[-1][0] >= min_gap:
            kept.append((t, name))
    return kept


def add_hesitations(
    plan: Plan, rng: np.random.Generator, rate: float, length: tuple[int, int] = (8, 20)
) -> Plan:
    """A copy of ``plan`` that holds inside ``rate`` of its moving segments (hesitations)."""
    holds = list(plan.holds)
    # one timeline: holds are placed along the first arm's segments
    for a, b in itertools.pairwise(plan.arms[0]):
        moving = b.t - a.t >= 20 and not np.allclose(a.vector()[:3], b.vector()[:3])
        if moving and rng.random() < rate:
            at = int(rng.integers(a.t + 6, b.t - 6))
            holds.append((at, int(rng.integers(*length))))
    return Plan(plan.arms, holds)


def add_corrections(
    commands_TD: FloatArray,
    plan: Plan,
    rng: np.random.Generator,
    rate: float,
    size_m: float = 0.006,
) -> FloatArray:
    """Small swerves (out and back, a few mm) of one arm's position inside its motions."""
    out = commands_TD.copy()
    for arm, keys in enumerate(plan.arms):
        for a, b in itertools.pairwise(keys):
            ta, tb = recorded_frame(plan, a.t), recorded_frame(plan, b.t)
            if tb - ta < 24 or rng.random() >= rate:
                continue
            width = int(rng.integers(10, 17))
            start = int(rng.integers(ta + 4, tb - width - 4))
            bump = np.interp(np.arange(width), [0, width / 2, width - 1], [0.0, 1.0, 0.0])
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            out[start : start + width, 8 * arm : 8 * arm + 3] += size_m * bump[:, None] * direction
    return out


def changed_runs(before_TD: FloatArray, after_TD: FloatArray) -> list[tuple[int, int]]:
    """The runs of frames where ``after_TD`` differs from ``before_TD``: ``(start, length)``.

    What :func:`add_corrections` swerved (recorded with the episode, as its hesitations are).
    """
    changed = np.any(after_TD != before_TD, axis=1).astype(np.int8)
    edges = np.diff(np.concatenate([[0], changed, [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(a), int(b - a)) for a, b in zip(starts, ends, strict=True)]


def add_noise(
    commands_TD: FloatArray, arms: int, rng: np.random.Generator, scale: float
) -> FloatArray:
    """Gaussian jitter on positions and quaternions, in units of the median per-frame step."""
    if scale <= 0:
        return commands_TD
    out = commands_TD.copy()
    for arm in range(arms):
        for cols in (slice(8 * arm, 8 * arm + 3), slice(8 * arm + 3, 8 * arm + 7)):
            step = np.linalg.norm(np.diff(commands_TD[:, cols], axis=0), axis=1)
            moving = step[step > 1e-9]
            sigma = scale * (float(np.median(moving)) if moving.size else 0.0)
            width = cols.stop - cols.start
            out[:, cols] += rng.normal(0.0, sigma / np.sqrt(width), size=(len(out), width))
    return out
