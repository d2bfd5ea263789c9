"""A closed-loop controller's gain, shared by its events (``shared_gain``).

A controller steering to a sub-goal commands ``gain * (goal - state)``: within an event each
command is a line in its paired state. The line model fits each event's slope and intercept
afresh, so a new event pays for two parameters per command. But a controller keeps its gain
when it switches sub-goal -- only the goal moves, which moves the line's intercept alone. Priced
as two parameters, a new goal under noise is often not worth its cut (the misses of the noisy
closed-loop recordings: a third of MetaWorld's and Panda's boundaries at action noise 0.3).

:class:`SharedGainCost` lets each command of each event take either the episode's own gain
(the line's slope shared by the whole episode: one parameter, the intercept) or a slope of its
own, for one more parameter's BIC price -- an actuator held at its limit, a gain scheduled by
phase, a controller that is no P-law. The event's price falls to one parameter per command plus
its location; a command whose slope really changes pays what it paid before. The shared slope
of each command is read from the episode, off a first cut with the line model: the slope the
events that follow it agree on (:func:`shared_gains`), blind to a command held at its limit.

Measured on the suite (``benchmarks/segmentation_robots.py``, BENCHMARKS.md): F1 rises on
every closed-loop robot at action noise 0.3 and with hesitations (MetaWorld 0.809 -> 0.847,
the Panda 0.739 -> 0.797, Jaco 0.766 -> 0.774); Jaco noise-free loses 0.02 (one failed
episode's limit cycle). Position targets keep each event's own slopes
(:func:`~.segment.shares_gain`), and so does a held command stream (a command topic slower than
the frames, :mod:`.held`): each stair steps every intercept while the state moves on, a cut
this model would price at one parameter a command (the suite's commands held 2-5 frames at
noise 0.3: MetaWorld, Jaco and the Panda gain 0.01-0.05 with their own slopes).
"""

from __future__ import annotations

import copy

import numpy as np
import numpy.typing as npt

from wallwm.pipeline.segmentation.changepoints import LinearCost
from wallwm.pipeline.segmentation.config import FloatArray


def shared_gains(
    cost: LinearCost, edges: list[int], on_state_D: npt.NDArray[np.bool_], per_param: float
) -> FloatArray:
    """Each state-paired column's shared slope over the events ``[edges[i], edges[i+1])``.

    The slope ``g`` that makes the events cheapest under :class:`SharedGainCost`: an event
    whose own slope ``b`` is ``g`` misfits by ``Szz (g - b)^2`` (its centred state sums), and
    one that keeps its own slope pays ``per_param`` instead -- so ``g`` minimises
    ``sum min(per_param, Szz (g - b)^2)``, a least-squares fit of the events that agree with
    it, blind to those that do not (a command held at its limit, a phase of another gain).
    """
    a, b = np.asarray(edges[:-1], dtype=np.int64), np.asarray(edges[1:], dtype=np.int64)
    n = np.maximum(cost.n[b] - cost.n[a], 1.0)[:, None]
    sz, sy = cost.sz[b] - cost.sz[a], cost.sy[b] - cost.sy[a]
    centred_zz_ED = cost.szz[b] - cost.szz[a] - sz * sz / n
    centred_zy_ED = cost.szy[b] - cost.szy[a] - sz * sy / n
    out = np.zeros(cost.dims)
    for d in np.flatnonzero(on_state_D):
        moved = centred_zz_ED[:, d] > 1e-12
        if moved.any():
            zz, zy = centred_zz_ED[moved, d], centred_zy_ED[moved, d]
            out[d] = _truncated_fit(zy / zz, zz, per_param)
    return out


def _truncated_fit(slope_E: FloatArray, weight_E: FloatArray, cap: float) -> float:
    """The ``g`` minimising ``sum min(cap, weight (g - slope)^2)`` (from each event's slope).

    Started at each event's own slope, refined by the weighted mean of the events within the
    cap (each step lowers the sum; a few settle it); the best of those.
    """

    def loss(g: float) -> float:
        return float(np.minimum(cap, weight_E * (g - slope_E) ** 2).sum())

    best, best_loss = 0.0, np.inf
    for start in slope_E:
        g = float(start)
        for _ in range(REFINE_STEPS):
            inside = weight_E * (g - slope_E) ** 2 < cap
            g = float((weight_E * slope_E)[inside].sum() / weight_E[inside].sum())
        if loss(g) < best_loss:
            best, best_loss = g, loss(g)
    return best


#: Refinements of each start of :func:`_truncated_fit` (each keeps the events within the cap
#: and takes their weighted mean; a start's own event is always within, so none is empty).
REFINE_STEPS = 4


class SharedGainCost:
    """Each column's line at the episode's shared slope, or its own for ``per_param`` more.

    Per column and segment the cheaper of: the residual of the line whose slope is
    ``gain_D`` (the intercept fitted), and the residual of its own line plus ``per_param``
    (one more parameter's BIC price, in the channels' unit-noise units). Columns off the state
    always fit their own line (``per_param`` included, so the event price counts one parameter
    per column: :attr:`params` is 1). O(1) per query: ``line``'s prefix sums, and those of
    ``y - gain * z`` (whose residual about its mean is the shared line's).
    """

    params = 1  # the intercept; a slope of its own is paid inside the cost

    def __init__(
        self,
        line: LinearCost,
        gain_D: FloatArray,
        on_state_D: npt.NDArray[np.bool_],
        per_param: float,
    ) -> None:
        """``line``: the episode's line cost; ``gain_D``: each column's shared slope."""
        self.line, self.per_param, self.dims = line, per_param, line.dims
        self.state = np.flatnonzero(on_state_D)
        gain = gain_D[self.state]
        # Prefix sums of r = y - gain * z and of r^2, from the line's (sums are linear).
        self.sr = line.sy[:, self.state] - gain * line.sz[:, self.state]
        self.srr = (
            line.syy[:, self.state]
            - 2.0 * gain * line.szy[:, self.state]
            + gain * gain * line.szz[:, self.state]
        )
        #: How much more two segments can cost than their union (each column's own slope is
        #: paid per segment): what PELT's pruning must allow (Killick et al. 2012, its ``K``).
        self.split_slack = per_param * self.dims

    def scaled(self, scale_D: FloatArray) -> SharedGainCost:
        """The cost of ``y_TD * scale_D``: ``r`` scales with its column, the price does not."""
        other = copy.copy(self)
        other.line = self.line.scaled(scale_D)
        scale = scale_D[self.state]
        other.sr, other.srr = self.sr * scale, self.srr * scale * scale
        return other

    def __call__(self, a: npt.NDArray[np.int64], b: int | npt.NDArray[np.int64]) -> FloatArray:
        """Cost of the segments ``[a_i, b)`` (or ``[a_i, b_i)``)."""
        return np.asarray(self.columns(a, b).sum(axis=-1), dtype=np.float64)

    def columns(self, a: npt.NDArray[np.int64], b: int | npt.NDArray[np.int64]) -> FloatArray:
        """One cost per column (its price included): shape ``(len(a), D)``."""
        own = self.line.columns(a, b) + self.per_param
        n = np.maximum(self.line.n[b] - self.line.n[a], 1.0)
        shared = _about_mean(self.srr[b] - self.srr[a], self.sr[b] - self.sr[a], n[..., None])
        own[..., self.state] = np.minimum(own[..., self.state], shared)
        return own

    def matrix(self, first: int, last: int) -> FloatArray:
        """``M[i, j]`` = cost of ``[first + i, first + j)`` for all ``i < j`` (inf elsewhere)."""
        window = slice(first, last + 1)
        own = self.line.unit_matrix(first, last) * self.line.scale2_D  # a new array
        own += self.per_param
        n = np.maximum(self.line.n[window][None] - self.line.n[window][:, None], 1.0)
        sr, srr = self.sr[window], self.srr[window]
        shared = _about_mean(srr[None] - srr[:, None], sr[None] - sr[:, None], n[..., None])
        own[..., self.state] = np.minimum(own[..., self.state], shared)
        m: FloatArray = own.sum(axis=-1)
        m[np.tril_indices(last - first + 1)] = np.inf
        return m


def _about_mean(sum_sq: FloatArray, total: FloatArray, n: FloatArray) -> FloatArray:
    """The residual about the mean from a segment's sums (overwrites ``sum_sq``)."""
    sum_sq -= total * total / n
    return np.maximum(sum_sq, 0.0, out=sum_sq)
