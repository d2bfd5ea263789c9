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

A closed-loop arm that pauses usually leaves *one* cut, not two: where it resumes (its
commands jump back from zero to what its law asks at the held state), while the pause itself
fits the event before well enough. :func:`merge_pauses` looks for such a single cut: a run of
frames next to it where the robot stopped although its law, fitted on the motion on both sides,
says it should move -- see :class:`_PauseTest` for the tests.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from wallwm.pipeline.segmentation.changepoints import ChannelFit, LinearCost
from wallwm.pipeline.segmentation.config import FloatArray

#: Longest hesitation or correction, seconds (operators' pauses: a fraction of a second).
MAX_DISTURBANCE_S = 0.6
#: How far a disturbance may leave the continued line, as a fraction of the merged event's travel.
MAX_EXCURSION = 0.1
#: How far a pause's states may leave the straight path between the states around it, as a
#: fraction of the merged event's state travel (see :class:`_PauseTest`).
PAUSE_EXCURSION = 2 * MAX_EXCURSION
#: Shortest pause a single cut is dropped for, seconds (and never under two frames).
MIN_PAUSE_S = 0.05
#: Shortest event between two cuts that may be a pause, seconds: an expert's own brief phases
#: (a release, a nudge) are as short as 0.075 s on MetaWorld and can stop just as abruptly.
MIN_PAUSE_EVENT_S = 0.1
#: Frames each side of a pause needs to show the law it continues, and that it moved right up
#: to the pause.
MIN_SIDE = 4


def _continued_fits(
    cost: LinearCost,
    z_TD: FloatArray,
    shift_D: npt.NDArray[np.bool_],
    before: tuple[int, int],
    after: tuple[int, int],
    delays_K: npt.NDArray[np.int64],
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """One line per column over both neighbours, for each delay, from ``cost``'s prefix sums.

    ``after``'s regressor is set back by the delay in the ``shift_D`` columns. The line is the
    one :class:`LinearCost` fits (a regressor that barely moves: the mean). Returns each delay's
    total residual ``(K,)``, slope and regressor mean ``(K, D)`` and the channels' mean ``(D,)``
    (which no delay changes).
    """
    (a, b), (c, d) = before, after
    n_after = float(d - c)
    n = float(b - a) + n_after

    def both(sums: FloatArray) -> tuple[FloatArray, FloatArray]:
        return sums[b] - sums[a], sums[d] - sums[c]

    (zb, za), (zzb, zza) = both(cost.sz), both(cost.szz)
    (yb, ya), (zyb, zya), (yyb, yya) = both(cost.sy), both(cost.szy), both(cost.syy)
    shift_KD = delays_K[:, None] * shift_D[None, :]
    sz = zb + za - n_after * shift_KD
    szz = zzb + zza - 2.0 * shift_KD * za + n_after * shift_KD**2
    sy, syy = yb + ya, yyb + yya
    szy = zyb + zya - shift_KD * ya
    z_mean_KD, y_mean_D = sz / n, sy / n
    centred_zz = szz - sz * z_mean_KD
    centred_zy = szy - sy * z_mean_KD
    flat = centred_zz <= 1e-9 * szz  # the relative test of LinearCost
    slope_KD = np.where(flat, 0.0, centred_zy / np.where(flat, 1.0, centred_zz))
    rss_KD = np.maximum(syy - sy * y_mean_D - slope_KD * centred_zy, 0.0)
    return rss_KD.sum(axis=1), slope_KD, z_mean_KD, y_mean_D


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
    # around it can sit a frame or two off the pause itself) -- only where a column runs on
    # the clock: state columns are never set back, so with none the delays all fit alike
    delays = range(max(1, run - 3), run + 4) if shift_D.any() else range(0)
    delays_K = np.array([0, *delays], dtype=np.int64)
    joined_K, slope_KD, z_mean_KD, y_mean_D = _continued_fits(
        cost, z_TD, shift_D, before, after, delays_K
    )
    # the line evaluated on the run between (a pause: it holds where the motion stopped)
    z_RD = z_TD[before[1] : after[0]]
    held_RD = np.where(shift_D, z_TD[before[1]], z_RD)
    z_KRD = np.where((delays_K > 0)[:, None, None], held_RD[None], z_RD[None])
    line_KRD = y_mean_D + slope_KD[:, None, :] * (z_KRD - z_mean_KD[:, None, :])
    off_K = np.linalg.norm(y_TD[before[1] : after[0]] - line_KRD, axis=2).max(axis=1)
    return bool(((joined_K - separate <= allowed) & (off_K <= MAX_EXCURSION * travel)).any())


def merge_disturbances(fit: ChannelFit, starts: list[int], keep: set[int]) -> list[int]:
    """``starts`` without the boundaries of disturbances (see the module docstring).

    ``keep`` (gripper switches) always stay. The regressor columns that are states are never
    set back: a robot that pauses holds its state too, and resumes from it. The first
    disturbance found (earliest start, then shortest run) goes, and the search starts again.
    Only the line models (:class:`LinearCost`) are tested: a run is judged by continuing a line
    over it.
    """
    cost, y_TD, z_TD, on_state_D = fit.cost, fit.y_TD, fit.z_TD, fit.on_state_D
    if not isinstance(cost, LinearCost):
        return starts
    t_len = len(y_TD)
    longest = max(2, round(MAX_DISTURBANCE_S * fit.fps))

    def first_disturbance(edges: list[int]) -> tuple[int, int] | None:
        for i in range(1, len(edges) - 2):
            for j in range(i + 1, len(edges) - 1):  # the run is edges[i]..edges[j]
                if edges[j] - edges[i] > longest:
                    break
                if any(edges[k] in keep for k in range(i, j + 1)):
                    continue
                before, after = (edges[i - 1], edges[i]), (edges[j], edges[j + 1])
                if _is_disturbance(cost, y_TD, z_TD, ~on_state_D, before, after, fit.per_param):
                    return edges[i], edges[j]
        return None

    points = sorted(starts)
    while (run := first_disturbance([*points, t_len])) is not None:
        points = [p for p in points if not run[0] <= p <= run[1]]
    return points


def _chord_distance(z_RD: FloatArray, start_D: FloatArray, end_D: FloatArray) -> float:
    """Largest distance of the points ``z_RD`` from the segment ``start_D -> end_D``."""
    chord = end_D - start_D
    length2 = float(chord @ chord)
    if length2 <= 1e-18:
        return float(np.linalg.norm(z_RD - start_D, axis=1).max())
    u = np.clip((z_RD - start_D) @ chord / length2, 0.0, 1.0)
    return float(np.linalg.norm(z_RD - start_D - u[:, None] * chord, axis=1).max())


class _PauseTest:
    """Whether the robot paused between two frame ranges and then carried on.

    All in the channels' unit-noise units, with the law fitted on both sides:

    - each side has at least :data:`MIN_SIDE` frames;
    - every channel over the run either stopped (its mean within 3 standard errors of zero) or
      held its level (the same mean before, during and after, within 3 standard errors: a
      finger command that stays);
    - one law over both sides costs no more than two plus the BIC price of the split (the
      motion after continues the one before);
    - the states hold: the run stays within :data:`PAUSE_EXCURSION` (twice
      :data:`MAX_EXCURSION`) of the merged event's state travel from the straight path between
      the states around it (an arm coasts on for a few frames after its commands stop:
      MetaWorld's hand at its pauses, up to 0.14 of the travel; at once MAX_EXCURSION, Jaco's
      hesitations lost 0.009, and a stop right after a decision, tested with a P-controller,
      was kept as a cut);
    - at least one channel the law says moves (> 6 standard errors) stopped, and it was still
      moving at more than half the law's pace in the frames right before the run: an
      operator's pause is abrupt, where an expert's own arrival at a sub-goal slows first;
      and it moves again in the frames right after the run. A pause is motion, a stop, then
      motion: without this, a run tried right after a decision's cut could reach into a pause
      whose still frames stood in for "the motion after", and the decision's cut went instead
      of the pause's (MetaWorld with hesitations).

    The tests on means run first, for every candidate run of a cut at once (prefix sums): most
    candidates fail them, and only the rest pay for a fitted law.
    """

    def __init__(self, fit: ChannelFit, cost: LinearCost) -> None:
        """Tests on ``fit``'s channels (``cost``: its line model's cost)."""
        self.cost, self.y_TD, self.z_TD = cost, fit.y_TD, fit.z_TD
        self.on_state_D = fit.on_state_D
        self.allowed = fit.per_param * 2 * fit.y_TD.shape[1]
        zeros = np.zeros((1, fit.y_TD.shape[1]))
        self.sums_TD = np.concatenate([zeros, np.cumsum(fit.y_TD, axis=0)])

    def _mean(self, lo: npt.NDArray[np.int64], hi: npt.NDArray[np.int64]) -> FloatArray:
        """Mean of each channel over ``[lo_i, hi_i)``: shape ``(len(lo), D)``."""
        return np.asarray((self.sums_TD[hi] - self.sums_TD[lo]) / (hi - lo)[:, None])

    def _screen(self, runs: list[tuple[tuple[int, int], tuple[int, int]]]) -> npt.NDArray[np.bool_]:
        """The tests on means for each ``(before, after)`` (sides of >= MIN_SIDE frames)."""
        (a, b), (c, d) = (np.array(v, dtype=np.int64).T for v in zip(*runs, strict=True))
        tol, tol_b, tol_a = (3.0 / np.sqrt(n)[:, None] for n in (c - b, b - a, d - c))
        run_RD, level_RD = self._mean(b, c), self._mean(a, b)
        stopped = np.abs(run_RD) <= tol
        held = (np.abs(run_RD - level_RD) <= tol + tol_b) & (
            np.abs(self._mean(c, d) - level_RD) <= tol_a + tol_b
        )
        moving_before = np.abs(self._mean(b - MIN_SIDE, b)) > tol
        moving_after = np.abs(self._mean(c, c + MIN_SIDE)) > tol
        moved = stopped & moving_before & moving_after
        return np.asarray((stopped | held).all(axis=1) & moved.any(axis=1))

    def _law_test(self, before: tuple[int, int], after: tuple[int, int]) -> bool:
        """The tests that need the law fitted on both sides (after :meth:`_screen` passed)."""
        (a, b), (c, d) = before, after
        separate = float(self.cost(np.array([a, c]), np.array([b, d])).sum())
        joined_K, slope_KD, z_mean_KD, y_mean_D = _continued_fits(
            self.cost, self.z_TD, ~self.on_state_D, before, after, np.zeros(1, dtype=np.int64)
        )
        if joined_K[0] - separate > self.allowed:
            return False
        z = self.z_TD[:, self.on_state_D]
        travel = float(np.linalg.norm(z[d - 1] - z[a]))
        if _chord_distance(z[b:c], z[b - 1], z[c]) > PAUSE_EXCURSION * travel:
            return False
        tol = 3.0 / np.sqrt(c - b)
        law_D = np.abs(y_mean_D + slope_KD[0] * (self.z_TD[b:c].mean(axis=0) - z_mean_KD[0]))
        run_D = np.abs(self.y_TD[b:c].mean(axis=0))
        tail_D = np.abs(self.y_TD[b - MIN_SIDE : b].mean(axis=0))
        return bool(((run_D <= tol) & (law_D > 2 * tol) & (tail_D > 0.5 * law_D)).any())

    def between(self, before: tuple[int, int], after: tuple[int, int]) -> bool:
        """Whether the run between ``before`` and ``after`` is a pause (all the tests)."""
        if min(before[1] - before[0], after[1] - after[0]) < MIN_SIDE:
            return False
        return bool(self._screen([(before, after)])[0]) and self._law_test(before, after)

    def around(self, a: int, c: int, d: int, lengths: range) -> bool:
        """Whether a pause of one of ``lengths`` frames ends or starts at the cut ``c``.

        ``[a, c)`` and ``[c, d)`` are the events either side of it; for each length the run
        right before the cut (the arm resumes there) is tried, then the run right after it
        (the arm stops there).
        """
        runs = []
        for r in lengths:
            runs += [((a, c - r), (c, d)), ((a, c), (c + r, d))]
        runs = [(bf, af) for bf, af in runs if min(bf[1] - bf[0], af[1] - af[0]) >= MIN_SIDE]
        if not runs:
            return False
        return any(
            self._law_test(*run) for run, ok in zip(runs, self._screen(runs), strict=True) if ok
        )


def merge_pauses(fit: ChannelFit, starts: list[int], keep: set[int]) -> list[int]:
    """``starts`` without the single cuts where a closed-loop arm resumes after a pause.

    An event of :data:`MIN_PAUSE_S` to :data:`MAX_DISTURBANCE_S` between two others is tried as
    the pause first (both its cuts go), then, for every single cut, runs of those lengths right
    before or right after it (:class:`_PauseTest`); cuts in ``keep`` stay. The first pause found
    goes, and the search starts again. Only state-feedback columns can tell a stop from
    the law (``on_state_D``); the line in time's pauses are the two-cut runs of
    :func:`merge_disturbances`.
    """
    if not fit.on_state_D.any() or not isinstance(fit.cost, LinearCost):
        return starts
    t_len, fps = len(fit.y_TD), fit.fps
    longest = max(2, round(MAX_DISTURBANCE_S * fps)) + 1
    lengths = range(max(2, round(MIN_PAUSE_S * fps)), longest)
    event_lengths = range(max(2, round(MIN_PAUSE_EVENT_S * fps)), longest)
    test = _PauseTest(fit, fit.cost)

    def pause_cuts(edges: list[int]) -> set[int]:
        # a pause cut on both sides: the event between two cuts is the run
        for a, b, c, d in zip(edges, edges[1:], edges[2:], edges[3:], strict=False):
            if (
                b not in keep
                and c not in keep
                and c - b in event_lengths
                and test.between((a, b), (c, d))
            ):
                return {b, c}
        # a pause cut on one side: a run next to the cut
        for a, c, d in zip(edges, edges[1:], edges[2:], strict=False):
            if c not in keep and test.around(a, c, d, lengths):
                return {c}
        return set()

    points = sorted(starts)
    while cuts := pause_cuts([*points, t_len]):
        points = [p for p in points if p not in cuts]
    return points
