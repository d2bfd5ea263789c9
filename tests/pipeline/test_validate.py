"""Pure validation rules (no I/O)."""

from __future__ import annotations

import numpy as np
import pytest

from wallwm.pipeline.sources.base import (
    BadSignalError,
    CameraInfo,
    EpisodeRecord,
    EpisodeRef,
    FrameCountError,
    MissingFieldError,
)
from wallwm.pipeline.validate import validate_cameras, validate_record, validate_signals


def record(t=10, **kw):
    ref = EpisodeRef("src", "folder", "ep0", ("/data/ep0/steps.parquet",))
    base = {
        "ref": ref,
        "fps": 10.0,
        "instruction": "do it",
        "robot": None,
        "actions_TA": np.zeros((t, 3), np.float32),
        "cameras": [],
        "states_TS": np.zeros((t, 2), np.float32),
        "probed": [CameraInfo("top", "/data/ep0/top.mp4", 1, "h264", 8, 8, t)],
    }
    base.update(kw)
    return EpisodeRecord(**base)


def test_valid_record_passes():
    validate_record(record(), frame_tolerance=0)


@pytest.mark.parametrize(
    "frames,tol,ok", [(10, 0, True), (11, 0, False), (11, 1, True), (8, 1, False)]
)
def test_frame_count_tolerance(frames, tol, ok):
    rec = record(probed=[CameraInfo("top", "/data/ep0/top.mp4", 1, "h264", 8, 8, frames)])
    if ok:
        validate_record(rec, tol)
    else:
        with pytest.raises(FrameCountError, match=f"{frames} frames but the episode has 10"):
            validate_record(rec, tol)


def test_non_finite_actions_name_frame_and_dim():
    actions = np.zeros((10, 3), np.float32)
    actions[4, 1] = np.inf
    with pytest.raises(BadSignalError, match="first at frame 4, dimension 1") as err:
        validate_record(record(actions_TA=actions), 0)
    assert err.value.file == "/data/ep0/steps.parquet"


@pytest.mark.parametrize("instruction", [None, "", "   "])
def test_missing_instruction(instruction):
    with pytest.raises(MissingFieldError, match="missing instruction"):
        validate_record(record(instruction=instruction), 0)


def test_state_rows_must_match_actions():
    with pytest.raises(BadSignalError, match="states have 9 rows"):
        validate_record(record(states_TS=np.zeros((9, 2), np.float32)), 0)


def test_empty_episode_and_bad_fps():
    with pytest.raises(BadSignalError, match="no action rows"):
        validate_record(record(t=0, states_TS=None, probed=[]), 0)
    with pytest.raises(BadSignalError, match="fps"):
        validate_record(record(fps=0.0), 0)


def test_ground_truth_must_be_sorted_and_inside():
    with pytest.raises(BadSignalError, match="ground-truth"):
        validate_record(record(gt_events=[(0, "a"), (12, "b")]), 0)


def test_signals_and_cameras_are_checked_apart():
    """The fused ingest checks the signals before it cuts (nothing probed) and the cameras after."""
    short_camera = [CameraInfo("top", "/data/ep0/top.mp4", 1, "h264", 8, 8, 7)]
    validate_signals(record(probed=short_camera))  # the video is not its business
    with pytest.raises(FrameCountError, match="7 frames"):
        validate_cameras(record(probed=short_camera), 1)
    validate_cameras(record(actions_TA=np.full((10, 3), np.nan, np.float32)), 0)
    with pytest.raises(BadSignalError, match="non-finite"):
        validate_signals(record(actions_TA=np.full((10, 3), np.nan, np.float32)))


def test_timestamps_one_per_row_finite_and_never_going_back():
    validate_record(record(timestamps_s=np.array([0.0, 0.1, 0.1, *np.arange(3, 10) / 10])), 0)
    stamps = np.arange(10) / 10.0
    stamps[6] = 0.2
    with pytest.raises(BadSignalError, match=r"go back at frame 6 \(0.2 s after 0.5 s\)"):
        validate_record(record(timestamps_s=stamps), 0)
    with pytest.raises(BadSignalError, match="timestamp at frame 3 is not finite"):
        validate_record(record(timestamps_s=np.where(np.arange(10) == 3, np.nan, stamps)), 0)
    with pytest.raises(BadSignalError, match="timestamps have 9 rows"):
        validate_record(record(timestamps_s=np.arange(9) / 10.0), 0)


def test_an_episode_without_rows_says_so_whatever_its_width():
    with pytest.raises(BadSignalError, match="no action rows"):  # a parquet of no rows
        validate_record(record(t=0, actions_TA=np.zeros((0, 0), np.float32), probed=[]), 0)
