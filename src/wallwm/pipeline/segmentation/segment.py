"""Cutting one episode into events (see :mod:`wallwm.pipeline.segmentation`)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import numpy.typing as npt

from wallwm.pipeline.segmentation.bends import merge_bends, residual_excess
from wallwm.pipeline.segmentation.changepoints import (
    ChannelFit,
    LinearCost,
    LocalNoiseCost,
    PolynomialCost,
    SegmentCost,
    local_strength,
    pelt_between,
    split_gains,
)
from wallwm.pipeline.segmentation.channels import (
    channel_groups,
    gripper_flips,
    local_noise_variance,
)
from wallwm.pipeline.segmentation.config import (
    Boundary,
    FloatArray,
    Segmentation,
    SegmentConfig,
    Signals,
)
from wallwm.pipeline.segmentation.cues import _speed, direction_cue, speed_min_cue
from wallwm.pipeline.segmentation.disturbances import merge_disturbances, merge_pauses
from wallwm.pipeline.segmentation.forms import as_read, cut_signals
from wallwm.pipeline.segmentation.gains import SharedGainCost, shared_gains
from wallwm.pipeline.segmentation.held import command_samples
from wallwm.pipeline.segmentation.hesitations import Excision, hesitation_runs
from wallwm.pipeline.segmentation.idle import final_hold_start


def _split_long(a: int, b: int, strength: FloatArray, min_len: int, max_len: int) -> list[int]:
    """Interior split points so that no piece of ``[a, b)`` is longer than ``max_len``."""
    if b - a <= max_len:
        return []
    lo, hi = a + min_len, b - min_len
    inner = strength[lo:hi]
    # No interior point stronger than another (a flat stretch, or no channel to weigh): the
    # middle, so the pieces come out even rather than one of min_len frames.
    flat = hi <= lo or float(inner.max()) <= float(inner.min())
    mid = (a + b) // 2 if flat else lo + int(np.argmax(inner))
    return [
        *_split_long(a, mid, strength, min_len, max_len),
        mid,
        *_split_long(mid, b, strength, min_len, max_len),
    ]


def _fixed(t_len: int, chunk_len: int) -> Segmentation:
    starts = list(range(0, t_len, chunk_len))
    bounds = [Boundary(b, 1.0, ("fixed",)) for b in starts[1:]]
    return Segmentation(starts, [*starts[1:], t_len], bounds, np.zeros(t_len), {})


#: Degree of the ``smooth`` model's polynomial in time. A minimum-jerk reach's speed is a
#: quartic in time (its position a quintic), and a recorded command adds the arm's lag and the
#: operator's re-planning. From 2..7 on three smooth-operator recordings (MetaWorld, Jaco,
#: ALOHA): 6 has the best mean F1 (0.731; 5: 0.728, 7: 0.712); leave-one-robot-out picks 5-7,
#: all within 0.03 on each training pair; degree 2 gives 0.36-0.68 (BENCHMARKS.md,
#: ``benchmarks/segmentation_robots.py``).
SMOOTH_DEGREE = 6


def event_penalty(cfg: SegmentConfig, dims: int, t_len: int, params: int = 2) -> float:
    """BIC price of one more event: its location and ``params`` per channel (a line: 2)."""
    return float(cfg.penalty * (params * dims + 1) * np.log(max(t_len, 2)))


def within_event_cost(
    cfg: SegmentConfig, y_TD: FloatArray, z_TD: FloatArray, on_state_D: npt.NDArray[np.bool_]
) -> SegmentCost:
    """The resolved model's segment cost of the unit-noise channels ``y_TD``.

    The smooth model is a polynomial in time, plus feedback on the paired states where there
    are any (``on_state_D``: the columns whose regressor is a state).
    """
    if cfg.action_model == "smooth":
        return smooth_cost(y_TD, z_TD, on_state_D)
    return LinearCost(y_TD, z_TD)


def smooth_cost(
    y_TD: FloatArray, z_TD: FloatArray, on_state_D: npt.NDArray[np.bool_]
) -> PolynomialCost:
    """The smooth model's cost: a polynomial in time, plus feedback on the state columns."""
    if not on_state_D.any():
        return PolynomialCost(y_TD, SMOOTH_DEGREE)
    # a column without a state gets nothing added (a zero regressor explains nothing)
    return PolynomialCost(y_TD, SMOOTH_DEGREE, np.where(on_state_D, z_TD, 0.0))


def with_local_noise(cost: SegmentCost, y_TD: FloatArray, fps: float) -> SegmentCost:
    """``cost`` weighed at each segment's own noise where it rises above the channels' unit.

    The noise is read by :func:`~.channels.local_noise_variance`; the cost is
    :class:`~.changepoints.LocalNoiseCost`.
    """
    variance = local_noise_variance(y_TD, fps, SMOOTH_DEGREE)
    return cost if variance is None else LocalNoiseCost(cost, variance)


def shares_gain(cfg: SegmentConfig) -> bool:
    """Whether the cut lets a state-feedback event keep the episode's gain (:mod:`.gains`).

    Not for position targets: a target one step ahead of the state is a line of slope one on
    it whose intercept is the step -- a velocity, not a goal -- so at a shared slope every
    change of speed would cost one parameter a command (ALOHA's joints lost 0.02 that way).
    """
    return cfg.shared_gain and cfg.noise_model != "position_targets"


def _change_points(
    fit: ChannelFit, forced: list[int], cfg: SegmentConfig, min_len: int
) -> list[int]:
    """The optimal cuts of ``fit``'s channels, bends and disturbances dropped."""
    t_len = len(fit.y_TD)
    penalty = event_penalty(cfg, fit.y_TD.shape[1], t_len, fit.cost.params)
    points = pelt_between(fit.cost, [0, *forced, t_len], penalty, min_len)
    if shares_gain(cfg) and isinstance(fit.cost, LinearCost) and fit.on_state_D.any():
        # The gains read off this first cut; the cut again, each event's commands at them
        # or at slopes of their own (priced). The merges below test the line model's events.
        gain_D = shared_gains(fit.cost, [0, *points, t_len], fit.on_state_D, fit.per_param)
        shared = SharedGainCost(fit.cost, gain_D, fit.on_state_D, fit.per_param)
        penalty = event_penalty(cfg, fit.y_TD.shape[1], t_len, shared.params)
        points = pelt_between(shared, [0, *forced, t_len], penalty, min_len)
    # A bend is a kink of the state-feedback line (a command leaving its limit): line models.
    bends = cfg.merge_bends and isinstance(fit.cost, LinearCost) and fit.on_state_D.any()
    if bends and points:
        points = merge_bends(fit, [0, *points], set(forced))[1:]
    if cfg.merge_disturbances and len(points) >= 2:
        points = merge_disturbances(fit, [0, *points], set(forced))[1:]
    return points


def _cuts(
    fit: ChannelFit, forced: list[int], cfg: SegmentConfig, min_len: int
) -> tuple[list[int], FloatArray]:
    """The episode's cuts (noise refitted, pauses merged) and the refit's scale per column."""
    t_len = len(fit.y_TD)
    scale_D = np.ones(fit.y_TD.shape[1])
    points = _change_points(fit, forced, cfg, min_len)
    if cfg.refit_noise:
        lines = isinstance(fit.cost, LinearCost)
        bends = fit.on_state_D if cfg.merge_bends and lines else None
        excess_D = residual_excess(fit.cost, fit.y_TD, fit.z_TD, [0, *points, t_len], bends)
        if (excess_D > 1.0).any():  # the events leave more than noise: weigh the cuts again
            scale_D = 1.0 / np.sqrt(excess_D)
            fit = fit.scaled(scale_D)
            points = _change_points(fit, forced, cfg, min_len)
    if cfg.merge_disturbances and points:
        # After the noise refit, not inside it: a pause left in its event is misfit that the
        # refit would read as noise, weighing every other cut down (measured: recall fell).
        points = merge_pauses(fit, [0, *points], set(forced))[1:]
    return points, scale_D


@dataclasses.dataclass(frozen=True)
class WeighedCuts:
    """One episode's cuts and the cost they were weighed with (:func:`weigh_cuts`).

    What the segmentation's boundaries are scored by, and what a diagnostic scores any other
    cut by (``benchmarks/segmentation_bound.py``).
    """

    #: Interior cuts, before over-long events are split.
    points: list[int]
    #: The unit-noise channels' cost after the noise refit.
    cost: SegmentCost
    #: BIC price of one more event.
    penalty: float
    #: Gripper command switches: always cuts.
    forced: list[int]
    #: Each channel group's columns of the cost.
    columns: dict[str, slice]
    #: The final hold's cut (:func:`with_final_hold`; in ``points``), None without one.
    hold: int | None = None


@dataclasses.dataclass(frozen=True)
class _Channels:
    """One episode's unit-noise channels, ready to cut."""

    fit: ChannelFit
    forced: list[int]
    columns: dict[str, slice]


def _channels(s: Signals, cfg: SegmentConfig) -> _Channels | None:
    """The episode's channel fit under the resolved ``cfg`` (None: no usable channel)."""
    t_len = len(s.actions_TA)
    groups = channel_groups(s, cfg) if t_len >= 3 else {}
    if not groups:
        return None
    channels = list(groups.values())
    y = np.concatenate([c.y_TD for c in channels], axis=1)
    z = np.concatenate([c.regressor() for c in channels], axis=1)
    on_state = np.concatenate(
        [
            c.on_state_D if c.on_state_D is not None else np.zeros(c.y_TD.shape[1], bool)
            for c in channels
        ]
    )
    per_param = cfg.penalty * np.log(max(t_len, 2))
    cost = within_event_cost(cfg, y, z, on_state)
    if cfg.action_model == "smooth":  # its unit is a median local misfit: where noise rises,
        cost = with_local_noise(cost, y, s.fps)  # weigh the misfit at the frames' own noise
    fit = ChannelFit(cost, y, z, on_state, per_param, s.fps)
    forced = gripper_flips(s, max(1, round(cfg.min_event_s * s.fps)))
    # Each group's columns within y (the groups' channels are concatenated in order).
    bounds = np.cumsum([0, *(c.y_TD.shape[1] for c in channels)])
    columns = {
        n: slice(int(lo), int(hi))
        for n, lo, hi in zip(groups, bounds[:-1], bounds[1:], strict=True)
    }
    return _Channels(fit, forced, columns)


def hesitations_taken_out(s: Signals, cfg: SegmentConfig) -> list[tuple[int, int]]:
    """The hesitations ``[start, end)`` the cut takes out of ``s`` under the resolved ``cfg``.

    None but for the smooth model with ``merge_disturbances`` (the line models drop a pause's
    cuts instead, :mod:`.disturbances`).
    """
    read = as_read(s, cfg)
    return read.runs(_hesitations(cut_signals(read.signals, cfg), cfg))


def _hesitations(cut: Signals, cfg: SegmentConfig) -> list[tuple[int, int]]:
    """:func:`hesitations_taken_out` of the signals the cut reads (:func:`.forms.cut_signals`)."""
    if cfg.action_model != "smooth" or not cfg.merge_disturbances:
        return []
    return hesitation_runs(cut.actions_TA, cut.gripper_action_dims, cut.fps)


def _cuts_without_hesitations(
    s: Signals, whole: _Channels, cfg: SegmentConfig, min_len: int
) -> tuple[list[int], FloatArray]:
    """:func:`_cuts` of the episode with a person's hesitations taken out (:mod:`.hesitations`).

    The channels' noise is measured and the cuts are made without them; the cuts come back in
    the episode's frames. The refit's scale comes back too: the whole episode's cost (what the
    boundaries' confidences and the cue traces read) takes it on its own noise scale. ``s`` is
    what the cut reads (:func:`.forms.cut_signals`).
    """
    runs = _hesitations(s, cfg)
    excision = Excision.of(len(s.actions_TA), runs) if runs else None
    inner = None if excision is None else _channels(excision.signals(s), cfg)
    if excision is None or inner is None or inner.fit.y_TD.shape[1] != whole.fit.y_TD.shape[1]:
        return _cuts(whole.fit, whole.forced, cfg, min_len)  # a channel only the stops moved
    points, scale_D = _cuts(inner.fit, inner.forced, cfg, min_len)
    return excision.back(points, keep=set(inner.forced)), scale_D


def weigh_cuts(s: Signals, cfg: SegmentConfig) -> WeighedCuts | None:
    """The optimal cuts of one episode and their cost (None: no usable channel).

    ``s`` is weighed as given: :func:`segment` passes the episode as the cut reads it
    (:func:`.forms.as_read`: rotations continuous, a held stream at its samples). A config with
    ``auto`` model choices is resolved on this episode alone, as :func:`segment` does. The
    cut reads the config's ``action_form`` of the commands (:mod:`.forms`); the smooth
    model cuts the episode without its hesitations (``merge_disturbances``); a held command
    stream keeps each event's own slopes (no ``shared_gain``).
    """
    if not cfg.resolved():  # no dataset-level choice given: choose on this episode alone
        from wallwm.pipeline.segmentation.selection import resolve

        cfg = resolve(cfg, [s])[0]
    s = cut_signals(s, cfg)  # a position target's rates, where the config reads them
    if shares_gain(cfg) and command_samples(s) is not None:
        # A held command stream is a staircase: each stair steps every command's intercept
        # while the state moves on, which a shared gain prices at one parameter a command --
        # the cut then follows the stairs. Its events keep their own slopes (:mod:`.gains`).
        cfg = cfg.model_copy(update={"shared_gain": False})
    whole = _channels(s, cfg)
    if whole is None:
        return None
    min_len = max(1, round(cfg.min_event_s * s.fps))
    points, scale_D = _cuts_without_hesitations(s, whole, cfg, min_len)
    cost = whole.fit.cost.scaled(scale_D) if (scale_D != 1.0).any() else whole.fit.cost
    penalty = event_penalty(cfg, whole.fit.y_TD.shape[1], len(s.actions_TA), cost.params)
    freeze = final_hold_start(s.actions_TA, s.gripper_action_dims, s.fps, cfg.left_out())
    points, hold = with_final_hold(points, freeze, s.fps, len(s.actions_TA), min_len)
    return WeighedCuts(points, cost, penalty, whole.forced, whole.columns, hold)


#: A cut the cost placed up to this long (and at least a frame) from the final hold's first
#: frame is the hold's own. A command that is filtered, differentiated or smoothed on its way to
#: the recording can stop changing a frame or two after the expert stopped it, and a cost can
#: place its cut a frame off the freeze: with a second cut at the freeze, Jaco's smooth operator
#: with noise that scales with speed got a false cut in 14 of 16 episodes (its freeze a frame
#: late), ALOHA's noise-free waypoints in 2 (the line's cut a frame after the freeze).
HOLD_SNAP_S = 0.05


def with_final_hold(
    points: list[int], hold: int | None, fps: float, t_len: int, min_len: int
) -> tuple[list[int], int | None]:
    """``points`` with the final hold's start (:func:`.idle.final_hold_start`) cut, and that cut.

    Where the commands freeze for good the expert stopped: a cut however small the change into
    the hold. The cost's own cut nearest to it within :data:`HOLD_SNAP_S` (or closer than
    ``min_len`` frames) is taken as the hold's; else the hold's first frame is added. A hold
    shorter than ``min_len`` is no event.
    """
    if hold is None or t_len - hold < min_len:
        return points, None
    snap = max(1, round(HOLD_SNAP_S * fps), min_len - 1)
    near = [p for p in points if abs(p - hold) <= snap]
    if near:
        return points, min(near, key=lambda p: abs(p - hold))
    return sorted([*points, hold]), hold


def segment(s: Signals, cfg: SegmentConfig, traces: bool = True) -> Segmentation:
    """Cut one episode into events.

    Always returns at least one event covering the episode: a single frame, constant signals
    or no usable channel give one event, split only at a binary gripper command's switches and
    where it is longer than ``max_event_s``. A config with ``auto`` model choices is
    resolved on this episode alone; stages resolve it once per dataset (:mod:`.selection`).
    ``traces=False`` skips the per-group cue traces (``cues_CT`` is then empty): only the
    episode plot draws them, and ingest need not pay for them.
    """
    t_len = len(s.actions_TA)
    if t_len == 0:
        return Segmentation([], [], [], np.zeros(0), {})
    if cfg.method == "fixed":
        return _fixed(t_len, cfg.chunk_len)
    read = as_read(s, cfg)
    flips = []
    if read.sampled_from is not None:  # the gripper's switches where the samples were taken
        flips = gripper_flips(read.sampled_from, max(1, round(cfg.min_event_s * s.fps)))
    return read.segmentation(_segment_read(read.signals, cfg, traces), flips)


def _segment_read(s: Signals, cfg: SegmentConfig, traces: bool) -> Segmentation:
    """:func:`segment` of an episode as the cut reads it (:func:`.forms.as_read`)."""
    t_len = len(s.actions_TA)
    weighed = weigh_cuts(s, cfg)
    min_len = max(1, round(cfg.min_event_s * s.fps))
    max_len = max(min_len, round(cfg.max_event_s * s.fps))
    if weighed is None:
        return _without_channels(s, min_len, max_len, traces)
    w = max(2, min(round(cfg.window_s * s.fps), t_len))  # wider than the episode sees no more
    penalty, forced, points = weighed.penalty, weighed.forced, list(weighed.points)
    strength_TD = local_strength(weighed.cost, t_len, w)
    strength = strength_TD.sum(axis=1)
    for a, b in itertools.pairwise([0, *weighed.points, t_len]):
        points.extend(_split_long(a, b, strength, min_len, max_len))
    starts = sorted({0, *points})
    v = _speed(s)
    aux = {"speed_min": speed_min_cue(s, w, v), "direction": direction_cue(s, w, v)}
    boundaries = _boundaries(weighed, starts, t_len, aux, w)
    cues_CT = (
        {
            n: 1.0 - np.exp(-np.maximum(strength_TD[:, cols].sum(axis=1), 0) / penalty)
            for n, cols in weighed.columns.items()
        }
        | aux
        if traces
        else {}
    )
    if traces and forced and "gripper" not in cues_CT:  # a binary command: its switches
        cues_CT["gripper"] = np.isin(np.arange(t_len), forced).astype(np.float64)
    score = 1.0 - np.exp(-np.maximum(strength, 0.0) / penalty)
    return Segmentation(starts, [*starts[1:], t_len], boundaries, score, cues_CT)


def _without_channels(s: Signals, min_len: int, max_len: int, traces: bool) -> Segmentation:
    """An episode with no channel to weigh: constant commands, or a gripper's alone.

    A binary gripper command's switches are still events (a dataset whose only command is its
    gripper, or whose arm holds still while the gripper works), and an event longer than
    ``max_event_s`` is still split -- evenly, since nothing tells one frame from another.
    """
    t_len = len(s.actions_TA)
    forced = gripper_flips(s, min_len)
    flat = np.zeros(t_len)
    points = list(forced)
    for a, b in itertools.pairwise([0, *forced, t_len]):
        points.extend(_split_long(a, b, flat, min_len, max_len))
    starts = sorted({0, *points})
    boundaries = [
        Boundary(b, 1.0, ("gripper",)) if b in forced else Boundary(b, 0.0, ()) for b in starts[1:]
    ]
    cues_CT = {"gripper": np.isin(np.arange(t_len), forced).astype(np.float64)} if traces else {}
    return Segmentation(starts, [*starts[1:], t_len], boundaries, flat, cues_CT if forced else {})


def _boundaries(
    weighed: WeighedCuts, starts: list[int], t_len: int, aux: dict[str, FloatArray], w: int
) -> list[Boundary]:
    """Each cut's confidence (its cost reduction in penalty units) and the cues that fired."""
    penalty = weighed.penalty
    ends = np.array([*starts, t_len], dtype=np.int64)
    gains_BD = split_gains(weighed.cost, ends[:-2], ends[1:-1], ends[2:])
    boundaries = []
    for i, b in enumerate(starts[1:]):
        gain = float(gains_BD[i].sum())
        fired = [
            n for n, cols in weighed.columns.items() if gains_BD[i, cols].sum() >= 0.25 * penalty
        ]
        near = slice(max(0, b - w // 2), b + w // 2 + 1)
        fired += [n for n, trace in aux.items() if trace[near].max(initial=0.0) >= 0.5]
        confidence = float(1.0 - np.exp(-max(gain, 0.0) / penalty))
        if b in weighed.forced:  # a gripper command switch is certain, however small its gain
            fired, confidence = ["gripper", *(n for n in fired if n != "gripper")], 1.0
        elif b == weighed.hold:  # ... and so is where the commands freeze for good
            fired, confidence = ["hold", *(n for n in fired if n != "hold")], 1.0
        boundaries.append(Boundary(b, confidence, tuple(fired)))
    return boundaries
