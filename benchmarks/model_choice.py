"""The model choice on a sample of long episodes: one process against Ray's CPUs.

``wallwm run`` and ``wallwm segment`` choose the within-event model once per dataset, on a
spread sample of up to 24 episodes: every candidate cuts every sampled episode optimally, and on
episodes of a few thousand frames (a teleoperation session, a LeRobot dataset's minute-long
episodes at 30 fps) that takes seconds per episode -- on the driver, before any worker starts.
The sample here: 24 sessions of ``--parts`` episodes of one suite recording end to end
(``segmentation_length.session``; the recording is made if it is missing, as
``segmentation_robots.py`` makes it).

Rows: ``one process`` is the pure core as a library caller runs it (``resolve(cfg, sample)``,
the episodes one after the other: the baseline); ``Ray tasks`` is the stages' path (the same
call with ``chain.map_items``: one task per episode over the local Ray's CPUs, workers already
up). The choice and every candidate's total must be the same on both rows.

    python benchmarks/model_choice.py [--root bench-data/robots] [--recording jaco-noise0.3]
        [--parts 8] [--episodes 24]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from segmentation_length import session
from segmentation_robots import load, record

from wallwm.pipeline.chain import map_items
from wallwm.pipeline.runtime import ensure_ray
from wallwm.pipeline.segmentation import SegmentConfig, Signals
from wallwm.pipeline.segmentation.selection import ModelChoice, SampleMap, resolve


def sample_of_sessions(root: Path, recording: str, parts: int, episodes: int) -> list[Signals]:
    """``episodes`` sessions of ``parts`` randomly drawn episodes of the recording each."""
    out = root / recording
    if not (out / ".complete").exists():
        robot, _, variant = recording.partition("-")
        variant = variant.replace("noise", "noise ")  # the folder's name has no space
        args = argparse.Namespace(episodes=8, size=64, workers=os.cpu_count() or 1)
        record(robot, variant, out, args)
        (out / ".complete").write_text("recorded by model_choice.py\n")
    signals = [e["signals"] for e in load(out)]
    rng = np.random.default_rng(0)
    return [
        session([signals[i] for i in rng.choice(len(signals), parts, replace=False)])
        for _ in range(episodes)
    ]


def timed_choice(sample: list[Signals], map_fn: SampleMap | None) -> tuple[float, ModelChoice]:
    """Seconds of the choice on ``sample`` and the choice."""
    t = time.perf_counter()
    _cfg, choice = resolve(SegmentConfig(), sample, map_fn)
    return time.perf_counter() - t, choice


def main() -> None:
    """Time the choice both ways on the same sample and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="bench-data/robots")
    parser.add_argument("--recording", default="jaco-noise0.3")
    parser.add_argument("--parts", type=int, default=8, help="episodes per session")
    parser.add_argument("--episodes", type=int, default=24, help="sessions in the sample")
    args = parser.parse_args()
    sample = sample_of_sessions(Path(args.root), args.recording, args.parts, args.episodes)
    ensure_ray()
    map_items(len, [[0], [1], [2], [3]])  # the workers up, as they are when a stage runs
    serial_s, serial = timed_choice(sample, None)
    spread_s, spread = timed_choice(sample, map_items)
    assert (spread.action_model, spread.costs) == (serial.action_model, serial.costs)
    frames = int(np.mean([len(s.actions_TA) for s in sample]))
    table = Table(
        title=f"model choice: {len(sample)} sessions of {args.parts} {args.recording} episodes "
        f"(~{frames} frames each), {os.cpu_count()} CPUs; chosen: {serial.action_model}"
    )
    for col in ("path", "seconds", "vs one process"):
        table.add_column(col, justify="right" if col != "path" else "left")
    table.add_row("one process (resolve)", f"{serial_s:.2f}", "1.00x")
    table.add_row("Ray tasks (map_items)", f"{spread_s:.2f}", f"{serial_s / spread_s:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
