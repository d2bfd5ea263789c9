"""One-frame glitches: a command off its neighbours for a single frame is read between them.

A packet that arrived corrupted, a teleoperation device that jumped for a sample: one value of
one command, far from the frames either side while those agree with each other. To a model in
time each is two changes a frame apart -- an event of one frame, twice over. Measured with 1 % /
3 % of the suite's frames carrying a glitch of 30 % of a command's range
(``benchmarks/segmentation_recorders.py --only glitches``): ALOHA's plans 1.000 -> 0.793 / 0.569
F1@3, its joints 0.670 -> 0.587 / 0.049; read between the neighbours 1.000 / 1.000 and 0.672 /
0.670. A law on the state reads the commands as stored (Jaco, the Panda and MetaWorld lose at
most 0.007 either way). States are left as they are: a state's one-frame deviation is often
physics (a joint in contact, fingers closing), up to a few an episode on the suite's recordings.

A glitch at frame ``t`` leaves a signature in the residual about the neighbours' mean,
``r[t] = x[t] - (x[t-1] + x[t+1]) / 2``: ``r[t] = m`` and ``r[t-1] = r[t+1] = -m/2``. A step
(``r[t-1] = -r[t]``) and a bend (``r[t +- 1] = 0``) leave others, so neither is taken for one.
A glitch counts where ``|r[t]|`` stands :data:`GLITCH_SIGMAS` robust standard deviations of
the residuals around it above zero (the 12 frames either side: noise that grows with speed is
weighed where it is; never below the whole column's, so a command held at its limit does not
turn each noise dip below it into a glitch), at least :data:`GLITCH_FLOOR` of the column's
range (a noise-free line's residuals are rounding), and both neighbours' residuals are of the
other sign, a quarter to three quarters of it. Two-level commands (a gripper) are left as they
are: a switch and back is theirs to make.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from wallwm.pipeline.segmentation.channels import command_levels
from wallwm.pipeline.segmentation.config import FloatArray, Signals

#: How far above the residuals' robust spread a glitch stands: Gaussian noise reaches it once
#: in about a billion frames.
GLITCH_SIGMAS = 8.0
#: The smallest glitch, as a share of the column's range: a noise-free line's residuals are
#: rounding, whose spread is no scale for "far".
GLITCH_FLOOR = 0.02
#: The frames either side whose residuals give the spread a glitch stands above (its own and
#: its neighbours' left out).
_LOCAL_FRAMES = 12
#: How far from half of the glitch its neighbours' residuals may lie (a quarter to three
#: quarters of it): the noise on three frames moves them.
_NEIGHBOUR_SLACK = 0.25


def glitch_frames(x_T: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """The frames where column ``x_T`` has a one-frame glitch (see the module)."""
    x = np.asarray(x_T, dtype=np.float64)
    if len(x) < 5 or not np.isfinite(x).all():
        return np.zeros(0, dtype=np.int64)
    r = x[1:-1] - 0.5 * (x[:-2] + x[2:])  # r[i] belongs to frame i + 1
    centre, before, after = r[1:-1], r[:-2], r[2:]  # frames 2 .. T-3
    half = -0.5 * centre
    slack = _NEIGHBOUR_SLACK * np.abs(centre)
    shaped = (np.abs(before - half) <= slack) & (np.abs(after - half) <= slack)
    big = np.abs(centre) >= max(GLITCH_FLOOR * float(np.ptp(x)), 1e-12)
    candidates = np.flatnonzero(shaped & big) + 1  # indices into r
    if not len(candidates):
        return np.zeros(0, dtype=np.int64)
    # Far against the residuals around it, not the episode's: noise that grows with speed
    # makes a fast stretch's largest noise stand far above a slow episode's median.
    offsets = np.concatenate([np.arange(-_LOCAL_FRAMES, -1), np.arange(2, _LOCAL_FRAMES + 1)])
    at = candidates[:, None] + offsets
    inside = (at >= 0) & (at < len(r))
    around = np.where(inside, np.abs(r)[np.clip(at, 0, len(r) - 1)], np.nan)
    local = 1.4826 * np.nanmedian(around, axis=1)  # the residuals' robust spread there
    # ... and never below the whole column's: on a stretch held at a limit the residuals
    # around are zero, and the noise's one-frame dips below the limit are no glitches.
    whole = 1.4826 * float(np.median(np.abs(r - np.median(r))))
    far = np.abs(r[candidates]) >= GLITCH_SIGMAS * np.maximum(local, whole)
    return np.asarray(candidates[far] + 1, dtype=np.int64)


def _mended(x_TD: npt.ArrayLike, skip: set[int]) -> tuple[FloatArray, int] | None:
    """``x_TD`` with each glitch read as its neighbours' mean, and how many; None: none."""
    x = np.asarray(x_TD, dtype=np.float64)
    if x.ndim != 2:
        return None
    out, count = None, 0
    for j in range(x.shape[1]):
        if j in skip or command_levels(x[:, j]) is not None:
            continue
        frames = glitch_frames(x[:, j])
        if len(frames):
            out = x.copy() if out is None else out
            out[frames, j] = 0.5 * (x[frames - 1, j] + x[frames + 1, j])
            count += len(frames)
    return None if out is None else (out, count)


def glitch_count(s: Signals) -> int:
    """How many one-frame glitches the commands of ``s`` hold."""
    mended = _mended(s.actions_TA, set(s.gripper_action_dims))
    return 0 if mended is None else mended[1]


def without_glitches(s: Signals) -> Signals:
    """``s`` with its commands' one-frame glitches read between their neighbours.

    ``s`` itself where there are none.
    """
    mended = _mended(s.actions_TA, set(s.gripper_action_dims))
    return s if mended is None else dataclasses.replace(s, actions_TA=mended[0])
