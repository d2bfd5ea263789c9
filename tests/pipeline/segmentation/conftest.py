"""Fixtures of the segmentation tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wallwm.pipeline.segmentation import Signals

WriteSource = Callable[..., None]


def _write_source(
    src: Path,
    episodes: list[tuple[Signals, list[int]]],
    robot: str,
    meta: dict[str, Any] | None = None,
) -> None:
    """The episodes as a folder source (blank video), their decisions as its events."""
    from wallwm.pipeline.sources.folder import write_folder_episode

    for i, (s, truth) in enumerate(episodes):
        write_folder_episode(
            src,
            f"ep{i}",
            instruction="do the task",
            fps=s.fps,
            actions_TA=s.actions_TA,
            frames_by_camera={"top": np.zeros((len(s.actions_TA), 16, 16, 3), np.uint8)},
            states_TS=s.states_TS,
            robot=robot,
            events=[{"start_frame": t, "name": "decision"} for t in [0, *truth]],
            extra_meta=meta,
        )


@pytest.fixture
def write_source() -> WriteSource:
    """Writes ``(signals, decisions)`` episodes as a folder source: ``(src, episodes, robot)``."""
    return _write_source
