"""The leave-one-robot-out bookkeeping of ``benchmarks/segmentation_robots.py``.

BENCHMARKS.md reports the rates' clearance threshold picked on two robots and the third's F1
at it; the pick (the best training mean, ties to the middle of the tied range) and the
held-out side of each recording are tested here on canned scores.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest


@pytest.fixture(scope="module")
def robots(benchmark_script: Callable[[str], ModuleType]) -> ModuleType:
    return benchmark_script("segmentation_robots")


#: (robot, variant): (the rates' clearance, F1 on the values, F1 on the rates)
TABLE = {
    ("a", "clean"): (40.0, 0.5, 0.7),
    ("a", "noisy"): (8.0, 0.6, 0.4),
    ("b", "clean"): (30.0, 0.5, 0.6),
    ("b", "noisy"): (12.0, 0.6, 0.5),
    ("c", "edge"): (18.0, 0.5, 0.6),
    ("c", "noisy"): (6.0, 0.6, 0.3),
}


def test_the_clearance_threshold_is_picked_on_the_other_robots(robots, monkeypatch):
    def product_config(episodes: list[dict[str, Any]], **stated: Any):
        key = episodes[0]["key"]
        return stated.get("action_form", "auto"), {"rates_clearance": TABLE[key][0]}

    def score(episodes: list[dict[str, Any]], form: str):
        _, values, rates = TABLE[episodes[0]["key"]]
        return {"overall": SimpleNamespace(f1=rates if form == "rates" else values)}

    monkeypatch.setattr(robots, "product_config", product_config)
    monkeypatch.setattr(robots, "score", score)
    out = robots.rates_clearance_loro({key: [{"key": key}] for key in TABLE})
    assert out["recordings"]["a clean"] == (40.0, {"values": 0.5, "rates": 0.7})
    # b and c agree on (12, 18]: only 15.4 of the grid; a's clean targets take the rates
    assert out["a"] == {"clearance": 15.4, "held_out_f1": {"clean": 0.7, "noisy": 0.6}}
    # a and b tie over (12, 30]: 15.4, 20, 30 -> the middle, 20; c's edge (18) keeps its values
    assert out["c"] == {"clearance": 20.0, "held_out_f1": {"edge": 0.5, "noisy": 0.6}}
    assert out["b"]["clearance"] == 15.4  # a and c: (8, 18]


def test_speed_noise_grows_with_the_commands_speed_and_keeps_its_share(robots):
    """The derived ``smooth 2% speed noise`` rows: none where a command rests, the share of its
    spread in RMS over the episode, grippers exact."""
    import numpy as np

    from wallwm.pipeline.segmentation import Signals

    t = np.arange(400)
    reach = np.where(t < 200, 0.0, 0.5 - 0.5 * np.cos(np.pi * np.minimum(t - 200, 100) / 100))
    actions = np.stack([reach, (t > 250).astype(float)], axis=1)
    episode = {"key": "e", "signals": Signals(actions, 50.0, None, gripper_action_dims=[1])}
    (noisy,) = robots.with_command_noise([episode], 0.02, with_speed=True)
    noise = noisy["signals"].actions_TA - actions
    assert np.all(noise[:199, 0] == 0.0) and np.all(noise[302:, 0] == 0.0)  # at rest: none
    assert np.sqrt(np.mean(noise[:, 0] ** 2)) == pytest.approx(0.02 * reach.std(), rel=0.3)
    assert np.all(noise[:, 1] == 0.0)
    (even,) = robots.with_command_noise([episode], 0.02)
    assert np.all(even["signals"].actions_TA[:199, 0] != 0.0)  # even noise everywhere


def test_before_the_first_success_ends_the_score_at_the_success_frame(robots, monkeypatch):
    """The #25 protocol: a cut or a decision from the success frame on is not scored; an
    episode without a success frame is scored whole."""
    cuts = [0, 10, 30, 45]
    monkeypatch.setattr(robots, "segment", lambda s, cfg, traces: SimpleNamespace(starts=cuts))
    episodes = [
        {"task": "t", "signals": None, "frames": 60, "truth": [10, 30], "success_frame": 40},
        {"task": "t", "signals": None, "frames": 60, "truth": [10, 30], "success_frame": None},
    ]
    whole = robots.score(episodes, None)["overall"]
    until = robots.score(episodes, None, until_success=True)["overall"]
    assert (whole.true_positives, whole.predicted, whole.actual) == (4, 6, 4)
    assert (until.true_positives, until.predicted, until.actual) == (4, 5, 4)  # 45 left out
