"""Event segmentation at the event joints: pure functions, no I/O, no Ray.

The episode's signals are grouped into cue channels, each scaled to unit noise using noise
estimated from the episode itself (robust spread of first differences, ignoring held/clipped
values), so the same defaults carry over to other robots, rates and tasks:

- ``action_change``: the (non-gripper) action stream -- a controller switching sub-goal;
- ``gripper``: graded gripper command dims of the action, or the measured gripper opening where
  the action has no gripper command (the opening is the command's delayed response: it settles,
  or stops at an object, without any decision being taken). A binary (open/close) command is
  cut exactly where it switches and is no channel of the cost, so other cuts do not pay for
  re-fitting its constant level;
- ``state_motion``: end-effector/joint velocity from the proprio states;
- ``visual``: how much the camera sees moving (downscaled frame differences).

Boundaries are the optimal multiple change points of a piecewise-*linear* Gaussian model of the
weighted channels (exact: optimal partitioning over a dense cost matrix for short episodes,
PELT for long ones): a new event costs a BIC-style
penalty ``penalty * (2D + 1) * log T`` and pays for itself only if it explains the signals
better. Within an event each action dim is modelled as affine in its paired proprio state
(``action_model="state_feedback"``, the default): a closed-loop controller steering to a fixed
sub-goal commands ``gain * (goal - state)``, so its commands drift as it nears the goal, or
stall when the robot is blocked at a contact, while the *line* relating command to state stays
the same -- only a new sub-goal (an event) moves it. Without paired states, or with
``action_model="time"``, the model is a line in time per dim, which also absorbs a controller's
smooth deceleration.
A boundary where the state-feedback line only *bends* -- the command stays continuous in the
state while its slope changes, as when an actuator leaves or enters saturation at its command
limit -- is no event: where a continuous two-piece line per dim (its knee at the boundary, or
anywhere in the two events for one more parameter) explains the signals within the BIC price of
the parameters a cut adds, the boundary is dropped (``merge_bends``).
The noise each channel is scaled by is then re-estimated from the residuals the chosen events
leave (never below the first-difference level) and the episode is cut again
(``refit_noise``): slowly drifting noise -- a hand's tremor, lag no line follows -- is invisible
frame to frame but would otherwise pay for cuts of its own.
Each boundary's confidence is its cost reduction relative to the penalty; its cues are the
channel groups that contributed to that reduction, plus ``speed_min`` / ``direction`` when the
end effector pauses or turns there. Events shorter than ``min_event_s`` are impossible by
construction; events longer than ``max_event_s`` are split at their strongest interior point.

``method="fixed"`` cuts every ``chunk_len`` frames through the same code path (the chunk baseline).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

FloatArray = npt.NDArray[np.float64]
#: A segment cost: ``cost(starts, end)`` for the segments ``[starts_i, end)``.
CostFn = Callable[[npt.NDArray[np.int64], "int | npt.NDArray[np.int64]"], FloatArray]
CUES = ("action_change", "gripper", "state_motion", "visual", "speed_min", "direction")


class SegmentConfig(BaseModel):
    """Segmenter parameters (``wallwm segment`` options)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["events", "fixed"] = "events"
    chunk_len: int = Field(16, ge=1, description="Frames per chunk for method=fixed.")
    weights: dict[str, float] = Field(
        default_factory=lambda: {
            "action_change": 1.0,
            "gripper": 1.0,
            "state_motion": 0.0,
            "visual": 0.0,
        },
        description="Weight of each channel group in the change-point cost (0 disables it).",
    )
    action_model: Literal["state_feedback", "time"] = Field(
        "state_feedback",
        description="Within an event, actions are affine in the paired proprio state "
        "(state_feedback) or in time (time).",
    )
    penalty: float = Field(0.85, gt=0, description="Multiplier of the BIC penalty per event.")
    merge_bends: bool = Field(
        True,
        description="Drop boundaries where the command only bends against the state "
        "(saturation knees) instead of jumping.",
    )
    refit_noise: bool = Field(
        True,
        description="Re-estimate each channel's noise from the residuals of a first cut (never "
        "below the first-difference estimate) and cut again.",
    )
    min_event_s: float = Field(0.0, ge=0, description="Shortest event (at least one frame).")
    max_event_s: float = Field(30.0, gt=0, description="Longer events are split.")
    window_s: float = Field(0.1, gt=0, description="Half-window of the pause/turn cues.")
    resolution: float = Field(
        0.2, gt=0, description="Smallest change that matters, as a fraction of a channel's range."
    )


@dataclass
class Signals:
    """The per-frame signals of one episode that the cues are computed from.

    Shapes: ``actions_TA`` (T, A); ``states_TS`` (T, S) or None; ``gripper_TG`` (T, G) or None;
    ``motion_T`` (T,) mean absolute frame difference of the downscaled video, or None.
    """

    actions_TA: npt.NDArray[np.floating]
    fps: float
    states_TS: npt.NDArray[np.floating] | None = None
    gripper_TG: npt.NDArray[np.floating] | None = None
    motion_T: npt.NDArray[np.floating] | None = None
    #: Indices of action dims that are gripper commands (grouped with the gripper cue).
    gripper_action_dims: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Boundary:
    """One chosen boundary: the frame where a new event starts."""

    frame: int
    confidence: float
    cues: tuple[str, ...]


@dataclass(frozen=True)
class Segmentation:
    """The result for one episode: events as half-open frame ranges, and the cue traces.

    ``score_T`` is the local boundary strength at every frame (cost reduction of a split in a
    window around it, in penalty units, squashed to [0, 1)); ``cues_CT`` the per-group traces.
    """

    starts: list[int]
    ends: list[int]
    boundaries: list[Boundary]
    score_T: FloatArray
    cues_CT: dict[str, FloatArray]


# --------------------------------------------------------------------------- channels


def noise_sigma(x_TD: FloatArray, resolution: float = 0.0) -> FloatArray:
    """Per-dimension noise level from first differences.

    Exact repeats (values held, clipped at a limit, or quantised) carry no information about
    the noise and are ignored; each dimension is floored at a quarter of the pooled level so a
    nearly noiseless dimension (a binary command) cannot dominate with tiny steps, and at
    ``resolution`` times its range so that the curvature of a smooth signal (a gripper opening
    ramp) is not mistaken for a change.
    """
    d = np.diff(x_TD, axis=0)
    out = np.zeros(x_TD.shape[1])
    for j in range(x_TD.shape[1]):
        dj = d[:, j][np.abs(d[:, j]) > 1e-9]
        if len(dj) >= max(5, 0.2 * len(d)):
            out[j] = 1.4826 * _median(np.abs(dj - _median(dj))) / np.sqrt(2.0)
    positive = out[out > 0]
    floor = resolution * np.ptp(x_TD, axis=0)
    if positive.size:
        pooled = float(np.median(positive))
        sigma = np.where(out > 0, np.maximum(out, 0.25 * pooled), pooled)
    else:  # no dimension shows noise (clean commands): the resolution alone sets the scale
        sigma = np.where(floor > 0, floor, 1.0)
    return np.asarray(np.maximum(sigma, floor), dtype=np.float64)


def _median(x: FloatArray) -> float:
    """``np.median`` of a non-empty 1-D array, without its per-call overhead (hot loop)."""
    half = len(x) // 2
    if len(x) % 2:
        return float(np.partition(x, half)[half])
    part = np.partition(x, (half - 1, half))
    return float(0.5 * (part[half - 1] + part[half]))


@dataclass(frozen=True)
class Channel:
    """One cue group: unit-noise channels ``y_TD`` and the regressor ``z_TD`` each is fitted on.

    ``z_TD`` is None for a straight line in time.
    """

    y_TD: FloatArray
    z_TD: FloatArray | None = None
    #: Columns whose regressor is a paired proprio state (a bend there is not an event).
    on_state_D: npt.NDArray[np.bool_] | None = None

    def regressor(self) -> FloatArray:
        """``z_TD``, or the frame index of every channel (a line in time)."""
        return self.z_TD if self.z_TD is not None else frame_index(*self.y_TD.shape)


def frame_index(t_len: int, dims: int) -> FloatArray:
    """The frame index as the regressor of ``dims`` channels (a line in time)."""
    return np.broadcast_to(np.arange(t_len, dtype=np.float64)[:, None], (t_len, dims))


def feedback_regressors(
    s: Signals, motion_dims: list[int]
) -> tuple[FloatArray, npt.NDArray[np.bool_]] | None:
    """The proprio state paired with each motion action dim, for the state-feedback model.

    Action dim ``j`` is paired with state dim ``j`` (end-effector deltas with end-effector
    positions, joint targets with joint positions). A dim whose paired state is missing or
    constant gets the frame index instead, so it keeps the line-in-time model. Returns the
    regressors and which of them are states.
    """
    if s.states_TS is None or len(s.states_TS) != len(s.actions_TA) or not motion_dims:
        return None
    states = np.asarray(s.states_TS, dtype=np.float64)
    t_len = len(states)
    time = np.linspace(-0.5, 0.5, t_len)
    cols = []
    for j in motion_dims:
        x = states[:, j] if j < states.shape[1] else None
        span = float(np.ptp(x)) if x is not None else 0.0
        cols.append((x - x.mean()) / span if x is not None and span > 1e-9 else time)
    on_state = [j < states.shape[1] and float(np.ptp(states[:, j])) > 1e-9 for j in motion_dims]
    return np.stack(cols, axis=1), np.array(on_state, dtype=bool)


def channel_groups(s: Signals, cfg: SegmentConfig) -> dict[str, Channel]:
    """The channels of every enabled group that has signal, unit-noise scaled."""
    actions = np.asarray(s.actions_TA, dtype=np.float64)
    grip_dims = [j for j in s.gripper_action_dims if j < actions.shape[1]]
    motion_dims = [j for j in range(actions.shape[1]) if j not in set(grip_dims)]
    regressors: dict[str, tuple[FloatArray, npt.NDArray[np.bool_]] | None] = {}
    if cfg.action_model == "state_feedback":
        regressors["action_change"] = feedback_regressors(s, motion_dims)
    measured_gripper = (
        None if s.gripper_TG is None or grip_dims else np.asarray(s.gripper_TG, dtype=np.float64)
    )
    # A two-level (open/close) command is cut exactly at its switches (gripper_flips), so it is
    # no channel of the change-point cost: a cut elsewhere would pay BIC parameters for
    # re-fitting a level that cannot change there. Graded gripper commands stay channels.
    graded = [j for j in grip_dims if not is_two_level(actions[:, j])]
    raw: dict[str, FloatArray | None] = {
        "action_change": actions[:, motion_dims] if motion_dims else None,
        # A gripper command, where the action has one, carries the decision; the measured
        # opening follows it with a lag and settles or stalls on its own.
        "gripper": actions[:, graded] if grip_dims else measured_gripper,
        "state_motion": (
            np.diff(np.asarray(s.states_TS, dtype=np.float64), axis=0, prepend=s.states_TS[:1])
            if s.states_TS is not None and s.states_TS.size
            else None
        ),
        "visual": (
            np.asarray(s.motion_T, dtype=np.float64).reshape(-1, 1)
            if s.motion_T is not None and len(s.motion_T) == len(actions)
            else None
        ),
    }
    groups = {}
    for name, values in raw.items():
        weight = cfg.weights.get(name, 0.0)
        if values is None or weight <= 0 or values.shape[1] == 0:
            continue
        keep = np.ptp(values, axis=0) > 1e-9  # constant dims carry no information
        x = values[:, keep]
        if x.shape[1]:
            z = regressors.get(name)
            # A line in time must not chase the curvature of a smooth ramp, hence the full
            # resolution floor; the state-feedback model explains a controller's deceleration
            # by the state, so its channels may resolve changes half as large.
            resolution = cfg.resolution * (0.5 if z is not None else 1.0)
            groups[name] = Channel(
                np.sqrt(weight) * x / noise_sigma(x, resolution),
                None if z is None else z[0][:, keep],
                None if z is None else z[1][keep],
            )
    return groups


# --------------------------------------------------------------------------- change points


def _prefix(v: FloatArray) -> FloatArray:
    """Cumulative sums along the first axis with a leading row of zeros (segment sums)."""
    return np.concatenate([np.zeros((1, *v.shape[1:])), np.cumsum(v, axis=0)])


class LinearCost:
    """Residual sum of squares of a per-dimension straight-line fit on ``[a, b)``.

    Column ``d`` of ``y_TD`` is fitted as ``c + b * z[:, d]``; the regressor ``z_TD`` defaults
    to the frame index (a line in time). O(1) per query from prefix sums, vectorised over many
    starts ``a``. Where the regressor is (nearly) constant on a segment the fit falls back to
    the segment's mean.
    """

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
        return _line_rss(*(s[b] - s[a] for s in sums))

    def matrix(self, first: int, last: int) -> FloatArray:
        """``M[i, j]`` = cost of ``[first + i, first + j)`` for all ``i < j`` (inf elsewhere)."""
        # Broadcast slices (rows: starts, columns: ends) instead of gathering by index arrays.
        unit = self._unit_matrices.get((first, last))
        if unit is None:
            window = slice(first, last + 1)
            sums = (self.n[:, None], self.sz, self.szz, self.sy, self.szy, self.syy)
            unit = _line_rss(*(s[window][None] - s[window][:, None] for s in sums))
            unit /= self.scale2_D
            self._unit_matrices[(first, last)] = unit
        m: FloatArray = unit @ self.scale2_D
        m[np.tril_indices(last - first + 1)] = np.inf
        return m


def _line_rss(
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


def pelt(cost: CostFn, num_frames: int, penalty: float, min_len: int) -> list[int]:
    """Optimal change points under ``cost`` + ``penalty`` per segment (Killick et al. 2012)."""
    best = np.full(num_frames + 1, np.inf)
    best[0] = -penalty
    prev = np.zeros(num_frames + 1, dtype=np.int64)
    candidates = np.array([0], dtype=np.int64)
    for b in range(min_len, num_frames + 1):
        usable = candidates[b - candidates >= min_len]
        if usable.size:
            seg = cost(usable, b)
            total = best[usable] + seg + penalty
            i = int(np.argmin(total))
            best[b], prev[b] = total[i], usable[i]
            # Pruning: a start that is already worse than the optimum by more than the penalty
            # can never become optimal later.
            keep = best[usable] + seg <= best[b]
            candidates = np.concatenate([candidates[b - candidates < min_len], usable[keep]])
        candidates = np.append(candidates, b - min_len + 1)
    return _trace_back(prev)


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


def pelt_between(cost: LinearCost, edges: list[int], penalty: float, min_len: int) -> list[int]:
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

        points += [a + p for p in pelt(shifted, b - a, penalty, min_len)]
    return sorted({*points, *edges[1:-1]})


def command_levels(v_T: FloatArray) -> npt.NDArray[np.int64] | None:
    """Each value's level of a binary command (1 high, 0 low, -1 between), or None if not binary.

    Binary: nearly all values within 10 % of its range from either end -- an open/close gripper
    command; a continuous gripper position, or a constant command, is not.
    """
    lo, hi = float(v_T.min()), float(v_T.max())
    if hi - lo < 1e-6:
        return None
    high, low = v_T >= hi - 0.1 * (hi - lo), v_T <= lo + 0.1 * (hi - lo)
    if (high | low).mean() < 0.95:
        return None
    return np.where(high, 1, np.where(low, 0, -1))


def is_two_level(v_T: FloatArray) -> bool:
    """Whether a command is binary (see :func:`command_levels`)."""
    return command_levels(v_T) is not None


def gripper_flips(s: Signals, min_len: int) -> list[int]:
    """Frames where a two-level gripper command switches level (open -> close or back).

    A dim counts as a two-level command when nearly all its values sit within 10 % of its range
    from its minimum or maximum (a binary open/close command; a continuous gripper position is
    left to the change-point model). A switch counts when the new level holds for at least
    ``max(2, min_len)`` frames, so a one-step flicker is not an event. Any robot's gripper
    switching is an event start, however little else changes at that moment.
    """
    actions = np.asarray(s.actions_TA, dtype=np.float64)
    hold = max(2, min_len)
    flips: set[int] = set()
    for j in s.gripper_action_dims:
        level = command_levels(actions[:, j]) if j < actions.shape[1] else None
        if level is None:
            continue
        run_starts = [int(r) for r in np.flatnonzero(np.diff(level)) + 1]
        run_ends = [*run_starts[1:], len(level)]
        current = int(level[0])  # the established level (-1: not yet known)
        for start, end in zip(run_starts, run_ends, strict=True):  # a switch starts a long run
            if level[start] >= 0 and level[start] != current and end - start >= hold:
                if current >= 0:
                    flips.add(start)
                current = int(level[start])
    kept: list[int] = []
    t_len = len(actions)
    for t in sorted(flips):  # keep the events between switches at least min_len long
        if t >= min_len and t_len - t >= min_len and (not kept or t - kept[-1] >= min_len):
            kept.append(t)
    return kept


def split_gains(
    cost: LinearCost,
    a: npt.NDArray[np.int64],
    b: npt.NDArray[np.int64],
    c: npt.NDArray[np.int64],
) -> FloatArray:
    """How much cheaper each ``[a_i, c_i)`` becomes when split at ``b_i``, per column."""
    return cost.columns(a, c) - cost.columns(a, b) - cost.columns(b, c)


def local_strength(cost: LinearCost, num_frames: int, w: int) -> FloatArray:
    """Split gain at every frame inside a +-w window, per column: shape ``(T, D)``.

    Summed over columns, the trace the plot and the splits of over-long events use.
    """
    t = np.arange(1, num_frames, dtype=np.int64)
    gain = np.zeros((num_frames, cost.dims))
    gain[1:] = split_gains(cost, np.maximum(t - w, 0), t, np.minimum(t + w, num_frames))
    return gain


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


def merge_bends(
    cost: LinearCost,
    y_TD: FloatArray,
    z_TD: FloatArray,
    on_state_D: npt.NDArray[np.bool_],
    starts: list[int],
    keep: set[int],
    per_param: float,
) -> list[int]:
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
    stay. ``cost`` is the segment cost of ``y_TD`` on ``z_TD``, whose state columns are scaled
    to unit range (see :func:`feedback_regressors`).
    """
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


# --------------------------------------------------------------------------- auxiliary cues


def _speed(s: Signals) -> FloatArray:
    if s.states_TS is not None and s.states_TS.size:
        x = np.asarray(s.states_TS, dtype=np.float64)
        v = np.diff(x, axis=0, prepend=x[:1]) / noise_sigma(x)
    else:
        v = np.asarray(s.actions_TA, dtype=np.float64)
        v = v / noise_sigma(v)
    return v


def _sliding(x: FloatArray, lo: int, hi: int, reduce: str) -> FloatArray:
    """Max or min of ``x[t+lo : t+hi]`` for every t (edge-padded, vectorised)."""
    fill = -np.inf if reduce == "max" else np.inf
    pad = np.concatenate([np.full(max(0, -lo), fill), x, np.full(max(0, hi), fill)])
    windows = np.lib.stride_tricks.sliding_window_view(pad, hi - lo)[: len(x)]
    out = windows.max(axis=1) if reduce == "max" else windows.min(axis=1)
    return np.asarray(out, dtype=np.float64)


def speed_min_cue(s: Signals, w: int, v_TD: FloatArray | None = None) -> FloatArray:
    """Pauses: the smoothed speed dips well below the speed on both sides (0..1).

    ``v_TD`` is the noise-scaled velocity if the caller has it already.
    """
    v = _speed(s) if v_TD is None else v_TD
    kernel = np.ones(max(1, w)) / max(1, w)
    speed = np.convolve(np.linalg.norm(v, axis=1), kernel, mode="same")
    left = np.maximum(_sliding(speed, -2 * w, 0, "max"), 0.0)
    right = np.maximum(_sliding(speed, 1, 2 * w + 1, "max"), 0.0)
    lowest = _sliding(speed, -2 * w, 2 * w + 1, "min")
    side = np.minimum(left, right)
    out = np.where(speed <= lowest + 1e-12, (side - speed) / (side + 1e-9), 0.0)
    out[[0, -1]] = 0.0
    return np.clip(out, 0.0, 1.0)


def direction_cue(s: Signals, w: int, v_TD: FloatArray | None = None) -> FloatArray:
    """Sharp turns: (1 - cos angle)/2 between mean motion before and after ``t`` (0..1).

    ``v_TD`` is the noise-scaled velocity if the caller has it already.
    """
    v = _speed(s) if v_TD is None else v_TD
    t_len = len(v)
    csum = np.vstack([np.zeros((1, v.shape[1])), np.cumsum(v, axis=0)])
    t = np.arange(t_len)
    a, b = np.maximum(t - w, 0), np.minimum(t + w, t_len)
    before, after = csum[t] - csum[a], csum[b] - csum[t]
    norm = np.linalg.norm(before, axis=1) * np.linalg.norm(after, axis=1)
    dot = np.einsum("td,td->t", before, after)
    out = np.where(norm > 1e-9, (1.0 - dot / np.where(norm > 1e-9, norm, 1.0)) / 2.0, 0.0)
    out[[0, -1]] = 0.0
    return np.asarray(out, dtype=np.float64)


# --------------------------------------------------------------------------- segmentation


def _split_long(a: int, b: int, strength: FloatArray, min_len: int, max_len: int) -> list[int]:
    """Interior split points so that no piece of ``[a, b)`` is longer than ``max_len``."""
    if b - a <= max_len:
        return []
    lo, hi = a + min_len, b - min_len
    mid = lo + int(np.argmax(strength[lo:hi])) if hi > lo else (a + b) // 2
    return [
        *_split_long(a, mid, strength, min_len, max_len),
        mid,
        *_split_long(mid, b, strength, min_len, max_len),
    ]


def _fixed(t_len: int, chunk_len: int) -> Segmentation:
    starts = list(range(0, t_len, chunk_len))
    bounds = [Boundary(b, 1.0, ("fixed",)) for b in starts[1:]]
    return Segmentation(starts, [*starts[1:], t_len], bounds, np.zeros(t_len), {})


def event_penalty(cfg: SegmentConfig, dims: int, t_len: int) -> float:
    """BIC price of one more event: its location and a line (2 parameters) per channel."""
    return float(cfg.penalty * (2 * dims + 1) * np.log(max(t_len, 2)))


def _change_points(
    cost: LinearCost,
    y_TD: FloatArray,
    z_TD: FloatArray,
    on_state_D: npt.NDArray[np.bool_],
    forced: list[int],
    cfg: SegmentConfig,
    min_len: int,
) -> list[int]:
    """The optimal cuts of unit-noise channels ``y_TD`` (``cost`` their cost), bends dropped."""
    t_len = len(y_TD)
    penalty = event_penalty(cfg, y_TD.shape[1], t_len)
    points = pelt_between(cost, [0, *forced, t_len], penalty, min_len)
    if cfg.merge_bends and on_state_D.any() and points:
        per_param = cfg.penalty * np.log(max(t_len, 2))
        points = merge_bends(cost, y_TD, z_TD, on_state_D, [0, *points], set(forced), per_param)
        points = points[1:]
    return points


def residual_excess(
    cost: LinearCost,
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
    cuts were judged by: a line per event, bent once anywhere for the ``bends_D`` columns (a command
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
        params = np.full(dims, 2.0)
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


def segment(s: Signals, cfg: SegmentConfig, traces: bool = True) -> Segmentation:
    """Cut one episode into events.

    Always returns at least one event covering the episode: a single frame, constant signals
    or no usable channel give exactly one event. ``traces=False`` skips the per-group cue
    traces (``cues_CT`` is then empty): only the episode plot draws them, and ingest need not
    pay for them.
    """
    t_len = len(s.actions_TA)
    if t_len == 0:
        return Segmentation([], [], [], np.zeros(0), {})
    if cfg.method == "fixed":
        return _fixed(t_len, cfg.chunk_len)
    min_len = max(1, round(cfg.min_event_s * s.fps))
    max_len = max(min_len, round(cfg.max_event_s * s.fps))
    w = max(2, round(cfg.window_s * s.fps))
    groups = channel_groups(s, cfg) if t_len >= 3 else {}
    if not groups:
        return Segmentation([0], [t_len], [], np.zeros(t_len), {})
    channels = list(groups.values())
    y = np.concatenate([c.y_TD for c in channels], axis=1)
    z = np.concatenate([c.regressor() for c in channels], axis=1)
    penalty = event_penalty(cfg, y.shape[1], t_len)
    forced = gripper_flips(s, min_len)
    on_state = np.concatenate(
        [
            c.on_state_D if c.on_state_D is not None else np.zeros(c.y_TD.shape[1], bool)
            for c in channels
        ]
    )
    cost = LinearCost(y, z)
    points = _change_points(cost, y, z, on_state, forced, cfg, min_len)
    if cfg.refit_noise:
        bends = on_state if cfg.merge_bends else None
        excess_D = residual_excess(cost, y, z, [0, *points, t_len], bends)
        if (excess_D > 1.0).any():  # the events leave more than noise: weigh the cuts again
            y, cost = y / np.sqrt(excess_D), cost.scaled(1.0 / np.sqrt(excess_D))
            points = _change_points(cost, y, z, on_state, forced, cfg, min_len)
    strength_TD = local_strength(cost, t_len, w)
    strength = strength_TD.sum(axis=1)
    edges = [0, *points, t_len]
    for a, b in itertools.pairwise(edges):
        points.extend(_split_long(a, b, strength, min_len, max_len))
    starts = sorted({0, *points})
    # Each group's columns within y (the groups' channels are concatenated in order).
    bounds = np.cumsum([0, *(c.y_TD.shape[1] for c in channels)])
    columns = {
        n: slice(int(lo), int(hi))
        for n, lo, hi in zip(groups, bounds[:-1], bounds[1:], strict=True)
    }
    v = _speed(s)
    aux = {"speed_min": speed_min_cue(s, w, v), "direction": direction_cue(s, w, v)}
    ends = np.array([*starts, t_len], dtype=np.int64)
    gains_BD = split_gains(cost, ends[:-2], ends[1:-1], ends[2:])
    boundaries = []
    for i, b in enumerate(starts[1:]):
        gain = float(gains_BD[i].sum())
        fired = [n for n, cols in columns.items() if gains_BD[i, cols].sum() >= 0.25 * penalty]
        near = slice(max(0, b - w // 2), b + w // 2 + 1)
        fired += [n for n, trace in aux.items() if trace[near].max(initial=0.0) >= 0.5]
        confidence = float(1.0 - np.exp(-max(gain, 0.0) / penalty))
        if b in forced:  # a gripper command switch is certain, however small its cost gain
            fired, confidence = ["gripper", *(n for n in fired if n != "gripper")], 1.0
        boundaries.append(Boundary(b, confidence, tuple(fired)))
    cues_CT = (
        {
            n: 1.0 - np.exp(-np.maximum(strength_TD[:, cols].sum(axis=1), 0) / penalty)
            for n, cols in columns.items()
        }
        | aux
        if traces
        else {}
    )
    if traces and forced and "gripper" not in cues_CT:  # a binary command: its switches
        cues_CT["gripper"] = np.isin(np.arange(t_len), forced).astype(np.float64)
    score = 1.0 - np.exp(-np.maximum(strength, 0.0) / penalty)
    return Segmentation(starts, [*starts[1:], t_len], boundaries, score, cues_CT)
