"""The split test of ``benchmarks/segmentation_bound.py``: its gains and its threshold sweep.

The figures it reports (BENCHMARKS.md) rest on two pieces of bookkeeping tested here: which
cuts count as a true boundary's gain and which as a true event's null, and the F1 of the best
threshold over both.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest

from wallwm.pipeline.segmentation import SegmentConfig, Signals, weigh_cuts
from wallwm.pipeline.segmentation.selection import resolve


@pytest.fixture(scope="module")
def bound(benchmark_script: Callable[[str], ModuleType]) -> ModuleType:
    return benchmark_script("segmentation_bound")


def steps(levels: list[float], lengths: list[int], noise: float, seed: int = 0) -> Signals:
    """A 2-D command holding each level for its length, with Gaussian noise; no states."""
    rng = np.random.default_rng(seed)
    x = np.repeat(np.asarray(levels, float), lengths)[:, None] * np.array([1.0, -0.5])
    return Signals(x + rng.normal(0, noise, x.shape), fps=20.0)


def test_clear_steps_give_gains_far_above_every_null(bound):
    s = steps([0.0, 1.0, -1.0], [40, 40, 40], noise=0.02)
    cfg = resolve(SegmentConfig(), [s])[0]
    weighed = weigh_cuts(s, cfg)
    true_gains, nulls, forced = bound.gains(weighed, [0, 40, 80], 120)
    assert forced == 0 and len(true_gains) == 2
    assert len(nulls) == 3  # one per true event
    assert min(true_gains) > 10 * max(nulls)
    best = bound.best_threshold(true_gains, nulls, forced)
    assert best["f1"] == 1.0 and best["recall"] == 1.0 and best["precision"] == 1.0


def test_a_boundary_the_cost_cannot_see_lowers_the_best_f1(bound):
    # the second "boundary" changes nothing: its gain is noise, like the nulls
    s = steps([0.0, 1.0, 1.0], [40, 40, 40], noise=0.05)
    cfg = resolve(SegmentConfig(), [s])[0]
    weighed = weigh_cuts(s, cfg)
    true_gains, nulls, forced = bound.gains(weighed, [0, 40, 80], 120)
    assert true_gains[0] > 10 * true_gains[1]
    best = bound.best_threshold(true_gains, nulls, forced)
    assert best["f1"] < 1.0


def test_threshold_sweep_counts_gripper_boundaries_as_found(bound):
    best = bound.best_threshold([5.0, 0.1], [1.0, 0.2, 0.3], forced=2)
    # threshold between 1.0 and 5.0: three of four found (two gripper), no false cut
    assert best["recall"] == pytest.approx(0.75) and best["precision"] == 1.0
    assert best["f1"] == pytest.approx(6 / 7)
