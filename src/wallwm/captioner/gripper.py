"""What the measured gripper signal says about an event: grasp, release, carry.

Pure functions over the gripper series of one episode (``gripper_TG``: one opening per gripper
per frame, larger = more open; bimanual robots have two). They give the caption stage its
*signal notes* -- facts quoted in every VLM prompt and the whole input of the signal-based
fallback captioner -- so they must say which event a gripper movement belongs to.

Segmentation cuts at the gripper *command*; the measured fingers answer it over the next frames,
so a closing keeps going well past the cut (MetaWorld pick-place: the command closes at frame
24, the opening is 1.0 at 24-26, 0.7 at the next cut at 32 and settles at 0.4 by 38). Calling
every event in which the opening falls a "closing" gives the carry that follows the grasp the
grasp's caption. Here a movement belongs to exactly one event: the one holding its *onset*, the
frame where it has covered a tenth of its amplitude (the usual 10 % rise-time mark, robust to a
cut placed a frame early or late). Events after a grasp in which the gripper stays closed are
*held* (a carry) until the next opening.

A closing that begins in the first frames of an episode grasps nothing (the arm has not reached
anything yet: MetaWorld's scripted experts close the fingers at once for button, door and
window tasks), so it is a pre-shape, not a grasp, and what follows is not a carry.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import numpy.typing as npt

from wallwm.pipeline.sources.base import gripper_dims

#: The fraction of a movement's amplitude that marks its onset.
ONSET_FRACTION = 0.1
#: A gripper has left its level once it has covered this fraction of the movement (tighter
#: than the onset, looser than sensor noise on a plateau).
LEAVE_FRACTION = 0.02
#: A movement counts when it spans this fraction of the gripper's range in the episode ...
MIN_RANGE_FRACTION = 0.2
#: ... and this fraction of the largest absolute reading (a gripper that drifts by 0.3 % of its
#: scale in a reach-only episode has a tiny range, and a fifth of it is noise, not a grasp).
MIN_SCALE_FRACTION = 0.05
#: A closing that leaves the open level within the first ``PRESHAPE_FRAMES`` frames or this
#: fraction of the episode, whichever is longer, is a pre-shape: the gripper starts closing at
#: once, before the arm can have reached anything (MetaWorld's pre-shapes leave at frame 1-2,
#: its grasps after 6 % of the episode or later).
PRESHAPE_FRACTION = 0.02
PRESHAPE_FRAMES = 2

# The notes (after the gripper's name: "gripper", or "gripper 1", "gripper 2" -- or the source's
# names, "left gripper" -- on multi-gripper robots). ``signal_caption`` maps them to captions.
CLOSES = "closes"  # a grasp starts in this event
OPENS = "opens"  # a release starts in this event
HOLDS = "holds what it grasped"  # closed since an earlier event's grasp: a carry
CLOSES_AT_START = "closes at the start"  # a pre-shape: nothing reached yet
STAYS_CLOSED = "stays closed"  # closed since a pre-shape
CLOSES_LATER = "open until a later grasp"  # the approach: a grasp comes in a later event

GripperState = Literal["closes", "opens", "holds", "preshape", "stays_closed", "before_grasp"]


@dataclasses.dataclass(frozen=True)
class GripperMove:
    """One closing or opening of one gripper.

    Attributes:
        kind: ``"close"`` or ``"open"``.
        start: The last frame at the level it leaves (within ``LEAVE_FRACTION``).
        onset: The frame where it has covered ``ONSET_FRACTION`` of its amplitude.
        end: The frame where it reaches its extreme.
    """

    kind: Literal["close", "open"]
    start: int
    onset: int
    end: int


def _legs(x_T: npt.NDArray[np.float64], threshold: float) -> list[tuple[int, int, int]]:
    """Monotone legs of ``x_T`` (zigzag with hysteresis): ``(start, end, sign)`` per leg.

    A reversal is confirmed only once the signal has come back ``threshold`` from its running
    extreme, so jitter and the bounce of fingers settling on an object are not movements.
    """
    legs: list[tuple[int, int, int]] = []
    trend, lo, hi, start, ext = 0, 0, 0, 0, 0
    for i in range(1, len(x_T)):
        if trend == 0:  # no direction yet: track both extremes until they are far enough apart
            hi = i if x_T[i] >= x_T[hi] else hi  # ties: the plateau's last frame
            lo = i if x_T[i] <= x_T[lo] else lo
            if x_T[hi] - x_T[lo] >= threshold:
                trend = 1 if hi > lo else -1
                start, ext = (lo, hi) if trend == 1 else (hi, lo)
        elif trend * (x_T[i] - x_T[ext]) >= 0:  # still going (ties: the plateau's last frame)
            ext = i
        elif trend * (x_T[ext] - x_T[i]) >= threshold:  # reversed for real
            legs.append((start, ext, trend))
            start, ext, trend = ext, i, -trend
    if trend:
        legs.append((start, ext, trend))
    return legs


def gripper_moves(opening_T: npt.ArrayLike) -> list[GripperMove]:
    """The closings and openings of one gripper over an episode, in time order."""
    x_T = np.asarray(opening_T, dtype=np.float64).reshape(-1)
    finite = x_T[np.isfinite(x_T)]
    if finite.size < 2:
        return []
    x_T = np.where(np.isfinite(x_T), x_T, np.nan)
    x_T = _fill_gaps(x_T)
    threshold = max(
        MIN_RANGE_FRACTION * float(np.ptp(finite)),
        MIN_SCALE_FRACTION * float(np.max(np.abs(finite))),
    )
    if threshold <= 0.0:
        return []
    moves = []
    for extreme, end, sign in _legs(x_T, threshold):
        # the fraction of the movement covered at each frame, from the level it leaves
        covered = (x_T[extreme : end + 1] - x_T[extreme]) / (x_T[end] - x_T[extreme])
        onset = extreme + int(np.argmax(covered >= ONSET_FRACTION))
        still = np.nonzero(covered[: onset - extreme] <= LEAVE_FRACTION)[0]
        start = extreme + int(still[-1]) if still.size else extreme
        moves.append(GripperMove("open" if sign > 0 else "close", start, onset, end))
    return moves


def _fill_gaps(x_T: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Missing readings (NaN) take the previous reading (the first ones, the first reading)."""
    bad = np.isnan(x_T)
    if not bad.any():
        return x_T
    idx = np.where(bad, 0, np.arange(len(x_T)))
    np.maximum.accumulate(idx, out=idx)
    out = x_T[idx]
    first = out[np.isfinite(out)][0]
    return np.where(np.isnan(out), first, out)


def gripper_state(
    moves: list[GripperMove], num_frames: int, start: int, end: int
) -> GripperState | None:
    """What one gripper does in the event ``[start, end)`` of a ``num_frames`` episode."""
    preshape_until = max(PRESHAPE_FRAMES + 1, PRESHAPE_FRACTION * num_frames)
    here = [m for m in moves if start <= m.onset < end]
    if here:  # the first movement that starts here names the event
        m = here[0]
        if m.kind == "open":
            return "opens"
        return "preshape" if m.start < preshape_until else "closes"
    before = [m for m in moves if m.onset < start]
    if before and before[-1].kind == "close":
        return "stays_closed" if before[-1].start < preshape_until else "holds"
    later = [m for m in moves if m.onset >= end]
    if later and later[0].kind == "close" and later[0].start >= preshape_until:
        return "before_grasp"
    return None


_NOTE = {
    "closes": CLOSES,
    "opens": OPENS,
    "holds": HOLDS,
    "preshape": CLOSES_AT_START,
    "stays_closed": STAYS_CLOSED,
    "before_grasp": CLOSES_LATER,
}


def gripper_names(action_names: list[str] | None, width: int) -> list[str]:
    """What the notes call each of ``width`` grippers.

    One gripper is "gripper". Several take their action dims' names where the source names
    exactly ``width`` dims ``*grip*`` (``left_gripper`` -> "left gripper", as a bimanual
    LeRobot dataset names them) and the names differ; else "gripper 1", "gripper 2", ...
    """
    if width == 1:
        return ["gripper"]
    names = action_names or []
    named = [
        " ".join(str(names[i]).replace("_", " ").replace(".", " ").split())
        for i in gripper_dims(names)
    ]
    if len(named) == width and len(set(named)) == width:
        return named
    return [f"gripper {j + 1}" for j in range(width)]


def gripper_notes(
    gripper_TG: npt.ArrayLike | None, start: int, end: int, names: list[str] | None = None
) -> tuple[str, ...]:
    """The signal notes of the event ``[start, end)``: one per gripper that has something to say.

    Args:
        gripper_TG: The episode's gripper openings, (T,) or (T, G); None or empty: no notes.
        start: First frame of the event.
        end: One past its last frame.
        names: What to call each gripper (:func:`gripper_names`); default "gripper" for one,
            "gripper 1", "gripper 2", ... for several.

    Returns:
        Notes like ``"gripper closes"``, ``"gripper holds what it grasped"`` (``"gripper 2
        opens"`` or ``"right gripper opens"`` when there are several grippers).
    """
    if gripper_TG is None or end <= start:
        return ()
    g_TG = np.asarray(gripper_TG, dtype=np.float64)
    if g_TG.size == 0:
        return ()
    g_TG = g_TG.reshape(len(g_TG), -1)
    if names is None or len(names) != g_TG.shape[1]:
        names = gripper_names(None, g_TG.shape[1])
    notes = []
    for j in range(g_TG.shape[1]):
        state = gripper_state(gripper_moves(g_TG[:, j]), len(g_TG), start, end)
        if state is not None:
            notes.append(f"{names[j]} {_NOTE[state]}")
    return tuple(notes)


def note_kinds(notes: tuple[str, ...] | list[str]) -> set[str]:
    """The gripper notes without the grippers' names (``"left gripper opens"`` -> ``"opens"``)."""
    return {kind for note in notes for kind in _NOTE.values() if note.endswith(f" {kind}")}
