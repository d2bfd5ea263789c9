"""The within-event model, chosen per dataset from the data itself (``action_model="auto"``).

Which model explains a robot's commands between two decisions depends on its controller, not
on anything a user should have to know:

- a closed-loop controller steering to a sub-goal commands ``gain * (goal - state)``: its
  commands are affine in the state it steers (``state_feedback``; MetaWorld's scripted
  experts, a joint-velocity arm's resolved-rate controller);
- an open-loop waypoint expert, or a teleoperator's interpolated targets, commands positions
  that move linearly in time between keyframes, in another space than the recorded joints
  (``time``; ALOHA's end-effector experts);
- a person reaching (teleoperation) moves along minimum-jerk paths: the speed rises and falls
  within every move, and a decision re-plans the move from where the hand is going, without a
  jump; the robot's controller tracks that reference (``smooth``: a polynomial in time per
  event, plus feedback on the paired state where that pays -- where a contact holds the arm
  back from its reference; the smooth operators of MetaWorld and Jaco).

The choice is a model comparison on a sample of the dataset's episodes: each candidate cuts
every sampled episode optimally under the same BIC-penalised cost, at one common noise scale per
action dim -- the smaller of the candidates' local misfits (the residual each leaves on short
windows, :func:`~wallwm.pipeline.segmentation.channels.local_fit_sigma`) -- so the totals
compare; the model with the lower total explains the data with fewer, better-fitting events.
Each episode is weighed without a person's hesitations (:mod:`.hesitations`): a pause inside a
reach costs every model alike and would hide what tells them apart (Jaco's smooth operator with
pauses: the polynomial's cost 0.85 of state feedback's with them, 0.73 without).
State feedback is the default another model must beat decisively (:data:`SWITCH_RATIO`); of
those that do, the lowest total wins -- unless others tie with it (their totals within
:data:`TIE_SE` standard errors of the per-episode differences): then the one that cuts fewest
events wins (:func:`decisive_model`). Without states the line in time is the default. The
totals are compared above their *noise floor*: in unit-noise channels a model that explains
everything but the noise still costs one unit per observation (frames x moving dims), which every
candidate pays alike; what a model leaves above that floor (misfit beyond the noise, and the
BIC price of its events) is what tells the models apart. The plain ratio of totals drifted to 1
as soon as the commands carried a little noise -- the common floor grows to most of every total
-- and a person's noisy reaching fell back to state feedback (ALOHA's at 1-2 % of each command's
spread: 0.07-0.10 F1@3 where the polynomial scores 0.72-0.74). The
polynomial is weighed at the lines' common noise scale (on short windows it would follow the
noise itself) and pays the BIC price of its own parameters; it is costed with and without
feedback on the paired states, and the cheaper of the two nested forms stands for it (without:
the pairing is recorded as all -1). The noise model follows the choice
unless stated: the line in time and the polynomial measure noise as their own local misfit (a
waypoint ramp's slope, a reach's curve is no noise); state feedback as the spread of first
differences floored at ``resolution`` (its measured best on MetaWorld, kept) -- unless the
commands *move with* their states, i.e. are position targets the arm reaches
(:func:`motion_share`: the share of a command's step-to-step change that its state's change
explains, at least :data:`POSITION_TARGET_SHARE`). Then a command's first differences are the
arm's motion, not noise: measured as noise they hid every boundary (F1 0.00-0.27 on MetaWorld,
Jaco and ALOHA recorded as the states one step ahead, below fixed chunks), and state feedback
measures its noise as its own misfit instead (``noise_model="position_targets"``): the local
misfit, scaled up to what the law leaves over a whole event of a smooth, curved reached path
(:data:`~wallwm.pipeline.segmentation.channels.POSITION_TARGET_NOISE`; the local misfit alone
cut such recordings into many short pieces).

Before the model, the *pairing*: which proprio state each action dim is affine in. A robot's
action and state vectors need not list the same quantities in the same order (deltas first and
the gripper last in one, joint angles then end-effector pose in another), so each action dim is
paired with the state it moves most over the sample (:func:`pairing_scores`: a velocity command
correlates with its state's next change, a position target's change with it).
With the state columns rolled by one, pairing by index lost 0.03-0.19 boundary F1 on MetaWorld
and Jaco; the chosen pairing scores the same rolled or not (BENCHMARKS.md).

Position targets are cut on their *rates* of change where those stand clear of their noise
(:func:`choose_form`, :mod:`.forms`); the rates of a reached path rise and fall within an event,
and the model on them is the polynomial's (with or without the paired states, as the costs say).

A recording faster than :data:`CHOICE_MAX_HZ` is read at every k-th frame for the choice (its
misfit sums over frames, its prices do not); the cut reads every frame.

Stages choose once per dataset and keep the choice (it is recorded with the segment run), so
episodes ingested later are cut with the same model; ``wallwm segment --reselect`` chooses
again.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from wallwm.pipeline.segmentation.changepoints import (
    LinearCost,
    LocalNoiseCost,
    PolynomialCost,
    pelt_between,
)
from wallwm.pipeline.segmentation.channels import (
    LOCAL_FIT_S,
    feedback_regressors,
    gripper_flips,
    local_fit_sigma,
    local_noise_variance,
    moving_dims,
)
from wallwm.pipeline.segmentation.config import FloatArray, SegmentConfig, Signals
from wallwm.pipeline.segmentation.forms import (
    RATES_CLEARANCE,
    as_read,
    command_rates,
    rates_clearance,
)
from wallwm.pipeline.segmentation.hesitations import without_hesitations

CANDIDATES = ("state_feedback", "time", "smooth")
#: The smooth model with feedback on the paired states, costed beside it: the two are nested,
#: so the lower penalised cost decides whether the states are fed back (a controller held back
#: at contacts: MetaWorld's smooth operator, 0.73 of the polynomial's cost) or not (Jaco, whose
#: law runs through the arm's Jacobian: 1.08).
SMOOTH_FEEDBACK = "smooth+state"
#: Another model replaces the default state-feedback model only where what it leaves above the
#: noise floor (its total less one unit per observation) is at most this share of what the
#: default leaves. Measured (``benchmarks/segmentation_robots.py``): the line in time on ALOHA's
#: waypoint plans -1.2-0.4; the polynomial on a person's reaching -0.3-0.6 without noise and
#: 0.3-0.64 with 2 % of each command's spread added; MetaWorld's and Jaco's scripted closed
#: loops 1.2-1.9 for either model (state feedback wins); recordings of position targets, where
#: neither model is much better, 0.5-1.0. Picked leave-one-robot-out (0.75-1.0 alike).
SWITCH_RATIO = 0.75
#: Episodes a dataset's choice is made on (spread over the dataset by a hash of their ids).
SAMPLE_EPISODES = 24
#: Commands whose step-to-step changes their paired states' changes explain at least this
#: share of (median R^2 over dims and episodes) are position targets (see the module
#: docstring). Measured: velocity commands 0.02-0.08 (MetaWorld's deltas, Jaco's joint
#: velocities), ALOHA's end-effector targets against its joints 0.16-0.57, the same three
#: robots' rollouts recorded as the next state 1.00; halfway between the two sides' edges.
POSITION_TARGET_SHARE = 0.75
#: Lags (frames) at which a state's change may follow its command's: a tracking controller's.
MOTION_LAGS = (0, 1, 2, 3, 4, 5)
#: The highest rate (Hz) the choice reads its sample at: a faster recording is read at every
#: k-th frame for the choice (the cut still reads every frame). The choice was measured right
#: on three robots at 10-80 Hz (``benchmarks/segmentation_rates.py``); above that it costs more
#: than it tells: PELT keeps every start of the current event, so its work grows with the frames
#: times an event's length (one ALOHA episode resampled at 1,600 Hz, 8,609 frames: 16.8 s to
#: choose on every frame, 0.4 s at 76.9 Hz, 0.6 s to cut; ``benchmarks/segmentation_length.py``),
#: and each model's total sums its misfit over frames while its events' prices do not grow with
#: the rate -- Jaco's noise-free closed loop resampled at 100 Hz took the polynomial (F1 0.854
#: at 25 Hz -> 0.58; read at 50 Hz 0.788).
#: Read this way, the suite's six other noise-free recordings resampled at 2x and 4x keep
#: their choice, F1 within 0.03 (ALOHA's joints at 100 Hz +0.03); with 1 % noise at the faster
#: rate none flips either way.
CHOICE_MAX_HZ = 80.0


@dataclass(frozen=True)
class ModelChoice:
    """The chosen within-event model and the evidence for it."""

    action_model: str
    #: Total penalised cost of each candidate over the sampled episodes (lower explains better).
    costs: dict[str, float] = field(default_factory=dict)
    episodes: int = 0
    #: Where the choice came from: "data", "stated" (the user named the model), "recorded".
    basis: str = "data"
    #: The state index each action dim is paired with (-1: time); None: by index.
    pairing: list[int] | None = None
    #: How much of the commands' changes their states' changes explain (see
    #: :func:`motion_share`); None where not measured (no states, or the model was stated).
    motion_share: float | None = None
    #: Whether the smooth model feeds back the paired states (else the polynomial alone).
    feedback: bool = True
    #: What every candidate's total pays for the noise alone: one unit per observation compared
    #: (frames x moving action dims over the sampled episodes).
    noise_floor: float = 0.0
    #: What the cut reads of each command: "values" or "rates" (:mod:`.forms`).
    action_form: str = "values"
    #: The position targets' rates' spread over their noise (:func:`.forms.rates_clearance`);
    #: None where not measured (no position targets, or the form was stated).
    rates_clearance: float | None = None
    #: The choice read every this many frames of its sample (:data:`CHOICE_MAX_HZ`).
    read_every: int = 1
    #: Action dims whose commands are noise alone over the sample (:func:`quiet_dims`): the
    #: cut leaves them out.
    quiet_dims: list[int] = field(default_factory=list)
    #: Each candidate's mean events per sampled episode under its optimal cut.
    events: dict[str, float] = field(default_factory=dict)
    #: The candidates whose totals tied with the least (:func:`decisive_model`): the one that
    #: cut fewest events was chosen. Empty where none tied.
    tied: list[str] = field(default_factory=list)

    @property
    def position_targets(self) -> bool:
        """The commands move with their states: position targets the arm reaches."""
        return self.motion_share is not None and self.motion_share >= POSITION_TARGET_SHARE

    def apply(self, cfg: SegmentConfig) -> SegmentConfig:
        """``cfg`` with every ``auto`` replaced by this choice."""
        noise = cfg.noise_model
        if noise == "auto":
            noise = "differences"
            if self.action_model in ("time", "smooth"):
                noise = "local_fit"
            elif self.action_model == "state_feedback" and self.position_targets:
                noise = "position_targets"
        pairing = cfg.state_pairing
        if pairing == "auto":
            pairing = self.pairing if self.pairing is not None else "index"
        form = self.action_form if cfg.action_form == "auto" else cfg.action_form
        quiet = self.quiet_dims if cfg.quiet_dims == "auto" else cfg.quiet_dims
        return cfg.model_copy(
            update={
                "action_model": self.action_model,
                "noise_model": noise,
                "state_pairing": pairing,
                "action_form": form,
                "quiet_dims": quiet,
            }
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (what the segment run's lineage records)."""
        return {
            "action_model": self.action_model,
            "costs": {k: round(v, 3) for k, v in self.costs.items()},
            "noise_floor": self.noise_floor,
            "episodes": self.episodes,
            "basis": self.basis,
            "pairing": self.pairing,
            "motion_share": None if self.motion_share is None else round(self.motion_share, 3),
            "action_form": self.action_form,
            "rates_clearance": (
                None if self.rates_clearance is None else round(self.rates_clearance, 1)
            ),
            "read_every": self.read_every,
            "quiet_dims": self.quiet_dims,
            "events": {k: round(v, 2) for k, v in self.events.items()},
            "tied": self.tied,
        }


#: Standard errors above zero an episode's lag-1 autocorrelation of a dim's commands must reach
#: to show that the dim carries more than noise there (:func:`quiet_dims`). A test, not a tuned
#: value: for white noise the estimate is ~N(0, 1/T) over T frames, so a noise-only dim passes
#: it in an episode with probability 0.0013.
QUIET_SE = 3.0


def quiet_dims(signals: Iterable[Signals]) -> list[int]:
    """The action dims (gripper commands aside) whose commands are noise alone in ``signals``.

    Any law a command follows -- feedback on a state, a line, a reach, a held level -- makes
    consecutive commands alike; noise on a channel no one commands (an arm's roll under a
    controller that keeps it level, an unused teleoperation axis, a sensor's jitter) does not.
    A dim is quiet where in no episode the lag-1 autocorrelation of its commands rises
    :data:`QUIET_SE` standard errors above zero: one episode that uses the dim (a rare task
    that turns the wrist) keeps it for all. Such a dim carries no event the cut could find (an
    event's evidence is about the frames times the share of the variance that persists, below
    the BIC price here) but would make every event pay for its parameters -- robosuite's Panda
    at action noise 0.3: roll commands of autocorrelation 0.02, its events' commands 0.48-0.62
    (BENCHMARKS.md). Where every motion dim is quiet, none is left out (the cut has nothing
    else to read).
    """
    loud: set[int] = set()
    seen: set[int] = set()
    grippers: set[int] = set()
    for s in signals:
        x = np.asarray(s.actions_TA, dtype=np.float64)
        grippers |= set(s.gripper_action_dims)
        if len(x) < 3:
            continue
        x = x - x.mean(axis=0)
        spread = (x * x).sum(axis=0)
        moving = spread > 1e-12 * len(x)
        rho = np.divide(
            (x[1:] * x[:-1]).sum(axis=0), spread, out=np.zeros(len(spread)), where=moving
        )
        seen |= {int(j) for j in np.flatnonzero(moving)}
        loud |= {int(j) for j in np.flatnonzero(rho >= QUIET_SE / np.sqrt(len(x)))}
    motion = seen - grippers
    quiet = sorted(motion - loud)
    return quiet if len(quiet) < len(motion) else []


def _abs_correlations(x_TA: FloatArray, z_TS: FloatArray) -> FloatArray:
    """|Pearson correlation| of every column of ``x_TA`` with every column of ``z_TS`` (A, S)."""
    xc, zc = x_TA - x_TA.mean(axis=0), z_TS - z_TS.mean(axis=0)
    norms = np.outer(np.linalg.norm(xc, axis=0), np.linalg.norm(zc, axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.abs(xc.T @ zc) / norms
    return np.asarray(np.nan_to_num(corr), dtype=np.float64)


def pairing_scores(s: Signals) -> FloatArray | None:
    """How strongly each action dim (rows) moves each state dim (columns), in [0, 1].

    A velocity command moves its state by about itself each step (the action correlates with
    the state's next change); a position target moves it when the target moves (the action's
    change correlates with the state's change). The larger of the two |correlations|; no cut is
    needed, so no model is assumed.
    """
    if s.states_TS is None or len(s.states_TS) != len(s.actions_TA) or len(s.actions_TA) < 8:
        return None
    actions = np.asarray(s.actions_TA, dtype=np.float64)
    moves = np.diff(np.asarray(s.states_TS, dtype=np.float64), axis=0)  # s[t+1] - s[t]
    velocity = _abs_correlations(actions[:-1], moves)
    position = _abs_correlations(np.diff(actions, axis=0), moves)
    return np.maximum(velocity, position)


def choose_pairing(signals: Iterable[Signals]) -> list[int] | None:
    """Each action dim's state: the one it moves most over ``signals`` (-1: gripper dims).

    Scores (:func:`pairing_scores`) are averaged over the episodes, weighted by length; None
    without states to pair. Action dim ``j`` keeps state ``j`` (the vectors' own order) unless
    another state's score is higher by more than the sampling error allows: two standard
    errors of the difference of the two correlations' Fisher z over the frames seen (joints
    that move in step -- a short episode of synchronised motions -- score alike, and the data
    then cannot tell them apart).
    """
    total: FloatArray | None = None
    grip: set[int] = set()
    frames = 0
    for s in signals:
        scores = pairing_scores(s)
        if scores is None or (total is not None and scores.shape != total.shape):
            continue
        weighted = scores * len(s.actions_TA)
        total = weighted if total is None else total + weighted
        frames += len(s.actions_TA)
        grip |= set(s.gripper_action_dims)
    if total is None:
        return None
    z = np.arctanh(np.clip(total / frames, 0.0, 0.9999))
    margin = 2.0 * np.sqrt(2.0 / max(frames - 3, 1))
    best = np.argmax(z, axis=1)
    out = []
    for j, k in enumerate(best):
        # a tie within the sampling error: the vectors' own order
        tied = j < z.shape[1] and z[j, k] - z[j, j] <= margin
        out.append(-1 if j in grip else j if tied else int(k))
    return out


def _r2(y: FloatArray, x: FloatArray) -> float:
    if len(y) < 3 or y.std() < 1e-12 or x.std() < 1e-12:
        return 0.0
    c = float(np.corrcoef(y, x)[0, 1])
    return c * c


def motion_share(signals: Iterable[Signals], pairing: list[int] | None) -> float | None:
    """How much of the commands' step-to-step change their paired states' change explains.

    Per moving non-gripper action dim with a paired state and per episode: the R^2 of the
    command's change on the state's change at the best of :data:`MOTION_LAGS`; the median
    over all of them. Near 0 for velocity commands (their changes are decisions and noise),
    near 1 for position targets the arm reaches (their changes are the motion). None without
    states to compare with.
    """
    values = []
    for s in signals:
        if s.states_TS is None or len(s.states_TS) != len(s.actions_TA) or len(s.actions_TA) < 8:
            continue
        actions = np.asarray(s.actions_TA, dtype=np.float64)
        states = np.asarray(s.states_TS, dtype=np.float64)
        grip = set(s.gripper_action_dims)
        for j in range(actions.shape[1]):
            k = pairing[j] if pairing is not None else j
            if j in grip or not 0 <= k < states.shape[1] or np.ptp(actions[:, j]) < 1e-9:
                continue
            da, ds = np.diff(actions[:, j]), np.diff(states[:, k])
            values.append(max(_r2(da[: len(da) - lag], ds[lag:]) for lag in MOTION_LAGS))
    return float(np.median(values)) if values else None


def pairing_text(action_model: str, pairing: list[int] | None) -> str:
    """`` (action dim->state: 0->0 1->1)`` for a model with state feedback, else empty."""
    if action_model not in ("state_feedback", "smooth") or not pairing or max(pairing) < 0:
        return ""
    return (
        " (action dim->state: "
        + " ".join(f"{j}->{k}" for j, k in enumerate(pairing) if k >= 0)
        + ")"
    )


@dataclass(frozen=True)
class EpisodeCosts:
    """Each candidate's optimal penalised cost of one episode at the common noise scale."""

    costs: dict[str, float]
    #: Observations compared (frames x moving action dims): in unit-noise channels, what any
    #: model's misfit costs when it explains everything but the noise.
    noise_floor: float
    #: Events each candidate's optimal cut makes of the episode.
    events: dict[str, int]


#: How the model choice costs its sample: ``map_fn(fn, episodes)`` is ``[fn(e) for e in
#: episodes]``, in order. Each candidate cuts each episode optimally, seconds per episode of a
#: few thousand frames, so the stages spread the episodes over Ray's CPUs
#: (:func:`wallwm.pipeline.chain.map_items`); the pure core maps them one after the other.
SampleMap = Callable[
    [Callable[[Signals], "EpisodeCosts | None"], list[Signals]], list["EpisodeCosts | None"]
]


def serial_map(
    fn: Callable[[Signals], EpisodeCosts | None], signals: list[Signals]
) -> list[EpisodeCosts | None]:
    """:data:`SampleMap` in this process, one episode after the other."""
    return [fn(s) for s in signals]


def episode_costs(
    s: Signals, cfg: SegmentConfig, pairing: list[int] | None = None
) -> EpisodeCosts | None:
    """Each candidate's optimal penalised cost of one episode at the common noise scale.

    None when the episode has no moving non-gripper action dim (nothing to compare on).
    """
    from wallwm.pipeline.segmentation.segment import SMOOTH_DEGREE, event_penalty, smooth_cost

    if cfg.merge_disturbances:  # every model is weighed on the motion the operator made
        s = without_hesitations(s)
    actions = np.asarray(s.actions_TA, dtype=np.float64)
    dims = moving_dims(actions, s.gripper_action_dims)
    t_len = len(actions)
    if not dims or t_len < 8:
        return None
    x = actions[:, dims]
    window = max(5, round(LOCAL_FIT_S * s.fps))
    # Each line model's regressors (None: a line in time); the states where any is paired.
    paired = feedback_regressors(s, dims, pairing)
    state = None if paired is None or not paired[1].any() else paired
    candidates: dict[str, FloatArray | None] = {"time": None}
    if state is not None:
        candidates["state_feedback"] = state[0]
    sigma = np.min([local_fit_sigma(x, z, window) for z in candidates.values()], axis=0)
    y = x / sigma
    min_len = max(1, round(cfg.min_event_s * s.fps))
    edges = [0, *gripper_flips(s, min_len), t_len]
    costs: dict[str, LinearCost | PolynomialCost] = {
        n: LinearCost(y, z) for n, z in candidates.items()
    }
    # The polynomial's local misfit is no noise scale (it follows short windows exactly): it is
    # weighed at the lines' common one, and pays for its extra parameters per event -- alone,
    # and with feedback on the paired states where there are any.
    costs["smooth"] = PolynomialCost(y, SMOOTH_DEGREE)
    if state is not None:
        costs[SMOOTH_FEEDBACK] = smooth_cost(y, *state)
    # Where the noise rises within the episode (a person's noise grows with speed), every model
    # is weighed at the frames' own noise: otherwise whichever cuts most often to follow the
    # noisy stretches looks cheapest.
    variance = local_noise_variance(y, s.fps, SMOOTH_DEGREE)
    out, events = {}, {}
    for name, plain in costs.items():
        cost = plain if variance is None else LocalNoiseCost(plain, variance)
        penalty = event_penalty(cfg, y.shape[1], t_len, cost.params)
        ends = np.array([0, *pelt_between(cost, edges, penalty, min_len), t_len], dtype=np.int64)
        out[name] = float(cost(ends[:-1], ends[1:]).sum() + penalty * (len(ends) - 1))
        events[name] = len(ends) - 1
    return EpisodeCosts(out, float(y.size), events)


def frames_of(s: Signals, frames: slice) -> Signals:
    """``s`` at ``frames`` only: every per-frame signal sliced alike (the rate is the caller's)."""

    def kept(x: npt.NDArray[np.floating] | None) -> npt.NDArray[np.floating] | None:
        return None if x is None else np.asarray(x)[frames]

    return dataclasses.replace(
        s,
        actions_TA=np.asarray(s.actions_TA)[frames],
        states_TS=kept(s.states_TS),
        gripper_TG=kept(s.gripper_TG),
        motion_T=kept(s.motion_T),
    )


def at_choice_rate(s: Signals) -> tuple[Signals, int]:
    """``s`` read at every k-th frame, and k: the least that brings it to the choice's rate.

    The rate is :data:`CHOICE_MAX_HZ` or below; a recording already there is returned as is.
    """
    every = max(1, math.ceil(s.fps / CHOICE_MAX_HZ - 1e-9))
    if every == 1:
        return s, 1
    return dataclasses.replace(frames_of(s, slice(None, None, every)), fps=s.fps / every), every


#: The most frames the choice reads of one episode (after :func:`at_choice_rate`): a window
#: from its middle. The choice compares totals over its whole sample (up to 24 episodes); a
#: window this long holds dozens of events at any rate the choice reads, and it bounds the
#: choice's cost on long sessions, where four candidates cut every sampled episode whole (a
#: 30,000-frame session of Jaco's episodes: 11.3 s on one core, 1.7 s read this way, the same
#: model; BENCHMARKS.md "The model choice on long episodes"). The suite's episodes (80-400
#: frames) are read whole; the sessions of ``benchmarks/segmentation_length.py`` keep their
#: choice and F1.
CHOICE_MAX_FRAMES = 4096


def at_choice_length(s: Signals) -> Signals:
    """``s``, or its middle :data:`CHOICE_MAX_FRAMES` frames where it is longer."""
    t_len = len(s.actions_TA)
    if t_len <= CHOICE_MAX_FRAMES:
        return s
    first = (t_len - CHOICE_MAX_FRAMES) // 2
    return frames_of(s, slice(first, first + CHOICE_MAX_FRAMES))


def choose_model(
    signals: Iterable[Signals], cfg: SegmentConfig, map_fn: SampleMap | None = None
) -> ModelChoice:
    """The within-event model, pairing and action form for these episodes (module docstring).

    Each episode is read at :data:`CHOICE_MAX_HZ` or below (:func:`at_choice_rate`), at most
    :data:`CHOICE_MAX_FRAMES` of it (:func:`at_choice_length`).
    ``map_fn`` costs the episodes (:data:`SampleMap`; one after the other by default).

    Raises:
        ValueError: The episodes are of more than one embodiment (action dims, or state dims
            among those with states): one model and pairing cannot serve them.
    """
    signals = list(signals)
    _one_embodiment(signals)
    read = [at_choice_rate(s) for s in signals]
    signals = [at_choice_length(s) for s, _ in read]
    every = max((k for _, k in read), default=1)
    pairing = cfg.pairing()
    if cfg.state_pairing == "auto":
        pairing = choose_pairing(signals)
    quiet = quiet_dims(signals) if cfg.quiet_dims == "auto" else cfg.left_out()
    measure = "auto" in (cfg.noise_model, cfg.action_form)
    share = motion_share(signals, pairing) if measure else None
    form, clearance = choose_form(signals, cfg, share)
    chosen_by_data = cfg.action_model == "auto"
    if form == "rates":
        # The model is the polynomial's (a reached path's rate rises and falls within an
        # event; the line in time on the rates scored 0.08-0.59, below the polynomial on twelve
        # of the thirteen position-target recordings); whether the paired states pay is still
        # the data's to say.
        signals = [command_rates(s) for s in signals]
        if chosen_by_data:
            cfg = cfg.model_copy(update={"action_model": "smooth"})
    choice = _choose_action_model(signals, cfg, pairing, map_fn or serial_map)
    if form == "rates" and chosen_by_data and choice.costs:
        choice = dataclasses.replace(choice, basis="data")
    if choice.action_model == "smooth" and not choice.feedback and pairing is not None:
        pairing = [-1] * len(pairing)  # the polynomial alone: no state pays for its parameter
    return dataclasses.replace(
        choice,
        pairing=pairing,
        motion_share=share,
        action_form=form,
        rates_clearance=clearance,
        read_every=every,
        quiet_dims=quiet,
    )


def _one_embodiment(signals: list[Signals]) -> None:
    actions = sorted({int(s.actions_TA.shape[1]) for s in signals})
    states = sorted({int(s.states_TS.shape[1]) for s in signals if s.states_TS is not None})
    if len(actions) > 1 or len(states) > 1:
        raise ValueError(
            f"choose_model: the episodes mix embodiments (action dims {actions}, state dims "
            f"{states}); choose a model for each embodiment's episodes"
        )


def choose_form(
    signals: list[Signals], cfg: SegmentConfig, share: float | None
) -> tuple[str, float | None]:
    """Values or rates (:mod:`.forms`), and the rates' clearance where it was measured.

    The rates are chosen only for position targets (a ``motion_share`` of at least
    :data:`POSITION_TARGET_SHARE`) whose rates stand clear of their noise
    (:data:`~.forms.RATES_CLEARANCE`), and only where the model is the data's to choose or the
    polynomial's (the one measured on rates); a stated line model reads the values it was made
    for.
    """
    if cfg.action_form != "auto":
        return cfg.action_form, None
    targets = share is not None and share >= POSITION_TARGET_SHARE
    if not targets or cfg.action_model not in ("auto", "smooth"):
        return "values", None
    clearance = rates_clearance(signals)
    clear = clearance is not None and clearance >= RATES_CLEARANCE
    return ("rates" if clear else "values"), clearance


def _choose_action_model(
    signals: list[Signals], cfg: SegmentConfig, pairing: list[int] | None, map_fn: SampleMap
) -> ModelChoice:
    stated_smooth = cfg.action_model == "smooth" and cfg.state_pairing == "auto"
    if cfg.action_model != "auto" and not stated_smooth:
        return ModelChoice(cfg.action_model, basis="stated")
    sample = _sample_costs(signals, cfg, pairing, map_fn)
    costs, episodes, floor = sample.totals(), sample.episodes, sample.noise_floor
    # The smooth model's two forms are nested: the cheaper one stands for it -- also where the
    # user named the model, since whether the states pay is the data's to say.
    forms = {n: costs[n] for n in ("smooth", SMOOTH_FEEDBACK) if n in costs}
    form = min(forms, key=forms.__getitem__) if forms else "smooth"
    feedback = form == SMOOTH_FEEDBACK
    events = sample.events_per_episode()
    if stated_smooth:
        return ModelChoice(
            "smooth", costs, episodes, "stated", feedback=feedback, noise_floor=floor, events=events
        )
    if not episodes or not costs:  # nothing moves: the default model, nothing to compare
        return ModelChoice("state_feedback", episodes=episodes)
    names = {n: n for n in costs if n not in forms} | ({"smooth": form} if forms else {})
    compared = sample.renamed(names)
    chosen, tied = decisive_model(compared.totals(), floor, compared)
    return ModelChoice(
        chosen, costs, episodes, feedback=feedback, noise_floor=floor, events=events, tied=tied
    )


#: Standard errors within which two candidates' totals tie: the standard error of the sum of
#: their per-episode cost differences over the sample (a paired two-sided test at about 5 %).
#: A test, not a tuned value; over the suite's 27 recordings two pairs tie: ALOHA's reaching
#: with speed-dependent noise (the line in time and the polynomial 0.04 standard errors apart;
#: the polynomial, with fewer events, now chosen) and Jaco's hesitating reaches (1.98 apart; the
#: polynomial both cheaper and sparser); every other decisive pair stands 3.7-48 apart.
TIE_SE = 2.0


def decisive_model(
    totals: dict[str, float], floor: float, sample: SampleCosts | None = None
) -> tuple[str, list[str]]:
    """The default model, unless another explains the sample decisively better.

    The default is state feedback (without paired states, the line in time). Each total is
    read above the noise floor every candidate pays alike (module docstring); another model
    replaces the default where it leaves at most :data:`SWITCH_RATIO` of what the default
    leaves above it, and of those that do, the one that leaves least. Where the default's total
    is at or below the floor, the common noise scale overstates the noise (the floor is no
    floor there: MetaWorld's noise-free closed loops, position targets a law follows closely)
    and the plain totals decide, as they did before the floor was read.

    With the ``sample``'s per-episode costs, candidates that tie with the least -- their totals
    within :data:`TIE_SE` standard errors of it -- are told apart by the events they cut: the
    one that explains the sample with fewest events per episode wins. A smooth reach cut into
    pieces of lines costs what the polynomial costs with a third of the events (the two spend
    the same parameters); events are what the product is for, so the fewer stand for more.
    Returns the model and the candidates that tied (empty where none did).
    """
    default = "state_feedback" if "state_feedback" in totals else "time"
    if totals[default] <= floor:
        floor = 0.0
    excess = {n: v - floor for n, v in totals.items()}
    better = {n: v for n, v in excess.items() if v <= SWITCH_RATIO * excess[default]}
    best = min(better, key=better.__getitem__, default=default)
    tied = [] if sample is None else sample.tied_with(best, list(better))
    if sample is None or not tied:
        return best, []
    events = sample.events_per_episode()
    return min(tied, key=lambda n: (events[n], better[n])), tied


@dataclass(frozen=True)
class SampleCosts:
    """Each candidate's penalised cost and events per sampled episode (those that move)."""

    #: Per candidate, one cost per episode (the same episodes, in order, for every candidate).
    costs: dict[str, FloatArray]
    #: Per candidate, the events its cut makes of each episode.
    events: dict[str, FloatArray]
    noise_floor: float

    @property
    def episodes(self) -> int:
        """Episodes costed."""
        return len(next(iter(self.costs.values()), ()))

    def totals(self) -> dict[str, float]:
        """Each candidate's total cost over the sample."""
        return {n: float(c.sum()) for n, c in self.costs.items()}

    def events_per_episode(self) -> dict[str, float]:
        """Each candidate's mean events per episode."""
        return {n: float(e.mean()) for n, e in self.events.items() if e.size}

    def renamed(self, names: dict[str, str]) -> SampleCosts:
        """The candidates ``names`` maps to, under their new names (``{new: old}``)."""
        return SampleCosts(
            {new: self.costs[old] for new, old in names.items()},
            {new: self.events[old] for new, old in names.items()},
            self.noise_floor,
        )

    def tied_with(self, best: str, others: list[str]) -> list[str]:
        """``best`` and those of ``others`` whose totals tie with it (:data:`TIE_SE`).

        Empty under two episodes (no spread to read).
        """
        if self.episodes < 2:
            return []
        tied = [best]
        for name in others:
            if name == best:
                continue
            diff_E = self.costs[name] - self.costs[best]
            se = float(np.std(diff_E, ddof=1) * math.sqrt(len(diff_E)))
            if float(diff_E.sum()) <= TIE_SE * se:
                tied.append(name)
        return tied if len(tied) > 1 else []


def _sample_costs(
    signals: list[Signals], cfg: SegmentConfig, pairing: list[int] | None, map_fn: SampleMap
) -> SampleCosts:
    """Each candidate's costs and events over the episodes that move, and their noise floor.

    A candidate that cannot model one episode cannot model the dataset: it is left out.
    """
    names = (*CANDIDATES, SMOOTH_FEEDBACK)
    costs: dict[str, list[float]] = {n: [] for n in names}
    events: dict[str, list[int]] = {n: [] for n in names}
    usable = dict.fromkeys(names, True)
    floor = 0.0
    for weighed in map_fn(functools.partial(episode_costs, cfg=cfg, pairing=pairing), signals):
        if weighed is None:
            continue
        floor += weighed.noise_floor
        for name in names:
            if name in weighed.costs:
                costs[name].append(weighed.costs[name])
                events[name].append(weighed.events[name])
            else:
                usable[name] = False
    kept = [n for n in names if usable[n] and costs[n]]
    return SampleCosts(
        {n: np.asarray(costs[n], dtype=np.float64) for n in kept},
        {n: np.asarray(events[n], dtype=np.float64) for n in kept},
        floor,
    )


def resolve(
    cfg: SegmentConfig, signals: Iterable[Signals], map_fn: SampleMap | None = None
) -> tuple[SegmentConfig, ModelChoice]:
    """``cfg`` with its model choices made on ``signals`` (as is when nothing is ``auto``).

    ``map_fn``: how the sample's episodes are costed (:data:`SampleMap`).
    """
    if cfg.resolved():
        stated = ModelChoice(
            cfg.action_model,
            basis="stated",
            pairing=cfg.pairing(),
            action_form=cfg.action_form,
            quiet_dims=cfg.left_out(),
        )
        return cfg, stated
    signals = (as_read(s, cfg).signals for s in signals)  # chosen on what the cut will read
    choice = choose_model(signals, cfg, map_fn)
    return choice.apply(cfg), choice
