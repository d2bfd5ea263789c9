"""Pure validation of one episode record (no I/O; every rule names the file at fault)."""

from __future__ import annotations

import numpy as np

from wallwm.pipeline.sources.base import (
    BadSignalError,
    EpisodeRecord,
    FloatArray,
    FrameCountError,
    MissingFieldError,
)


def _check_finite(values: FloatArray, what: str, file: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        frame, col = (int(i) for i in np.argwhere(bad)[0])
        raise BadSignalError(
            file,
            f"{what} contain {int(bad.sum())} non-finite values (NaN/inf); first at frame {frame}, "
            f"dimension {col}",
            "NonFiniteValues",
        )


def _check_series(values: FloatArray | None, num_frames: int, what: str, file: str) -> None:
    if values is None:
        return
    if values.ndim != 2:
        raise BadSignalError(file, f"{what} must be (frames, dims), got shape {values.shape}")
    if values.shape[0] != num_frames:
        raise BadSignalError(
            file, f"{what} have {values.shape[0]} rows but actions have {num_frames}"
        )
    _check_finite(values, what, file)


def _check_timestamps(stamps: np.ndarray | None, num_frames: int, file: str) -> None:
    """Per-frame timestamps, where given: one per action row, finite, never going back."""
    if stamps is None:
        return
    if len(stamps) != num_frames:
        raise BadSignalError(
            file, f"timestamps have {len(stamps)} rows but actions have {num_frames}"
        )
    if not np.isfinite(stamps).all():
        frame = int(np.flatnonzero(~np.isfinite(stamps))[0])
        raise BadSignalError(file, f"timestamp at frame {frame} is not finite", "BadTimestamps")
    back = np.flatnonzero(np.diff(stamps) < 0)
    if back.size:
        frame = int(back[0]) + 1
        raise BadSignalError(
            file,
            f"timestamps go back at frame {frame} ({stamps[frame]:g} s after "
            f"{stamps[frame - 1]:g} s)",
            "BadTimestamps",
        )


def validate_record(record: EpisodeRecord, frame_tolerance: int) -> None:
    """Check one probed episode; raise an :class:`EpisodeError` subclass on the first problem.

    Args:
        record: The episode, with ``probed`` cameras filled in.
        frame_tolerance: Largest accepted ``|video frames - action rows|`` per camera. Encoders
            and recorders commonly drop or duplicate the final frame, so 1 is the default; the
            stored ``num_frames`` is always the number of action rows.
    """
    validate_signals(record)
    validate_cameras(record, frame_tolerance)


def validate_signals(record: EpisodeRecord) -> None:
    """The checks that need no video: fps, actions, states, grippers, instruction, ground truth.

    The fused ingest runs them before it cuts an episode (the cut reads only these) and
    :func:`validate_cameras` once the cameras are probed.
    """
    file = record.ref.files[0] if record.ref.files else record.ref.source_uri
    if not (np.isfinite(record.fps) and record.fps > 0):
        raise BadSignalError(file, f"fps must be a positive number, got {record.fps!r}", "BadFps")
    actions = record.actions_TA
    if actions.ndim >= 1 and actions.shape[0] == 0:
        raise BadSignalError(file, "episode has no action rows", "EmptyEpisode")
    if actions.ndim != 2 or actions.shape[1] == 0:
        raise BadSignalError(file, f"actions must be (frames, dims), got shape {actions.shape}")
    num_frames = int(actions.shape[0])
    _check_finite(actions, "actions", file)
    _check_series(record.states_TS, num_frames, "states", file)
    _check_series(record.gripper_TG, num_frames, "gripper values", file)
    _check_timestamps(record.timestamps_s, num_frames, file)
    if not (record.instruction or "").strip():
        raise MissingFieldError(
            file,
            "missing instruction (give one in the source or with --instruction)",
            "MissingInstruction",
        )
    if record.gt_events:
        starts = [s for s, _ in record.gt_events]
        if any(s < 0 or s >= num_frames for s in starts) or starts != sorted(starts):
            raise BadSignalError(
                file,
                f"ground-truth event starts {starts} must be sorted and inside [0, {num_frames})",
                "BadGroundTruth",
            )


def validate_cameras(record: EpisodeRecord, frame_tolerance: int) -> None:
    """Each probed camera's frame count against the action rows (after :func:`validate_signals`)."""
    num_frames = int(record.actions_TA.shape[0])
    for cam in record.probed:
        if abs(cam.num_frames - num_frames) > frame_tolerance:
            raise FrameCountError(
                cam.uri,
                f"camera {cam.name!r} has {cam.num_frames} frames but the episode has "
                f"{num_frames} action rows (tolerance {frame_tolerance})",
            )
