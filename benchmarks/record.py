"""MetaWorld recording throughput: one process against ``--workers N``, same episodes, one run.

``wallwm sim record`` renders every step offscreen on the CPU (MuJoCo + Mesa, single-threaded)
and runs the scripted expert under a tracer; ``--workers N`` records episodes in N spawned
processes. This script records the same tasks and episodes both ways into separate folders,
checks that the two recordings are identical (actions, states and ground-truth events, byte for
byte), and prints seconds, frames/s and the ratio to the single process.

Usage: ``python benchmarks/record.py [--task T ...] [--episodes 4] [--size 96] [--workers 2]``
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from wallwm.pipeline.sim.metaworld import MetaWorldConfig, record_metaworld

DEFAULT_TASKS = ("reach-v3", "pick-place-v3", "drawer-open-v3")


def digest(root: Path) -> str:
    """Hash of every episode's signals and metadata (videos excluded: encoder timestamps)."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in (".parquet", ".json", ".npz", ".npy"):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def main() -> None:
    """Record twice (1 process, N processes) and print the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", action="append", help="MetaWorld task (repeatable)")
    parser.add_argument("--episodes", type=int, default=4, help="episodes per task")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--action-labels", default="expert", choices=("executed", "expert"))
    parser.add_argument("--root", default="bench-data/record")
    args = parser.parse_args()
    tasks = tuple(args.task or DEFAULT_TASKS)
    root = Path(args.root)
    shutil.rmtree(root, ignore_errors=True)
    rows = []
    for workers in (1, args.workers):
        cfg = MetaWorldConfig(
            tasks=tasks,
            episodes=args.episodes,
            size=args.size,
            action_labels=args.action_labels,
            workers=workers,
            max_steps=500,
        )
        out = root / f"workers-{workers}"
        t = time.perf_counter()
        summaries = record_metaworld(out, cfg)
        seconds = time.perf_counter() - t
        frames = sum(s["frames"] for s in summaries)
        rows.append((workers, seconds, frames, digest(out)))
    base = rows[0][1]
    table = Table(
        title=f"MetaWorld recording: {len(tasks)} tasks x {args.episodes} episodes, "
        f"{args.size} px, {args.action_labels} labels, {os.cpu_count()} CPUs"
    )
    for col in ("processes", "seconds", "frames", "frames/s", "speed-up vs 1", "content hash"):
        table.add_column(col, justify="right")
    for workers, seconds, frames, dig in rows:
        table.add_row(
            str(workers),
            f"{seconds:.1f}",
            str(frames),
            f"{frames / seconds:.0f}",
            f"{base / seconds:.2f}x",
            dig,
        )
    Console(width=160).print(table)
    same = rows[0][2:] == rows[1][2:]
    print("recordings identical:", same)
    if not same:
        raise SystemExit("the parallel recording differs from the sequential one")


if __name__ == "__main__":
    main()
