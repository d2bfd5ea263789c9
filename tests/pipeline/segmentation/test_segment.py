"""The segmenter's pure core: cues, change points, durations, edge cases, metrics."""

from __future__ import annotations

import importlib
import itertools

import numpy as np
import pytest

from wallwm.pipeline.segmentation import SegmentConfig, Signals, event_penalty, segment, weigh_cuts
from wallwm.pipeline.segmentation import changepoints as changepoints_module
from wallwm.pipeline.segmentation.bends import (
    bent_line_cost,
    bent_line_costs,
    merge_bends,
    persistence_weights,
    residual_excess,
    residual_persistence,
)
from wallwm.pipeline.segmentation.changepoints import (
    ChannelFit,
    LinearCost,
    LocalNoiseCost,
    PolynomialCost,
    optimal_partition,
    pelt,
    pelt_between,
)
from wallwm.pipeline.segmentation.channels import (
    channel_groups,
    frame_index,
    gripper_flips,
    noise_sigma,
)
from wallwm.pipeline.segmentation.evaluate import EMPTY, match_boundaries
from wallwm.pipeline.segmentation.selection import resolve
from wallwm.pipeline.sim.synthetic import SynthConfig, simulate_episode


def piecewise(levels, lengths, noise=0.05, seed=0, dims=3):
    rng = np.random.default_rng(seed)
    parts = [
        np.tile(np.asarray(lv, float)[:dims], (n, 1)) for lv, n in zip(levels, lengths, strict=True)
    ]
    x = np.concatenate(parts)
    return (x + rng.normal(0, noise, x.shape)).astype(np.float32)


def test_pelt_finds_exact_step_changes():
    x = piecewise([[0, 0, 0], [1, 0, 0], [1, 1, -1]], [30, 25, 40]).astype(np.float64)
    y = x / noise_sigma(x)
    points = pelt(LinearCost(y), len(y), penalty=(2 * 3 + 1) * np.log(len(y)), min_len=1)
    assert points == [30, 55]


def test_linear_cost_is_zero_on_lines_and_matches_numpy():
    t = np.arange(20, dtype=np.float64)
    y = np.stack([2 * t + 1, -t], axis=1)
    cost = LinearCost(y)
    assert cost(np.array([0, 5]), 20) == pytest.approx([0, 0], abs=1e-6)
    z = np.random.default_rng(1).normal(size=(30, 2))
    got = LinearCost(z)(np.array([4]), 25)[0]
    ts = np.arange(4, 25, dtype=np.float64)
    want = 0.0
    for j in range(2):
        slope, intercept = np.polyfit(ts, z[4:25, j], 1)
        want += float(np.sum((z[4:25, j] - (slope * ts + intercept)) ** 2))
    assert got == pytest.approx(want, rel=1e-6)


def test_segment_recovers_phases_with_gripper_cue():
    actions = piecewise(
        [[0.5, 0, 0, -1], [0, 0, -0.5, -1], [0, 0, -0.5, 1], [0.5, 0.5, 0, 1]],
        [40, 20, 15, 40],
        noise=0.08,
        dims=4,
    )
    actions[:, 3] = np.round(actions[:, 3])  # a clean gripper command
    seg = segment(Signals(actions, fps=20.0, gripper_action_dims=[3]), SegmentConfig())
    assert seg.starts[0] == 0 and seg.ends[-1] == len(actions)
    score = match_boundaries(seg.starts, [0, 40, 60, 75], len(actions), tolerance=1)
    assert score.f1 == 1.0
    grip = next(b for b in seg.boundaries if b.frame == 60)
    assert "gripper" in grip.cues and 0 < grip.confidence <= 1


def test_noise_only_gives_one_event():
    rng = np.random.default_rng(3)
    seg = segment(
        Signals(rng.normal(0, 0.3, (200, 4)).astype(np.float32), fps=30.0), SegmentConfig()
    )
    assert seg.starts == [0] and seg.ends == [200]


@pytest.mark.parametrize("t_len", [0, 1, 2])
def test_tiny_episodes(t_len):
    seg = segment(Signals(np.zeros((t_len, 3), np.float32), fps=10.0), SegmentConfig())
    assert seg.starts == ([0] if t_len else []) and seg.ends == ([t_len] if t_len else [])


def test_constant_signals_and_no_usable_channel():
    seg = segment(Signals(np.ones((50, 3), np.float32), fps=10.0), SegmentConfig())
    assert (seg.starts, seg.ends) == ([0], [50])


def test_a_gripper_alone_is_still_cut_at_its_switches():
    """No channel to weigh (the gripper is the only command, or the arm holds still) still
    leaves the gripper's switches as events, certain ones; an over-long event is still split,
    evenly where nothing tells its frames apart."""
    gripper = np.repeat([0.0, 1.0, 0.0, 1.0, 1.0, 0.0], 30)[:, None]
    alone = segment(Signals(gripper, fps=10.0, gripper_action_dims=[0]), SegmentConfig())
    assert alone.starts == [0, 30, 60, 90, 150]
    assert all(b.confidence == 1.0 and b.cues == ("gripper",) for b in alone.boundaries)
    assert alone.cues_CT["gripper"][[30, 31]].tolist() == [1.0, 0.0]
    held = np.hstack([np.ones((180, 2)), gripper])
    arm_still = segment(Signals(held, fps=10.0, gripper_action_dims=[2]), SegmentConfig())
    assert arm_still.starts == [0, 30, 60, 90, 150]
    idle = segment(Signals(np.ones((500, 3)), fps=10.0), SegmentConfig(max_event_s=8.0))
    assert idle.starts == [0, 62, 125, 187, 250, 312, 375, 437]  # eight even pieces <= 80


def test_max_duration_splits_and_min_duration_holds():
    rng = np.random.default_rng(4)
    actions = rng.normal(0, 0.1, (300, 2)).astype(np.float32)
    seg = segment(Signals(actions, fps=10.0), SegmentConfig(max_event_s=8.0))
    assert max(e - s for s, e in zip(seg.starts, seg.ends, strict=True)) <= 80
    x = piecewise([[0, 0], [1, 1], [0, 0]], [40, 3, 40], noise=0.02, dims=2)
    short = segment(Signals(x, fps=10.0), SegmentConfig(min_event_s=0.5))
    assert min(e - s for s, e in zip(short.starts, short.ends, strict=True)) >= 5


def test_fixed_method_is_the_chunk_baseline():
    seg = segment(
        Signals(np.zeros((50, 2), np.float32), fps=10.0),
        SegmentConfig(method="fixed", chunk_len=16),
    )
    assert seg.starts == [0, 16, 32, 48] and seg.ends == [16, 32, 48, 50]


def test_beats_fixed_chunks_on_simulated_episodes():
    """On the built-in simulator, change points beat every fixed chunk length (F1 within 2)."""
    cfg = SynthConfig(size=16, action_noise=0.2)
    rng = np.random.default_rng(11)
    ours, fixed = EMPTY, dict.fromkeys((4, 8, 16), EMPTY)
    for i in range(24):
        ep = simulate_episode(cfg.tasks[i % 3], rng, cfg)
        sig = Signals(
            ep["actions"], cfg.fps, ep["states"], ep["states"][:, 3:], gripper_action_dims=[3]
        )
        truth = [e["start_frame"] for e in ep["events"]]
        ours += match_boundaries(segment(sig, SegmentConfig()).starts, truth, len(ep["actions"]), 2)
        for n in fixed:
            cut = segment(sig, SegmentConfig(method="fixed", chunk_len=n)).starts
            fixed[n] += match_boundaries(cut, truth, len(ep["actions"]), 2)
    assert ours.f1 > max(f.f1 for f in fixed.values()) + 0.1
    assert ours.f1 > 0.65


def test_match_boundaries_counts_each_truth_once():
    s = match_boundaries([10, 11, 30], [0, 10, 50], num_frames=60, tolerance=3)
    assert (s.true_positives, s.predicted, s.actual) == (1, 3, 2)
    assert s.precision == pytest.approx(1 / 3) and s.recall == pytest.approx(0.5)
    assert match_boundaries([], [0], 10, 3).f1 == 1.0  # nothing to find, nothing found


def test_linear_cost_on_a_state_regressor_matches_numpy():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(30, 2))
    y = 3.0 * z - 1.0
    assert LinearCost(y, z)(np.array([0, 7]), 30) == pytest.approx([0, 0], abs=1e-6)
    y = rng.normal(size=(30, 2))
    want = 0.0
    for j in range(2):
        slope, intercept = np.polyfit(z[5:22, j], y[5:22, j], 1)
        want += float(np.sum((y[5:22, j] - (slope * z[5:22, j] + intercept)) ** 2))
    assert LinearCost(y, z)(np.array([5]), 22)[0] == pytest.approx(want, rel=1e-6)
    flat = np.ones((10, 1))  # a regressor that does not move: the segment's mean
    assert LinearCost(np.arange(10.0)[:, None], flat)(np.array([0]), 10)[0] == pytest.approx(82.5)


def test_cost_matrix_equals_the_segment_costs():
    rng = np.random.default_rng(4)
    y, z = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    z[10:20, 1] = 0.5  # a stretch where one regressor does not move (the mean fallback)
    cost = LinearCost(y, z)
    m = cost.matrix(5, 30)
    for i in range(26):
        for j in range(26):
            want = cost(np.array([5 + i]), 5 + j)[0] if i < j else np.inf
            assert m[i, j] == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_a_scaled_cost_equals_the_cost_of_scaled_channels():
    rng = np.random.default_rng(5)
    y, z = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    scale = np.array([0.5, 1.0, 0.25])
    base, direct = LinearCost(y, z), LinearCost(y * scale, z)
    base.matrix(0, 40)  # cached at unit scale, then re-weighed by the scaled member
    scaled = base.scaled(scale)
    finite = np.isfinite(direct.matrix(0, 40))
    assert np.allclose(scaled.matrix(0, 40)[finite], direct.matrix(0, 40)[finite])
    starts = np.array([0, 7, 21])
    assert np.allclose(scaled.columns(starts, 40), direct.columns(starts, 40))
    assert np.allclose(
        base.matrix(3, 30)[np.isfinite(base.matrix(3, 30))],
        LinearCost(y, z).matrix(3, 30)[np.isfinite(base.matrix(3, 30))],
    )


def test_polynomial_cost_matches_least_squares_in_every_segment():
    """Short segments late in a long episode included (the fit runs in each segment's own
    time); segments shorter than the polynomial are fitted exactly; the matrix, the columns
    and a rescaled cost agree."""
    rng = np.random.default_rng(6)
    t_len = 400
    y = rng.normal(size=(t_len, 2)).cumsum(axis=0) + 50.0  # far from zero: cancellation
    cost = PolynomialCost(y, degree=3)
    segments = [(0, t_len), (380, 392), (396, 400), (10, 12), (0, 3), (199, 200)]
    segments += [tuple(sorted(rng.choice(t_len + 1, 2, replace=False))) for _ in range(40)]
    for a, b in segments:
        u = np.arange(a, b, dtype=np.float64)
        x = (u[:, None] - u.mean()) ** np.arange(4)
        coef, *_ = np.linalg.lstsq(x, y[a:b], rcond=None)
        want = ((y[a:b] - x @ coef) ** 2).sum(axis=0)
        # the cancellation of any sum-of-squares fit: relative to the segment's own sum
        tolerance = 1e-8 * float((y[a:b] ** 2).sum())
        assert cost.columns(np.array([a]), b)[0] == pytest.approx(want, abs=tolerance), (a, b)
    m = cost.matrix(350, 400)
    starts, ends = np.triu_indices(51, 1)
    assert np.allclose(m[starts, ends], cost(starts + 350, ends + 350), rtol=1e-9, atol=1e-9)
    assert np.isinf(m[np.tril_indices(51)]).all()
    scale = np.array([0.5, 2.0])
    assert np.allclose(
        cost.scaled(scale).columns(starts[:50] + 350, ends[:50] + 350),
        PolynomialCost(y * scale).columns(starts[:50] + 350, ends[:50] + 350),
    )


@pytest.mark.parametrize("degree", [1, 3, 6])
def test_polynomial_gram_table_equals_each_lengths_own_gram(degree):
    """The Gram matrices of every segment length, built at once from power sums, are each
    length's ``X^T X`` in its own time -- odd and even lengths, the one-frame segment, and a
    segment of 6,000 frames (an episode at 1 kHz) where summing powers of the frame offsets
    must not lose digits."""
    grams = changepoints_module._grams(degree, 6001)
    assert (grams[0] == 0).all()
    for length in [1, 2, 3, 4, 7, 8, 15, 64, 257, 6000]:
        u = (np.arange(length) - 0.5 * (length - 1)) / max(0.5 * (length - 1), 1.0)
        x = u[:, None] ** np.arange(degree + 1)
        want = x.T @ x
        assert np.allclose(grams[length], want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("paired", [False, True])
def test_polynomial_cost_keeps_its_digits_far_from_a_long_episodes_centre(paired):
    """6,000 frames at a signal-to-noise ratio of 500, in noise units: short and long segments
    at the start, the middle and the end cost what least squares leaves, to a tenth of a noise
    unit or 1e-5 of the misfit (one table over the episode was off by hundreds); an episode of
    512 frames or fewer is costed from its one table exactly as before."""
    rng = np.random.default_rng(12)
    t_len, degree = 6000, 6
    t = np.arange(t_len) / 25.0
    y = np.stack([np.sin(1.3 * t), np.cos(0.7 * t)], axis=1) * 500 + rng.normal(size=(t_len, 2))
    # a state that is no polynomial over a few frames (else the fit is degenerate there)
    z = np.stack([np.sin(0.4 * t), t / 10], axis=1) * 300 + rng.normal(size=(t_len, 2)) * 5
    z = z if paired else None
    cost = PolynomialCost(y, degree, z)
    assert cost.strides == [64, 256, 1024]
    for length in (9, 20, 64, 65, 300, 513, 2000):
        for a in (0, t_len // 2 - length // 2, t_len - length, 123):
            b = a + length
            u = np.linspace(-1.0, 1.0, length)
            x = u[:, None] ** np.arange(degree + 1)
            got = cost.columns(np.array([a]), b)[0]
            for d in range(2):
                xd = x if z is None else np.column_stack([x, z[a:b, d]])
                coef, *_ = np.linalg.lstsq(xd, y[a:b, d], rcond=None)
                want = float(((y[a:b, d] - xd @ coef) ** 2).sum())
                assert got[d] == pytest.approx(want, rel=1e-5, abs=0.1), (length, a, d)
    scale = np.array([0.5, 2.0])
    starts = np.arange(100, 5000, 37)
    assert np.allclose(
        cost.scaled(scale).columns(starts, starts + 50),
        PolynomialCost(y * scale, degree, z).columns(starts, starts + 50),
        rtol=1e-9,
        atol=1e-6,
    )
    short = PolynomialCost(y[:512], degree, None if z is None else z[:512])
    table = changepoints_module._PolynomialTable(y[:512], degree, None if z is None else z[:512])
    starts, ends = np.triu_indices(513, 1)
    assert not short.strides
    np.testing.assert_array_equal(short.columns(starts, ends), table.columns(starts, ends))


def test_polynomial_cost_keeps_its_digits_for_a_far_offset_small_range_command():
    """A hand held near 0.5 m and moved by millimetres, in units of its noise: values near
    2e5 that vary by 1e3. The smooth model's degree on a long episode must still get short
    segments right (it once priced two-frame segments at 1e9 and cut every frame)."""
    rng = np.random.default_rng(11)
    t_len, degree = 400, 6
    knots = [0, 90, 170, 260, 330, t_len]
    y = np.zeros((t_len, 2))
    for a, b in itertools.pairwise(knots):
        u = np.linspace(0.0, 1.0, b - a)
        y[a:b] = (u[:, None] ** np.arange(6)) @ rng.normal(size=(6, 2)) * 300.0
    y += 2.3e5
    cost = PolynomialCost(y, degree=degree)
    for a, b in [(376, 378), (100, 102), (0, 7), (393, 400), (380, 390), (200, 215), (0, 400)]:
        u = np.linspace(-1.0, 1.0, b - a)
        x = u[:, None] ** np.arange(degree + 1)
        coef, *_ = np.linalg.lstsq(x, y[a:b], rcond=None)
        want = ((y[a:b] - x @ coef) ** 2).sum(axis=0)
        centred = float(((y[a:b] - y[a:b].mean(axis=0)) ** 2).sum())
        got = cost.columns(np.array([a]), b)[0]
        assert got == pytest.approx(want, abs=1e-6 * centred + 1e-6), (a, b)
    assert (cost.columns(np.arange(390, 393), np.arange(390, 393) + degree + 1) == 0).all()
    penalty = 0.85 * (2 * (degree + 1) + 1) * np.log(t_len)
    assert pelt_between(cost, [0, t_len], penalty, 1) == knots[1:-1]


def test_polynomial_cost_with_a_paired_state_matches_least_squares():
    """Each column a polynomial in time plus its own paired regressor (a controller tracking a
    smooth reference): the Frisch-Waugh-Lovell residual equals the full least-squares fit's;
    a regressor that does not move on a segment adds nothing."""
    rng = np.random.default_rng(8)
    t_len = 300
    y = rng.normal(size=(t_len, 3)).cumsum(axis=0)
    z = rng.normal(size=(t_len, 3)).cumsum(axis=0) + 20.0
    z[100:140, 1] = 3.0  # held: the state of a blocked joint
    cost = PolynomialCost(y, degree=3, z_TD=z)
    assert cost.params == 5
    for a, b in [(0, 300), (10, 60), (280, 300), (100, 140), (95, 150), (5, 12)]:
        u = np.arange(a, b, dtype=np.float64)
        basis = (u[:, None] - u.mean()) ** np.arange(4)
        want = []
        for d in range(3):
            x = np.concatenate([basis, z[a:b, d : d + 1]], axis=1)
            coef, *_ = np.linalg.lstsq(x, y[a:b, d], rcond=None)
            want.append(float(((y[a:b, d] - x @ coef) ** 2).sum()))
        tolerance = 1e-8 * float((y[a:b] ** 2).sum()) + 1e-9
        assert cost.columns(np.array([a]), b)[0] == pytest.approx(want, abs=tolerance), (a, b)
    starts, ends = np.triu_indices(41, 1)
    m = cost.matrix(100, 140)
    assert np.allclose(m[starts, ends], cost(starts + 100, ends + 100), rtol=1e-9, atol=1e-9)
    scale = np.array([2.0, 0.5, 1.0])
    assert np.allclose(
        cost.scaled(scale).columns(starts + 100, ends + 100),
        PolynomialCost(y * scale, degree=3, z_TD=z).columns(starts + 100, ends + 100),
    )


def test_segment_without_traces_cuts_the_same():
    actions, states = p_controller([(1, 0, 0), (1, 1, 0), (0, 1, 1)], [30, 25, 30], seed=3)
    s = Signals(actions, fps=20.0, states_TS=states)
    full, lean = segment(s, SegmentConfig()), segment(s, SegmentConfig(), traces=False)
    assert lean.starts == full.starts and lean.boundaries == full.boundaries
    assert np.array_equal(lean.score_T, full.score_T)
    assert full.cues_CT and not lean.cues_CT


def test_weigh_cuts_gives_the_cuts_and_the_cost_segment_scores_them_by():
    actions, states = p_controller([(1, 0, 0), (1, 1, 0), (0, 1, 1)], [30, 25, 30], seed=3)
    s = Signals(actions, fps=20.0, states_TS=states)
    cfg = resolve(SegmentConfig(), [s])[0]
    weighed = weigh_cuts(s, cfg)
    assert weighed is not None
    cut = segment(s, cfg)
    assert [0, *weighed.points] == cut.starts  # no event over max_event_s: nothing split
    assert weighed.penalty == event_penalty(cfg, weighed.cost.dims, len(actions))
    covered = sorted(i for cols in weighed.columns.values() for i in range(weighed.cost.dims)[cols])
    assert covered == list(range(weighed.cost.dims))
    # each boundary's confidence is its gain on this cost, in penalty units
    ends = np.array([*cut.starts, len(actions)])
    gain = weighed.cost(ends[:1], ends[2]) - weighed.cost(ends[:2], ends[1:3]).sum()
    assert cut.boundaries[0].confidence == pytest.approx(1 - np.exp(-gain[0] / weighed.penalty))
    # nothing to weigh: constant commands
    assert weigh_cuts(Signals(np.ones((40, 3)), fps=20.0), cfg) is None


def p_controller(goals, steps, wall=np.inf, gain=4.0, noise=0.05, seed=0, limit=np.inf):
    """A proportional controller steering a 3-D point to each goal in turn.

    The point cannot pass ``wall`` in x: pressing against it, the commands stall at a constant
    value while the goal stays the same -- a contact, not a new event. Commands are clipped at
    ``+-limit`` before and after the noise (a saturating actuator, as MetaWorld's experts).
    """
    rng = np.random.default_rng(seed)
    x, states, actions = np.zeros(3), [], []
    for goal, n in zip(goals, steps, strict=True):
        for _ in range(n):
            a = np.clip(gain * (np.asarray(goal, float) - x), -limit, limit)
            a = np.clip(a + rng.normal(0, noise, 3), -limit, limit)
            states.append(x.copy())
            actions.append(a)
            x = x + 0.05 * a
            x[0] = min(x[0], wall)
    return np.asarray(actions, np.float32), np.asarray(states, np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_state_feedback_cuts_at_new_goals_not_at_deceleration_or_contact(seed):
    goals = [[0.2, 0.1, 0.0], [0.5, 0.1, 0.15]]
    actions, states = p_controller(goals, [60, 80], wall=0.35, seed=seed)
    sig = Signals(actions, fps=20.0, states_TS=states)
    feedback = segment(sig, SegmentConfig(penalty=0.7))
    assert match_boundaries(feedback.starts, [0, 60], len(actions), tolerance=2).f1 == 1.0
    # A line in time cannot follow the exponential approach and the stall at the wall.
    in_time = segment(sig, SegmentConfig(action_model="time", penalty=0.7))
    assert len(in_time.starts) > len(feedback.starts)
    # Without states the default falls back to the line-in-time model, through the same path.
    no_states = segment(Signals(actions, fps=20.0), SegmentConfig(penalty=0.7))
    assert no_states.starts == in_time.starts


def converge_then_hold(hold_frames: int, noise: float = 0.0, seed: int = 0):
    """A noise-free P-controller reaching one goal, then a second it has nearly reached when
    its commands freeze at zero for ``hold_frames`` (the state stays): Jaco's expert's end."""
    actions, states = p_controller([[0.3, 0.2, 0.1], [0.5, -0.1, 0.2]], [40, 16], noise=0.0)
    still = np.repeat(states[-1:] + 0.05 * actions[-1:], hold_frames, 0)
    actions = np.concatenate([actions, np.zeros((hold_frames, 3), np.float32)])
    states = np.concatenate([states, still])
    rng = np.random.default_rng(seed)
    return Signals(actions + rng.normal(0, noise, actions.shape), 20.0, states), 56


def test_a_final_hold_is_an_event_however_small_the_change_into_it():
    sig, freeze = converge_then_hold(12)
    # The commands were within 3 % of their range of zero when they froze: far below the
    # 10 % the noise-free cost resolves, so only the hold itself tells the expert stopped.
    assert np.abs(sig.actions_TA[freeze - 1]).max() < 0.03 * np.ptp(sig.actions_TA, axis=0).max()
    cut = segment(sig, SegmentConfig())
    assert cut.starts == [0, 40, freeze]
    last = cut.boundaries[-1]
    assert (last.frame, last.cues[0], last.confidence) == (freeze, "hold", 1.0)
    # The same motion without the hold (it goes on converging) has no cut there.
    actions, states = p_controller([[0.3, 0.2, 0.1], [0.5, -0.1, 0.2]], [40, 28], noise=0.0)
    assert segment(Signals(actions, 20.0, states), SegmentConfig()).starts == [0, 40]
    # A hold shorter than 0.2 s is no event; noisy commands never hold exactly.
    assert segment(converge_then_hold(3)[0], SegmentConfig()).starts == [0, 40]
    noisy = segment(converge_then_hold(12, noise=0.01)[0], SegmentConfig())
    assert all("hold" not in b.cues for b in noisy.boundaries)


def test_the_final_hold_takes_the_cost_s_own_cut_next_to_it():
    seg_module = importlib.import_module("wallwm.pipeline.segmentation.segment")
    with_final_hold = seg_module.with_final_hold  # 20 Hz: 0.05 s is one frame
    assert with_final_hold([40], 56, 20.0, 80, 1) == ([40, 56], 56)
    # the cost cut a frame off the freeze (either side): that cut is the hold's, none added
    assert with_final_hold([40, 57], 56, 20.0, 80, 1) == ([40, 57], 57)
    assert with_final_hold([40, 55], 56, 20.0, 80, 1) == ([40, 55], 55)
    assert with_final_hold([40, 53], 56, 20.0, 80, 1) == ([40, 53, 56], 56)
    # no event shorter than min_event_s: a cut closer than that is the hold's; a short hold none
    assert with_final_hold([40, 52], 56, 20.0, 80, 6) == ([40, 52], 52)
    assert with_final_hold([40], 76, 20.0, 80, 6) == ([40], None)
    assert with_final_hold([40], None, 20.0, 80, 1) == ([40], None)


def test_bent_line_cost_fits_a_bend_but_not_a_jump():
    z = np.linspace(0.0, 1.0, 40)[:, None]
    knot, zk = 20, z[20, 0]
    bend = np.where(z < zk, 1.0, 1.0 - 3.0 * (z - zk))  # saturated, then following the state
    assert bent_line_cost(bend, z, knot) == pytest.approx(0.0, abs=1e-9)
    jump = np.where(z < zk, 1.0, -0.5 - 3.0 * (z - zk))
    assert bent_line_cost(jump, z, knot) > 1.0
    assert LinearCost(jump, z)(np.array([0]), knot)[0] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_saturation_knees_are_not_events(seed):
    """Far goals saturate the commands at the limit; leaving the limit is a bend, not a cut."""
    goals = [[1.2, 0.1, 0.05], [1.0, 0.35, 0.2]]
    actions, states = p_controller(goals, [70, 90], gain=6.0, noise=0.1, seed=seed, limit=1.0)
    assert (actions[:15, 0] == 1.0).mean() > 0.3  # the controller starts saturated
    sig = Signals(actions, fps=20.0, states_TS=states)
    seg = segment(sig, SegmentConfig())
    assert match_boundaries(seg.starts, [0, 70], len(actions), tolerance=2).f1 == 1.0
    unmerged = segment(sig, SegmentConfig(merge_bends=False))
    assert len(unmerged.starts) > len(seg.starts)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_knees_of_different_dims_at_different_times_are_not_events(seed):
    """One goal, far on x, nearer on y and z: each dim leaves its limit at its own frame."""
    actions, states = p_controller([(2.5, 1.2, -0.8)], [110], gain=4.0, seed=seed, limit=1.0)
    sig = Signals(actions, fps=20.0, states_TS=states)
    assert segment(sig, SegmentConfig()).starts == [0]
    # Without the bend test the knees are cut (z's ~12, y's ~20, x's ~46): the test can fail.
    assert len(segment(sig, SegmentConfig(merge_bends=False)).starts) >= 3


def one_command_changes(seed, jump=2.5, drift_rho=0.0, t_len=60, b=30):
    """Four unit-noise commands, each affine in a moving state; three leave their limit at
    their own frame (10, 16, 44), the third command's goal moves at ``b`` (its intercept jumps
    by ``jump``) -- what a new sub-goal on one axis looks like while the others carry on. With
    ``drift_rho`` the noise is AR(1) of that coefficient (unit variance) instead of white."""
    rng = np.random.default_rng(seed)
    t = np.arange(t_len, dtype=float)
    ys, zs = [], []
    for knee in (10, 16, 44):
        z = t / t_len + 0.3 * np.sin(t / 7.0)
        ys.append(np.where(t < knee, 8.0, 8.0 - 30.0 * (z - z[knee])))
        zs.append(z)
    z2 = t / t_len + 0.4 * np.cos(t / 11.0)
    ys.insert(2, 5.0 * z2 + np.where(t < b, 0.0, jump))
    zs.insert(2, z2)
    noise = rng.normal(0.0, 1.0, (t_len, 4))
    if drift_rho:
        for i in range(1, t_len):
            noise[i] = drift_rho * noise[i - 1] + np.sqrt(1 - drift_rho**2) * noise[i]
    y, z = np.stack(ys, axis=1) + noise, np.stack(zs, axis=1)
    return ChannelFit(LinearCost(y, z), y, z, np.ones(4, bool), 0.85 * np.log(t_len), 20.0)


def test_a_boundary_one_command_changes_at_stays_though_the_others_bend_elsewhere():
    """The bend test judged every column in one sum: the three commands whose knees lie
    elsewhere in the event (which the cut's straight lines cannot follow) outweighed the one
    whose goal moved, and the boundary was dropped in 20 of 20 draws (robosuite's Panda lost
    its arrivals above the cube so). Each column judged alone, the changed command earns it;
    without the jump, or with a drifting noise in its place, nothing does."""
    kept = [merge_bends(one_command_changes(seed), [0, 30], set()) for seed in range(20)]
    assert sum(points == [0, 30] for points in kept) >= 18
    still = [merge_bends(one_command_changes(seed, jump=0.0), [0, 30], set()) for seed in range(20)]
    assert all(points == [0] for points in still)
    drift = [
        merge_bends(one_command_changes(seed, jump=0.0, drift_rho=0.8), [0, 30], set())
        for seed in range(20)
    ]
    assert all(points == [0] for points in drift)


def test_a_columns_evidence_is_weighed_at_its_residuals_persistence():
    """White noise keeps its weight; AR(1) noise of 0.8 is worth (1 - 0.8) / (1 + 0.8) of it
    (its split gains are inflated by the long-run variance); a residual that is the model's
    slow misfit is worth almost nothing alone."""
    rng = np.random.default_rng(3)
    t_len = 4000
    white = rng.normal(0.0, 1.0, t_len)
    drift = white.copy()
    for i in range(1, t_len):
        drift[i] = 0.8 * drift[i - 1] + 0.6 * white[i]
    misfit = np.sin(np.arange(t_len) / 40.0)
    y = np.stack([white, drift, misfit], axis=1)
    rho = residual_persistence(y, frame_index(t_len, 3), [0, 2000, t_len])
    assert rho[0] == pytest.approx(0.0, abs=0.05) and rho[1] == pytest.approx(0.8, abs=0.03)
    assert rho[2] > 0.95
    weight = persistence_weights(rho)
    assert weight[0] > 0.9 and weight[1] == pytest.approx(0.2 / 1.8, abs=0.02)
    assert weight[2] < 0.03
    assert persistence_weights(np.array([0.0]))[0] == 1.0


def test_bent_line_costs_match_the_fit_at_each_knot():
    rng = np.random.default_rng(5)
    y, z = rng.normal(size=(30, 2)), rng.normal(size=(30, 2)).cumsum(axis=0)
    knots = np.arange(30)
    got = bent_line_costs(y, z, knots)
    for k in knots:
        for d in range(2):
            u = z[:, d] - z[k, d]
            x = np.stack([np.ones(30), u * (np.arange(30) < k), u * (np.arange(30) >= k)], 1)
            coef, *_ = np.linalg.lstsq(x, y[:, d], rcond=None)
            want = float(np.sum((y[:, d] - x @ coef) ** 2))
            assert got[k, d] == pytest.approx(want, rel=1e-7, abs=1e-9)


def test_measured_gripper_is_ignored_when_the_action_commands_the_gripper():
    """The opening settling under a constant command is no event; with no command it counts."""
    rng = np.random.default_rng(0)
    t_len = 80
    actions = np.concatenate(
        [rng.normal(0, 0.1, (t_len, 3)), np.ones((t_len, 1))], axis=1
    )  # a constant 'close' command
    opening = np.concatenate([np.linspace(1.0, 0.2, 20), np.full(t_len - 20, 0.2)])[:, None]
    with_command = Signals(actions, 20.0, gripper_TG=opening, gripper_action_dims=[3])
    assert segment(with_command, SegmentConfig()).starts == [0]
    measured_only = Signals(actions[:, :3], 20.0, gripper_TG=opening)
    cut = segment(measured_only, SegmentConfig()).starts
    assert match_boundaries(cut, [0, 20], t_len, tolerance=3).f1 == 1.0


def test_two_level_gripper_switches_always_start_events():
    """A bimanual 14-D robot: smooth joint targets, each gripper closing at its own time."""
    rng = np.random.default_rng(0)
    t = np.arange(30)
    actions = np.sin(np.arange(14)[None, :] + t[:, None] / 6.0)
    actions[:, 6] = (t > 10).astype(float)  # left gripper closes
    actions[:, 13] = (t > 20).astype(float)  # right gripper closes
    actions[15, 13] = 1.0  # a one-step flicker is not an event
    states = actions + rng.normal(0, 0.01, actions.shape)
    sig = Signals(actions, 15.0, states, states[:, [6, 13]], gripper_action_dims=[6, 13])
    assert gripper_flips(sig, min_len=1) == [11, 21]
    seg = segment(sig, SegmentConfig())
    assert seg.starts == [0, 11, 21]  # the smooth joint motion follows the states: no cut
    assert all(b.cues[0] == "gripper" and b.confidence == 1.0 for b in seg.boundaries)
    continuous = actions.copy()
    continuous[:, 6] = np.linspace(0, 1, 30)  # a gripper position ramp is not two-level
    assert gripper_flips(Signals(continuous, 15.0, gripper_action_dims=[6]), 1) == []


@pytest.mark.parametrize("seed", range(6))
def test_a_binary_gripper_command_adds_its_switch_and_nothing_else(seed):
    """Cut at its switch, a binary command is no cost channel: the motion cuts stay as without it.

    Were it a channel, every other cut would pay for two more parameters (its re-fitted level)
    and a one-axis sub-goal switch near the penalty would be lost.
    """
    goals = [[0.2, 0.1, 0.3], [0.2, 0.1, 0.0], [0.5, 0.4, 0.0]]  # above, descend on z, carry
    motion, states = p_controller(goals, [25, 20, 35], noise=0.3, seed=seed, limit=1.0)
    grip = (np.arange(80) >= 45).astype(np.float32)[:, None]  # closes as the carry starts
    with_grip = Signals(np.hstack([motion, grip]), 20.0, states, gripper_action_dims=[3])
    alone = Signals(motion, 20.0, states)
    assert "gripper" not in channel_groups(with_grip, SegmentConfig())
    expected = sorted({*segment(alone, SegmentConfig()).starts, 45})
    assert segment(with_grip, SegmentConfig()).starts == expected
    cues = segment(with_grip, SegmentConfig()).cues_CT["gripper"]
    assert cues[45] == 1.0 and cues.sum() == 1.0  # the plot still shows the switch
    graded = np.hstack([motion, np.linspace(0, 1, 80, dtype=np.float32)[:, None]])
    assert "gripper" in channel_groups(
        Signals(graded, 20.0, states, gripper_action_dims=[3]), SegmentConfig()
    )


def colored_controller(seed, rho=0.8, innovation=0.05, t_len=150):
    """A controller switching goal at frame 75, its commands with AR(1) noise (a hand's tremor).

    Frame-to-frame jitter (what :func:`noise_sigma` measures) is only the innovation; the noise
    drifts over many frames, which no line in the state follows.
    """
    rng = np.random.default_rng(seed)
    x, e, states, actions = np.zeros(3), np.zeros(3), [], []
    for t in range(t_len):
        goal = np.array([0.3, 0.2, 0.1]) if t < t_len // 2 else np.array([0.5, 0.4, 0.1])
        e = rho * e + rng.normal(0, innovation, 3)
        states.append(x.copy())
        actions.append(4.0 * (goal - x) + e)
        x = x + 0.05 * actions[-1]
    return Signals(np.asarray(actions, np.float32), 20.0, np.asarray(states, np.float32))


def test_cuts_are_weighed_at_the_noise_the_events_leave():
    """The refit, on the line model's own prices (two parameters a command an event).

    With the shared gain a new event costs one parameter a command, and a drift of the noise
    that moves the line's intercept for a second or more can pay for it: 3 false cuts in these
    8 episodes (BENCHMARKS.md, the shared gain), the price of the recall it buys.
    """
    lines = SegmentConfig(shared_gain=False)
    sigs = [colored_controller(seed) for seed in range(8)]
    refit = [segment(s, lines).starts for s in sigs]
    assert all(starts == [0, 75] for starts in refit)
    # Weighed at the jitter level alone, the drifting noise pays for cuts of its own.
    once = [segment(s, lines.model_copy(update={"refit_noise": False})).starts for s in sigs]
    assert sum(len(starts) - 2 for starts in once) >= 2
    # The excess is a variance ratio, never below one (the jitter level is a floor).
    y = np.random.default_rng(0).normal(0, 1, (200, 2)) * [1.0, 3.0]
    excess = residual_excess(LinearCost(y), y, frame_index(200, 2), [0, 200])
    assert excess[0] == 1.0 and 7.0 < excess[1] < 11.0


@pytest.mark.parametrize("block", [2, 7, 64])
def test_pelt_by_blocks_of_ends_is_pelt_end_by_end(block, monkeypatch):
    """Costing a block of ends at once changes no cut: the same optimum, ties and pruning."""
    rng = np.random.default_rng(block)
    for trial in range(12):
        t_len, dims = int(rng.integers(30, 700)), int(rng.integers(1, 5))
        knots = sorted({int(k) for k in rng.integers(1, t_len, int(rng.integers(0, 9)))})
        y = np.concatenate(
            [
                rng.normal(0, 3, dims) + np.arange(b - a)[:, None] * rng.normal(0, 0.05, dims)
                for a, b in itertools.pairwise([0, *knots, t_len])
            ]
        ) + rng.normal(0, 1, (t_len, dims))
        if trial % 3 == 0:  # ties: a constant stretch costs nothing however it is cut
            y[: t_len // 5] = 0.0
        z = np.cumsum(y, axis=0) * 0.01
        cost = [
            LinearCost(y),
            LinearCost(y, z),
            PolynomialCost(y, 3),
            LocalNoiseCost(PolynomialCost(y, 3, z), 1.0 + rng.random((t_len, dims))),
        ][trial % 4]
        min_len = int(rng.choice([1, 2, 5]))
        penalty = float(rng.choice([1.0, 10.0, 60.0])) * np.log(t_len)
        monkeypatch.setattr(changepoints_module, "PELT_BLOCK", 1)  # one end at a time
        end_by_end = pelt(cost, t_len, penalty, min_len)
        monkeypatch.setattr(changepoints_module, "PELT_BLOCK", block)
        assert pelt(cost, t_len, penalty, min_len) == end_by_end, (trial, block)


@pytest.mark.parametrize("min_len", [1, 4])
def test_dense_partition_and_pelt_find_the_same_optimum(min_len, monkeypatch):
    x = piecewise([[0, 0, 0], [1, 0, 0], [1, 1, -1], [0, 1, 0]], [30, 7, 40, 23], noise=0.3)
    y = x.astype(np.float64) / noise_sigma(x.astype(np.float64))
    cost, penalty = LinearCost(y), 7 * np.log(len(y))
    dense = optimal_partition(cost.matrix(0, len(y)), penalty, min_len)
    assert dense == pelt(cost, len(y), penalty, min_len) and dense
    actions, states = p_controller([[0.2, 0.1, 0.0], [0.5, 0.1, 0.15]], [60, 80], wall=0.35)
    sig = Signals(actions, fps=20.0, states_TS=states)
    short = segment(sig, SegmentConfig(min_event_s=min_len / 20))
    monkeypatch.setattr(changepoints_module, "DENSE_MAX_CELLS", 0)  # long episodes take PELT
    assert segment(sig, SegmentConfig(min_event_s=min_len / 20)).starts == short.starts


def test_a_cue_window_wider_than_the_episode_keeps_every_trace_to_its_frames():
    """A short episode at a high frame rate: the pause cue's window (0.1 s) spans 200 frames of
    a 40-frame episode. Every trace must still have one value per frame (its smoothing returned
    the window's length), and a window past the episode's length must cost no more than one
    of it (an fps of 1e6 took 10 s per episode)."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(40, 3)).cumsum(axis=0)
    for fps in (2000.0, 1e6):
        seg = segment(Signals(a, fps, a.copy()), SegmentConfig(action_model="time"))
        assert {len(trace) for trace in seg.cues_CT.values()} == {40}
        assert len(seg.score_T) == 40 and seg.ends[-1] == 40


def test_a_state_vector_of_no_dims_is_no_state_vector():
    """A source may store states (or gripper values) with zero columns: the same as none, in
    the model choice (whose pairing took an argmax over no states) and the cut."""
    rng = np.random.default_rng(4)
    a = np.repeat(rng.normal(size=(5, 3)), 30, axis=0) + rng.normal(0, 0.05, (150, 3))
    empty = Signals(a, 20.0, np.zeros((150, 0)), gripper_TG=np.zeros((150, 0)))
    assert empty.states_TS is None and empty.gripper_TG is None
    cfg, choice = resolve(SegmentConfig(), [empty])
    plain_cfg, plain_choice = resolve(SegmentConfig(), [Signals(a, 20.0)])
    assert choice.as_dict() == plain_choice.as_dict()
    assert (
        segment(empty, cfg).starts
        == segment(Signals(a, 20.0), plain_cfg).starts
        == [0, 30, 60, 90, 120]
    )


def test_scores_with_nothing_matched_are_strict_json():
    """No true boundary matched: the mean offset is None, not NaN (``json.loads`` of NaN works
    in Python, but jq and every strict parser refuse ``wallwm eval segmentation --json``)."""
    import json

    none_matched = match_boundaries([0, 10, 20], [0], 30, 3)
    out = json.dumps(none_matched.as_dict(), allow_nan=False)
    assert json.loads(out)["mean_offset_frames"] is None
    matched = match_boundaries([0, 11], [0, 10], 30, 3).as_dict()
    assert matched["mean_offset_frames"] == 1.0


def test_matched_truths_says_which_boundaries_were_found():
    from wallwm.pipeline.segmentation.evaluate import matched_truths

    # closest pairs first: 21 takes 20, 10 takes 12; 50 and 40 find nothing within 3 frames
    score, found = matched_truths([10, 21, 50], [12, 20, 40], num_frames=100, tolerance=3)
    assert found == {12, 20} and (score.true_positives, score.predicted, score.actual) == (2, 3, 3)
    assert score == match_boundaries([10, 21, 50], [12, 20, 40], 100, 3)
    # the episode's ends are no boundaries on either side
    assert matched_truths([0, 100], [0, 100], 100, 3)[1] == set()
