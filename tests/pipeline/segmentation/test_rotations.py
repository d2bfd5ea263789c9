"""Rotations made continuous before the cut (:mod:`wallwm.pipeline.segmentation.rotations`)."""

from __future__ import annotations

import numpy as np
import pytest

from wallwm.pipeline.segmentation import SegmentConfig, Signals
from wallwm.pipeline.segmentation.rotations import (
    continuous_columns,
    continuous_rotations,
    quaternion_groups,
    wrapped_turn,
)


def gripper_down_euler(
    plan_with_knots: tuple[np.ndarray, list[int]],
) -> tuple[Signals, Signals, list[int]]:
    """A gripper pointing down: xyz and a roll near pi moving between waypoints, as recorded
    (roll wrapped into (-pi, pi]) and unwrapped; and the knots."""
    plan, knots = plan_with_knots
    xyz = plan[:, :3]
    roll = np.pi + 0.3 * plan[:, 3]  # swings either side of pi
    pitch = 0.2 * plan[:, 4]
    wrapped = np.angle(np.exp(1j * roll))
    grip = np.zeros((len(plan), 1))
    recorded = Signals(np.column_stack([xyz, wrapped, pitch, grip]), 50.0, gripper_action_dims=[5])
    truth = Signals(np.column_stack([xyz, roll, pitch, grip]), 50.0, gripper_action_dims=[5])
    return recorded, truth, knots


def test_a_wrapped_angle_is_found_in_radians_and_degrees():
    roll = np.pi + np.linspace(-0.4, 0.4, 50)
    assert wrapped_turn(np.angle(np.exp(1j * roll))) == pytest.approx(2 * np.pi)
    assert wrapped_turn(np.degrees(np.angle(np.exp(1j * roll)))) == 360.0
    assert wrapped_turn(np.mod(np.linspace(-0.4, 0.4, 50), 2 * np.pi)) == pytest.approx(2 * np.pi)
    assert wrapped_turn(roll) is None  # already continuous: it steps by no half turn
    assert wrapped_turn(np.r_[np.full(10, -3.0), np.full(10, 3.5)]) is None  # past one turn
    assert wrapped_turn(np.r_[np.zeros(10), np.full(10, np.nan)]) is None
    noise = np.clip(np.random.default_rng(0).normal(0.0, 1.0, 200), -np.pi, np.pi)
    assert np.abs(np.diff(noise)).max() > np.pi  # it steps by over half a turn, as noise
    assert wrapped_turn(noise) is None


def test_quaternions_are_found_beside_positions_even_unnormalised():
    """A position's last coordinate beside a quaternion's first three can make rows of near
    unit length too; the window nearest unit length wins. A linear blend of orientations (no
    renormalising: a few per cent short) still counts."""
    t = np.linspace(0.0, 1.0, 60)[:, None]
    q0, q1 = np.array([0.0, 1.0, 0.0, 0.05]), np.array([0.05, 0.99, 0.0, -0.2])
    blend = (1 - t) * q0 / np.linalg.norm(q0) + t * q1 / np.linalg.norm(q1)
    xyz = np.column_stack([t[:, 0] * 0.1, np.full(60, 0.5), np.full(60, 0.3)])
    actions = np.column_stack([xyz, blend, np.ones(60), xyz, blend, np.zeros(60)])
    assert quaternion_groups(actions, skip={7, 15}) == [3, 11]
    assert quaternion_groups(actions[:, :3], skip=set()) == []


def test_a_quaternions_sign_flips_are_undone_and_nothing_else_changes():
    t = np.linspace(0.0, 1.0, 40)
    w = np.linspace(-0.2, 0.2, 40)  # w crosses zero: a recorder keeping w >= 0 flips there
    q = np.column_stack([w, np.sqrt(1 - w**2), np.zeros(40), np.zeros(40)])
    canonical = q * np.where(q[:, :1] < 0, -1.0, 1.0)
    fixed = continuous_columns(np.column_stack([t, canonical]))
    assert fixed is not None
    assert np.allclose(fixed[:, 1:], -q)  # one sign throughout: the first frame's
    assert np.allclose(fixed[:, 0], t)
    assert continuous_columns(np.column_stack([t, q])) is None  # nothing to change
    s = Signals(np.column_stack([t, q]), 10.0)
    assert continuous_rotations(s) is s


def test_a_gripper_command_is_left_as_it_is():
    gripper = np.r_[np.full(10, -3.0), np.full(10, 3.0)]  # steps over half a turn, in range
    actions = np.column_stack([np.linspace(0, 1, 20), gripper])
    assert continuous_columns(actions, skip={1}) is None
    unwrapped = continuous_columns(actions)
    assert unwrapped is not None and abs(np.diff(unwrapped[:, 1])).max() > 0.25  # a step stays


def test_a_gripper_pointing_down_cuts_as_if_its_roll_never_wrapped(waypoint_plan, dataset_f1):
    """The roll of a gripper pointing down swings either side of pi; wrapped into (-pi, pi]
    it jumps a whole turn at frames where nothing was decided. Read continuous, the cut is
    the one the unwrapped recording gets; read as recorded (off) it is not."""
    episodes = [gripper_down_euler(waypoint_plan(seed, 5, (18, 40))) for seed in range(6)]
    assert sum(np.abs(np.diff(r.actions_TA[:, 3])).max() > np.pi for r, _, _ in episodes) >= 4
    recorded = [(r, knots) for r, _, knots in episodes]
    unwrapped = [(u, knots) for _, u, knots in episodes]
    assert dataset_f1(unwrapped, SegmentConfig()) == 1.0
    assert dataset_f1(recorded, SegmentConfig()) == 1.0
    assert dataset_f1(recorded, SegmentConfig(continuous_rotations=False)) < 0.8


def test_wrapped_joint_states_are_fed_back_continuous(closed_loop, dataset_f1):
    """Joint angles an encoder reports in [0, 2 pi) wrap as a joint turns past zero; a
    controller's law on them is still one line per event once they are read continuous."""
    pairs = []
    for seed in range(6):
        s, knots = closed_loop(seed)
        wrapped = np.mod(s.states_TS, 2 * np.pi)  # every joint crosses zero: wraps to ~2 pi
        pairs.append((Signals(s.actions_TA, s.fps, wrapped), knots))
    cfg = SegmentConfig(action_model="state_feedback")
    assert dataset_f1(pairs, cfg) >= 0.95
    assert dataset_f1(pairs, cfg.model_copy(update={"continuous_rotations": False})) < 0.9
