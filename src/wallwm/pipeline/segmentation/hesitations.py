"""A person's hesitations: stops after which the motion resumes the way it was going.

An operator who hesitates mid-move holds the command (a velocity command at zero, a position
target where it is, a sideways nudge held for a moment) and then carries on with the same move.
The smooth model (a polynomial in time per event) cannot fit a stop inside a reach, so every
hesitation cost two cuts -- and, because operators hesitate as often right after deciding as
anywhere, it also pulled the decision's own cut onto the stop (MetaWorld's and Jaco's smooth
operators with pauses: 5 false cuts per MetaWorld episode at its pauses and swerves, recall
0.38; Jaco below fixed chunks). Taking the hesitations *out* of the signals before cutting
restores the move the operator made, decision knots included; the stops then lie inside events.

A run of frames is a hesitation when

- every moving non-gripper command is *held*: each frame within :data:`HOLD_SE` standard
  errors of the stop's mean so far, and no drift across the stop beyond as many (the noise:
  what a local cubic leaves, :func:`~.channels.local_fit_sigma`), for :data:`MIN_HESITATION_S`
  to :data:`MAX_HESITATION_S`; no gripper command switches in it or next to it (a stop for a
  grasp is a decision);
- the stop is *abrupt* at both ends: the step into the hold and out of it is at least
  :data:`ABRUPT` times the motion's own steps beside it (in some dim) -- an operator freezing,
  not a steady cruise, a smooth curve's turning point or a wiggly command passing a quiet
  stretch. A velocity command freezes by jumping to its held value; a position target freezes
  where it was, so there the test runs on its steps (its rate jumps to zero);
- the move *continues*: relative to the held command (or the held rate), the commands (or
  steps) at the stop's two edges point the same way (cosine at least
  :data:`MIN_CONTINUATION`, each dim in units of its spread; at least two moving dims, or there
  is no direction). A stop where the expert decides -- fingers closing on a brick, a hand that
  arrives and turns to the next sub-goal -- changes direction across it and stays in the
  signals.

The smooth model then cuts the signals without the hesitations (the clock after each set back
by its length: the reference was held), measuring their noise without them too; a cut within
:data:`JUNCTION_FRAMES` of where a hesitation was is the arm's transient as it resumes, not a
decision, and is dropped; the other cuts are mapped back to the episode's frames. The model
choice (:mod:`.selection`) weighs every candidate on the signals without them as well.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from wallwm.pipeline.segmentation.channels import LOCAL_FIT_S, local_fit_sigma, moving_dims
from wallwm.pipeline.segmentation.config import FloatArray, Signals

#: Shortest hesitation, seconds (and never under three frames: two equal frames are a bell's
#: peak as often as a stop): MetaWorld's operator pauses for 0.1-0.25 s and swerves for
#: 0.05-0.1 s, Jaco's pauses for 0.3-0.8 s.
MIN_HESITATION_S = 0.05
#: Longest hesitation, seconds: a stop of over a second is the operator waiting -- a decision.
MAX_HESITATION_S = 1.0
#: A command is held while each frame is within this many standard errors of the mean of the
#: stop so far: at four, a pure-noise stop of a dozen frames on three dims breaks by chance
#: once in a few hundred (at three, once in ten).
HOLD_SE = 4.0
#: The step into a hold and out of it is at least this many times the motion's own steps
#: beside it (their median over :data:`SIDE_S`), and beyond the noise. Without the test a
#: command driven by a wandering state, or noisy curves at SNR 10, show quiet stretches that
#: pass for stops (and lose the decisions next to them). From {1.5, 2, 3, 5} on both smooth
#: operators' recordings with pauses: 1.5 to 3 score alike, at 5 Jaco's pauses go unseen
#: (0.825 -> 0.354); at 3 a 25 Hz pause that resumes into a fast move is missed (the tests'
#: reaches), hence 2; ALOHA's position targets score alike at every value (BENCHMARKS.md).
ABRUPT = 2.0
#: Seconds of motion each side of a stop that show which way the move was going.
SIDE_S = 0.1
#: Least cosine between the commands at a stop's edges (relative to the held command) for the
#: move to continue: within 60 degrees. From {0.3, 0.5, 0.7} on both smooth operators'
#: recordings: Jaco needs 0.5 or more (at 0.3 its grasps -- the arm stops while the fingers
#: close, then lifts -- are taken for pauses: F1 0.86 -> 0.67), MetaWorld scores best at the
#: lowest, so the lowest Jaco allows; ALOHA's alike at every value (BENCHMARKS.md).
MIN_CONTINUATION = 0.5
#: A cut this close to where a hesitation was taken out is the arm resuming, not a decision.
JUNCTION_FRAMES = 2


def hesitation_runs(
    actions_TA: npt.NDArray[np.floating], gripper_dims: list[int], fps: float
) -> list[tuple[int, int]]:
    """The hesitations ``[start, end)`` of one episode's commands (see the module docstring)."""
    actions = np.asarray(actions_TA, dtype=np.float64)
    t_len = len(actions)
    grip = sorted(set(gripper_dims))
    dims = moving_dims(actions, grip)
    if len(dims) < 2 or t_len < 8:
        return []  # one moving dim has no direction to carry on in
    x = actions[:, dims]
    window = max(5, round(LOCAL_FIT_S * fps))
    rate, action_steps = np.diff(x, axis=0), np.diff(actions, axis=0)
    # the noise about a local cubic: a smooth move's curvature is no noise, and a slow move
    # drifts out of the hold however small its steps
    stops = _Stops(
        x,
        local_fit_sigma(x, None, window, degree=3),
        rate,
        local_fit_sigma(rate, None, window, degree=3),
        actions,
        action_steps,
        actions.std(axis=0) + 1e-12,
        action_steps.std(axis=0) + 1e-12,
    )
    switch_T = np.zeros(t_len + 1, bool)  # a gripper command changes into frame t
    if grip:
        switch_T[1:t_len] = (np.abs(np.diff(actions[:, grip], axis=0)) > 1e-9).any(axis=1)
    shortest = max(3, round(MIN_HESITATION_S * fps))
    longest = max(shortest, round(MAX_HESITATION_S * fps))
    side = max(2, round(SIDE_S * fps))
    return [
        (start, end)
        for start, end in _held_runs(x, stops.sigma_D, shortest)
        if end - start <= longest
        and not switch_T[start : end + 1].any()
        and stops.carries_on(start, end, side)
    ]


@dataclass(frozen=True)
class _Stops:
    """The tests of a held run beyond the hold itself (see the module docstring)."""

    #: The moving non-gripper commands and their noise.
    x_TD: FloatArray
    sigma_D: FloatArray
    #: Their steps (``x[t + 1] - x[t]``) and the steps' own noise (a position target's steps
    #: are smooth where its values curve).
    rate_TD: FloatArray
    rate_sigma_D: FloatArray
    #: Every action dim and its steps (the direction is read on all of them), each with its
    #: spread over the episode (the unit the direction is read in).
    actions_TA: FloatArray
    action_steps_TA: FloatArray
    spread_A: FloatArray
    step_spread_A: FloatArray

    def carries_on(self, start: int, end: int, side: int) -> bool:
        """Whether the hold ``[start, end)`` is an abrupt stop after which the move carries on.

        ``side`` frames each side show the move; a hold that drifts is no stop. A velocity
        command stops by jumping to its held value; a position target stops by its *rate*
        jumping to zero (the target freezes where it was) and carries on at the rate it had --
        so the tests run on the commands, or else on their steps.
        """
        before, after = min(side, start), min(side, len(self.actions_TA) - end)
        if min(before, after) < 2 or self._drifts(start, end):
            return False
        x, sigma = self.x_TD, self.sigma_D
        if _abrupt(x, sigma, start, start - before) and _abrupt(x, sigma, end - 1, end + after):
            steps, lo, hi = False, start, end
        else:  # the steps: step t is x[t + 1] - x[t], held over [start, end - 1)
            rate, rate_sigma = self.rate_TD, self.rate_sigma_D
            if end - start < 3 or not (
                _abrupt(rate, rate_sigma, start, start - before)
                and _abrupt(rate, rate_sigma, end - 2, end - 1 + after)
            ):
                return False  # the motion glides into the hold or out of it
            steps, lo, hi = True, start, end - 1
        series_TA = self.action_steps_TA if steps else self.actions_TA
        spread_A = self.step_spread_A if steps else self.spread_A
        level_A = series_TA[lo] / spread_A
        # the commands (or steps) at the stop's edges, a line through each side's frames: a
        # move still turning from its last re-plan is read where it stopped, not on average
        way_in = _edge(series_TA[lo - min(before, lo) : lo], at_end=True) / spread_A - level_A
        way_out = _edge(series_TA[hi : hi + after], at_end=False) / spread_A - level_A
        norms = float(np.linalg.norm(way_in) * np.linalg.norm(way_out))
        return norms > 0 and float(way_in @ way_out) >= MIN_CONTINUATION * norms

    def _drifts(self, start: int, end: int) -> bool:
        """Whether a line through the hold drifts by over :data:`HOLD_SE` standard errors."""
        n = end - start
        x_ND = self.x_TD[start:end]
        t = np.arange(n, dtype=np.float64) - 0.5 * (n - 1)
        change_D = (t @ (x_ND - x_ND.mean(axis=0))) / float(t @ t) * (n - 1)
        return bool((np.abs(change_D) > HOLD_SE * self.sigma_D * np.sqrt(12.0 / n)).any())


def _abrupt(x_TD: FloatArray, sigma_D: FloatArray, edge: int, far: int) -> bool:
    """Whether the step from a hold's ``edge`` frame towards ``far`` is a jump.

    At least :data:`ABRUPT` times the motion's own steps there, and beyond the noise.
    """
    out = 1 if far > edge else -1
    if not 0 <= edge + out < len(x_TD):
        return False
    step_D = np.abs(x_TD[edge + out] - x_TD[edge])
    lo, hi = sorted((edge + out, far))
    steps_ND = np.abs(np.diff(x_TD[max(lo, 0) : hi], axis=0))
    typical_D = np.median(steps_ND, axis=0) if len(steps_ND) else np.zeros_like(step_D)
    return bool((step_D / np.maximum(typical_D, HOLD_SE * sigma_D)).max() >= ABRUPT)


def _edge(v_TA: FloatArray, at_end: bool) -> FloatArray:
    """The line in time through ``v_TA``'s frames, at its last (or first) frame."""
    t = np.arange(len(v_TA), dtype=np.float64)
    t -= t.mean()
    mean_A = v_TA.mean(axis=0)
    slope_A = (t @ (v_TA - mean_A)) / float(t @ t)
    return np.asarray(mean_A + slope_A * (t[-1] if at_end else t[0]))


def _held_runs(x_TD: FloatArray, sigma_D: FloatArray, shortest: int) -> list[tuple[int, int]]:
    """Maximal ``[start, end)`` of at least ``shortest`` frames that hold one command.

    A frame joins a run while it is within :data:`HOLD_SE` standard errors of the run's mean so
    far (noise ``sigma_D`` per frame): one noisy frame does not break a stop. Only stretches
    whose consecutive frames differ by at most twice :data:`HOLD_SE` standard errors of a
    difference can hold; the scan runs inside those alone.
    """
    step_D = 2.0 * HOLD_SE * np.sqrt(2.0) * sigma_D
    steady = np.concatenate([[0], (np.abs(np.diff(x_TD, axis=0)) <= step_D).all(axis=1), [0]])
    edges = np.diff(steady.astype(np.int8))
    runs = []
    for lo, hi in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        start, last = int(lo), int(hi)  # frames lo..hi each step steadily from the one before
        while last - start + 1 >= shortest:
            end, total_D = start + 1, x_TD[start].copy()
            while end <= last:
                n = end - start
                se_D = HOLD_SE * sigma_D * np.sqrt(1.0 + 1.0 / n)  # a sample against n's mean
                if not (np.abs(x_TD[end] - total_D / n) <= se_D).all():
                    break
                total_D += x_TD[end]
                end += 1
            if end - start >= shortest:
                runs.append((start, end))
            start = end if end - start >= 2 else start + 1
    return runs


def without_hesitations(s: Signals) -> Signals:
    """``s`` with its hesitations taken out (as is where there are none)."""
    runs = hesitation_runs(s.actions_TA, s.gripper_action_dims, s.fps)
    return Excision.of(len(s.actions_TA), runs).signals(s) if runs else s


@dataclass(frozen=True)
class Excision:
    """An episode's frames with its hesitations taken out, and the way back."""

    #: The episode frames kept, in order: ``kept_K[k]`` is excised frame ``k``.
    kept_K: npt.NDArray[np.int64]
    #: Excised frames where a hesitation was taken out (the first frame after it).
    junctions: tuple[int, ...]

    @classmethod
    def of(cls, t_len: int, runs: list[tuple[int, int]]) -> Excision:
        """Frames ``[0, t_len)`` without ``runs``."""
        keep_T = np.ones(t_len, bool)
        for start, end in runs:
            keep_T[start:end] = False
        kept = np.flatnonzero(keep_T).astype(np.int64)
        return cls(kept, tuple(int(np.searchsorted(kept, end)) for _, end in runs))

    def signals(self, s: Signals) -> Signals:
        """The episode's per-frame signals at the kept frames."""

        def kept(v: npt.NDArray[np.floating] | None) -> npt.NDArray[np.floating] | None:
            return None if v is None or len(v) != len(s.actions_TA) else v[self.kept_K]

        return dataclasses.replace(
            s,
            actions_TA=s.actions_TA[self.kept_K],
            states_TS=kept(s.states_TS),
            gripper_TG=kept(s.gripper_TG),
            motion_T=kept(s.motion_T),
        )

    def back(self, points: list[int], keep: set[int] | None = None) -> list[int]:
        """Excised cuts as episode frames, but those at a hesitation's junction.

        Cuts in ``keep`` (gripper switches) stay wherever they are.
        """
        out = []
        for p in points:
            resuming = any(abs(p - j) <= JUNCTION_FRAMES for j in self.junctions)
            if resuming and p not in (keep or set()):
                continue  # the arm resuming after the stop
            out.append(int(self.kept_K[min(p, len(self.kept_K) - 1)]))
        return sorted(set(out))
