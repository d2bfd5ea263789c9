"""Commands held over several frames: the cut reads the command's own samples.

A command stream is often slower than the frames it is stored with: a teleoperator's leader
arm polled at 10 Hz beside 30 Hz cameras, a policy or planner that updates every few steps, a
ROS bag whose action topic is slower than its camera (each frame takes the latest command). Such
a command is held -- repeated exactly -- for a few frames, then steps to its next sample: on the
frames a continuous command is a staircase, and every within-event model sees each stair as a
change. Measured on the suite's noise-free recordings with each command held for 2-5 frames
(``benchmarks/segmentation_recorders.py``): ALOHA's waypoint plans 1.000 -> 0.21-0.31 F1@3 (a
cut at almost every stair), Jaco's controller 0.854 -> 0.42 at 3 frames, the Panda's 0.865 ->
0.64 at 5.

So a held stream is cut on its samples by the models in time, and the model choice reads the
samples too: one frame per sample (the frame where it took its value), the episode read at the
command's own rate, and the cuts and traces mapped back to the frames. A law on the state
reads the frames (:func:`~.forms.reads_held_samples`): its state moves every frame, and read on
samples the suite's closed loops lost 0.01-0.19. Measured, held 2 / 3 / 5 frames: ALOHA's
plans 1.000 / 1.000 / 0.638 (a decision is known only to within the hold: at 5 frames it may
show 4 frames late, past F1@3's 3), its smooth operator 0.118 / 0.052 -> 0.763 / 0.606 at 2-3
frames, Jaco's controller 0.422 -> 0.804 at 3 (the choice made on the samples keeps the law),
the Panda's 0.766 -> 0.808 at 3; a person's reaches read at a third of Jaco's rate lose
(0.377 -> 0.260: a polynomial per event on 8-13 samples), as does any recording that slow. A
stream counts as held where its motion commands change together, at a regular
stride: the median run of frames with no motion command changing is 2-:data:`HOLD_MAX_FRAMES`
frames and at least :data:`HOLD_REGULAR_SHARE` of the runs are within a frame of it (a pause
is one long run; a recorder's timing jitter moves a sample by a frame). A command that is
piecewise constant by design -- each event one level -- holds for events of irregular length and
is no held stream (the suite's recordings, and the floor's piecewise-constant signals: none is
read as held); one whose every event lasts the same 2-12 frames would be, and would be cut at
one sample per event -- state ``read_held_samples=False`` for such a dataset.

Commands may arrive on streams of their own rates or phases -- a bimanual robot whose arms
publish on a topic each, both slower than the camera: together they change at the union of
both strides, which is no regular stride, and each arm's staircase stayed (ALOHA's plans with
its arms held 3 frames a frame apart 1.000 -> 0.300 F1@3, held 2 and 3 frames 0.389, one held
3 beside one sampled at every frame 0.402). So each command is tested alone, the held ones are
grouped into streams by the frames they change at (:func:`stream_groups`: a stream's commands
take each sample together; two streams change a frame or two apart), a command that changes
too seldom to be tested alone joins the stream its changes fall on, and the cut reads the
slowest stream's samples (:func:`stream_samples`): 0.973 / 0.993 / 1.000
(``benchmarks/segmentation_recorders.py --only streams``). One stream whose arms rest in turn
stays one stream.

The same recorders, when late for one sample of a stream that is not held, store the last row
again: every command and state exactly as in the frame before, for a frame or two
(:func:`repeated_rows`). Such a row is a stair of one frame to a model in time; it is read as a
missed sample instead, each signal on the line between the frames either side
(:func:`with_missed_samples`). Measured with 3 % and 10 % of the rows stored twice
(``benchmarks/segmentation_recorders.py``): ALOHA's waypoint plans 1.000 -> 0.856 / 0.756 F1@3,
read as missed samples 0.993 / 0.968; its smooth operator 0.789 -> 0.593 / 0.442, read as
missed samples 0.789 / 0.782. A law on the state reads such rows as stored (the same command
at the same state is no misfit to it).

A state stream slower than the frames (a joint-state topic slower than the camera) is read
between its samples by every model (:func:`with_states_between_samples`): held 2-5 frames, the
noise-free closed loops' law lost to the line in time (Jaco 0.854 -> 0.332, MetaWorld 0.927 ->
0.690); read between the samples 0.844-0.849 and 0.929-0.940.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from wallwm.pipeline.segmentation.channels import command_levels
from wallwm.pipeline.segmentation.config import Boundary, FloatArray, Segmentation, Signals

IntArray = npt.NDArray[np.int64]

#: The longest hold (frames per command sample) read as a held stream: a 30 Hz camera beside
#: a command at 2.5 Hz. Longer constant runs are a command's own levels.
HOLD_MAX_FRAMES = 12
#: The share of runs within a frame of the median run a held stream must have (a pause, a
#: stretch where no command moves, is a run of its own).
HOLD_REGULAR_SHARE = 2 / 3
#: Fewest runs a stream needs before its runs say anything.
HOLD_MIN_RUNS = 12


@dataclasses.dataclass(frozen=True)
class CommandSamples:
    """The frames a held command stream took its samples at (one per sample, ascending)."""

    frames: IntArray
    #: The episode's frames.
    t_len: int
    #: Frames per sample (mean over the regular runs).
    hold: float
    #: Commands on streams of their own (:func:`stream_samples`): each such column's own
    #: sample frames, read on the line between them at :attr:`frames` ...
    columns: dict[int, IntArray] = dataclasses.field(default_factory=dict)
    #: ... or, for these columns (a stream at the same rate, another phase), at the nearest.
    nearest: frozenset[int] = frozenset()

    def signals(self, s: Signals) -> Signals:
        """``s`` read at the samples' frames, at the command's own rate."""

        def at(x: npt.NDArray[np.floating] | None) -> npt.NDArray[np.floating] | None:
            return None if x is None else np.asarray(x)[self.frames]

        actions = np.asarray(s.actions_TA)[self.frames]
        if self.columns:
            actions = actions.astype(np.float64)
            stored = np.asarray(s.actions_TA, dtype=np.float64)
            for j, own in self.columns.items():
                if j in self.nearest:
                    actions[:, j] = stored[nearest_of(own, self.frames), j]
                else:
                    actions[:, j] = np.interp(self.frames, own, stored[own, j])
        return dataclasses.replace(
            s,
            actions_TA=actions,
            fps=s.fps / self.hold,
            states_TS=at(s.states_TS),
            gripper_TG=at(s.gripper_TG),
            motion_T=at(s.motion_T),
        )

    def frame(self, sample: int) -> int:
        """The frame a sample index (or the end, ``len(frames)``) falls on."""
        return self.t_len if sample >= len(self.frames) else int(self.frames[sample])

    def trace(self, trace_S: FloatArray) -> FloatArray:
        """A per-sample trace spread over the frames (each frame takes its sample's value)."""
        sample_T = np.searchsorted(self.frames, np.arange(self.t_len), side="right") - 1
        return np.asarray(trace_S, dtype=np.float64)[np.maximum(sample_T, 0)]

    def segmentation(self, cut: Segmentation, flips: list[int] | None = None) -> Segmentation:
        """A segmentation of the samples as one of the frames.

        ``flips``: the frames a gripper command switched at, read on the frames. A gripper
        on a stream of its own switches between two of the commands' samples; its boundary
        goes back to the switch (else it would come up to a hold late).
        """
        moved = {b.frame: self._switch(b.frame, flips or []) for b in cut.boundaries
                 if "gripper" in b.cues}  # fmt: skip
        starts = [moved.get(i) or self.frame(i) for i in cut.starts]
        bounds = [
            Boundary(moved.get(b.frame) or self.frame(b.frame), b.confidence, b.cues)
            for b in cut.boundaries
        ]
        cues = {name: self.trace(trace) for name, trace in cut.cues_CT.items()}
        return Segmentation(
            starts, [*starts[1:], self.t_len], bounds, self.trace(cut.score_T), cues
        )

    def _switch(self, sample: int, flips: list[int]) -> int | None:
        """The gripper switch in the frames a sample spans back to the one before, if any."""
        after, upto = self.frame(sample - 1) if sample > 0 else -1, self.frame(sample)
        inside = [f for f in flips if after < f <= upto]
        return inside[-1] if inside else None

    def runs(self, runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Frame ranges ``[start, end)`` of sample ranges."""
        return [(self.frame(a), self.frame(b)) for a, b in runs]


def nearest_of(frames: IntArray, at: IntArray) -> IntArray:
    """The frame of ``frames`` (ascending) nearest each of ``at`` (the earlier on a tie)."""
    if len(frames) == 1:
        return np.repeat(frames, len(at))
    after = np.clip(np.searchsorted(frames, at), 1, len(frames) - 1)
    earlier = at - frames[after - 1] <= frames[after] - at
    return np.where(earlier, frames[after - 1], frames[after])


def command_samples(s: Signals) -> CommandSamples | None:
    """Where a held command stream took its samples (see the module).

    None where no stream is held. Commands on streams of their own rates or phases (an arm
    per topic) are read at the slowest held stream's samples (:func:`stream_samples`).
    """
    actions = np.asarray(s.actions_TA)
    grip = set(s.gripper_action_dims)
    motion = [j for j in range(actions.shape[1] if actions.ndim == 2 else 0) if j not in grip]
    if not motion or len(actions) < 2 * HOLD_MIN_RUNS:
        return None
    x = actions[:, motion]
    streams, free = held_streams(x)
    if not streams:  # no command held alone (too few changes each): all of them, together
        return held_samples(x)
    if len(streams) == 1 and not free:  # one stream: every moving command takes its samples
        return streams[0][1]
    return stream_samples(streams, free, motion, len(x))


#: A column held over frames changes on at most about half of them (a hold of 2, a frame of
#: jitter now and then); one that changes on more is sampled at every frame.
_HELD_CHANGE_SHARE = 2 / 3


def held_streams(
    x_TD: npt.NDArray[np.floating],
) -> tuple[list[tuple[list[int], CommandSamples]], list[int]]:
    """The held streams among the columns of ``x_TD`` and the moving columns in none.

    Each column is tested alone (:func:`held_samples`); the held ones are grouped into
    streams (:func:`stream_groups`) and each stream's samples are those of its columns
    together (a pause is a pause of the whole stream). A group whose columns do not change
    together on a regular stride is no stream: its columns are free.
    """
    changed_TD = x_TD[1:] != x_TD[:-1]
    counts_D = changed_TD.sum(axis=0)
    share_D = counts_D / max(len(changed_TD), 1)
    # A held command seldom changes at two frames in a row (a sample a frame late, then its
    # successor on time); one sampled at every frame does wherever it moves.
    twice_D = (changed_TD[1:] & changed_TD[:-1]).sum(axis=0) / np.maximum(counts_D, 1)
    own: dict[int, CommandSamples] = {}
    tested = (share_D > 0) & (share_D <= _HELD_CHANGE_SHARE) & (twice_D <= 1 - HOLD_REGULAR_SHARE)
    for k in np.flatnonzero(tested).tolist():
        found = held_samples(x_TD[:, [k]])
        if found is not None:
            own[k] = found
    if not own:
        return [], []
    held = list(own)
    groups = [
        [held[i] for i in group]
        for group in stream_groups(changed_TD[:, held], [own[k].hold for k in held])
    ]
    # A command that changes too seldom to be tested alone (a level held for a phase) belongs
    # to the stream whose samples its changes fall on.
    for k in np.flatnonzero(share_D > 0).tolist():
        if k in own:
            continue
        changes = np.flatnonzero(changed_TD[:, k])
        for group in groups:
            theirs = np.flatnonzero(changed_TD[:, group].any(axis=1))
            if same_stream(changes, theirs, min(own[j].hold for j in group if j in own)):
                group.append(k)
                break
    streams: list[tuple[list[int], CommandSamples]] = []
    for columns in groups:
        samples = held_samples(x_TD[:, sorted(columns)])
        if samples is not None:
            streams.append((sorted(columns), samples))
    grouped = {k for columns, _ in streams for k in columns}
    free = [k for k in np.flatnonzero(share_D > 0).tolist() if k not in grouped]
    return streams, free


def stream_samples(
    streams: list[tuple[list[int], CommandSamples]], free: list[int], motion: list[int], t_len: int
) -> CommandSamples:
    """The samples a cut reads of commands on streams of their own rates or phases.

    Two arms on two topics (a ROS bag with an action topic per arm), each held over frames at
    its own stride or phase, change together on no regular stride -- the union of both -- and
    each arm's staircase would stay. The cut reads the slowest held stream's samples; a stream
    at the same rate at its sample nearest each (a constant shift of under half a sample, which
    no line misfits: on the line between its samples a decision's corner was cut for a sample,
    and that sample was cut out -- ALOHA's plans with the arms a frame apart 0.943 that way,
    0.973 this), every other command on the line between its own stream's samples, one not
    held at its value there. ``streams`` and ``free`` index ``motion`` (:func:`held_streams`).
    """
    clock = max((samples for _, samples in streams), key=lambda c: (c.hold, -len(c.frames)))
    every = np.arange(t_len, dtype=np.int64)
    columns = {motion[k]: every for k in free}
    nearest: set[int] = set()
    for group, samples in streams:
        if samples is not clock:
            columns.update({motion[k]: samples.frames for k in group})
            if abs(samples.hold - clock.hold) < 0.5:  # the same rate, another phase
                nearest.update(motion[k] for k in group)
    return dataclasses.replace(clock, columns=columns, nearest=frozenset(nearest))


#: Of a command's changes that another stream's nearest change says something of -- at the same
#: frame, or closer than a sample -- the share at the same frame, for the command to be of that
#: stream: a stream's commands take each sample together (a command that did not change at a
#: sample, saturated or still, says nothing); two streams at other phases change a frame or
#: two apart, at holds of 2 and 3 apart at half their changes.
SAME_STREAM_SHARE = 0.9


def stream_groups(changed_TD: npt.NDArray[np.bool_], holds: list[float]) -> list[list[int]]:
    """The held columns grouped into the streams they arrive on, busiest first.

    ``changed_TD``: where each column changed (T-1, D); ``holds``: each column's frames per
    sample. A column joins the first group whose changes nearest its own are at the same
    frames (:data:`SAME_STREAM_SHARE`), or say nothing (a sample or more apart: one arm
    resting while the other moves says nothing of their streams).
    """
    counts_D = changed_TD.sum(axis=0)
    groups: list[tuple[list[int], npt.NDArray[np.bool_], float]] = []
    for k in np.argsort(-counts_D, kind="stable").tolist():
        changes = np.flatnonzero(changed_TD[:, k])
        for members, seen, hold in groups:
            if same_stream(changes, np.flatnonzero(seen), min(hold, holds[k])):
                members.append(k)
                seen[changes] = True
                break
        else:
            groups.append(([k], changed_TD[:, k].copy(), holds[k]))
    return [sorted(members) for members, _, _ in groups]


def same_stream(changes: IntArray, theirs: IntArray, hold: float) -> bool:
    """Whether a command changing at ``changes`` is of the stream changing at ``theirs``.

    Each change's nearest of theirs tells where it is closer than a sample of ``hold``
    frames; :data:`SAME_STREAM_SHARE` of those that tell must be at the same frame.
    """
    if not len(theirs) or not len(changes):
        return True
    at = np.searchsorted(theirs, changes)
    after = theirs[np.minimum(at, len(theirs) - 1)]
    before = theirs[np.maximum(at - 1, 0)]
    nearest = np.minimum(np.abs(after - changes), np.abs(changes - before))
    tells = nearest < hold - 0.5
    return not tells.any() or float((nearest[tells] == 0).mean()) >= SAME_STREAM_SHARE


def held_samples(x_TD: npt.NDArray[np.floating]) -> CommandSamples | None:
    """Where a stream of columns that change together took its samples, if it is held."""
    t_len = len(x_TD)
    if t_len < 2 * HOLD_MIN_RUNS or x_TD.ndim != 2 or not x_TD.shape[1]:
        return None
    changed = np.flatnonzero(np.any(x_TD[1:] != x_TD[:-1], axis=1)) + 1
    run_starts = np.concatenate([[0], changed]).astype(np.int64)
    runs = np.diff(np.concatenate([run_starts, [t_len]]))
    if len(runs) < HOLD_MIN_RUNS:
        return None
    median = float(np.median(runs))
    regular = np.abs(runs - median) <= 1
    if not 2 <= median <= HOLD_MAX_FRAMES or regular.mean() < HOLD_REGULAR_SHARE:
        return None
    hold = float(runs[regular].mean())
    frames: list[int] = []
    for start, length in zip(run_starts.tolist(), runs.tolist(), strict=True):
        count = max(1, round(length / hold))  # a pause keeps its duration in samples
        frames.extend(start + (j * length) // count for j in range(count))
    return CommandSamples(np.asarray(frames, dtype=np.int64), t_len, hold)


def with_states_between_samples(s: Signals) -> Signals:
    """``s`` with a held state stream read between its samples (``s`` where it is not held).

    Each state is read on the line between the samples either side. A state topic slower
    than the frames holds the arm's last measured pose while the commands move on: a law
    relating command to state sees the state stand still and the command change (Jaco's
    controller with its joint states held 2-5 frames: the choice fell to the line in time,
    F1@3 0.854 -> 0.33). A reached pose moves smoothly: between two samples the line is its
    best guess.
    """
    if s.states_TS is None:
        return s
    states = np.asarray(s.states_TS, dtype=np.float64)
    samples = held_samples(states)
    if samples is None:
        return s
    t, f = np.arange(len(states)), samples.frames
    between = np.column_stack([np.interp(t, f, states[f, j]) for j in range(states.shape[1])])
    return dataclasses.replace(s, states_TS=between)


#: The longest run of repeated rows read as missed samples rather than as a stop.
REPEAT_MAX_FRAMES = 2


def repeated_rows(s: Signals) -> IntArray:
    """Frames a recorder missed: each repeats the frame before in every signal.

    A recorder that is late for a sample often stores the last one again: every command and
    state exactly as in the frame before, while the commands move on either side. A stop
    repeats its rows too, but for longer (runs of more than :data:`REPEAT_MAX_FRAMES`), and a
    command held still (no motion into or out of the run) has no sample to miss.
    """
    actions = np.asarray(s.actions_TA)
    grip = set(s.gripper_action_dims)
    motion = [j for j in range(actions.shape[1] if actions.ndim == 2 else 0) if j not in grip]
    if len(actions) < 3 or not motion:
        return np.zeros(0, dtype=np.int64)
    # every command, a gripper's too: all of the row repeats, and any may move around it
    commands_same = np.all(actions[1:] == actions[:-1], axis=1)
    same = commands_same.copy()
    if s.states_TS is not None:
        states = np.asarray(s.states_TS)
        same &= np.all(states[1:] == states[:-1], axis=1)
    repeated: list[int] = []
    t = 1
    while t < len(actions):
        if not same[t - 1]:
            t += 1
            continue
        end = t
        while end < len(actions) and same[end - 1]:
            end += 1
        # the commands move into the run and out of it: a held command is no missed sample
        moving = t >= 2 and not commands_same[t - 2] and end < len(actions)
        if end - t <= REPEAT_MAX_FRAMES and moving and not commands_same[end - 1]:
            repeated.extend(range(t, end))
        t = end
    return np.asarray(repeated, dtype=np.int64)


def with_missed_samples(s: Signals, frames: IntArray) -> Signals:
    """``s`` with the rows at ``frames`` (:func:`repeated_rows`) taken as missed.

    Each command and state there is read on the line between the frames either side.
    """
    if not len(frames):
        return s
    t = np.arange(len(s.actions_TA))
    kept = np.setdiff1d(t, frames)

    def filled(x: npt.NDArray[np.floating], columns: list[int]) -> FloatArray:
        out = np.asarray(x, dtype=np.float64).copy()
        for j in columns:
            out[frames, j] = np.interp(frames, kept, out[kept, j])
        return out

    actions = np.asarray(s.actions_TA)
    # a two-level command (open/close) keeps its last level: halfway is no level of it
    graded = [j for j in range(actions.shape[1]) if command_levels(actions[:, j]) is None]
    states = None
    if s.states_TS is not None:
        states = filled(s.states_TS, list(range(np.asarray(s.states_TS).shape[1])))
    return dataclasses.replace(s, actions_TA=filled(actions, graded), states_TS=states)
