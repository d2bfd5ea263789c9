"""Frames a recorder dropped: the models in time read the episode on its time axis.

A recorder that falls behind skips a frame: the row is missing and its timestamp leaves a gap
of two periods or more. Every model in time reads frame numbers as time, so the motion of the
missing frames shows as a step where nothing was decided -- a line in time cut at every drop.
Measured on the suite's noise-free recordings with 3 % / 10 % of their frames dropped
(``benchmarks/segmentation_recorders.py``): ALOHA's waypoint plans 1.000 -> 0.713 / 0.469 F1@3,
its smooth operator 0.789 -> 0.558 / 0.400, ALOHA's joints 0.670 -> 0.488 / 0.527; read on the
time axis 0.997 / 0.977, 0.789 / 0.797 and 0.650 / 0.667. A law on the state reads the rows as
stored (Jaco, the Panda, MetaWorld: within 0.03 of their recordings, the same on and off) -- it
relates a command to the state of the same row, whenever that was.

Where the timestamps show such gaps (:func:`frame_grid`), the models in time and the model
choice read the episode on a regular grid at the recorder's own period (the mean of its
ordinary steps, those within half a period of the median): each stored frame at its place, a
dropped frame's place filled on the line between the frames either side (a two-level command
keeps its last level), and the cuts, traces and hesitations mapped back to the stored frames --
a cut inside a gap to the first frame after it. A gap counts from :data:`GAP_PERIODS` periods
(``wallwm quality``'s ``frame_drops`` flag); timestamps that would more than double the
episode (a clock jump, not a recorder's gaps) are not read.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from wallwm.pipeline.segmentation.channels import command_levels
from wallwm.pipeline.segmentation.config import Boundary, FloatArray, Segmentation, Signals

IntArray = npt.NDArray[np.int64]

#: A step between timestamps over this many periods leaves dropped frames (the ``frame_drops``
#: quality flag's threshold: a recorder's jitter moves a frame by under half a period).
GAP_PERIODS = 1.5
#: The most places a grid may have per stored frame: beyond, the timestamps are not a
#: recorder's gaps (a clock that jumped) and are not read.
MAX_GRID_PER_FRAME = 2.0


@dataclasses.dataclass(frozen=True)
class FrameGrid:
    """Each stored frame's place on a regular time grid whose other places were dropped."""

    #: The grid place of every stored frame (ascending, the first at 0).
    places: IntArray

    @property
    def t_len(self) -> int:
        """Stored frames."""
        return len(self.places)

    @property
    def dropped(self) -> int:
        """Places no stored frame fills."""
        return int(self.places[-1]) + 1 - self.t_len

    def signals(self, s: Signals) -> Signals:
        """``s`` on the grid: each dropped place on the line between the frames either side."""
        actions = np.asarray(s.actions_TA, dtype=np.float64)
        # a two-level command (open/close) keeps its last level: halfway is no level of it
        levels = {j for j in range(actions.shape[1]) if command_levels(actions[:, j]) is not None}

        def optional(x: npt.NDArray[np.floating] | None) -> FloatArray | None:
            return None if x is None else self._filled(x, set())

        return dataclasses.replace(
            s,
            actions_TA=self._filled(actions, levels),
            states_TS=optional(s.states_TS),
            gripper_TG=optional(s.gripper_TG),
            motion_T=optional(s.motion_T),
            timestamps_s=None,
        )

    def _filled(self, x: npt.NDArray[np.floating], hold: set[int]) -> FloatArray:
        """``x`` (T,) or (T, D) at every grid place.

        The columns in ``hold`` keep their last value over a gap, the others take the line.
        """
        grid = np.arange(int(self.places[-1]) + 1)
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            return np.asarray(np.interp(grid, self.places, x), dtype=np.float64)
        last = np.searchsorted(self.places, grid, side="right") - 1  # the frame before a place
        out = np.empty((len(grid), x.shape[1]))
        for j in range(x.shape[1]):
            out[:, j] = x[last, j] if j in hold else np.interp(grid, self.places, x[:, j])
        return out

    def frame(self, place: int) -> int:
        """The first stored frame at or after a grid place (``t_len`` past the last)."""
        return int(np.searchsorted(self.places, place, side="left"))

    def trace(self, trace_G: FloatArray) -> FloatArray:
        """A per-place trace read at the stored frames."""
        return np.asarray(trace_G, dtype=np.float64)[self.places]

    def segmentation(self, cut: Segmentation) -> Segmentation:
        """A segmentation of the grid as one of the stored frames.

        An event of which a third or more is filled places is the fill's, not the recorder's:
        a place filled on the line across a decision fits neither side, and the cut takes it
        out as a sliver (with a frame or two beside it). Of its two cuts the less confident
        goes (a gripper's switch stays).
        Two cuts inside one gap both map to the frame after it: the first is kept.
        """
        bounds: dict[int, Boundary] = {}
        for b in self._without_fill_slivers(cut.boundaries, len(cut.score_T)):
            frame = self.frame(b.frame)
            if 0 < frame < self.t_len:
                bounds.setdefault(frame, Boundary(frame, b.confidence, b.cues))
        starts = sorted({0, *bounds} if cut.starts else set())
        cues = {name: self.trace(trace) for name, trace in cut.cues_CT.items()}
        return dataclasses.replace(
            cut,
            starts=starts,
            ends=[*starts[1:], self.t_len] if starts else [],
            boundaries=[bounds[f] for f in starts if f in bounds],
            score_T=self.trace(cut.score_T),
            cues_CT=cues,
        )

    def _without_fill_slivers(self, bounds: list[Boundary], g_len: int) -> list[Boundary]:
        """``bounds`` (on the grid) without one cut of each event a third or more filled.

        The less confident of its cuts goes (a gripper's switch stays), and the merged event
        is judged again.
        """
        stored = np.zeros(g_len + 1, dtype=np.int64)
        stored[1:] = np.cumsum(np.isin(np.arange(g_len), self.places))
        kept = sorted(bounds, key=lambda b: b.frame)
        i = 0
        while i <= len(kept):
            a = kept[i - 1] if i > 0 else None
            b = kept[i] if i < len(kept) else None
            lo, hi = (a.frame if a else 0), (b.frame if b else g_len)
            real = int(stored[hi] - stored[lo])
            sliver = hi - lo - real > 0 and real <= 2 * (hi - lo - real)
            droppable = [x for x in (a, b) if x is not None and "gripper" not in x.cues]
            if sliver and droppable:
                kept.remove(min(droppable, key=lambda x: x.confidence))
                i = max(i - 1, 0)
                continue
            i += 1
        return kept

    def runs(self, runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Frame ranges ``[start, end)`` of grid ranges (those left empty dropped)."""
        frames = [(self.frame(a), self.frame(b)) for a, b in runs]
        return [(a, b) for a, b in frames if b > a]


def frame_grid(timestamps_s: npt.ArrayLike | None, t_len: int) -> FrameGrid | None:
    """The stored frames' places on the recorder's regular grid, where it dropped frames.

    None where the timestamps show no gap of :data:`GAP_PERIODS` periods or more, are missing,
    do not fit the ``t_len`` frames, or would more than double the episode.
    """
    if timestamps_s is None:
        return None
    t = np.asarray(timestamps_s, dtype=np.float64)
    if t.ndim != 1 or len(t) != t_len or t_len < 3 or not np.isfinite(t).all():
        return None
    steps = np.diff(t)
    typical = float(np.median(steps))
    gaps = steps > GAP_PERIODS * typical
    if typical <= 0 or not gaps.any():
        return None
    # The recorder's period: the mean of its ordinary steps (within half a period of the
    # median), where its jitter averages out and a late frame's pair of steps is left out.
    period = float(steps[np.abs(steps - typical) <= 0.5 * typical].mean())
    # Each frame's place: the integer grid nearest its time with the places rising -- the
    # offsets place - frame, a non-decreasing fit of the times' own offsets, rounded -- and
    # rising by more than one only across a gap. A late frame and the quick one after it
    # add no place, nor does a rate a little off the median's; a frame dropped adds one.
    offsets = np.rint(rising_fit((t - t[0]) / period - np.arange(t_len))).astype(np.int64)
    added = np.where(gaps, np.diff(offsets), 0)
    places = np.concatenate([[0], np.cumsum(1 + added)])
    if places[-1] + 1 > MAX_GRID_PER_FRAME * t_len:
        return None
    if places[-1] + 1 == t_len:  # gaps made up by frames that came early
        return None
    return FrameGrid(places.astype(np.int64))


def rising_fit(y: FloatArray) -> FloatArray:
    """The non-decreasing sequence nearest ``y`` in squared error (pool adjacent violators)."""
    means: list[float] = []
    sizes: list[int] = []
    for v in np.asarray(y, dtype=np.float64).tolist():
        mean, size = v, 1
        while means and means[-1] > mean:  # pool with the block before until in order
            size_before = sizes.pop()
            mean = (means.pop() * size_before + mean * size) / (size_before + size)
            size += size_before
        means.append(mean)
        sizes.append(size)
    return np.repeat(np.asarray(means), sizes)
