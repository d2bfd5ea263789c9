"""The shared gain of a closed-loop controller's events (``segmentation/gains.py``)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from wallwm.pipeline.segmentation import SegmentConfig, Signals, segment
from wallwm.pipeline.segmentation.changepoints import LinearCost, optimal_partition, pelt
from wallwm.pipeline.segmentation.evaluate import EMPTY, match_boundaries
from wallwm.pipeline.segmentation.gains import SharedGainCost, shared_gains


def goal_switches(seed: int, noise: float, step: float, t_len: int = 150, every: int = 30):
    """A 3-D P-controller (gain 3, commands clipped at +-1) whose goal moves by ``step`` on
    every axis each ``every`` frames: a new sub-goal at the same gain, under command noise."""
    rng = np.random.default_rng(seed)
    x, states, actions = np.zeros(3), [], []
    goal = rng.uniform(-0.3, 0.3, 3)
    switches = list(range(every, t_len - every // 2, every))
    for t in range(t_len):
        if t in switches:
            goal = goal + rng.choice([-1.0, 1.0], 3) * step
        states.append(x.copy())
        actions.append(np.clip(3.0 * (goal - x) + rng.normal(0, noise, 3), -1, 1))
        x = x + 0.05 * actions[-1]
    return Signals(np.asarray(actions), 20.0, np.asarray(states)), switches


def test_a_new_goal_at_the_same_gain_is_found_under_noise():
    """At a noise where the line model pays two parameters a command and misses most goal
    moves, the shared gain (one parameter) finds several times as many, none falsely."""
    cfg = SegmentConfig(action_model="state_feedback", state_pairing="index")
    scores = {}
    for shared in (False, True):
        total = EMPTY
        for seed in range(12):
            s, truth = goal_switches(seed, noise=0.3, step=0.1)
            cut = segment(s, cfg.model_copy(update={"shared_gain": shared})).starts
            total += match_boundaries(cut, truth, len(s.actions_TA), 3)
        scores[shared] = total
    assert scores[True].recall >= scores[False].recall + 0.2
    assert scores[True].precision >= 0.85
    assert scores[True].f1 >= scores[False].f1 + 0.2


def brute_force(y, z, a, b, gain, per_param):
    """Each column's cheaper fit on ``[a, b)`` by least squares."""
    out = []
    for d in range(y.shape[1]):
        yy, zz = y[a:b, d], z[a:b, d]
        design = np.stack([np.ones(b - a), zz], 1)
        own = float(np.sum((yy - design @ np.linalg.lstsq(design, yy, rcond=None)[0]) ** 2))
        r = yy - gain[d] * zz
        out.append((own + per_param, float(np.sum((r - r.mean()) ** 2))))
    return out


def test_the_cost_is_the_cheaper_fit_of_each_column_and_its_matrix_agrees():
    rng = np.random.default_rng(0)
    t_len = 40
    y = rng.normal(0, 1, (t_len, 3)) + np.arange(t_len)[:, None] * [0.1, -0.2, 0.05]
    z = np.cumsum(rng.normal(0, 1, (t_len, 3)), axis=0)
    gain, on_state = np.array([0.5, -1.0, 2.0]), np.array([True, True, False])
    cost = SharedGainCost(LinearCost(y, z), gain, on_state, per_param=3.0)
    for a, b in [(0, 40), (3, 9), (10, 31), (20, 23)]:
        fits = brute_force(y, z, a, b, gain, 3.0)
        want = [min(f) if on else f[0] for f, on in zip(fits, on_state, strict=True)]
        assert cost.columns(np.array([a]), b)[0] == pytest.approx(want, rel=1e-7, abs=1e-7)
    # scaled: the same as the cost of the scaled columns, at the scaled gain
    scale = np.array([2.0, 0.5, 3.0])
    scaled = SharedGainCost(LinearCost(y * scale, z), gain * scale, on_state, per_param=3.0)
    ends = np.array([7, 19, 40])
    assert cost.scaled(scale)(np.array([0, 5, 11]), ends) == pytest.approx(
        scaled(np.array([0, 5, 11]), ends)
    )
    m = cost.scaled(scale).matrix(5, 30)
    for i, j in itertools.combinations(range(26), 2):
        assert m[i, j] == pytest.approx(scaled(np.array([5 + i]), 5 + j)[0], rel=1e-7, abs=1e-7)
    assert np.isinf(m[np.tril_indices(26)]).all()


def test_pelt_with_the_costs_slack_finds_the_dense_optimum():
    """Two segments can cost more than their union (each pays its own slopes): PELT must not
    prune a start that is worse by less than that, or it loses the optimum."""
    rng = np.random.default_rng(0)
    lost = 0
    for trial in range(120):
        t_len, dims = int(rng.integers(20, 80)), int(rng.integers(1, 5))
        z = np.cumsum(rng.normal(0, 1, (t_len, dims)), axis=0)
        knots = sorted({int(k) for k in rng.integers(2, t_len - 2, int(rng.integers(0, 8)))})
        pieces = list(itertools.pairwise([0, *knots, t_len]))
        slope = np.concatenate(
            [np.full((b - a, dims), rng.choice([-2.0, 0.0, 1.0])) for a, b in pieces]
        )
        level = np.concatenate([np.full((b - a, dims), rng.normal(0, 2)) for a, b in pieces])
        y = slope * z + level + rng.normal(0, rng.choice([0.3, 1.0, 3.0]), (t_len, dims))
        per_param = float(rng.choice([0.5, 2.0, 5.0]) * np.log(t_len))
        gain, on_state = rng.choice([-2.0, 1.0], dims), rng.random(dims) < 0.7
        cost = SharedGainCost(LinearCost(y, z), gain, on_state, per_param)
        penalty, min_len = (dims + 1) * per_param, int(rng.choice([1, 2, 3]))
        dense = optimal_partition(cost.matrix(0, t_len), penalty, min_len)
        assert pelt(cost, t_len, penalty, min_len, cost.split_slack) == dense, trial
        lost += pelt(cost, t_len, penalty, min_len) != dense  # pruned as a line cost prunes
    assert lost >= 1


def test_the_gain_is_read_from_the_events_that_agree_with_it():
    """Events held at a limit (slope 0, the state moving fast) outweigh the others in a pooled
    regression; the shared gain is the slope of the events that follow it."""
    rng = np.random.default_rng(1)
    edges = [0, 30, 60, 90, 120, 150]
    z = np.cumsum(rng.normal(0, 1, (150, 1)), axis=0)
    y = np.empty((150, 1))
    for k, (a, b) in enumerate(itertools.pairwise(edges)):
        held = k in (0, 2)
        y[a:b] = 1.0 if held else -4.0 * z[a:b] + rng.normal(0, 5)
        z[a:b] += 40.0 * np.linspace(0, 1, b - a)[:, None] if held else 0.0
    y += rng.normal(0, 0.1, y.shape)
    line = LinearCost(y, z)
    gain = shared_gains(line, edges, np.array([True]), per_param=10.0)
    assert gain[0] == pytest.approx(-4.0, abs=0.05)
    # a column off the state has no shared gain
    assert shared_gains(line, edges, np.array([False]), per_param=10.0)[0] == 0.0


def test_a_run_recorded_before_the_shared_gain_is_read_with_its_own_slopes():
    from wallwm.pipeline.segmentation.stage import run_segment_config

    recorded = SegmentConfig().model_dump(exclude={"shared_gain"})
    assert run_segment_config(recorded).shared_gain is False
    assert run_segment_config(SegmentConfig().model_dump()).shared_gain is True


def test_position_targets_keep_each_events_own_slopes(monkeypatch):
    """A target one step ahead is a line of slope one on the state whose intercept is a speed:
    at a shared slope every change of speed would be a cheap event (ALOHA's joints lost 0.02)."""
    import sys

    from wallwm.pipeline.segmentation.segment import shares_gain

    cfg = SegmentConfig(
        action_model="state_feedback", state_pairing="index", noise_model="position_targets"
    )
    assert not shares_gain(cfg) and shares_gain(cfg.model_copy(update={"noise_model": "auto"}))
    s, _ = goal_switches(0, noise=0.3, step=0.1)
    targets = Signals(s.states_TS[1:], s.fps, s.states_TS[:-1])  # where the arm went next

    class UsedError(Exception):
        pass

    def refuse(*args: object) -> None:
        raise UsedError

    monkeypatch.setattr(
        sys.modules["wallwm.pipeline.segmentation.segment"], "SharedGainCost", refuse
    )
    segment(targets, cfg)  # cut on each event's own slopes: the shared cost is never built
    with pytest.raises(UsedError):  # the same commands read as a controller's: it is
        segment(targets, cfg.model_copy(update={"noise_model": "differences"}))


def test_a_held_command_stream_keeps_each_event_s_own_slopes():
    """Commands held 3 frames (a command topic slower than the frames) step every intercept at
    each stair while the state moves on: at the shared gain a stair cost one parameter a
    command and the cut followed the stairs (F1 0.73, precision 0.59 before)."""
    cfg = SegmentConfig(action_model="state_feedback", state_pairing="index")
    total, unheld_same = EMPTY, True
    for seed in range(12):
        s, truth = goal_switches(seed, noise=0.3, step=0.3)
        actions = np.asarray(s.actions_TA)
        held = dataclasses.replace(s, actions_TA=actions[(np.arange(len(actions)) // 3) * 3])
        cut = segment(held, cfg).starts
        assert cut == segment(held, cfg.model_copy(update={"shared_gain": False})).starts
        total += match_boundaries(cut, truth, len(actions), 3)
        # not held: the shared gain as before (the rule needs a held stream to fire)
        small, _ = goal_switches(seed, noise=0.3, step=0.1)
        own = segment(small, cfg.model_copy(update={"shared_gain": False})).starts
        unheld_same &= segment(small, cfg).starts == own
    assert total.f1 >= 0.8 and total.precision >= 0.7
    assert not unheld_same
