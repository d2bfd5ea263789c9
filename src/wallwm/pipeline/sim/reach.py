"""A person's reaching: the smooth operator of the simulated recorders.

Teleoperated recordings do not move like a scripted controller. A person reaches for a target
along a minimum-jerk path (Flash & Hogan 1985): the hand's speed rises from rest, peaks about
halfway and falls back, a bell over the whole move, and a move lasts longer the farther and
finer it is (Fitts' law). When the target moves on (a new sub-goal, an object that moved), the
person re-plans from where the hand is and how fast it is going, so the path stays smooth
through a decision instead of jumping there. Within one event the command is then neither
affine in the state (a closed loop steering to a sub-goal) nor a line in time (an interpolated
waypoint move). The recorders' ``operator="smooth"`` drive every phase of their scripted
experts this way -- same phases, same decisions (the ground truth) -- so a segmenter can be
measured on the kind of motion teleoperation records.
"""

from __future__ import annotations

import numpy as np

#: Fitts' law for a move's duration: ``(a + b * log2(1 + distance / width)) / pace`` seconds.
FITTS_A_S, FITTS_B_S, FITTS_WIDTH_M = 0.35, 0.25, 0.01


def fitts_duration_s(distance_m: float, pace: float = 1.0) -> float:
    """How long a person takes to reach ``distance_m`` away at ``pace`` (1: Fitts' average)."""
    return (FITTS_A_S + FITTS_B_S * float(np.log2(1.0 + distance_m / FITTS_WIDTH_M))) / pace


def quintic(
    x0: np.ndarray, v0: np.ndarray, a0: np.ndarray, goal: np.ndarray, duration_s: float
) -> np.ndarray:
    """Coefficients ``(6, D)`` of a minimum-jerk path in normalised time ``tau``.

    From position ``x0``, velocity ``v0`` and acceleration ``a0`` (per second) to rest at
    ``goal`` in ``duration_s``.
    """
    c0, c1, c2 = x0, v0 * duration_s, a0 * duration_s**2 / 2.0
    h, p, q = goal - c0 - c1 - c2, -c1 - 2.0 * c2, -2.0 * c2
    c3 = 10.0 * h - 4.0 * p + 0.5 * q
    c4 = -15.0 * h + 7.0 * p - q
    c5 = 6.0 * h - 3.0 * p + 0.5 * q
    return np.stack([c0, c1, c2, c3, c4, c5])


class Reacher:
    """A person's hand reference: minimum-jerk moves to a goal, re-planned when it moves on.

    ``step(goal, dt)`` advances the reference; a goal more than Fitts' target width away from
    the one the current move was planned for starts a new move from the reference's position,
    velocity and acceleration (so a decision changes the path smoothly).
    """

    def __init__(self, position: np.ndarray, pace: float) -> None:
        """Start at rest at ``position``; ``pace`` scales every move's speed."""
        self.pace = pace
        self.position = np.asarray(position, dtype=np.float64).copy()
        self.velocity = np.zeros_like(self.position)
        self.acceleration = np.zeros_like(self.position)
        self._coef: np.ndarray | None = None
        self._planned_for = self.position.copy()
        self._duration_s = 1.0
        self._t_s = 0.0

    def _plan(self, goal: np.ndarray) -> None:
        distance = float(np.linalg.norm(goal - self.position))
        self._duration_s = fitts_duration_s(distance, self.pace)
        self._coef = quintic(
            self.position, self.velocity, self.acceleration, goal, self._duration_s
        )
        self._planned_for, self._t_s = goal.copy(), 0.0

    def step(self, goal: np.ndarray, dt: float) -> np.ndarray:
        """Advance ``dt`` seconds toward ``goal``; returns the new reference position."""
        goal = np.asarray(goal, dtype=np.float64)
        if self._coef is None or np.linalg.norm(goal - self._planned_for) > FITTS_WIDTH_M:
            self._plan(goal)
        assert self._coef is not None
        self._t_s += dt
        tau = min(self._t_s / self._duration_s, 1.0)
        # Small moves of the goal within the target width shift the path's end with it.
        coef = self._coef.copy()
        shift = goal - self._planned_for
        coef[3] += 10.0 * shift
        coef[4] -= 15.0 * shift
        coef[5] += 6.0 * shift
        powers = tau ** np.arange(6)
        rate = np.arange(6) * np.concatenate([[0.0], tau ** np.arange(5)])
        accel = np.arange(6) * np.arange(-1, 5) * np.concatenate([[0.0, 0.0], tau ** np.arange(4)])
        self.position = powers @ coef
        self.velocity = rate @ coef / self._duration_s if tau < 1.0 else 0.0 * self.velocity
        self.acceleration = (
            accel @ coef / self._duration_s**2 if tau < 1.0 else 0.0 * self.acceleration
        )
        return self.position
