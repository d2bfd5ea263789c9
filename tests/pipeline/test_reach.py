"""The smooth operator's reaching (``wallwm.pipeline.sim.reach``): minimum-jerk, re-planned."""

from __future__ import annotations

import numpy as np
import pytest

from wallwm.pipeline.sim.reach import FITTS_WIDTH_M, Reacher, fitts_duration_s, quintic


def test_quintic_meets_its_boundary_conditions():
    x0, v0, a0 = np.array([0.1, -0.2]), np.array([0.3, 0.0]), np.array([-1.0, 2.0])
    goal, duration = np.array([0.5, 0.4]), 0.8
    coef = quintic(x0, v0, a0, goal, duration)
    k = np.arange(6)

    def at(tau: float, order: int) -> np.ndarray:
        factor = np.ones(6)
        for i in range(order):
            factor = factor * (k - i)
        power = np.where(k >= order, tau ** np.maximum(k - order, 0), 0.0)
        return np.asarray((factor * power) @ coef / duration**order)

    assert np.allclose(at(0.0, 0), x0) and np.allclose(at(0.0, 1), v0)
    assert np.allclose(at(0.0, 2), a0)
    assert np.allclose(at(1.0, 0), goal)
    assert np.allclose(at(1.0, 1), 0.0) and np.allclose(at(1.0, 2), 0.0)


def test_a_reach_from_rest_is_a_bell_that_ends_at_the_goal_in_fitts_time():
    dt, goal = 0.01, np.array([0.2, 0.0, -0.1])
    reacher = Reacher(np.zeros(3), pace=1.0)
    speeds = []
    for _ in range(300):
        reacher.step(goal, dt)
        speeds.append(float(np.linalg.norm(reacher.velocity)))
    duration = fitts_duration_s(float(np.linalg.norm(goal)))
    steps = round(duration / dt)
    assert np.allclose(reacher.position, goal)
    peak = int(np.argmax(speeds))
    assert abs(peak - steps / 2) <= 2  # symmetric bell: fastest halfway
    assert speeds[0] < 0.05 * speeds[peak] and speeds[steps - 2] < 0.05 * speeds[peak]
    assert max(speeds[steps:]) == 0.0  # at rest once there
    # farther moves take longer, a faster operator less
    assert fitts_duration_s(0.4) > fitts_duration_s(0.2) > fitts_duration_s(0.2, pace=1.25)


def test_a_new_goal_re_plans_without_a_jump_and_a_drift_within_the_width_does_not():
    dt = 0.01
    reacher = Reacher(np.zeros(2), pace=1.0)
    velocities = []
    for t in range(200):
        goal = np.array([0.2, 0.0]) if t < 40 else np.array([0.2, 0.15])  # the decision at 40
        reacher.step(goal, dt)
        velocities.append(reacher.velocity.copy())
    steps = np.linalg.norm(np.diff(np.array(velocities), axis=0), axis=1)
    assert steps[38] < 3 * np.median(steps[30:38]) + 1e-9  # continuous through the decision
    assert np.linalg.norm(velocities[41][1]) > 0  # and turning toward the new goal
    drifting = Reacher(np.zeros(1), pace=1.0)
    goals = 0.1 + 0.5 * FITTS_WIDTH_M * np.linspace(0.0, 1.0, 200)  # never a new move
    for g in goals:
        drifting.step(np.array([g]), dt)
    assert drifting.position[0] == pytest.approx(goals[-1], abs=1e-9)
