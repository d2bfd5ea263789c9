"""Idle starts and ends: the frames before a robot first moves and after it last moves.

Teleoperated and scripted recordings alike often begin with the robot waiting for the operator
(or the recorder) and end with it holding still until someone stops the recording. Those frames
teach a policy to stand still. They are found per episode from the actions and states alone:

- the *start pose* is the median of the first ``probe_s`` seconds of every action and state
  dimension, the *end pose* the median of the last;
- a frame has *moved* when some dimension is further from the start pose than its threshold:
  ``noise_k`` times the dimension's noise (the residual of local line fits, which a slow ramp does
  not inflate, :func:`~wallwm.pipeline.segmentation.channels.local_fit_sigma`) and at least
  ``min_range`` of the dimension's range over the episode -- so sensor jitter and a gripper value
  that flickers never count as motion, while any joint, end-effector or gripper command that
  really leaves its start does;
- the active part runs from ``pad_s`` before the first moved frame to ``pad_s`` after the last
  frame that differs from the end pose; an idle run shorter than ``min_idle_s`` is kept.

The result is a trim range ``[start, end)``, stored with the episode (non-destructive: the source
and every table row stay whole) and applied by ``materialize`` and ``export`` unless ``--no-trim``.
An episode in which nothing moves is not trimmed (it is a quality problem, not an idle margin).

The segmenter also cuts where the commands stop changing for good (:func:`final_hold_start`):
the robot holding still at the end is an event of its own, even where it is too short to trim.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from wallwm.pipeline.segmentation.channels import local_fit_sigma, moving_dims

FloatArray = npt.NDArray[np.floating]


class IdleConfig(BaseModel):
    """How idle starts and ends are told from motion (defaults: see BENCHMARKS.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    probe_s: float = Field(0.1, gt=0, description="Seconds whose median is the start/end pose.")
    noise_k: float = Field(6.0, gt=0, description="Motion beyond this many noise sigmas.")
    min_range: float = Field(0.02, ge=0, description="... and beyond this share of the range.")
    pad_s: float = Field(0.2, ge=0, description="Kept before the first and after the last motion.")
    min_idle_s: float = Field(0.5, ge=0, description="Shorter idle runs are not trimmed.")


def idle_trim(
    actions_TA: FloatArray, states_TS: FloatArray | None, fps: float, cfg: IdleConfig | None = None
) -> tuple[int, int]:
    """The active frames ``[start, end)`` of an episode (``(0, T)`` when nothing is idle)."""
    cfg = cfg or IdleConfig()
    t_len = len(actions_TA)
    moved = _moved(actions_TA, states_TS, fps, cfg)
    if moved is None:
        return 0, t_len  # nothing moves: not an idle margin
    first, last = moved
    pad, least = round(cfg.pad_s * fps), round(cfg.min_idle_s * fps)
    start = max(0, first - pad)
    end = min(t_len, last + 1 + pad)
    start = start if start >= least else 0
    end = end if t_len - end >= least else t_len
    return (start, end) if end - start > 1 else (0, t_len)


#: Shortest final hold that is an event of its own, seconds (and never under three frames).
#: Two recorders' experts end by holding their commands exactly: Jaco's scripted expert for 0.6 s
#: of zero joint velocities, ALOHA's waypoint expert for 0.2-0.7 s at its last target; a
#: command resampled from a slower stream holds for 0.1 s or less at each of its samples.
MIN_FINAL_HOLD_S = 0.2


def final_hold_start(
    actions_TA: FloatArray, gripper_dims: list[int], fps: float, left_out: list[int] | None = None
) -> int | None:
    """The first frame of the episode's final hold: where every command stops changing for good.

    A hold is exact -- no moving non-gripper command (``left_out`` ones aside) changes by more
    than a millionth of its range from one frame to the next, up to the end -- and lasts at least
    :data:`MIN_FINAL_HOLD_S`. Nothing comes after it, so it is no hesitation (the motion does not
    resume); where the commands were converging when they froze (a controller that reached its
    target, then a zero command), the change at the freeze is far below any noise scale the cost
    resolves, yet the expert decided to stop there. A gripper command may still switch inside
    the hold (its own cut). None: no such hold, or nothing ever moves. Noisy commands never hold
    exactly, so this reads noise-free recordings only.
    """
    t_len = len(actions_TA)
    x = np.asarray(actions_TA, np.float64)
    cols = [j for j in moving_dims(x, gripper_dims) if j not in set(left_out or [])]
    if not cols or t_len < 2:
        return None
    x = x[:, cols]
    changed = np.flatnonzero((np.abs(np.diff(x, axis=0)) > 1e-6 * np.ptp(x, axis=0)).any(axis=1))
    if not changed.size:
        return None
    start = int(changed[-1]) + 1  # the frame of the last change: the hold's first value
    return start if t_len - start >= max(3, round(MIN_FINAL_HOLD_S * fps)) else None


def is_still(
    actions_TA: FloatArray, states_TS: FloatArray | None, fps: float, cfg: IdleConfig | None = None
) -> bool:
    """Whether nothing in the episode ever leaves its start pose (by :func:`idle_trim`'s rule)."""
    return _moved(actions_TA, states_TS, fps, cfg or IdleConfig()) is None


def _moved(
    actions_TA: FloatArray, states_TS: FloatArray | None, fps: float, cfg: IdleConfig
) -> tuple[int, int] | None:
    """The first frame that left the start pose and the last that differs from the end pose."""
    t_len = len(actions_TA)
    window = max(5, round(0.2 * fps))
    parts, thresholds = [], []
    # Actions and states separately: noisy commands must not make the states' noise look big.
    for part in (actions_TA, states_TS):
        if part is None or t_len < 3:
            continue
        x = np.asarray(part, np.float64)
        x = x[:, np.ptp(x, axis=0) > 0]
        if x.shape[1]:
            parts.append(x)
            sigma = local_fit_sigma(x, None, window)
            thresholds.append(np.maximum(cfg.noise_k * sigma, cfg.min_range * np.ptp(x, axis=0)))
    if not parts:
        return None
    x_TD, threshold_D = np.concatenate(parts, axis=1), np.concatenate(thresholds)
    probe = max(1, round(cfg.probe_s * fps))
    left = np.abs(x_TD - np.median(x_TD[:probe], axis=0)) > threshold_D
    right = np.abs(x_TD - np.median(x_TD[-probe:], axis=0)) > threshold_D
    moved_start = np.flatnonzero(left.any(axis=1))
    moved_end = np.flatnonzero(right.any(axis=1))
    if not moved_start.size or not moved_end.size:
        return None
    return int(moved_start[0]), int(moved_end[-1])


def episode_trim(
    row: dict[str, Any], actions_TA: FloatArray, states_TS: FloatArray | None
) -> tuple[int, int]:
    """An episode's stored trim range (else, for rows from before trims, :func:`idle_trim`'s)."""
    start, end = row.get("trim_start_frame"), row.get("trim_end_frame")
    if start is not None and end is not None:
        return int(start), int(end)
    states = states_TS if states_TS is not None and np.size(states_TS) else None
    return idle_trim(actions_TA, states, float(row["fps"]))


def clip_events(events: list[dict[str, Any]], start: int, end: int) -> list[dict[str, Any]]:
    """``events`` inside ``[start, end)``: those outside dropped, the two at the edges cut.

    Each event keeps its id (and every other column).
    """
    out = []
    for e in events:
        s, t = max(int(e["start_frame"]), start), min(int(e["end_frame"]), end)
        if t > s:
            out.append({**e, "start_frame": s, "end_frame": t})
    return out
