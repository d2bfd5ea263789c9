"""Optimal multiple change points of piecewise-linear channels.

Segment costs from prefix sums, PELT, optimal partitioning over a dense cost matrix, split gains.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from typing import Protocol

import numpy as np
import numpy.typing as npt

from wallwm.pipeline.segmentation.config import CostFn, FloatArray


def frame_index(t_len: int, dims: int) -> FloatArray:
    """The frame index as the regressor of ``dims`` channels (a line in time)."""
    return np.broadcast_to(np.arange(t_len, dtype=np.float64)[:, None], (t_len, dims))


def _prefix(v: FloatArray) -> FloatArray:
    """Cumulative sums along the first axis with a leading row of zeros (segment sums)."""
    return np.concatenate([np.zeros((1, *v.shape[1:])), np.cumsum(v, axis=0)])


class SegmentCost(Protocol):
    """A segment cost over ``dims`` columns, from prefix sums (O(1) per query).

    Each column's residual sum of squares about the within-event model fitted on ``[a, b)``.
    """

    dims: int
    #: Parameters each column's fit takes per segment (its BIC price).
    params: int
    #: How much more two adjacent segments can cost than their union (0 where splitting never
    #: adds cost): PELT prunes a start only once it is worse by more than this.
    split_slack: float

    def scaled(self, scale_D: FloatArray) -> SegmentCost:
        """The cost of the columns multiplied by ``scale_D``."""
        ...

    def __call__(self, a: npt.NDArray[np.int64], b: int | npt.NDArray[np.int64]) -> FloatArray:
        """Cost of the segments ``[a_i, b)`` (or ``[a_i, b_i)``), summed over columns."""
        ...

    def columns(self, a: npt.NDArray[np.int64], b: int | npt.NDArray[np.int64]) -> FloatArray:
        """One residual per column: shape ``(len(a), D)``."""
        ...

    def matrix(self, first: int, last: int) -> FloatArray:
        """``M[i, j]`` = cost of ``[first + i, first + j)`` for all ``i < j`` (inf elsewhere)."""
        ...


class LinearCost:
    """Residual sum of squares of a per-dimension straight-line fit on ``[a, b)``.

    Column ``d`` of ``y_TD`` is fitted as ``c + b * z[:, d]``; the regressor ``z_TD`` defaults
    to the frame index (a line in time). O(1) per query from prefix sums, vectorised over many
    starts ``a``. Where the regressor is (nearly) constant on a segment the fit falls back to
    the segment's mean.
    """

    params = 2  # an intercept and a slope
    split_slack = 0.0  # a split never fits worse

    def __init__(self, y_TD: FloatArray, z_TD: FloatArray | None = None) -> None:
        """Precompute prefix sums of ``y_TD`` and its regressor."""
        t_len, self.dims = y_TD.shape
        if z_TD is None:
            z_TD = frame_index(t_len, self.dims)

        self.n = np.arange(t_len + 1, dtype=np.float64)
        self.sz, self.szz = _prefix(z_TD), _prefix(z_TD * z_TD)
        self.sy, self.szy = _prefix(y_TD), _prefix(z_TD * y_TD)
        self.syy = _prefix(y_TD * y_TD)
        #: Squared scale of each column relative to the first cost of its family (see scaled).
        self.scale2_D = np.ones(self.dims)
        #: Per-column dense matrices of the family at unit scale, by ``(first, last)``.
        self._unit_matrices: dict[tuple[int, int], FloatArray] = {}

    def scaled(self, scale_D: FloatArray) -> LinearCost:
        """The cost of ``y_TD * scale_D``: prefix sums rescaled, dense matrices reused.

        A column's residual scales with the square of its scale, so a matrix computed for one
        member of the family serves all (re-weighing channels costs no new matrix).
        """
        other = copy.copy(self)
        other.sy, other.szy = self.sy * scale_D, self.szy * scale_D
        other.syy = self.syy * scale_D * scale_D
        other.scale2_D = self.scale2_D * scale_D * scale_D
        return other

    def __call__(self, a: npt.NDArray[np.int64], b: int | npt.NDArray[np.int64]) -> FloatArray:
        """Cost of the segments ``[a_i, b)`` (or ``[a_i, b_i)``)."""
        return np.asarray(self.columns(a, b).sum(axis=-1), dtype=np.float64)

    def columns(self, a: npt.NDArray[np.int64], b: int | npt.NDArray[np.int64]) -> FloatArray:
        """Like calling the cost, but one residual per column: shape ``(len(a), D)``."""
        sums = (self.n[:, None], self.sz, self.szz, self.sy, self.szy, self.syy)
        return line_rss(*(s[b] - s[a] for s in sums))

    def matrix(self, first: int, last: int) -> FloatArray:
        """``M[i, j]`` = cost of ``[first + i, first + j)`` for all ``i < j`` (inf elsewhere)."""
        m: FloatArray = self.unit_matrix(first, last) @ self.scale2_D
        m[np.tril_indices(last - first + 1)] = np.inf
        return m

    def unit_matrix(self, first: int, last: int) -> FloatArray:
        """Each column's residual of ``[first + i, first + j)`` at unit scale: ``(S, S, D)``.

        Times ``scale2_D``, this cost's (every member of the family shares it); meaningless
        where ``i >= j``.
        """
        # Broadcast slices (rows: starts, columns: ends) instead of gathering by index arrays.
        unit = self._unit_matrices.get((first, last))
        if unit is None:
            window = slice(first, last + 1)
            sums = (self.n[:, None], self.sz, self.szz, self.sy, self.szy, self.syy)
            unit = line_rss(*(s[window][None] - s[window][:, None] for s in sums))
            unit /= self.scale2_D
            self._unit_matrices[(first, last)] = unit
        return unit


#: Pseudo-inverses of the polynomial fit's Gram matrix by segment length, per degree (shared:
#: they depend on nothing else).
_GRAM_PINVS: dict[int, FloatArray] = {}


def _gram_pinvs(degree: int, max_len: int) -> FloatArray:
    """``(max_len + 1, P, P)``: row ``L`` the Gram pseudo-inverse of a length-``L`` segment."""
    have = _GRAM_PINVS.get(degree)
    if have is None or len(have) <= max_len:
        size = max(max_len + 1, 2 * (0 if have is None else len(have)))
        _GRAM_PINVS[degree] = have = np.asarray(np.linalg.pinv(_grams(degree, size)))
    return have


def _grams(degree: int, size: int) -> FloatArray:
    """``(size, P, P)``: row ``L`` the Gram matrix of a length-``L`` segment (row 0 zeros).

    Entry ``(j, k)`` is ``sum_i u_i^(j+k)`` in the segment's own time ``u`` (its frames scaled
    to [-1, 1]). From power sums, every length at once: a segment's frames sit at integer (odd
    ``L``) or half-integer (even ``L``) offsets ``+-k`` from its centre, so ``sum_i u_i^m`` is
    twice the prefix sum of ``k^m`` up to ``L // 2`` (the centre frame adds 1 to ``m = 0``; odd
    powers cancel), scaled by the half-width to the power ``-m``. Every term is positive: no
    cancellation, however long the segment (an episode of 10,000 frames at 1 kHz).
    """
    powers = np.arange(2 * degree + 1)
    offsets = np.arange(1, size // 2 + 1, dtype=np.float64)
    whole = _prefix(offsets[:, None] ** powers)  # (size // 2 + 1, M): sum_{k <= h} k^m
    halves = _prefix((offsets - 0.5)[:, None] ** powers)  # sum_{k <= h} (k - 1/2)^m
    lengths = np.arange(size)
    odd = lengths % 2 == 1
    sums = 2.0 * np.where(odd[:, None], whole[lengths // 2], halves[lengths // 2])
    sums[:, 0] += odd  # the centre frame of an odd length: u = 0, u^0 = 1
    sums[:, 1::2] = 0.0
    half_width = np.maximum(0.5 * (lengths - 1), 1.0)
    sums *= half_width[:, None] ** -powers.astype(np.float64)
    sums[0] = 0.0
    index = np.arange(degree + 1)
    return np.asarray(sums[:, index[:, None] + index[None, :]])


#: Episodes up to this many frames are costed from one table of prefix sums centred on the
#: episode; a longer one from tables over overlapping windows, chosen by the segment's length
#: (:class:`PolynomialCost`). Every suite recording is shorter, so its cuts are the one table's.
SINGLE_TABLE_FRAMES = 512
#: The shortest windows' stride (frames; each window spans two strides), and the factor from one
#: level's stride to the next: a segment is costed at the first level whose stride it fits, so
#: its centre is at most 8 of its half-widths from its window's (the expansion amplifies
#: rounding by at most 8^6 at degree 6; the whole table of 5,000 frames, by up to 600^6).
WINDOW_STRIDE = 64
WINDOW_GROWTH = 4
#: Windows kept per level (the change-point search moves along the episode; others are rebuilt).
WINDOWS_KEPT = 32


class PolynomialCost:
    """Residual sum of squares of a per-dimension polynomial in time on ``[a, b)``.

    Every column is fitted as ``c0 + c1 u + ... + c_p u^p`` in the segment's own time ``u``
    (its frames scaled to [-1, 1]): a polynomial follows a command whose speed rises and falls
    within an event (a person's reach) where a line cannot. O(1) per query from prefix sums
    (:class:`_PolynomialTable`). With ``z_TD``, column ``d`` is also affine in ``z[:, d]`` (a
    controller tracking a smooth reference; see the table).

    The fit's moments come from prefix sums of ``t^j y`` by a binomial expansion about each
    segment's centre, which cancels ``(distance / half-width)^degree`` of the digits: a short
    segment far from the table's centre is costed from noise. On a long episode (over
    :data:`SINGLE_TABLE_FRAMES`) every segment is therefore costed from a table over a window
    near it: windows of two strides at every stride, the stride growing by
    :data:`WINDOW_GROWTH` from :data:`WINDOW_STRIDE` per level, a segment at the first level
    whose stride is at least its length (the one table of the episode above the last). Measured
    on 5,000 frames at a signal-to-noise ratio of 500: the worst residual of a short segment was
    off by 263 noise units with one table, by 0.013 from the windows; a 32-episode session of
    Jaco's smooth reaching (4,804 frames) was cut at F1 0.36, now 0.83.
    """

    split_slack = 0.0  # a split never fits worse

    def __init__(self, y_TD: FloatArray, degree: int = 3, z_TD: FloatArray | None = None) -> None:
        """Precompute the table(s) of prefix sums (windows: as they are first queried)."""
        t_len, self.dims = y_TD.shape
        self.params = degree + 1 + (z_TD is not None)
        self.degree = degree
        self.y_TD, self.z_TD = y_TD, z_TD
        self.scale_D: FloatArray | None = None
        self.strides: list[int] = []
        stride = WINDOW_STRIDE
        while t_len > SINGLE_TABLE_FRAMES:
            self.strides.append(stride)
            # above the last stride the whole episode's table: its segments are then longer
            # than 1/8 of the episode (the same worst case as the windows')
            if 8 * stride >= t_len:
                break
            stride *= WINDOW_GROWTH
        self._whole: _PolynomialTable | None = (
            None if self.strides else _PolynomialTable(y_TD, degree, z_TD)
        )
        self._windows: list[dict[int, _PolynomialTable]] = [{} for _ in self.strides]

    def scaled(self, scale_D: FloatArray) -> PolynomialCost:
        """The cost of ``y_TD * scale_D`` (every table's prefix sums rescaled)."""
        other = copy.copy(self)
        other.scale_D = scale_D if self.scale_D is None else self.scale_D * scale_D
        other._whole = None if self._whole is None else self._whole.scaled(scale_D)
        other._windows = [{} for _ in self.strides]
        return other

    def __call__(self, a: npt.NDArray[np.int64], b: int | npt.NDArray[np.int64]) -> FloatArray:
        """Cost of the segments ``[a_i, b)`` (or ``[a_i, b_i)``)."""
        return np.asarray(self.columns(a, b).sum(axis=-1), dtype=np.float64)

    def columns(self, a: npt.NDArray[np.int64], b: int | npt.NDArray[np.int64]) -> FloatArray:
        """One residual per column: shape ``(len(a), D)``."""
        a = np.asarray(a, dtype=np.int64)
        b_arr = np.broadcast_to(np.asarray(b, dtype=np.int64), a.shape)
        if not self.strides:
            return self._table_of_whole().columns(a, b_arr)
        out = np.empty((len(a), self.dims))
        length = b_arr - a
        level = np.searchsorted(np.asarray(self.strides), length)  # first stride >= length
        for lv in np.unique(level):
            rows = np.flatnonzero(level == lv)
            if lv == len(self.strides):
                out[rows] = self._table_of_whole().columns(a[rows], b_arr[rows])
                continue
            stride = self.strides[lv]
            window = a[rows] // stride
            for k in np.unique(window):
                sel = rows[window == k]
                first = int(k) * stride
                out[sel] = self._window(int(lv), int(k)).columns(a[sel] - first, b_arr[sel] - first)
        return out

    def matrix(self, first: int, last: int) -> FloatArray:
        """``M[i, j]`` = cost of ``[first + i, first + j)`` for all ``i < j`` (inf elsewhere)."""
        return pair_matrix(self, first, last)

    def _table(self, first: int, last: int) -> _PolynomialTable:
        """The table of frames ``[first, last)``, at this cost's scale."""
        z = None if self.z_TD is None else self.z_TD[first:last]
        table = _PolynomialTable(self.y_TD[first:last], self.degree, z)
        return table if self.scale_D is None else table.scaled(self.scale_D)

    def _table_of_whole(self) -> _PolynomialTable:
        if self._whole is None:
            self._whole = self._table(0, len(self.y_TD))
        return self._whole

    def _window(self, level: int, k: int) -> _PolynomialTable:
        """Level ``level``'s window ``k``: frames ``[k s, k s + 2 s)`` (``s`` its stride)."""
        kept = self._windows[level]
        table = kept.pop(k, None)
        if table is None:
            stride = self.strides[level]
            table = self._table(k * stride, min((k + 2) * stride, len(self.y_TD)))
            if len(kept) >= WINDOWS_KEPT:
                kept.pop(next(iter(kept)))  # the least recently used (dicts keep order)
        kept[k] = table  # most recently used last
        return table


class _PolynomialTable:
    """One table of prefix sums for :class:`PolynomialCost` (the whole cost of a short episode).

    Residual sum of squares of a per-dimension polynomial in time on ``[a, b)``.

    Every column is fitted as ``c0 + c1 u + ... + c_p u^p`` in the segment's own time ``u``
    (its frames scaled to [-1, 1]): a polynomial follows a command whose speed rises and falls
    within an event (a person's reach) where a line cannot. O(1) per query: the fit's Gram
    matrix depends only on the segment's length (its pseudo-inverse is tabulated once per
    length), and the fit's moments ``sum u^k y`` come from prefix sums of ``t^j y`` by the
    binomial expansion -- in the segment's own time, so a short segment late in a long episode
    is as well conditioned as one at its start. A segment shorter than the polynomial's order
    is fitted exactly.

    With ``z_TD``, column ``d`` is also affine in ``z[:, d]`` (one more parameter): a controller
    tracking a smooth reference commands the reference's motion (a polynomial in time) plus
    a gain times the reference minus the state it reaches. The extra regressor is added by
    Frisch-Waugh-Lovell: the polynomial's residual of ``y`` less its projection on the
    polynomial's residual of ``z`` -- no per-segment solve beyond the tabulated one.
    """

    split_slack = 0.0  # a split never fits worse

    def __init__(self, y_TD: FloatArray, degree: int = 3, z_TD: FloatArray | None = None) -> None:
        """Precompute prefix sums of ``t^j * y_TD`` and the Gram pseudo-inverses."""
        t_len, self.dims = y_TD.shape
        self.params = degree + 1 + (z_TD is not None)
        # Each column about its mean (the fit has an intercept, so no residual changes): a
        # command with a large offset and a small range -- a hand held near 0.5 m, moved by
        # millimetres, in units of its noise -- otherwise sums to magnitudes where the
        # expansion below loses every digit of a short segment's residual.
        y_TD = y_TD - y_TD.mean(axis=0)
        powers = np.arange(degree + 1)
        t = np.arange(t_len, dtype=np.float64) - 0.5 * (t_len - 1)  # centred: smaller powers
        self.sty = _prefix(t[:, None, None] ** powers[None, :, None] * y_TD[:, None, :])
        self.syy = _prefix(y_TD * y_TD)
        self.centre = 0.5 * (t_len - 1)
        # binomial(k, j) for the expansion of (t - c)^k, and which power of -c each term takes
        self.binom = np.array(
            [[math.comb(k, j) if j <= k else 0 for j in powers] for k in powers], dtype=np.float64
        )
        self.exponent = np.maximum(powers[:, None] - powers[None, :], 0)
        self.gram_pinv = _gram_pinvs(degree, t_len)
        #: The paired regressor's own polynomial cost and its cross sums with ``y_TD``.
        self.state: _PolynomialTable | None = None
        self.szy = np.zeros((t_len + 1, self.dims))
        if z_TD is not None:
            z_centred = z_TD - z_TD.mean(axis=0)
            self.state = _PolynomialTable(z_centred, degree)
            self.szy = _prefix(z_centred * y_TD)

    def scaled(self, scale_D: FloatArray) -> _PolynomialTable:
        """The cost of ``y_TD * scale_D`` (prefix sums rescaled)."""
        other = copy.copy(self)
        other.sty, other.syy = self.sty * scale_D, self.syy * scale_D * scale_D
        other.szy = self.szy * scale_D
        return other

    def __call__(self, a: npt.NDArray[np.int64], b: int | npt.NDArray[np.int64]) -> FloatArray:
        """Cost of the segments ``[a_i, b)`` (or ``[a_i, b_i)``)."""
        return np.asarray(self.columns(a, b).sum(axis=-1), dtype=np.float64)

    def columns(self, a: npt.NDArray[np.int64], b: int | npt.NDArray[np.int64]) -> FloatArray:
        """One residual per column: shape ``(len(a), D)``."""
        a = np.asarray(a, dtype=np.int64)
        b_arr = np.broadcast_to(np.asarray(b, dtype=np.int64), a.shape)
        length = b_arr - a
        return self._rss(a, b_arr, length, self.gram_pinv[length])

    def _rss(
        self,
        a: npt.NDArray[np.int64],
        b: npt.NDArray[np.int64],
        length: npt.NDArray[np.int64],
        pinv: FloatArray,
    ) -> FloatArray:
        """Each segment's residual per column, ``pinv`` its Gram inverse(s): ``(N, D)``."""
        expand = self._expansion(a, length)  # shared by the columns and the paired regressor
        moments_NDP = self._moments(a, b, expand)
        weighted = moments_NDP @ pinv  # (N, D, P)
        rss = self.syy[b] - self.syy[a] - (weighted * moments_NDP).sum(axis=-1)
        if self.state is not None:  # less the part the paired regressor explains (FWL)
            z_moments = self.state._moments(a, b, expand)
            z_rss = self.state.syy[b] - self.state.syy[a] - ((z_moments @ pinv) * z_moments).sum(-1)
            cross = self.szy[b] - self.szy[a] - (weighted * z_moments).sum(axis=-1)
            moves = z_rss > 1e-9 * (self.state.syy[b] - self.state.syy[a]) + 1e-12
            rss = rss - np.where(moves, cross**2 / np.where(moves, z_rss, 1.0), 0.0)
        # as many frames as parameters or fewer: fitted exactly (the expansion would only add
        # rounding error to a zero)
        rss = np.where((length <= self.params)[:, None], 0.0, rss)
        return np.asarray(np.maximum(rss, 0.0))

    def _expansion(self, a: npt.NDArray[np.int64], length: npt.NDArray[np.int64]) -> FloatArray:
        """``(N, P, P)``: what turns a segment's ``sum t^j y`` into its ``sum u^k y``.

        ``sum ((t - c) / s)^k y = sum_j binom(k, j) (-c)^(k - j) s^-k sum t^j y``, with ``c``
        the segment's centre and ``s`` its half-width; the same for every column and for the
        paired regressor's sums.
        """
        half = 0.5 * (length - 1)
        centre = a + half - self.centre  # the segment's centre in the centred frame index
        neg_powers = np.ones((len(a), len(self.binom)))
        scale_powers = np.ones((len(a), len(self.binom)))
        for e in range(1, len(self.binom)):  # (-c)^e and s^-e
            neg_powers[:, e] = neg_powers[:, e - 1] * -centre
            scale_powers[:, e] = scale_powers[:, e - 1] / np.maximum(half, 1.0)
        return np.asarray(self.binom * neg_powers[:, self.exponent] * scale_powers[:, :, None])

    def _moments(
        self, a: npt.NDArray[np.int64], b: npt.NDArray[np.int64], expand: FloatArray
    ) -> FloatArray:
        """``sum u^k y`` over each segment in its own time ``u``: shape ``(N, D, P)``."""
        raw = self.sty[b] - self.sty[a]  # (N, P, D): sum t^j y
        return np.asarray(np.swapaxes(expand @ raw, 1, 2))

    def matrix(self, first: int, last: int) -> FloatArray:
        """``M[i, j]`` = cost of ``[first + i, first + j)`` for all ``i < j`` (inf elsewhere)."""
        return pair_matrix(self, first, last)


class LocalNoiseCost:
    """A segment cost weighed at the noise its own frames carry.

    Unit-noise channels assume one noise level per column over the episode (a median). Where
    the noise rises and falls within the episode -- a person's motor noise grows with the
    speed of the movement (signal-dependent noise: Harris & Wolpert 1998), a follower arm
    jitters while it holds an object in contact -- a segment's misfit in its noisy stretches
    would count as evidence and cut them every few frames, and the model choice would prefer
    whichever model follows that noise. Each segment's misfit is divided by the mean noise
    variance of its frames (O(1) by prefix sums): the segment's own noise level, the way a
    likelihood with piecewise-stationary noise would weigh it.
    """

    def __init__(self, inner: SegmentCost, variance_TD: FloatArray) -> None:
        """``variance_TD``: each frame's noise variance in the channels' unit (>= 1)."""
        self.inner = inner
        self.dims, self.params = inner.dims, inner.params
        self.split_slack = inner.split_slack  # divided by variances >= 1: never more
        self.variance_TD = variance_TD
        self.prefix = _prefix(variance_TD)

    def scaled(self, scale_D: FloatArray) -> LocalNoiseCost:
        """The cost of the columns multiplied by ``scale_D`` (the same frames' noise)."""
        return LocalNoiseCost(self.inner.scaled(scale_D), self.variance_TD)

    def __call__(self, a: npt.NDArray[np.int64], b: int | npt.NDArray[np.int64]) -> FloatArray:
        """Cost of the segments ``[a_i, b)`` (or ``[a_i, b_i)``)."""
        return np.asarray(self.columns(a, b).sum(axis=-1), dtype=np.float64)

    def columns(self, a: npt.NDArray[np.int64], b: int | npt.NDArray[np.int64]) -> FloatArray:
        """One residual per column over the segment's mean noise variance: ``(len(a), D)``."""
        a = np.asarray(a, dtype=np.int64)
        b_arr = np.broadcast_to(np.asarray(b, dtype=np.int64), a.shape)
        length = np.maximum(b_arr - a, 1)[:, None]
        variance = (self.prefix[b_arr] - self.prefix[a]) / length
        return np.asarray(self.inner.columns(a, b_arr) / variance, dtype=np.float64)

    def matrix(self, first: int, last: int) -> FloatArray:
        """``M[i, j]`` = cost of ``[first + i, first + j)`` for all ``i < j`` (inf elsewhere)."""
        return pair_matrix(self, first, last)


#: Segments costed per vector operation when a dense matrix is built pair by pair: the
#: polynomial fit's temporaries are then a few MB (``pairs x P x P`` and ``pairs x D x P``).
PAIRS_PER_CHUNK = 8192


def pair_matrix(cost: SegmentCost, first: int, last: int) -> FloatArray:
    """``M[i, j]`` = ``cost`` of ``[first + i, first + j)`` for all ``i < j`` (inf elsewhere).

    Every segment of the window at once, in chunks of :data:`PAIRS_PER_CHUNK`, for costs whose
    matrix has no closed form cheaper than their queries: one vector operation per chunk
    rather than one per diagonal (an episode of a few hundred frames has as many diagonals, and
    each query's fixed overhead dominated the model choice).
    """
    size = last - first + 1
    m = np.full((size, size), np.inf)
    starts, ends = np.triu_indices(size, k=1)
    for lo in range(0, len(starts), PAIRS_PER_CHUNK):
        i, j = starts[lo : lo + PAIRS_PER_CHUNK], ends[lo : lo + PAIRS_PER_CHUNK]
        m[i, j] = cost(i + first, j + first)
    return m


@dataclasses.dataclass(frozen=True)
class ChannelFit:
    """One episode's unit-noise channels, their regressors and segment cost.

    What every test on a candidate cut reads (bends, disturbances, pauses).
    """

    cost: SegmentCost
    y_TD: FloatArray
    z_TD: FloatArray
    #: Which regressor columns are proprio states (the others run on the clock).
    on_state_D: npt.NDArray[np.bool_]
    #: BIC price of one parameter: the penalty multiplier x log(frames).
    per_param: float
    fps: float

    def scaled(self, scale_D: FloatArray) -> ChannelFit:
        """The same fit with every channel multiplied by ``scale_D`` (a noise refit)."""
        return dataclasses.replace(self, cost=self.cost.scaled(scale_D), y_TD=self.y_TD * scale_D)


def line_rss(
    n: FloatArray, sz: FloatArray, szz: FloatArray, sy: FloatArray, szy: FloatArray, syy: FloatArray
) -> FloatArray:
    """Residual sum of squares of each column's line fit, from its segment sums.

    The arguments are fresh differences of prefix sums and serve as scratch space: they are
    overwritten.
    """
    # Centred sums: the residual of a line fit is Syy - Szy^2 / Szz. In-place arithmetic: on
    # the dense (T+1)^2 x D matrix, allocations cost as much as the arithmetic.
    n = np.maximum(n, 1.0)
    mean_z = sz / n
    centred_zz = szz - sz * mean_z
    centred_zy = np.subtract(szy, np.multiply(sy, mean_z, out=mean_z), out=szy)
    np.multiply(sy, sy, out=sy)
    sy /= n
    centred_yy = np.subtract(syy, sy, out=syy)
    # Relative test: a regressor that barely moves on the segment cannot carry a slope (the
    # fit falls back to the mean, whose residual is Syy).
    szz *= 1e-9
    flat = centred_zz <= szz
    centred_zz[flat] = np.inf
    np.multiply(centred_zy, centred_zy, out=centred_zy)
    centred_zy /= centred_zz
    centred_yy -= centred_zy
    return np.maximum(centred_yy, 0.0, out=centred_yy)


#: Ends :func:`pelt` takes at a time: the pairs a block can use are costed in one vector query.
PELT_BLOCK = 64


def pelt(
    cost: CostFn, num_frames: int, penalty: float, min_len: int, slack: float = 0.0
) -> list[int]:
    """Optimal change points under ``cost`` + ``penalty`` per segment (Killick et al. 2012).

    The ends are taken :data:`PELT_BLOCK` at a time: every (start, end) pair the block can use
    -- the starts kept so far and the one each of its ends adds -- is costed at once
    (:func:`_block_costs`), then the recursion and its pruning run end by end on those numbers:
    the same optimum, ties and pruning as costing one end at a time, but a query's fixed
    overhead (tens of numpy calls for the polynomial cost's windowed tables) is paid once per
    block rather than once per frame -- what dominated the model choice on long episodes.
    ``slack``: how much more two adjacent segments can cost than their union (the cost's
    ``split_slack``); a start is pruned only once it is worse than the optimum by more.
    """
    best = np.full(num_frames + 1, np.inf)
    best[0] = -penalty
    prev = np.zeros(num_frames + 1, dtype=np.int64)
    candidates = np.array([0], dtype=np.int64)  # ascending, as the ties are broken
    for first in range(min_len, num_frames + 1, PELT_BLOCK):
        ends = np.arange(first, min(first + PELT_BLOCK, num_frames + 1), dtype=np.int64)
        starts = np.concatenate([candidates, ends - min_len + 1])  # end k adds the start after it
        seg_SE = _block_costs(cost, starts, ends, min_len)
        live = np.zeros(len(starts), dtype=bool)
        live[: len(candidates)] = True
        for k, b in enumerate(ends):
            usable = np.flatnonzero(live & (b - starts >= min_len))
            if usable.size:
                so_far = best[starts[usable]] + seg_SE[usable, k]
                i = int(np.argmin(so_far + penalty))
                best[b], prev[b] = so_far[i] + penalty, starts[usable[i]]
                # Pruning: a start that is already worse than the optimum (by more than the
                # slack a split can add) can never become optimal later.
                live[usable[~(so_far <= best[b] + slack)]] = False
            live[len(candidates) + k] = True
        candidates = starts[live]
    return _trace_back(prev)


def _block_costs(
    cost: CostFn, starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64], min_len: int
) -> FloatArray:
    """Every ``[start, end)`` pair's cost: shape ``(len(starts), len(ends))``.

    Inf where the pair is shorter than ``min_len``; costed :data:`PAIRS_PER_CHUNK` pairs at a time.
    """
    starts_P = np.repeat(starts, len(ends))
    ends_P = np.tile(ends, len(starts))
    out = np.full(len(starts_P), np.inf)
    long_enough = np.flatnonzero(ends_P - starts_P >= min_len)
    for lo in range(0, len(long_enough), PAIRS_PER_CHUNK):
        pairs = long_enough[lo : lo + PAIRS_PER_CHUNK]
        out[pairs] = cost(starts_P[pairs], ends_P[pairs])
    return out.reshape(len(starts), len(ends))


def optimal_partition(cost_matrix: FloatArray, penalty: float, min_len: int) -> list[int]:
    """The same optimum as :func:`pelt`, from a precomputed cost matrix (short episodes).

    One vector operation per frame instead of one cost evaluation per frame: several times
    faster where the ``(T+1)^2`` matrix is small.
    """
    num_frames = len(cost_matrix) - 1
    best = np.full(num_frames + 1, np.inf)
    best[0] = -penalty
    prev = np.zeros(num_frames + 1, dtype=np.int64)
    for b in range(min_len, num_frames + 1):
        total = best[: b - min_len + 1] + cost_matrix[: b - min_len + 1, b]
        i = int(np.argmin(total))
        best[b], prev[b] = total[i] + penalty, i
    return _trace_back(prev)


def _trace_back(prev: npt.NDArray[np.int64]) -> list[int]:
    """Change points from each end frame's best previous start (the last is the episode end)."""
    points, b = [], len(prev) - 1
    while b > 0:
        b = int(prev[b])
        points.append(b)
    return sorted(set(points) - {0})


#: Largest ``frames^2 x channels`` piece segmented through the dense cost matrix (each of its
#: temporaries is then at most 16 MB); larger pieces use PELT.
DENSE_MAX_CELLS = 2_000_000


def pelt_between(cost: SegmentCost, edges: list[int], penalty: float, min_len: int) -> list[int]:
    """Optimal change points inside each ``[edges[i], edges[i+1])``, plus the inner edges."""
    points: list[int] = []
    for a, b in itertools.pairwise(edges):
        if (b - a + 1) ** 2 * cost.dims <= DENSE_MAX_CELLS:
            points += [a + p for p in optimal_partition(cost.matrix(a, b), penalty, min_len)]
            continue

        def shifted(
            starts: npt.NDArray[np.int64], end: int | npt.NDArray[np.int64], a: int = a
        ) -> FloatArray:
            return cost(starts + a, end + a)

        points += [a + p for p in pelt(shifted, b - a, penalty, min_len, cost.split_slack)]
    return sorted({*points, *edges[1:-1]})


def split_gains(
    cost: SegmentCost,
    a: npt.NDArray[np.int64],
    b: npt.NDArray[np.int64],
    c: npt.NDArray[np.int64],
) -> FloatArray:
    """How much cheaper each ``[a_i, c_i)`` becomes when split at ``b_i``, per column."""
    return cost.columns(a, c) - cost.columns(a, b) - cost.columns(b, c)


def local_strength(cost: SegmentCost, num_frames: int, w: int) -> FloatArray:
    """Split gain at every frame inside a +-w window, per column: shape ``(T, D)``.

    Summed over columns, the trace the plot and the splits of over-long events use.
    """
    t = np.arange(1, num_frames, dtype=np.int64)
    gain = np.zeros((num_frames, cost.dims))
    gain[1:] = split_gains(cost, np.maximum(t - w, 0), t, np.minimum(t + w, num_frames))
    return gain
