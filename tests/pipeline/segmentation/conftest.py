"""Fixtures of the segmentation tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wallwm.pipeline.segmentation import SegmentConfig, Signals, segment
from wallwm.pipeline.segmentation.evaluate import EMPTY, match_boundaries
from wallwm.pipeline.segmentation.selection import resolve

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
            timestamps_s=s.timestamps_s,
        )


@pytest.fixture
def write_source() -> WriteSource:
    """Writes ``(signals, decisions)`` episodes as a folder source: ``(src, episodes, robot)``."""
    return _write_source


def _two_link_ik(p: np.ndarray) -> np.ndarray:
    """Joint angles of a planar arm with two unit links reaching ``p`` (elbow down)."""
    x, y = p
    q2 = np.arccos(np.clip((min(x * x + y * y, 3.96) - 2.0) / 2.0, -1.0, 1.0))
    return np.array([np.arctan2(y, x) - np.arctan2(np.sin(q2), 1 + np.cos(q2)), q2])


def _reached_joints_episode(
    seed: int, moves: int = 6, lag: float = 0.3
) -> tuple[Signals, list[int]]:
    """Joint targets of a two-link arm whose hand moves straight between waypoints.

    The commanded hand path is piecewise linear in time; the hand follows it with a first-order
    lag, and the recorded actions are the joint angles reached one step later (a joint-space
    dataset): smooth, curved within every move, the waypoints' kinks spread over a few frames.
    """
    rng = np.random.default_rng(seed)
    points = [np.array([1.2, 0.3])]
    while len(points) <= moves:
        q = points[-1] + rng.uniform(-0.7, 0.7, 2)
        if 0.6 < np.linalg.norm(q) < 1.8:
            points.append(q)
    lengths = rng.integers(25, 50, moves)
    hand = np.concatenate(
        [
            np.linspace(a, b, n, endpoint=False)
            for a, b, n in zip(points[:-1], points[1:], lengths, strict=True)
        ]
        + [np.repeat(points[-1][None], 15, axis=0)]
    )
    reached = [hand[0]]
    for target in hand[1:]:
        reached.append(reached[-1] + lag * (target - reached[-1]))
    joints = np.array([_two_link_ik(p) for p in reached])
    ahead = np.concatenate([joints[1:], joints[-1:]])
    return Signals(ahead, 20.0, joints), np.cumsum(lengths).tolist()


@pytest.fixture
def reached_joints() -> Callable[..., tuple[Signals, list[int]]]:
    """Position targets of a two-link arm between waypoints: ``(seed, moves, lag)``."""
    return _reached_joints_episode


def _waypoint_plan(
    seed: int, dims: int = 4, lengths: tuple[int, int] = (24, 48)
) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    frames = rng.integers(*lengths, 6)
    keys = rng.uniform(-1.0, 1.0, (len(frames) + 1, dims))
    parts = [np.linspace(keys[i], keys[i + 1], n, endpoint=False) for i, n in enumerate(frames)]
    return np.concatenate(parts), np.cumsum(frames)[:-1].tolist()


@pytest.fixture
def waypoint_plan() -> Callable[..., tuple[np.ndarray, list[int]]]:
    """Commands moving linearly between random keyframes (an open-loop waypoint plan) and the
    knots' frames: ``(seed, dims=4, lengths=(24, 48))``, six moves of ``lengths`` frames."""
    return _waypoint_plan


def _dataset_f1(pairs: list[tuple[Signals, list[int]]], cfg: SegmentConfig) -> float:
    cfg, _ = resolve(cfg, [s for s, _ in pairs])
    score = EMPTY
    for s, knots in pairs:
        score += match_boundaries(segment(s, cfg, traces=False).starts, knots, len(s.actions_TA), 3)
    return score.f1


@pytest.fixture
def dataset_f1() -> Callable[[list[tuple[Signals, list[int]]], SegmentConfig], float]:
    """Boundary F1@3 of ``(signals, knots)`` episodes cut as a dataset (the model chosen on
    them all)."""
    return _dataset_f1


def _closed_loop(seed: int) -> tuple[Signals, list[int]]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(25, 45, 5)
    goals = rng.uniform(-0.6, 0.6, (len(lengths), 2))
    q, a = np.zeros((int(lengths.sum()), 2)), np.zeros((int(lengths.sum()), 2))
    state, t = rng.uniform(-0.3, 0.3, 2), 0
    for goal, n in zip(goals, lengths, strict=True):
        for _ in range(n):
            q[t], a[t] = state, 3.0 * (goal - state)
            state = state + a[t] / 25.0
            t += 1
    return Signals(a + rng.normal(0.0, 0.02, a.shape), 25.0, q), np.cumsum(lengths)[:-1].tolist()


@pytest.fixture
def closed_loop() -> Callable[[int], tuple[Signals, list[int]]]:
    """A closed loop steering two joints to one goal an event (command = gain x (goal -
    state), 25 Hz, 2 % command noise) and its knots: ``(seed)``."""
    return _closed_loop
