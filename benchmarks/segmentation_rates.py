"""Segmentation at the user's frame rate: the robots suite recorded at lower rates.

The suite's robots record at 80 Hz (MetaWorld), 50 Hz (ALOHA) and 25 Hz (Jaco); many datasets a
user brings are logged at 5-15 Hz (LeRobot's PushT and xArm sets, Bridge, DROID). This benchmark
takes every k-th frame of each recording of ``benchmarks/segmentation_robots.py`` (actions,
states and gripper alike -- what a logger sampling the same controller at fps/k holds; the
commands' noise is not averaged away) and runs the product path on it: the model chosen on a
spread sample, every episode cut with it. Ground truth: each expert decision at the first kept
frame at or after it (decisions that fall on one kept frame count once).

Reported per recording and rate: F1 within 3 frames (the suite's metric: a window of 37 ms at
80 Hz, 0.3 s at 10 Hz) and within the same time at every rate (+-0.1 s: 8 frames at 80 Hz, 1 at
10 Hz), the chosen model, and the best fixed chunk length of {2, 3, 4, 6, 8, 12, 16, 24, 32, 48}
frames at that rate under each window. The noise-free recordings (noise 0, smooth) are also
resampled at ``--up`` times their rate (:func:`resampled`: cubic in time within each true
event, so a decision's change stays a change from one frame to the next).

    python benchmarks/segmentation_rates.py [--root bench-data/robots] [--rates 30 15 10]
        [--recordings metaworld-noise0.3 ...] [--json out.json]

The recordings are those ``segmentation_robots.py`` leaves under ``--root``; run it first.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from segmentation_robots import load, product_config

from wallwm.pipeline.segmentation import Signals, segment
from wallwm.pipeline.segmentation.channels import is_two_level
from wallwm.pipeline.segmentation.evaluate import EMPTY, BoundaryScore, match_boundaries

#: The recordings measured by default: each robot's scripted expert at both noise levels, with
#: hesitations, and its smooth operator.
RECORDINGS = (
    "metaworld-noise0", "metaworld-noise0.3", "metaworld-hesitations", "metaworld-smooth",
    "aloha-noise0", "aloha-noise0.3", "aloha-hesitations", "aloha-smooth",
    "jaco-noise0", "jaco-noise0.3", "jaco-hesitations", "jaco-smooth",
    "aloha-joint-noise0", "aloha-joint-noise0.3",
)  # fmt: skip
CHUNKS = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48)
#: The window in seconds scored at every rate.
WINDOW_S = 0.1


def decimated(episodes: list[dict[str, Any]], every: int) -> list[dict[str, Any]]:
    """The episodes sampled at every ``every``-th frame, their truth moved to the first kept
    frame at or after each decision."""
    if every == 1:
        return episodes
    out = []
    for ep in episodes:
        s = ep["signals"]

        def keep(x: Any) -> Any:
            return None if x is None else np.asarray(x)[::every]

        signals = dataclasses.replace(
            s,
            actions_TA=keep(s.actions_TA),
            states_TS=keep(s.states_TS),
            gripper_TG=keep(s.gripper_TG),
            motion_T=keep(s.motion_T),
            fps=s.fps / every,
        )
        frames = len(signals.actions_TA)
        truth = sorted({math.ceil(t / every) for t in ep["truth"]} - {0})
        out.append(
            {**ep, "signals": signals, "frames": frames, "truth": [t for t in truth if t < frames]}
        )
    return out


def resampled(s: Signals, factor: int, truth: list[int]) -> Signals:
    """``s`` at ``factor`` times its rate: cubic in time within each true event (``truth``: the
    events' first frames), so that what changes at a decision still changes from one frame to
    the next -- a spline across it would ring for a few frames on both sides, which no logger
    records; two-level commands held."""
    from scipy.interpolate import CubicSpline

    t_len = len(s.actions_TA)
    edges = [0, *sorted(t for t in truth if 0 < t < t_len), t_len]

    def up(x: Any) -> Any:
        if x is None:
            return None
        x = np.asarray(x, dtype=np.float64)
        out = np.empty(((t_len - 1) * factor + 1, *x.shape[1:]))
        for a, b in itertools.pairwise(edges):
            # the new frames from this event's first sample to the next event's first sample
            t = np.arange(a * factor, min(b * factor, len(out))) / factor
            if b - a >= 2:
                out[a * factor : a * factor + len(t)] = CubicSpline(
                    np.arange(a, b), x[a:b], axis=0
                )(t)
            else:
                out[a * factor : a * factor + len(t)] = x[a]
        return out

    actions = up(s.actions_TA)
    raw = np.asarray(s.actions_TA, dtype=np.float64)
    for j in range(raw.shape[1]):  # a switched command (Jaco's fingers: +-5) switches, no ringing
        if is_two_level(raw[:, j]):
            actions[:, j] = np.repeat(raw[:, j], factor)[: len(actions)]
    return dataclasses.replace(
        s,
        actions_TA=actions,
        states_TS=up(s.states_TS),
        gripper_TG=up(s.gripper_TG),
        motion_T=None,
        fps=s.fps * factor,
    )


def noise_free(name: str) -> bool:
    """Whether the recording's commands carry no noise (the suite's noise-0 and smooth ones)."""
    return name.endswith(("-noise0", "-smooth"))


def upsampled(episodes: list[dict[str, Any]], every: float) -> list[dict[str, Any]]:
    """The episodes resampled at ``1 / every`` times their rate (:func:`resampled`), their
    truth at the same instants."""
    k = round(1 / every)
    return [
        {
            **e,
            "signals": resampled(e["signals"], k, e["truth"]),
            "frames": (e["frames"] - 1) * k + 1,
            "truth": [t * k for t in e["truth"]],
        }
        for e in episodes
    ]


def scored(episodes: list[dict[str, Any]], cuts: list[list[int]], tol: int) -> BoundaryScore:
    return sum(
        (
            match_boundaries(c, e["truth"], e["frames"], tol)
            for c, e in zip(cuts, episodes, strict=True)
        ),
        EMPTY,
    )


def fixed_best(episodes: list[dict[str, Any]], tol: int) -> tuple[int, float]:
    """The chunk length (frames) with the best F1 within ``tol`` frames, and that F1."""
    f1 = {
        h: scored(episodes, [list(range(0, e["frames"], h)) for e in episodes], tol).f1
        for h in CHUNKS
    }
    best = max(f1, key=lambda h: f1[h])
    return best, f1[best]


def event_frames(episodes: list[dict[str, Any]]) -> float:
    """The median length of the true events in frames (what a cut has to go on)."""
    lengths = [int(n) for e in episodes for n in np.diff([0, *e["truth"], e["frames"]]) if n > 0]
    return float(np.median(lengths)) if lengths else 0.0


def measure(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """The product path on ``episodes``: its choice, F1@3 / F1@1, and the best fixed chunk."""
    t0 = time.perf_counter()
    cfg, choice = product_config(episodes)
    cuts = [segment(e["signals"], cfg, traces=False).starts for e in episodes]
    seconds = time.perf_counter() - t0
    window = max(1, round(WINDOW_S * episodes[0]["signals"].fps))
    at3, timed = scored(episodes, cuts, 3), scored(episodes, cuts, window)
    chunk, chunk_f1 = fixed_best(episodes, 3)
    timed_chunk, timed_chunk_f1 = fixed_best(episodes, window)
    return {
        "model": str(choice.get("action_model", "?")),
        "form": str(choice.get("action_form", "")),
        "f1": at3.f1,
        "precision": at3.precision,
        "recall": at3.recall,
        "window_frames": window,
        "f1_in_window": timed.f1,
        "fixed": chunk,
        "fixed_f1": chunk_f1,
        "fixed_in_window": timed_chunk,
        "fixed_f1_in_window": timed_chunk_f1,
        "boundaries": sum(len(e["truth"]) for e in episodes),
        "event_frames": event_frames(episodes),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="bench-data/robots")
    parser.add_argument("--rates", nargs="+", type=float, default=[30.0, 15.0, 10.0])
    parser.add_argument(
        "--up", nargs="*", type=int, default=[2, 4], help="Also at these multiples of the rate."
    )
    parser.add_argument("--recordings", nargs="+", default=list(RECORDINGS))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    print(
        "| recording | Hz | every | boundaries | event frames (median) | chosen | F1@3 (P / R) "
        f"| best fixed @3 | F1 +-{WINDOW_S:g} s | best fixed +-{WINDOW_S:g} s |"
    )
    print("|---|---:|---:|---:|---:|---|---|---:|---:|---:|")
    for name in args.recordings:
        root = Path(args.root) / name
        if not root.is_dir():
            sys.exit(f"{root}: no recording here (run benchmarks/segmentation_robots.py first)")
        episodes = load(root)
        native = float(episodes[0]["signals"].fps)
        everies = sorted({1} | {round(native / r) for r in args.rates if round(native / r) > 1})
        # upward only where the commands are noise-free: a spline through noisy commands would
        # make their noise smooth within events, which no faster logger records
        ups = [1 / k for k in sorted(args.up, reverse=True) if k > 1 and noise_free(name)]
        for every in [*ups, *everies]:
            eps = decimated(episodes, int(every)) if every >= 1 else upsampled(episodes, every)
            m = measure(eps)
            results.setdefault(name, {})[f"{native / every:.3g}"] = {"every": every, **m}
            print(
                f"| {name} | {native / every:.3g} | {every:.3g} | {m['boundaries']} | "
                f"{m['event_frames']:g} | {m['model']}"
                f"{' (' + m['form'] + ')' if m['form'] == 'rates' else ''} | "
                f"{m['f1']:.3f} ({m['precision']:.2f} / {m['recall']:.2f}) | "
                f"{m['fixed_f1']:.3f} (H={m['fixed']}) | {m['f1_in_window']:.3f} | "
                f"{m['fixed_f1_in_window']:.3f} (H={m['fixed_in_window']}) |",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
