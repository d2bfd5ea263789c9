"""Bends of the state-feedback line (no event) and the noise the chosen events leave."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt

from wallwm.pipeline.segmentation.changepoints import ChannelFit, SegmentCost, _prefix
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


def merge_bends(fit: ChannelFit, starts: list[int], keep: set[int]) -> list[int]:
    """Drop boundaries that a bend of the state-feedback line explains (``starts`` minus those).

    At a boundary ``b`` between ``[a, b)`` and ``[b, c)``, the cut's two independent lines are
    compared with one continuous line per state-regressed column bent at ``b`` (the other
    columns, and any whose state barely moves on one side: one line over ``[a, c)``). The cut
    has ``2D + 1 - (K + 1)`` more parameters than the bent model (``K`` bent columns, both
    with the boundary's location); it stays only if it lowers the cost by more than their BIC
    price ``per_param`` each. Dims rarely leave their limits at the same frame (a far goal on
    one axis, a near one on another), so each bent column may put its knee anywhere in
    ``[a, c)`` instead of at ``b``, paying ``per_param`` for that location. The weakest
    boundary that a bend explains goes first, then its neighbours are re-tested (the others
    keep their margins). Boundaries in ``keep`` (gripper switches) always
    stay. The fit's state columns are scaled to unit range (see :func:`feedback_regressors`).
    """
    cost, y_TD, z_TD, on_state_D = fit.cost, fit.y_TD, fit.z_TD, fit.on_state_D
    per_param = fit.per_param
    t_len, dims = y_TD.shape
    known: dict[tuple[int, int, int], float | None] = {}

    def margin(a: int, b: int, c: int) -> float | None:
        """How much the cut beats the bend by, net of its price (None: no bend to test)."""
        bend = on_state_D & (np.ptp(z_TD[a:b], axis=0) >= BEND_MIN_MOTION)
        bend &= np.ptp(z_TD[b:c], axis=0) >= BEND_MIN_MOTION
        if b in keep or not bend.any():
            return None
        rss = cost.columns(np.array([a, a, b]), np.array([c, b, c]))  # [a, c), [a, b), [b, c)
        cut = float(rss[1:].sum())
        # Each column's knee at the boundary, or anywhere leaving two samples on each side for
        # the price of one more parameter (its location).
        knots = np.array([b - a, *range(2, c - a - 1)], dtype=np.int64)
        knees_KD = bent_line_costs(y_TD[a:c, bend], z_TD[a:c, bend], knots)
        knees_D = np.minimum(knees_KD[0], knees_KD.min(axis=0) + per_param)
        bent = float(knees_D.sum() + rss[0, ~bend].sum())
        return float(bent - cut - per_param * (2 * dims - int(bend.sum())))

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
