"""Cue channels: which signals the cost sees, each scaled to unit noise; binary gripper commands."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from wallwm.pipeline.segmentation.changepoints import frame_index
from wallwm.pipeline.segmentation.config import FloatArray, SegmentConfig, Signals


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


def moving_dims(actions_TA: FloatArray, gripper_dims: list[int]) -> list[int]:
    """The non-gripper action dims that move at all in this episode (constant ones say nothing)."""
    grip = set(gripper_dims)
    return [
        j for j in range(actions_TA.shape[1]) if j not in grip and np.ptp(actions_TA[:, j]) > 1e-9
    ]


#: Window of the local-fit noise estimate, seconds (at least 5 frames).
LOCAL_FIT_S = 0.2
#: The local-fit noise never goes below this fraction of a channel's range: recordings of
#: noise-free commands are exact to float precision, where any misfit would look significant.
LOCAL_FIT_FLOOR = 1e-3


def local_fit_sigma(
    x_TD: FloatArray, z_TD: FloatArray | None, window: int, degree: int | None = None
) -> FloatArray:
    """Per-dimension noise as the residual the within-event model leaves on short windows.

    The model (a line in ``z_TD``, or in time; with ``degree``, a polynomial in time of that
    degree) is fitted on every window of ``window`` frames;
    the median RMS residual over the windows is the level of what the model does not explain
    locally -- the noise, plus curvature the model cannot follow. The few windows that straddle
    a boundary do not move the median. Unlike first differences, a ramp's slope is no noise.
    Floored at :data:`LOCAL_FIT_FLOOR` of each range and at a quarter of the pooled level.
    """
    from wallwm.pipeline.segmentation.changepoints import LinearCost, PolynomialCost

    t_len = len(x_TD)
    floor = LOCAL_FIT_FLOOR * np.ptp(x_TD, axis=0)
    params = 2 if degree is None else degree + 1
    window = max(window, 2 * params + 1)  # a few residual degrees of freedom per window
    if t_len < window + 2:
        return np.asarray(np.maximum(noise_sigma(x_TD), floor), dtype=np.float64)
    starts = np.arange(0, t_len - window + 1, dtype=np.int64)
    cost = LinearCost(x_TD, z_TD) if degree is None else PolynomialCost(x_TD, degree)
    rss = cost.columns(starts, starts + window)
    sigma = np.maximum(np.median(np.sqrt(rss / (window - params)), axis=0), floor)
    above = sigma[sigma > floor]
    if above.size:
        sigma = np.maximum(sigma, 0.25 * float(np.median(above)))
    return np.asarray(np.where(sigma > 0, sigma, 1.0), dtype=np.float64)


#: Span of the running median that reads the local noise level, seconds: long against the
#: few windows a boundary disturbs, short against a stretch of fast motion (a person's noise
#: peaks mid-reach) or an object held in contact. From {0.15, 0.25, 0.35, 0.5} on 21 recordings
#: of the smooth model on three robots: mean F1@3 0.570 / 0.575 / 0.577 / 0.572 (0.516 without);
#: Jaco and MetaWorld best at 0.35, ALOHA within 0.004 of its best (0.15); at 1 s ALOHA's reaches
#: with 1 % speed-dependent noise fell from 0.69 to 0.11 (BENCHMARKS.md).
LOCAL_NOISE_SPAN_S = 0.35
#: Order of the differences the local noise level is also read from (a white noise's third
#: differences have 20x its variance; a reach's own third differences are its jerk, small at
#: frame rate).
_NOISE_DIFF_ORDER = 3


def local_noise_variance(y_TD: FloatArray, fps: float, degree: int) -> FloatArray | None:
    """Each frame's noise variance in the unit-noise channels ``y_TD``, where it rises above 1.

    The noise level around each frame is the running median (:data:`LOCAL_NOISE_SPAN_S`) of
    two local reads, the smaller taken: a ``degree`` polynomial's RMS misfit on
    :data:`LOCAL_FIT_S` windows (which a boundary inside a window raises) and the scale of the
    third differences (which a fast smooth movement raises, a boundary only for a frame or
    two). Noise raises both. Floored at 1: the channels' unit is already the episode's median
    level, and only a stretch above it is weighed down. None where the episode is too
    short to read or nothing rises above 1 (the unit holds everywhere).
    """
    from wallwm.pipeline.segmentation.changepoints import PolynomialCost

    t_len = len(y_TD)
    params = degree + 1
    window = max(5, round(LOCAL_FIT_S * fps), 2 * params + 1)
    span = max(3, round(LOCAL_NOISE_SPAN_S * fps)) | 1  # odd: centred on its frame
    if t_len < max(window, span) + 2:
        return None
    starts = np.arange(0, t_len - window + 1, dtype=np.int64)
    rss = PolynomialCost(y_TD, degree).columns(starts, starts + window)
    fit = _centred(np.sqrt(rss / (window - params)), t_len)
    k = _NOISE_DIFF_ORDER
    steps = np.abs(np.diff(y_TD, n=k, axis=0)) / np.sqrt(math.comb(2 * k, k))
    diffs = 1.4826 * _centred(steps, t_len)  # a median of |N(0, s)| is s / 1.4826
    level = np.minimum(_running_median(fit, span), _running_median(diffs, span))
    if not (level > 1.0).any():
        return None
    return np.asarray(np.maximum(level, 1.0) ** 2, dtype=np.float64)


def _centred(x_ND: FloatArray, t_len: int) -> FloatArray:
    """``x_ND`` (one value per window) placed at the windows' centres, edges held: ``(T, D)``."""
    before = (t_len - len(x_ND)) // 2
    return np.pad(x_ND, ((before, t_len - len(x_ND) - before), (0, 0)), mode="edge")


def _running_median(x_TD: FloatArray, span: int) -> FloatArray:
    """The centred running median of each column over ``span`` frames (edges held)."""
    half = span // 2
    padded = np.pad(x_TD, ((half, half), (0, 0)), mode="edge")
    out = np.empty_like(x_TD)
    for d in range(x_TD.shape[1]):  # one column at a time: a (T, span) view, not (T, span, D)
        windows = np.lib.stride_tricks.sliding_window_view(padded[:, d], span)
        out[:, d] = np.median(windows, axis=1)
    return out


#: Position targets (commands the arm reaches: ``noise_model="position_targets"``) weigh cuts at
#: this multiple of their local-fit noise *variance*. A reached path is smooth and curved -- a
#: joint's path under a straight end-effector move, the lagged response to a waypoint -- so what
#: a law leaves over a whole event grows with the event, where the 0.2 s windows see little of
#: it, and the local misfit alone cut such recordings into many short pieces (precision
#: 0.22-0.48). Picked leave-one-robot-out from {1, 2, 4, 8, 16, 32} on three robots recorded as
#: position targets (ALOHA's joints, Jaco's joints, MetaWorld's hand position): 8 for each
#: held-out robot (``benchmarks/segmentation_robots.py``, BENCHMARKS.md).
POSITION_TARGET_NOISE = 8.0


def channel_noise(
    x_TD: FloatArray, z_TD: FloatArray | None, cfg: SegmentConfig, fps: float
) -> FloatArray:
    """Each column's noise under the config's (resolved) noise model."""
    if cfg.noise_model in ("local_fit", "position_targets"):
        from wallwm.pipeline.segmentation.segment import SMOOTH_DEGREE

        degree = SMOOTH_DEGREE if cfg.action_model == "smooth" else None
        sigma = local_fit_sigma(x_TD, z_TD, max(5, round(LOCAL_FIT_S * fps)), degree)
        if cfg.noise_model == "position_targets":
            return np.asarray(sigma * np.sqrt(POSITION_TARGET_NOISE), dtype=np.float64)
        return sigma
    # A line in time must not chase the curvature of a smooth ramp, hence the full resolution
    # floor; the state-feedback model explains a controller's deceleration by the state, and a
    # polynomial in time a reach's rise and fall, so their channels may resolve changes half as
    # large.
    follows_curves = z_TD is not None or cfg.action_model == "smooth"
    return noise_sigma(x_TD, cfg.resolution * (0.5 if follows_curves else 1.0))


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


def feedback_regressors(
    s: Signals, motion_dims: list[int], pairing: list[int] | None = None
) -> tuple[FloatArray, npt.NDArray[np.bool_]] | None:
    """The proprio state paired with each motion action dim, for the state-feedback model.

    ``pairing[j]`` is action dim ``j``'s state (-1: none); without it action dim ``j`` is paired
    with state dim ``j`` (end-effector deltas with end-effector positions, joint targets with
    joint positions). A dim whose paired state is missing or constant gets the frame index
    instead, so it keeps the line-in-time model. Returns the regressors and which of them are
    states.

    Raises:
        ValueError: ``pairing`` is not one entry per action dim.
    """
    if s.states_TS is None or len(s.states_TS) != len(s.actions_TA) or not motion_dims:
        return None
    actions_dims = np.shape(s.actions_TA)[1]
    if pairing is not None and len(pairing) != actions_dims:
        raise ValueError(f"state_pairing has {len(pairing)} entries for {actions_dims} action dims")
    states = np.asarray(s.states_TS, dtype=np.float64)
    t_len = len(states)
    time = np.linspace(-0.5, 0.5, t_len)
    cols, on_state = [], []
    for j in motion_dims:
        k = pairing[j] if pairing is not None else j
        x = states[:, k] if 0 <= k < states.shape[1] else None
        span = float(np.ptp(x)) if x is not None else 0.0
        cols.append((x - x.mean()) / span if x is not None and span > 1e-9 else time)
        on_state.append(x is not None and span > 1e-9)
    return np.stack(cols, axis=1), np.array(on_state, dtype=bool)


def channel_groups(s: Signals, cfg: SegmentConfig) -> dict[str, Channel]:
    """The channels of every enabled group that has signal, unit-noise scaled.

    ``cfg`` must be resolved (no ``auto`` model left: see :mod:`.selection`).
    """
    actions = np.asarray(s.actions_TA, dtype=np.float64)
    grip_dims = [j for j in s.gripper_action_dims if j < actions.shape[1]]
    skipped = set(grip_dims) | set(cfg.left_out())  # a quiet dim: noise alone, no event
    motion_dims = [j for j in range(actions.shape[1]) if j not in skipped]
    regressors: dict[str, tuple[FloatArray, npt.NDArray[np.bool_]] | None] = {}
    if cfg.action_model in ("state_feedback", "smooth"):
        regressors["action_change"] = feedback_regressors(s, motion_dims, cfg.pairing())
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
            z_x = None if z is None else z[0][:, keep]
            groups[name] = Channel(
                np.sqrt(weight) * x / channel_noise(x, z_x, cfg, s.fps),
                z_x,
                None if z is None else z[1][keep],
            )
    return groups


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
