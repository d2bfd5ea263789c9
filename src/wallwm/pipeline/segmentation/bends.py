"""Bends of the state-feedback line (no event) and the noise the chosen events leave."""

from __future__ import annotations

import dataclasses
import functools
import itertools

import numpy as np
import numpy.typing as npt

from wallwm.pipeline.segmentation.changepoints import (
    ChannelFit,
    PolynomialCost,
    SegmentCost,
    _prefix,
)
from wallwm.pipeline.segmentation.config import FloatArray


def bent_line_cost(y_TD: FloatArray, z_TD: FloatArray, knot: int) -> float:
    """Residual sum of squares of a continuous two-piece line per column, bent at row ``knot``.

    Column ``d`` is fitted as ``c + b1 * (z - z[knot])`` before ``knot`` and
    ``c + b2 * (z - z[knot])`` from it on: one value at the knot, two slopes. A command that
    saturates at its limit and then follows the state (or the reverse) is such a bend; a new
    sub-goal is a jump it cannot fit.
    """
    return float(bent_line_costs(y_TD, z_TD, np.array([knot])).sum())


def bent_line_costs(y_TD: FloatArray, z_TD: FloatArray, knots: npt.NDArray[np.int64]) -> FloatArray:
    """:func:`bent_line_cost` of every column at every knot: shape ``(len(knots), D)``.

    All knots at once from prefix sums: the fit's normal equations before and after a knot
    need only the sums of ``z``, ``z^2``, ``y`` and ``z*y`` on each side and ``z`` at the knot.
    """
    t_len = len(y_TD)

    pz, pzz, py, pzy = _prefix(z_TD), _prefix(z_TD * z_TD), _prefix(y_TD), _prefix(z_TD * y_TD)
    zk = z_TD[knots]  # (K, D)
    n_before = knots[:, None].astype(np.float64)
    sides = []
    for lo, hi, n in ((0, knots, n_before), (knots, t_len, t_len - n_before)):
        sz, szz, sy, szy = (p[hi] - p[lo] for p in (pz, pzz, py, pzy))
        # sums of u = z - z[knot] and u*u, u*y on this side of the knot
        sides.append((sz - n * zk, szz - 2 * zk * sz + n * zk * zk, szy - zk * sy, sy))
    (su_b, suu_b, suy_b, sy_b), (su_a, suu_a, suy_a, sy_a) = sides
    # The normal equations [[n, su_b, su_a], [su_b, suu_b, 0], [su_a, 0, suu_a]] (c, b1, b2) =
    # (sy, suy_b, suy_a), solved in closed form for every knot and column at once. A side
    # where u never moves (no samples, or a stalled state) has no slope: b = 0 there.
    tiny = 1e-12
    inv_b = np.where(suu_b > tiny, 1.0 / np.maximum(suu_b, tiny), 0.0)
    inv_a = np.where(suu_a > tiny, 1.0 / np.maximum(suu_a, tiny), 0.0)
    sy = sy_b + sy_a
    den = t_len - su_b * su_b * inv_b - su_a * su_a * inv_a
    num = sy - su_b * suy_b * inv_b - su_a * suy_a * inv_a
    c = np.where(den > tiny * t_len, num / np.maximum(den, tiny * t_len), 0.0)
    slope_b, slope_a = (suy_b - su_b * c) * inv_b, (suy_a - su_a * c) * inv_a
    explained = c * sy + slope_b * suy_b + slope_a * suy_a
    total = (y_TD * y_TD).sum(axis=0)
    return np.asarray(np.maximum(total - explained, 0.0), dtype=np.float64)


#: A column bends at a boundary only if its state moves on both sides by at least this fraction
#: of its episode range: over a stalled state, a slope is unidentified and could fit a jump.
BEND_MIN_MOTION = 0.08
#: Degree of the polynomial in time a command may follow across a boundary instead of changing
#: there (:func:`merge_bends`): a reach's position is a quintic in time (minimum jerk), and a
#: joint-velocity arm's coupled commands rise and fall within one move. Picked leave-one-robot-
#: out over the four state-feedback robots from 3-6: 5 for three held-out robots, 4 for ALOHA's
#: joints (0.0004 mean F1 apart; the degrees within 0.003 of each other; BENCHMARKS.md).
CONTINUATION_DEGREE = 5


def merge_bends(fit: ChannelFit, starts: list[int], keep: set[int]) -> list[int]:
    """Drop boundaries that a bend of the state-feedback line explains (``starts`` minus those).

    A boundary ``b`` between ``[a, b)`` and ``[b, c)`` stays if either test earns it:

    - *all commands together* (:func:`_joint_margin`): the cut's two lines per column against one
      continuous line per state-regressed column bent at ``b`` or anywhere in ``[a, c)``;
    - *the commands that change there* (:func:`_column_margin`): a new sub-goal changes one or
      a few commands while the others carry on, so each column is judged alone -- changing at
      ``b`` or continuing over ``[a, c)`` (a line, a bent line, or a polynomial in time) -- and
      the changing columns must earn the boundary's location. Judged only as one sum, a command
      that bent elsewhere in the event (a knee the cut's lines cannot follow) counted against a
      boundary another command jumps at: robosuite's Panda lost 11 of 16 arrivals above the
      cube noise-free (BENCHMARKS.md).

    The weakest boundary neither test earns goes first, then its neighbours are re-tested (the
    others keep their margins). Boundaries in ``keep`` (gripper switches) always stay. The fit's
    state columns are scaled to unit range (see :func:`feedback_regressors`).
    """
    t_len = len(fit.y_TD)
    known: dict[tuple[int, int, int], float | None] = {}

    @functools.cache
    def column_inputs() -> tuple[PolynomialCost, FloatArray]:
        """The per-command test's continuation polynomial and weights (only once one is run)."""
        weight_D = persistence_weights(residual_persistence(fit.y_TD, fit.z_TD, [*starts, t_len]))
        return PolynomialCost(fit.y_TD, CONTINUATION_DEGREE), weight_D

    def margin(a: int, b: int, c: int) -> float | None:
        """How much the better test earns the cut by, net of its price (None: no bend to test)."""
        bend = fit.on_state_D & (np.ptp(fit.z_TD[a:b], axis=0) >= BEND_MIN_MOTION)
        bend &= np.ptp(fit.z_TD[b:c], axis=0) >= BEND_MIN_MOTION
        if b in keep or not bend.any():
            return None
        fits = _Fits.of(fit, (a, b, c))
        return max(_joint_margin(fit, fits, bend), _column_margin(fit, fits, *column_inputs()))

    points = list(starts)
    while len(points) > 1:
        edges = [*points, t_len]
        margins: dict[int, float] = {}
        for key in zip(edges, edges[1:], edges[2:], strict=False):
            if key not in known:
                known[key] = margin(*key)
            value = known[key]
            if value is not None:
                margins[key[1]] = value
        weakest = min(margins, key=margins.__getitem__, default=None)
        if weakest is None or margins[weakest] >= 0:
            break
        points.remove(weakest)
    return points


@dataclasses.dataclass(frozen=True)
class _Fits:
    """What both tests read at one boundary ``b`` between ``[a, b)`` and ``[b, c)``."""

    #: Each column's residual over ``[a, c)``, ``[a, b)`` and ``[b, c)``: shape ``(3, D)``.
    rss_3D: FloatArray
    #: Each state-regressed column's residual as one line bent at ``b``, or anywhere for one
    #: more parameter (inf for the others).
    knees_D: FloatArray
    abc: tuple[int, int, int]

    @classmethod
    def of(cls, fit: ChannelFit, abc: tuple[int, int, int]) -> _Fits:
        """The fits at ``abc``.

        A knee anywhere leaves two samples on each side: dims rarely leave their limits at the
        same frame (a far goal on one axis, a near one on another).
        """
        a, b, c = abc
        rss = fit.cost.columns(np.array([a, a, b]), np.array([c, b, c]))
        state = fit.on_state_D
        knots = np.array([b - a, *range(2, c - a - 1)], dtype=np.int64)
        knees_KD = bent_line_costs(fit.y_TD[a:c, state], fit.z_TD[a:c, state], knots)
        knees = np.full(len(state), np.inf)
        knees[state] = np.minimum(knees_KD[0], knees_KD.min(axis=0) + fit.per_param)
        return cls(rss, knees, abc)


def _joint_margin(fit: ChannelFit, fits: _Fits, bend: npt.NDArray[np.bool_]) -> float:
    """The cut against one bent line per bent column (one line for the others), all together.

    The cut has ``2D + 1 - (K + 1)`` more parameters than the bent model (``K`` bent columns,
    both with the boundary's location); its margin is what it lowers the cost by less their BIC
    price ``per_param`` each.
    """
    rss = fits.rss_3D
    bent = float(fits.knees_D[bend].sum() + rss[0, ~bend].sum())
    dims = fit.y_TD.shape[1]
    return float(bent - rss[1:].sum() - fit.per_param * (2 * dims - int(bend.sum())))


def _column_margin(
    fit: ChannelFit, fits: _Fits, reach: PolynomialCost, weight_D: FloatArray
) -> float:
    """What the columns that change at ``b`` earn, each alone, less the boundary's location.

    Each column's penalised cost changing at ``b`` (two lines) against its best continuation
    over ``[a, c)`` -- one line; for a state-regressed column a line bent at ``b`` or anywhere
    (here whether or not its state moves on both sides: a bend that could absorb a jump only
    makes this test stricter); or a polynomial in time of :data:`CONTINUATION_DEGREE` -- every
    fit priced at ``per_param`` per parameter. A column's saving counts where it is positive,
    weighed by ``weight_D`` (:func:`persistence_weights`): else one column's drifting noise
    could pay for a cut of its own, which the joint test's sum over columns never let it.
    """
    a, _, c = fits.abc
    params, per_param = fit.cost.params, fit.per_param
    changes = fits.rss_3D[1] + fits.rss_3D[2] + 2 * params * per_param
    line = fits.rss_3D[0] + params * per_param
    bent = fits.knees_D + (params + 1) * per_param
    moves = reach.columns(np.array([a]), np.array([c]))[0] + (CONTINUATION_DEGREE + 1) * per_param
    saving_D = np.minimum(np.minimum(line, bent), moves) - changes
    return float((np.maximum(saving_D, 0.0) * weight_D).sum() - per_param)


def residual_persistence(y_TD: FloatArray, z_TD: FloatArray, edges: list[int]) -> FloatArray:
    """Each column's lag-1 autocorrelation of its residual about its events' lines, in [0, 0.99].

    Pooled over the events ``[edges[i], edges[i+1])`` of at least 4 frames; each event's line
    in the column's own regressor. Negative values (noise that alternates) read as 0.
    """
    dims = y_TD.shape[1]
    lagged, total = np.zeros(dims), np.zeros(dims)
    for a, c in itertools.pairwise(edges):
        if c - a < 4:
            continue
        zc = z_TD[a:c] - z_TD[a:c].mean(axis=0)
        yc = y_TD[a:c] - y_TD[a:c].mean(axis=0)
        szz = (zc * zc).sum(axis=0)
        slope = np.where(szz > 1e-12, (zc * yc).sum(axis=0) / np.maximum(szz, 1e-12), 0.0)
        r = yc - slope * zc
        lagged += (r[1:] * r[:-1]).sum(axis=0)
        total += (r * r).sum(axis=0)
    rho = np.where(total > 0, lagged / np.maximum(total, 1e-300), 0.0)
    return np.asarray(np.clip(rho, 0.0, 0.99), dtype=np.float64)


def persistence_weights(rho_D: FloatArray) -> FloatArray:
    """What one column's evidence is worth under noise of lag-1 autocorrelation ``rho_D``.

    A split's gain sums squared differences of segment means; under AR(1) noise their variance
    is ``(1 + rho) / (1 - rho)`` times white noise's of the same level (the long-run variance),
    so the gain is weighed by the inverse: 1 for white noise, 0.11 at ``rho = 0.8`` (the drifting
    noise of a hand's tremor), near 0 where the residual is the within-event model's own slow
    misfit -- there only the joint test speaks, as before.
    """
    return np.asarray((1.0 - rho_D) / (1.0 + rho_D), dtype=np.float64)


def residual_excess(
    cost: SegmentCost,
    y_TD: FloatArray,
    z_TD: FloatArray,
    edges: list[int],
    bends_D: npt.NDArray[np.bool_] | None = None,
) -> FloatArray:
    """Each column's residual variance about its events' fit, in noise units, floored at 1.

    The noise level from first differences (:func:`noise_sigma`) sees only the frame-to-frame
    jitter. Where a robot's commands also carry what the events' lines do not follow (a hand's
    slow tremor, actuator lag), every cut would count that excess as evidence; dividing by it
    weighs the cuts at the noise the events actually leave. The fit is close to the one the
    cuts were judged by: the cost's own model per event (a line, or the smooth model's
    polynomial), bent once anywhere for the ``bends_D`` columns (a command
    leaving its limit is a bend, not residual; unlike the bend test, no minimum state motion is
    asked here, so a stalled column may bend too). Never below 1: a residual under the jitter
    level means the cuts already follow the noise.
    """
    dims = y_TD.shape[1]
    bends = np.zeros(dims, bool) if bends_D is None else bends_D
    ends = np.asarray(edges, dtype=np.int64)
    lines_ED = cost.columns(ends[:-1], ends[1:])
    rss_D, params_D = np.zeros(dims), np.zeros(dims)
    for (a, c), rss in zip(itertools.pairwise(edges), lines_ED, strict=True):
        params = np.full(dims, float(cost.params))
        if bends.any() and c - a >= 6:  # a knee with two samples on each side
            knees = bent_line_costs(
                y_TD[a:c, bends], z_TD[a:c, bends], np.arange(2, c - a - 1, dtype=np.int64)
            ).min(axis=0)
            bent = np.zeros(dims, bool)
            bent[bends] = knees < rss[bends]
            rss[bends] = np.minimum(rss[bends], knees)
            params[bent] = 4.0  # two slopes, the intercept and the knee
        rss_D += rss
        params_D += params
    dof = np.maximum(1.0, (edges[-1] - edges[0]) - params_D)
    return np.asarray(np.maximum(rss_D / dof, 1.0), dtype=np.float64)
