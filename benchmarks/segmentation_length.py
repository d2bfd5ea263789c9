"""Segmentation time on long episodes: many events, or long events at a high logging rate.

The suite's episodes are 80-320 frames long. A user's may be far longer in two ways, which load
the change-point search differently:

- ``session``: many events -- the suite's episodes of one recording concatenated end to end
  (a long teleoperation session); PELT prunes every start before the last change, so its work
  grows with the frames;
- ``rate``: long events -- one episode resampled at k times its rate
  (``segmentation_rates.resampled``), as a logger at 400-1,000 Hz records it; PELT keeps every
  start of the current event, so its work grows with the frames times the event's length.

Per length: the cut's boundary F1 (within 3 frames of the recorded rate: ``3 k`` frames when
resampled), seconds of the model choice on that one episode (``wallwm run`` reads up to 24
such), seconds of the cut with the chosen model, and the real-time factor of the cut (the
episode's duration over the cut's time).

    python benchmarks/segmentation_length.py [--root bench-data/robots]
        [--recordings aloha-noise0 jaco-smooth] [--factors 1 4 16 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from segmentation_rates import resampled
from segmentation_robots import load

from wallwm.pipeline.segmentation import SegmentConfig, Signals, segment
from wallwm.pipeline.segmentation.evaluate import match_boundaries
from wallwm.pipeline.segmentation.selection import resolve


def session(parts: list[Signals]) -> Signals:
    """The episodes ``parts`` one after another, as one episode."""

    def joined(name: str) -> Any:
        arrays = [getattr(p, name) for p in parts]
        return None if any(a is None for a in arrays) else np.concatenate(arrays)

    return dataclasses.replace(
        parts[0],
        actions_TA=joined("actions_TA"),
        states_TS=joined("states_TS"),
        gripper_TG=joined("gripper_TG"),
        motion_T=None,
    )


def timed(s: Signals, truth: list[int], window: int) -> dict[str, Any]:
    """The choice and the cut on ``s`` alone, timed, and the cut's F1 against ``truth`` within
    ``window`` frames."""
    t0 = time.perf_counter()
    cfg, choice = resolve(SegmentConfig(), [s])
    t1 = time.perf_counter()
    cut = segment(s, cfg, traces=False)
    t2 = time.perf_counter()
    duration_s = len(s.actions_TA) / s.fps
    score = match_boundaries(cut.starts, truth, len(s.actions_TA), window)
    return {
        "f1": score.f1,
        "frames": len(s.actions_TA),
        "fps": s.fps,
        "model": choice.action_model,
        "events": len(cut.starts),
        "choice_s": t1 - t0,
        "cut_s": t2 - t1,
        "real_time": duration_s / (t2 - t1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="bench-data/robots")
    parser.add_argument("--recordings", nargs="+", default=["aloha-noise0", "jaco-smooth"])
    parser.add_argument("--factors", nargs="+", type=int, default=[1, 4, 16, 32])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []
    print(
        "| recording | long by | x | frames | Hz | chosen | events (true) | F1 | choice s | cut s "
        "| cut x real time |"
    )
    print("|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for name in args.recordings:
        episodes = load(Path(args.root) / name)
        for mode in ("session", "rate"):
            for k in args.factors:
                if mode == "rate":
                    s = resampled(episodes[0]["signals"], k, episodes[0]["truth"])
                    truth, window = [t * k for t in episodes[0]["truth"]], 3 * k
                else:
                    parts = [episodes[i % len(episodes)] for i in range(k)]
                    s = session([p["signals"] for p in parts])
                    offsets = np.cumsum([0] + [p["frames"] for p in parts[:-1]])
                    # each part's start is a boundary of the session (but its first frame)
                    truth = [
                        int(o + t)
                        for o, p in zip(offsets, parts, strict=True)
                        for t in [0, *p["truth"]]
                    ]
                    truth, window = sorted({t for t in truth if 0 < t < len(s.actions_TA)}), 3
                m = {"recording": name, "mode": mode, "factor": k, **timed(s, truth, window)}
                rows.append(m)
                print(
                    f"| {name} | {mode} | {k} | {m['frames']} | {m['fps']:g} | {m['model']} | "
                    f"{m['events']} ({len(truth) + 1}) | {m['f1']:.3f} | {m['choice_s']:.2f} | "
                    f"{m['cut_s']:.2f} | {m['real_time']:.0f} |",
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
