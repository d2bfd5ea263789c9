"""Hesitations and small corrections are no events: the motion after them continues the one before.

An operator (or a controller) that pauses part-way and carries on, or swerves by a few
millimetres and comes back, makes no decision; yet each leaves kinks that a piecewise-linear
cost pays to cut. A run of short events between two longer ones is such a disturbance when

- it is short (all of it within :data:`MAX_DISTURBANCE_S`) and each neighbour is at least half
  as long (enough of the motion on both sides to tell whether it continues),
- the event after it continues the event before: one line per channel over both neighbours --
  in the line-in-time columns with the later neighbour's clock set back by about the run's
  length, as a pause delays the rest of the motion, or not set back, as a swerve does not --
  costs no more than the two separate lines plus the BIC price of the slopes and intercepts
  the split adds,
- and the run stays near that continued line: its largest distance from it (over all channels
  at once, in noise units) is at most :data:`MAX_EXCURSION` of the distance the merged event
  travels. A few millimetres off a move of many centimetres is a correction; a gripper that
  opens in between, or any other real change, leaves the line by far more.

Then the run's boundaries go and the three (or more) events are one.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from wallwm.pipeline.segmentation.changepoints import LinearCost
from wallwm.pipeline.segmentation.config import FloatArray

#: Longest hesitation or correction, seconds (operators' pauses: a fraction of a second).
MAX_DISTURBANCE_S = 0.6
#: How far a disturbance may leave the continued line, as a fraction of the merged event's travel.
MAX_EXCURSION = 0.1


def _continued_cost(
    y_TD: FloatArray,
    z_TD: FloatArray,
    shift_D: npt.NDArray[np.bool_],
    before: tuple[int, int],
    after: tuple[int, int],
    delay: int,
) -> tuple[float, FloatArray]:
    """Cost of one line per column over both neighbours, and its prediction on the run between.

    ``after``'s regressor is set back by ``delay`` in the ``shift_D`` columns. The line and its
    residual are those :class:`LinearCost` fits (a regressor that barely moves: the mean).
    """
    (a, b), (c, d) = before, after
    rows = np.r_[a:b, c:d]
    z = z_TD[rows].copy()
    z[b - a :, shift_D] -= delay
    y = y_TD[rows]
    z_mean, y_mean = z.mean(axis=0), y.mean(axis=0)
    zc, yc = z - z_mean, y - y_mean
    zz = (zc * zc).sum(axis=0)
    flat = zz <= 1e-9 * (z * z).sum(axis=0)  # the relative test of LinearCost
    slope = np.where(flat, 0.0, (zc * yc).sum(axis=0) / np.where(flat, 1.0, zz))
    total = float(((yc - slope * zc) ** 2).sum())
    # the line evaluated on the run between (a pause: it holds where the motion stopped)
    z_run = z_TD[b:c].copy()
    if delay:
        z_run[:, shift_D] = z_TD[b, shift_D]
    return total, y_mean + slope * (z_run - z_mean)


def _is_disturbance(
    cost: LinearCost,
    y_TD: FloatArray,
    z_TD: FloatArray,
    shift_D: npt.NDArray[np.bool_],
    before: tuple[int, int],
    after: tuple[int, int],
    per_param: float,
) -> bool:
    """Whether the run between ``before`` and ``after`` is one (see the module docstring)."""
    run = after[0] - before[1]
    if min(before[1] - before[0], after[1] - after[0]) < max(4, run / 2):
        return False  # too little of the motion on one side to tell it continues
    separate = float(cost(np.array([before[0], after[0]]), np.array([before[1], after[1]])).sum())
    travel = np.linalg.norm(y_TD[after[1] - 1] - y_TD[before[0]])
    allowed = per_param * 2 * y_TD.shape[1]
    # a swerve keeps the clock; a pause sets it back by about the run's length (the cuts
    # around it can sit a frame or two off the pause itself)
    for delay in (0, *range(max(1, run - 3), run + 4)):
        joined, line = _continued_cost(y_TD, z_TD, shift_D, before, after, delay)
        off = np.linalg.norm(y_TD[before[1] : after[0]] - line, axis=1).max()
        if joined - separate <= allowed and off <= MAX_EXCURSION * travel:
            return True
    return False


def merge_disturbances(
    cost: LinearCost,
    y_TD: FloatArray,
    z_TD: FloatArray,
    on_state_D: npt.NDArray[np.bool_],
    starts: list[int],
    keep: set[int],
    per_param: float,
    fps: float,
) -> list[int]:
    """``starts`` without the boundaries of disturbances (see the module docstring).

    ``keep`` (gripper switches) always stay. The regressor columns that are states are never
    set back: a robot that pauses holds its state too, and resumes from it. The first
    disturbance found (earliest start, then shortest run) goes, and the search starts again.
    """
    t_len = len(y_TD)
    longest = max(2, round(MAX_DISTURBANCE_S * fps))

    def first_disturbance(edges: list[int]) -> tuple[int, int] | None:
        for i in range(1, len(edges) - 2):
            for j in range(i + 1, len(edges) - 1):  # the run is edges[i]..edges[j]
                if edges[j] - edges[i] > longest:
                    break
                if any(edges[k] in keep for k in range(i, j + 1)):
                    continue
                before, after = (edges[i - 1], edges[i]), (edges[j], edges[j + 1])
                if _is_disturbance(cost, y_TD, z_TD, ~on_state_D, before, after, per_param):
                    return edges[i], edges[j]
        return None

    points = sorted(starts)
    while (run := first_disturbance([*points, t_len])) is not None:
        points = [p for p in points if not run[0] <= p <= run[1]]
    return points
