"""Video writing: the encoders leave the process as they found it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from wallwm.pipeline.video import iter_video_frames, write_video


@pytest.mark.parametrize("codec", ["libsvtav1", "libx264"])
def test_encoding_keeps_the_calling_threads_scheduling(tmp_path: Path, codec: str) -> None:
    """SVT-AV1 run as root switched the encoding thread to SCHED_FIFO 99 for good (every
    thread it started later inherited it; a Ray Data executor then hung). The writer restores
    it; the video is intact."""
    if not hasattr(os, "sched_getscheduler"):
        pytest.skip("thread scheduling policies are Linux's")
    frames = (np.random.default_rng(0).random((12, 64, 64, 3)) * 255).astype(np.uint8)
    before = (os.sched_getscheduler(0), os.sched_getparam(0))
    write_video(str(tmp_path / "v.mp4"), frames, 10.0, codec=codec)
    assert (os.sched_getscheduler(0), os.sched_getparam(0)) == before
    others: list[int] = []  # a thread started now inherits the policy: it must be normal too
    thread = threading.Thread(target=lambda: others.append(os.sched_getscheduler(0)))
    thread.start()
    thread.join()
    assert others == [before[0]]
    assert sum(1 for _ in iter_video_frames(str(tmp_path / "v.mp4"))) == 12


def test_the_av1_encoder_prints_nothing_but_errors(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """SVT-AV1's banner (its version, build, every config line) and warnings stay off stderr."""
    frames = (np.random.default_rng(1).random((6, 32, 32, 3)) * 255).astype(np.uint8)
    write_video(str(tmp_path / "v.mp4"), frames, 10.0, codec="libsvtav1")
    assert "Svt[" not in capfd.readouterr().err


def test_an_odd_sized_stream_is_encoded_at_its_own_size(tmp_path: Path) -> None:
    """H.264 4:2:0 needs even sides: a 33 x 35 camera (a simulator at --size 33, HDF5 frames
    re-encoded by the export) failed to open the encoder. It keeps full chroma at its size."""
    frames = (np.random.default_rng(2).random((5, 35, 33, 3)) * 255).astype(np.uint8)
    frames[:] = frames[:1] // 32 * 32  # a still, blocky picture: what H.264 keeps closely
    write_video(str(tmp_path / "v.mp4"), frames, 10.0)
    decoded = np.stack([f for _t, f in iter_video_frames(str(tmp_path / "v.mp4"))])
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames).mean() < 8
