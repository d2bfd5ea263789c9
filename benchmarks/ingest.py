"""Ingest throughput next to plain video decoding of the same files (the ratio is the figure).

Records a synthetic folder source (H.264 video with sensor noise, two cameras), then measures in
one run:

- ``decode (1 proc)``: PyAV decodes every frame of every video, one process;
- ``decode (N procs)``: the same over a process pool as wide as the machine (the fair baseline
  for a parallel pipeline);
- ``wallwm ingest (cold)``: list + read + decode/validate every camera + write Lance, on a
  freshly started local Ray (includes spawning Ray's worker processes and their imports);
- ``wallwm ingest (warm)``: the same into a second dataset, workers already up (a long-lived
  cluster, or any job longer than a few seconds);
- ``wallwm ingest (rerun)``: the idempotent no-op re-run;
- ``wallwm ingest (warm) + segment``: the fused ``wallwm run`` path (cut from the signals, keyframes
  grabbed by the same validation decode).

Usage: ``python benchmarks/ingest.py [--episodes 40] [--size 128]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from wallwm.pipeline.ingest import IngestConfig, run_ingest
from wallwm.pipeline.runtime import ensure_ray
from wallwm.pipeline.segmentation import SegmentConfig
from wallwm.pipeline.sim.synthetic import SynthConfig, record_synthetic


def decode_count(path: str) -> int:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--noise", type=float, default=6.0, help="sensor noise std (grey levels)")
    parser.add_argument("--root", default="bench-data/ingest")
    args = parser.parse_args()
    root = Path(args.root)
    shutil.rmtree(root, ignore_errors=True)
    src, ds = root / "source", root / "dataset"
    record_synthetic(
        src,
        SynthConfig(
            episodes=args.episodes, size=args.size, cameras=("top", "side"), noise_std=args.noise
        ),
    )
    videos = sorted(str(p) for p in src.rglob("*.mp4"))
    workers = os.cpu_count() or 1

    t = time.perf_counter()
    frames = sum(decode_count(v) for v in videos)
    decode_1 = time.perf_counter() - t
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(decode_count, videos[:workers]))  # warm the pool
        t = time.perf_counter()
        frames_n = sum(pool.map(decode_count, videos))
        decode_n = time.perf_counter() - t
    assert frames_n == frames

    ensure_ray()
    timings = {}
    runs = (
        ("cold", root / "dataset-cold", None),
        ("warm", ds, None),
        ("rerun, no-op", ds, None),
        ("warm) + segment (fused `wallwm run`", root / "dataset-run", SegmentConfig()),
    )
    for name, dataset, seg in runs:
        t = time.perf_counter()
        summary = run_ingest(IngestConfig(source=str(src), dataset=str(dataset), segment=seg))
        timings[f"wallwm ingest ({name})"] = time.perf_counter() - t
        assert summary.failed == 0
        assert summary.video_frames == (0 if name.startswith("rerun") else frames)

    table = Table(
        title=f"ingest: {args.episodes} episodes x 2 cameras, {args.size}px H.264, "
        f"{frames} frames, {workers} CPUs"
    )
    for col in ("path", "seconds", "frames/s", "vs decode (N procs)"):
        table.add_column(col, justify="right")
    base = frames / decode_n
    rows = {"decode (1 proc)": decode_1, f"decode ({workers} procs)": decode_n, **timings}
    for name, secs in rows.items():
        fps = frames / secs
        table.add_row(name, f"{secs:.2f}", f"{fps:,.0f}", f"{fps / base:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
