"""Rotations made continuous before the cut: an angle's wrap-around, a quaternion's sign.

A rotation has more than one set of numbers: an angle ``θ`` is also ``θ ± 2π`` (Euler angles,
a wrist that turns past ``±π``; ``±360`` in degrees), a unit quaternion ``q`` is also ``-q``.
Recorders pick one per frame -- angles wrapped into ``(-π, π]``, quaternions canonicalised to
``w >= 0`` -- so a command that turns smoothly past the edge jumps by a whole turn, or flips
every component's sign, at a frame where nothing was decided. An arm whose gripper points down
sits at exactly that edge: its roll is ``±π`` in the usual base frame (DROID's Cartesian
actions), and the ``w`` of its orientation is near zero. Each such jump is the largest change in
the episode: the cut takes it for an event, and every law fitted across it is wrong.

Measured on the suite's ALOHA recording without noise (``benchmarks/segmentation_recorders.py``,
the same rollouts written as the gripper frame pointing down: each arm's orientation composed
with a half turn about x): its quaternions canonicalised to ``w >= 0`` flip sign once an
episode and the cut's F1@3 fell 1.000 -> 0.949 (read continuous: 1.000); written as Euler
angles (``xyz``), the roll wraps 61 times an episode and F1 fell 0.974 -> 0.398 (read
continuous: 0.974, the Euler angles' own F1).

What is made continuous is read from the data, per episode, and only the view the cut reads
changes (the stored commands stay as recorded):

- a dim whose values all lie within one turn's range -- ``[-P/2, P/2]`` or ``[0, P]`` for a
  turn ``P`` of ``2π`` or ``360`` -- that steps by more than half a turn somewhere, and whose
  steps taken the short way round lose most of their energy (:data:`WRAPPED_ENERGY`: a wrap
  is a whole turn among small steps; noise is not), is an angle that wrapped: each step is
  taken the short way round (``numpy.unwrap``). A dim that passes and is no angle still steps
  at the same frame (by a turn less its step), so no boundary of its is lost;
- four consecutive dims whose rows are of unit length (within 10 % on 99 % of frames) are a
  quaternion: each frame takes the sign nearer the frame before (``q . q_prev >= 0``), the
  usual hemisphere continuity.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from wallwm.pipeline.segmentation.config import FloatArray, Signals

#: A whole turn in the units an angle may be recorded in: radians, degrees.
TURNS = (2.0 * np.pi, 360.0)
#: How far a row may be from unit length (share) and still count as a quaternion's, and on
#: what share of frames it must be. Interpolated orientations are not always renormalised: a
#: linear blend of two rotations an angle ``a`` apart falls to ``cos(a / 4)`` of unit length
#: half-way (ALOHA's mocap targets, 1.2 % short), so 10 % admits blends of up to 100 degrees.
#: A row of other numbers near unit length is harmless: only a frame whose row turns against
#: the one before (``q . q_prev < 0``, a sign flip) is changed.
UNIT_TOLERANCE = 0.10
UNIT_SHARE = 0.99
#: A dim is a wrapped angle only where taking every step the short way leaves at most this
#: share of its steps' energy (sum of squares). Measured: the suite's rewritten angles
#: (``benchmarks/segmentation_recorders.py``: ALOHA's Euler angles, Jaco's wrapped joints)
#: 0.000-0.004 -- a wrap is a whole turn among small steps; a channel of noise alone that
#: stays within one turn 0.53-1.0 (sd 0.5-1.5 rad, clipped at +-pi: its steps over half a turn
#: are noise too, and shortening them leaves most of its energy).
WRAPPED_ENERGY = 0.25
#: Slack on "within one turn's range" (share of a turn): a wrap may land a rounding past it.
_RANGE_SLACK = 1e-3


def wrapped_turn(x_T: FloatArray) -> float | None:
    """The turn (``2π`` or ``360``) a dim wrapped at, or None where it is no wrapped angle."""
    if len(x_T) < 2 or not np.isfinite(x_T).all():
        return None
    lo, hi = float(x_T.min()), float(x_T.max())
    steps = np.diff(x_T)
    for turn in TURNS:
        slack = _RANGE_SLACK * turn
        centred = lo >= -turn / 2 - slack and hi <= turn / 2 + slack
        positive = lo >= -slack and hi <= turn + slack
        if not (centred or positive) or float(np.abs(steps).max()) <= turn / 2:
            continue
        short_way = steps - turn * np.round(steps / turn)
        if float(np.sum(short_way**2)) <= WRAPPED_ENERGY * float(np.sum(steps**2)):
            return turn
    return None


def quaternion_groups(x_TD: FloatArray, skip: set[int]) -> list[int]:
    """The first dims of the unit quaternions among four consecutive dims.

    No group holds a dim in ``skip``, and a dim belongs to one group at most. Where windows
    overlap (a position's last coordinate beside a quaternion's first three can make rows of
    near unit length too), the windows nearest unit length win.
    """
    windows = [j for j in range(x_TD.shape[1] - 3) if not skip.intersection(range(j, j + 4))]
    if not windows or len(x_TD) == 0:
        return []
    # every window's row lengths at once: sums of four consecutive squared columns
    squared = np.concatenate([np.zeros((len(x_TD), 1)), np.cumsum(x_TD**2, axis=1)], axis=1)
    first = np.asarray(windows)
    off_TW = np.abs(np.sqrt(np.maximum(squared[:, first + 4] - squared[:, first], 0.0)) - 1.0)
    spread = np.quantile(off_TW, UNIT_SHARE, axis=0)
    deviation = {j: float(d) for j, d in zip(windows, spread, strict=True)}
    firsts: list[int] = []
    for j in sorted(
        (j for j, d in deviation.items() if d <= UNIT_TOLERANCE), key=deviation.__getitem__
    ):
        if all(abs(j - k) >= 4 for k in firsts):
            firsts.append(j)
    return sorted(firsts)


@dataclasses.dataclass(frozen=True)
class RotationsFound:
    """What of a block of columns is read continuous.

    Each quaternion's first dim with the frames its sign flipped at; each wrapped angle's dim
    with its turn.
    """

    flips: dict[int, npt.NDArray[np.bool_]]
    turns: dict[int, float]

    def __bool__(self) -> bool:
        return bool(self.flips or self.turns)


def rotations_found(x_TD: FloatArray, skip: set[int] | None = None) -> RotationsFound:
    """The quaternions whose sign flips and the angles that wrapped in ``x_TD``.

    ``skip``: dims left as they are (a gripper's command).
    """
    if x_TD.ndim != 2 or len(x_TD) < 2:
        return RotationsFound({}, {})
    skip = skip or set()
    flips = {}
    for first in quaternion_groups(x_TD, skip):
        q = x_TD[:, first : first + 4]
        flipped = np.einsum("td,td->t", q[1:], q[:-1]) < 0  # each frame against the one before
        if flipped.any():
            flips[first] = np.concatenate([[False], flipped])
    turns = {}
    for j in (j for j in range(x_TD.shape[1]) if j not in skip):
        turn = wrapped_turn(x_TD[:, j])
        if turn is not None:
            turns[j] = turn
    return RotationsFound(flips, turns)


def continuous_columns(x_TD: npt.ArrayLike, skip: set[int] | None = None) -> FloatArray | None:
    """``x_TD`` with its wrapped angles unwrapped and its quaternions' signs made continuous.

    None where nothing needs to change. ``skip``: dims left as they are (a gripper's command).
    """
    x = np.asarray(x_TD, dtype=np.float64)
    found = rotations_found(x, skip)
    if not found:
        return None
    out = x.copy()
    for first, flipped in found.flips.items():
        sign = np.cumprod(np.where(flipped, -1.0, 1.0))
        out[:, first : first + 4] = x[:, first : first + 4] * sign[:, None]
    for j, turn in found.turns.items():
        out[:, j] = np.unwrap(x[:, j], period=turn)
    return out


def continuous_rotations(s: Signals) -> Signals:
    """``s`` with its commands' and states' rotations made continuous (see the module)."""
    actions = continuous_columns(s.actions_TA, set(s.gripper_action_dims))
    states = None if s.states_TS is None else continuous_columns(s.states_TS)
    if actions is None and states is None:
        return s
    return dataclasses.replace(
        s,
        actions_TA=s.actions_TA if actions is None else actions,
        states_TS=s.states_TS if states is None else states,
    )
