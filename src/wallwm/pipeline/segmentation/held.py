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

So a held stream is cut on its samples: one frame per sample (the frame where it took its
value), the episode read at the command's own rate, and the cuts and traces mapped back to the
frames. A stream counts as held where its motion commands change together, at a regular
stride: the median run of frames with no motion command changing is 2-:data:`HOLD_MAX_FRAMES`
frames and at least :data:`HOLD_REGULAR_SHARE` of the runs are within a frame of it (a pause
is one long run; a recorder's timing jitter moves a sample by a frame). A command that is
piecewise constant by design -- each event one level -- holds for events of irregular length and
is no held stream (the suite's recordings, and the floor's piecewise-constant signals: none is
read as held); one whose every event lasts the same 2-12 frames would be, and would be cut at
one sample per event -- state ``read_held_samples=False`` for such a dataset.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

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

    def signals(self, s: Signals) -> Signals:
        """``s`` read at the samples' frames, at the command's own rate."""

        def at(x: npt.NDArray[np.floating] | None) -> npt.NDArray[np.floating] | None:
            return None if x is None else np.asarray(x)[self.frames]

        return dataclasses.replace(
            s,
            actions_TA=np.asarray(s.actions_TA)[self.frames],
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

    def segmentation(self, cut: Segmentation) -> Segmentation:
        """A segmentation of the samples as one of the frames."""
        starts = [self.frame(i) for i in cut.starts]
        bounds = [Boundary(self.frame(b.frame), b.confidence, b.cues) for b in cut.boundaries]
        cues = {name: self.trace(trace) for name, trace in cut.cues_CT.items()}
        return Segmentation(
            starts, [*starts[1:], self.t_len], bounds, self.trace(cut.score_T), cues
        )

    def runs(self, runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Frame ranges ``[start, end)`` of sample ranges."""
        return [(self.frame(a), self.frame(b)) for a, b in runs]


def command_samples(s: Signals) -> CommandSamples | None:
    """Where a held command stream took its samples (see the module).

    None where the stream is not held.
    """
    actions = np.asarray(s.actions_TA)
    t_len = len(actions)
    grip = set(s.gripper_action_dims)
    motion = [j for j in range(actions.shape[1] if actions.ndim == 2 else 0) if j not in grip]
    if t_len < 2 * HOLD_MIN_RUNS or not motion:
        return None
    x = actions[:, motion]
    changed = np.flatnonzero(np.any(x[1:] != x[:-1], axis=1)) + 1
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
