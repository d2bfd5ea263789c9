"""The frame-rate benchmark's bookkeeping: which frames a lower-rate logger keeps, where each
expert decision lands among them, and the event lengths it reports."""

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
