"""Rebuilding the training view after the curation loop: decoding again vs reusing the frames.

A view is rebuilt whenever its tables move on. Curation (recaption, reweight, recluster) moves
only the ``events`` table; the rebuild then links the previous view's frames instead of decoding
every video again, and a stage that rewrote rows unchanged keeps the view as it is. This script
times, on the same dataset and view:

- ``full rebuild`` (the baseline, what every rebuild cost before): ``materialize --force``;
- ``events changed``: every caption rewritten, then ``materialize``;
- ``rows rewritten unchanged``: the captions written again as they are, then ``materialize``.

By default it records synthetic episodes (160 px H.264 with sensor noise, as
``benchmarks/loader.py``) and runs ingest + segment; ``--dataset DIR`` works on a copy of an
existing dataset instead (its source videos are read where the dataset points, never written).
Usage: ``python benchmarks/view_rebuild.py [--episodes 30] [--dataset DIR] [--size 96]``
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
from rich.console import Console
from rich.table import Table

from wallwm.pipeline.ingest import IngestConfig, run_ingest
from wallwm.pipeline.segmentation import SegmentConfig
from wallwm.pipeline.sim.synthetic import SynthConfig, record_synthetic
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import LanceStore
from wallwm.trainer.view import ViewSummary, materialize


def _timed(fn: Callable[[], ViewSummary]) -> tuple[float, ViewSummary]:
    t = time.perf_counter()
    summary = fn()
    return time.perf_counter() - t, summary


def _set_captions(store: LanceStore, captions: pa.Table) -> None:
    store.update_columns(schemas.EVENTS, captions, key="event_id")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--dataset", default=None, help="existing dataset to copy and use")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--root", default="bench-data/view-rebuild")
    args = parser.parse_args()
    root = Path(args.root)
    shutil.rmtree(root, ignore_errors=True)
    ds = root / "dataset"
    if args.dataset:
        shutil.copytree(args.dataset, ds, ignore=shutil.ignore_patterns("train"))
    else:
        src = root / "source"
        record_synthetic(src, SynthConfig(episodes=args.episodes, size=160, noise_std=6.0))
        run_ingest(IngestConfig(source=str(src), dataset=str(ds), segment=SegmentConfig()))
    store = LanceStore(str(ds))
    first_s, first = _timed(lambda: materialize(str(ds), None, args.size))
    full_s, _ = _timed(lambda: materialize(str(ds), None, args.size, force=True))
    captions = store.read(schemas.EVENTS, columns=["event_id", "caption"])
    _set_captions(
        store, captions.set_column(1, "caption", pa.array(["x " + str(c) for c in captions[1]]))
    )
    changed_s, changed = _timed(lambda: materialize(str(ds), None, args.size))
    store.update(schemas.EVENTS, "true", {"caption": "caption"})  # a new version, same rows
    same_s, same = _timed(lambda: materialize(str(ds), None, args.size))

    table = Table(
        title=f"view rebuild: {first.episodes} episodes, {first.events} events, {first.frames} "
        f"frames at {args.size} px (first build {first_s:.1f} s)"
    )
    for col in ("rebuild", "frames", "seconds", "vs full rebuild"):
        table.add_column(col, justify="left" if col == "rebuild" else "right")
    rows = [
        ("full rebuild (--force, baseline)", "decoded", full_s),
        ("events changed (recaption)", "linked" if changed.frames_reused else "decoded", changed_s),
        ("rows rewritten unchanged", "kept" if same.seconds == 0.0 else "rebuilt", same_s),
    ]
    for name, frames, seconds in rows:
        table.add_row(name, frames, f"{seconds:.2f}", f"{full_s / max(seconds, 1e-9):.0f}x faster")
    Console().print(table)


if __name__ == "__main__":
    main()
