"""What the cut reads of a command: its values, or -- for position targets -- its rates.

A position target (the positions an arm reaches: ALOHA's joints, LeRobot's scripted sim
datasets, a teleoperator's leader arm) never jumps at a decision: the path bends there. On the
values a bend is a kink, which a polynomial per event (or a law on the state) absorbs into
either side at little cost; on the rates of change (first differences x fps) the same bend is
a step, the kind of change every within-event model sees best. Differencing also doubles the
noise's variance and takes away the slow part of the signal, so the rates pay only where they
stand clear of their noise (:func:`rates_clearance`, :data:`RATES_CLEARANCE`).

Measured on the three robots' position-target recordings (``benchmarks/segmentation_robots.py``,
the smooth model on the rates against the product on the values, boundary F1@3): noise-free and
smooth ones gain (Jaco 0.521 -> 0.739, Jaco's smooth operator 0.486 -> 0.715, MetaWorld 0.580
-> 0.635), noisy ones lose (ALOHA's joints at action noise 0.3 0.663 -> 0.576, Jaco at 0.3
0.558 -> 0.423), and the rates' clearance over their noise separates the two sides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import numpy as np

from wallwm.pipeline.segmentation.channels import LOCAL_FIT_S, local_fit_sigma, moving_dims
from wallwm.pipeline.segmentation.config import FloatArray, Segmentation, SegmentConfig, Signals
from wallwm.pipeline.segmentation.gaps import FrameGrid, frame_grid
from wallwm.pipeline.segmentation.glitches import glitch_count, without_glitches
from wallwm.pipeline.segmentation.held import (
    CommandSamples,
    command_samples,
    held_samples,
    repeated_rows,
    with_missed_samples,
    with_states_between_samples,
)
from wallwm.pipeline.segmentation.rotations import continuous_rotations, rotations_found

#: Position targets are cut on their rates where the rates' spread stands at least this many
#: times above their noise (:func:`rates_clearance`). Measured on thirteen position-target
#: recordings of three robots: 32-280 where the rates gain (MetaWorld noise-free and smooth,
#: Jaco noise-free and smooth; ALOHA's noise-free joints, 38, lose 0.02), 17.8 at MetaWorld's
#: action noise 0.3 (+0.02), 5-13 where they lose 0.03-0.14 (every other noisy or hesitating
#: recording); inside the gap 12.6-17.8 (the geometric middle of 13.6-17.5, the gap first
#: measured on each recording's first 24 episodes). Leave-one-robot-out over 5-100 picks 15.4
#: with ALOHA or Jaco held out, 20 with MetaWorld held out (BENCHMARKS.md).
RATES_CLEARANCE = 15.4
#: The polynomial the rates' noise is measured against: the smooth model's (a reach's speed is
#: a quartic in time, plus the arm's lag).
_NOISE_DEGREE = 6


def command_rates(s: Signals) -> Signals:
    """``s`` with every non-gripper command replaced by its rate of change (per second).

    The rate at frame ``t`` is ``(a[t] - a[t-1]) * fps`` -- the change *into* frame ``t``, so a
    bend at ``t`` is a step at ``t``. The first frame has no change into it: its rate is
    extrapolated from the next three (an episode may start in motion: a zero, or the next
    frame's rate, there would be a step no decision made). Gripper commands stay as they are
    (their switches are cut on their own).
    """
    actions = np.asarray(s.actions_TA, dtype=np.float64).copy()
    grip = set(s.gripper_action_dims)
    motion = [j for j in range(actions.shape[1]) if j not in grip]
    if not motion:
        return dataclasses.replace(s, actions_TA=actions)
    steps = np.diff(actions[:, motion], axis=0) * s.fps
    if len(steps) >= 3:  # the quadratic through the next three rates
        first = 3.0 * steps[0] - 3.0 * steps[1] + steps[2]
    else:
        first = steps[0] if len(steps) else np.zeros(len(motion))
    actions[:, motion] = np.concatenate([first[None], steps])
    return dataclasses.replace(s, actions_TA=actions)


#: What :func:`as_read` may read differently from the stored signals, each a kind of recorder
#: (:attr:`Reading.kinds`), in the words a run's summary uses for it, in the order it reads them.
READING_KINDS = {
    "rotations": "rotations read continuous (angles that wrapped, quaternions that flip sign)",
    "states_held": "states held between samples (read between them)",
    "frames_dropped": "frames dropped (the models in time read them on the time axis)",
    "commands_held": "commands held over several frames (the models in time cut on their samples)",
    "rows_repeated": "rows stored twice (the models in time read missed samples)",
    "glitches": "commands off their neighbours for one frame read between them (glitches)",
}


@dataclasses.dataclass(frozen=True)
class Reading:
    """An episode as the cut and the model choice read it (:func:`as_read`)."""

    signals: Signals
    #: A held command stream's samples, where the cut reads them (their frames map back).
    held: CommandSamples | None
    #: What was read differently from the stored signals (keys of :data:`READING_KINDS`).
    kinds: tuple[str, ...]
    #: The stored frames' places on the time axis, where frames were dropped (:mod:`.gaps`).
    grid: FrameGrid | None = None
    #: The signals :attr:`held` was taken from (on :attr:`grid` where there is one): where
    #: the gripper's switch frames are read.
    sampled_from: Signals | None = None

    def segmentation(self, cut: Segmentation, flips: list[int]) -> Segmentation:
        """A cut of :attr:`signals` as one of the stored frames, naming what was read.

        ``flips``: the gripper's switch frames in the signals the held samples were taken from.
        """
        if self.held is not None:  # cut on the command's own samples, mapped back
            cut = self.held.segmentation(cut, flips)
        if self.grid is not None:  # cut on the time axis, mapped back to the stored frames
            cut = self.grid.segmentation(cut)
        return dataclasses.replace(cut, reading=self.kinds) if self.kinds else cut

    def runs(self, runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Ranges ``[start, end)`` of :attr:`signals` as ranges of the stored frames."""
        runs = runs if self.held is None else self.held.runs(runs)
        return runs if self.grid is None else self.grid.runs(runs)


def as_read(s: Signals, cfg: SegmentConfig) -> Reading:
    """``s`` as the cut and the model choice read it, its held samples and what was read.

    Its rotations continuous (:mod:`.rotations`); a held state stream read between its
    samples; wherever a model in time reads it, or the choice between models, frames dropped
    read on the time axis (:mod:`.gaps`), a held command stream at its own samples and a row
    stored twice as a missed sample (:mod:`.held`), and then a command off its neighbours for
    one frame between them (:mod:`.glitches`; last: a row stored twice is such a frame too,
    and read as a missed sample in every command at once) -- a law on the state reads the
    frames as stored (see :func:`reads_in_time`). Each reading returns the episode itself
    where it finds nothing, which is how ``kinds`` knows. The timestamps are read here: the
    signals returned have none.
    """
    kinds: list[str] = []
    stamps, s = s.timestamps_s, dataclasses.replace(s, timestamps_s=None)
    if cfg.continuous_rotations:
        s = _noted(continuous_rotations, s, "rotations", kinds)
    if cfg.read_held_samples:  # a state topic slower than the frames
        s = _noted(with_states_between_samples, s, "states_held", kinds)
    if not reads_in_time(cfg):
        return Reading(s, None, tuple(kinds))
    grid, held, sampled_from = None, None, None
    if cfg.read_held_samples:
        grid = frame_grid(stamps, len(s.actions_TA))
        if grid is not None:
            s = grid.signals(s)
            kinds.append("frames_dropped")
        held = command_samples(s)
        if held is not None:
            sampled_from, s = s, held.signals(s)
            kinds.append("commands_held")
        else:  # a sample the recorder missed and stored again: a stair to a model in time
            missed = lambda x: with_missed_samples(x, repeated_rows(x))  # noqa: E731
            s = _noted(missed, s, "rows_repeated", kinds)
    if cfg.mend_glitches:  # a one-frame glitch: two changes to a model in time
        s = _noted(without_glitches, s, "glitches", kinds)
    return Reading(s, held, tuple(kinds), grid, sampled_from)


def reading_summary(counts: dict[str, int], episodes: int | None = None) -> list[str]:
    """What a run's cut read differently from the stored signals, one line per kind.

    ``counts``: episodes per kind (:attr:`Reading.kinds`), of ``episodes`` segmented where
    given.
    """
    of = "" if episodes is None else f" of {episodes}"
    return [
        f"{counts[kind]}{of} episode{'s' if counts[kind] != 1 else ''}: {text}"
        for kind, text in READING_KINDS.items()
        if counts.get(kind)
    ]


def _noted(read: Callable[[Signals], Signals], s: Signals, kind: str, kinds: list[str]) -> Signals:
    """``read(s)``, adding ``kind`` to ``kinds`` where it changed the episode."""
    out = read(s)
    if out is not s:
        kinds.append(kind)
    return out


def reading_notes(s: Signals) -> list[str]:
    """What the cut reads differently from the stored signals (:func:`as_read`), in words.

    One line per finding: a wrapped angle, a quaternion whose sign flips, frames dropped, a
    held command or state stream, rows stored twice, glitches -- what ``wallwm inspect``
    shows of a source's sample. The episode is read once, as a model in time reads it with
    its glitches left in to count them; only what the words need beyond what the reading
    keeps (which dims, how long a state is held, how many rows) is looked up again.
    """
    notes = _rotation_notes(s)
    read = as_read(s, SegmentConfig(mend_glitches=False))
    if read.grid is not None:
        notes.append(
            f"{read.grid.dropped} frames dropped (gaps in the timestamps): the models in time "
            "read the time axis"
        )
    if "states_held" in read.kinds and s.states_TS is not None:
        states = held_samples(np.asarray(s.states_TS))
        if states is not None:
            notes.append(f"states held {states.hold:.3g} frames: read between their samples")
    commands = read.held
    if commands is not None and commands.columns:
        notes.append(
            f"commands on streams of their own rates, the slowest held {commands.hold:.3g} "
            f"frames ({s.fps / commands.hold:.3g} Hz of {s.fps:g}): the models in time cut on "
            f"its samples, {len(commands.columns)} commands read between their own"
        )
    elif commands is not None:
        notes.append(
            f"commands held {commands.hold:.3g} frames ({s.fps / commands.hold:.3g} Hz of "
            f"{s.fps:g}): the models in time cut on their samples"
        )
    elif "rows_repeated" in read.kinds:
        x = with_states_between_samples(continuous_rotations(s))
        x = x if read.grid is None else read.grid.signals(x)
        repeated = len(repeated_rows(x))
        notes.append(f"{repeated} rows stored twice: the models in time read missed samples")
    glitches = glitch_count(read.signals)
    if glitches:
        notes.append(
            f"{glitches} command value(s) off their neighbours for one frame: the models in "
            "time read them between (glitches)"
        )
    return notes


def _rotation_notes(s: Signals) -> list[str]:
    """:func:`reading_notes`' lines for angles that wrapped and quaternions whose sign flips."""
    notes: list[str] = []
    arrays = [("action", np.asarray(s.actions_TA, dtype=np.float64), set(s.gripper_action_dims))]
    if s.states_TS is not None:
        arrays.append(("state", np.asarray(s.states_TS, dtype=np.float64), set()))
    for what, x, skip in arrays:
        found = rotations_found(x, skip)
        for first, flipped in found.flips.items():
            notes.append(
                f"{what} dims {first}-{first + 3}: a quaternion whose sign flips "
                f"{int(flipped.sum())} times (read continuous)"
            )
        for j, turn in found.turns.items():
            unit = "degrees" if turn == 360.0 else "radians"
            notes.append(f"{what} dim {j}: an angle that wrapped, in {unit} (read unwrapped)")
    return notes


def reads_held_samples(cfg: SegmentConfig) -> bool:
    """Whether a held command stream is read at its samples under ``cfg`` (:mod:`.held`).

    Not for the state-feedback law on the commands' values: the state it reads moves every
    frame, and within a hold the law's misfit is only what the state moves in those frames,
    so the frames keep their evidence (on samples the suite's closed loops lost 0.01-0.19
    F1@3 at holds of 2-5 frames; a model in time on samples gained up to 0.64). A row stored
    twice is no misfit to the law either (the same command at the same state); filled in,
    the Panda and MetaWorld lost 0.005-0.02.
    """
    return cfg.read_held_samples and reads_in_time(cfg)


def reads_in_time(cfg: SegmentConfig) -> bool:
    """Whether a model in time reads the commands under ``cfg``, or the choice between models.

    Not the state-feedback law on the commands' values, which relates each command to the
    state of its own row.
    """
    return cfg.action_model != "state_feedback" or cfg.action_form == "rates"


def cut_signals(s: Signals, cfg: SegmentConfig) -> Signals:
    """What the cut reads of ``s`` under the resolved ``cfg`` (its ``action_form``)."""
    return command_rates(s) if cfg.action_form == "rates" else s


def episode_clearance(s: Signals) -> float | None:
    """The median over moving non-gripper commands of their rates' spread over their noise.

    The noise is the rates' own local misfit (:func:`~.channels.local_fit_sigma` of the smooth
    model's polynomial on :data:`~.channels.LOCAL_FIT_S` windows). None where no command moves
    or the episode is too short to measure.
    """
    rates = np.asarray(command_rates(s).actions_TA, dtype=np.float64)
    dims = moving_dims(np.asarray(s.actions_TA, dtype=np.float64), s.gripper_action_dims)
    window = max(5, round(LOCAL_FIT_S * s.fps))
    if not dims or len(rates) < 8:
        return None
    x: FloatArray = rates[:, dims]
    sigma = local_fit_sigma(x, None, window, _NOISE_DEGREE)
    return float(np.median(x.std(axis=0) / sigma))


def rates_clearance(signals: Iterable[Signals]) -> float | None:
    """The median of :func:`episode_clearance` over the episodes that have one."""
    values = [c for c in map(episode_clearance, signals) if c is not None]
    return float(np.median(values)) if values else None
