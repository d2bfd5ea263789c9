"""The frame-rate benchmark's bookkeeping: which frames a lower-rate logger keeps, where each
expert decision lands among them, the event lengths it reports, and a recording resampled at a
higher rate (its decisions' jumps where they were)."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest

from wallwm.pipeline.segmentation import Signals


@pytest.fixture(scope="module")
def rates(benchmark_script: Callable[[str], ModuleType]) -> ModuleType:
    return benchmark_script("segmentation_rates")


def episode(frames: int, truth: list[int]) -> dict[str, object]:
    t = np.arange(frames, dtype=float)
    signals = Signals(
        actions_TA=np.stack([t, -t], axis=1),
        fps=80.0,
        states_TS=t[:, None] * 2.0,
        gripper_TG=(t[:, None] > 50).astype(float),
    )
    return {"key": "k", "task": "t", "signals": signals, "frames": frames, "truth": truth}


def test_every_kth_frame_is_kept_with_the_rate_divided(rates):
    (ep,) = rates.decimated([episode(100, [40])], 8)
    s = ep["signals"]
    assert s.fps == 10.0 and ep["frames"] == 13 == len(s.actions_TA) == len(s.states_TS)
    np.testing.assert_array_equal(s.actions_TA[:, 0], np.arange(0, 100, 8))
    np.testing.assert_array_equal(s.gripper_TG[:, 0], np.arange(0, 100, 8) > 50)
    assert s.motion_T is None


def test_decisions_land_on_the_first_kept_frame_at_or_after_them_once(rates):
    # 40 is kept itself (5); 41 and 47 both land on 48 (6) and count once; 3 lands on 8 (1);
    # 97 would land past the last kept frame (96) and is dropped
    (ep,) = rates.decimated([episode(100, [3, 40, 41, 47, 97])], 8)
    assert ep["truth"] == [1, 5, 6]


def test_every_one_is_the_recording_itself(rates):
    eps = [episode(30, [10])]
    assert rates.decimated(eps, 1) is eps


def test_event_frames_is_the_median_true_event_length(rates):
    eps = [episode(30, [10, 14]), episode(20, [5])]
    # lengths 10, 4, 16 and 5, 15 -> median 10
    assert rates.event_frames(eps) == 10.0


def test_resampling_is_smooth_within_events_and_jumps_at_decisions(rates):
    t = np.arange(20, dtype=float)
    # a ramp that turns into a level at frame 10 (a decision), and a two-level finger command
    command = np.where(t < 10, 0.1 * t**2, 50.0)
    finger = np.where(t < 10, -5.0, 5.0)
    s = Signals(np.stack([command, finger], axis=1), fps=25.0, states_TS=t[:, None])
    up = rates.resampled(s, 4, [10])
    assert up.fps == 100.0 and len(up.actions_TA) == 77 == len(up.states_TS)
    a = up.actions_TA
    np.testing.assert_allclose(a[::4, 0], command)  # the recorded samples are kept
    np.testing.assert_allclose(a[:37, 0], 0.1 * (np.arange(37) / 4) ** 2, atol=1e-9)  # a cubic
    assert (a[40:, 0] == 50.0).all()  # no ringing after the jump at frame 10 (40 at 4x)
    assert set(a[:, 1]) == {-5.0, 5.0} and (a[:40, 1] == -5.0).all() and (a[40:, 1] == 5.0).all()


def test_upsampled_truth_stays_at_the_same_instants(rates):
    (ep,) = rates.upsampled([episode(30, [10, 20])], 0.5)
    assert ep["signals"].fps == 160.0 and ep["frames"] == 59 == len(ep["signals"].actions_TA)
    assert ep["truth"] == [20, 40]
