"""Export speed: ``wallwm export lerobot`` against plain decoding of the same videos.

The same run times, on one curated, tagged dataset (one cluster excluded, so episodes are cut):

- ``decode to RGB`` (the baseline): every frame of every camera window the tag's episodes point
  at, decoded once to RGB (what a data loader does); ``decode only``: the same without the colour
  conversion (the least any re-encoding exporter must do);
- ``export (copy)``: the default -- source video files copied once, episodes addressed as
  timestamp windows, cut episodes included;
- ``export (--reencode)``: only the exported frames decoded and encoded again (AV1).

Speed is frames exported per second; the ratio is against the decode baseline's frames per second
(>= 0.5x is the target when re-encoding).

By default it records synthetic episodes (160 px H.264 with sensor noise) and runs ingest +
segment + signal captions + hashing embeddings + clustering; ``--dataset DIR`` exports an existing
curated dataset instead (its latest versions, tagged ``bench-export``).
Usage: ``python benchmarks/export.py [--episodes 60] [--dataset DIR]``
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from wallwm.pipeline.export.lerobot import ExportConfig, ExportSummary, export_lerobot
from wallwm.pipeline.sources.base import CameraInfo
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import LanceStore
from wallwm.pipeline.video import iter_video_frames

TAG = "bench-export"


def build(root: Path, episodes: int) -> Path:
    """A synthetic dataset, captioned, embedded, clustered, one cluster excluded."""
    from wallwm.captioner.stage import CaptionStageConfig, run_caption
    from wallwm.clustering.embed import EmbedConfig, HashingEmbedder
    from wallwm.clustering.embed_stage import run_embed
    from wallwm.clustering.stage import ClusterConfig, run_cluster
    from wallwm.pipeline.ingest import IngestConfig, run_ingest
    from wallwm.pipeline.segmentation import SegmentConfig
    from wallwm.pipeline.sim.synthetic import SynthConfig, record_synthetic

    src, ds = root / "src", root / "dataset"
    record_synthetic(src, SynthConfig(episodes=episodes, size=160, seed=0, noise_std=6.0))
    run_ingest(IngestConfig(source=str(src), dataset=str(ds), segment=SegmentConfig()))
    run_caption(CaptionStageConfig(dataset=str(ds)))
    run_embed(str(ds), EmbedConfig(), text_factory=lambda: HashingEmbedder(64))
    run_cluster(str(ds), ClusterConfig(ks=[8, 2]))
    return ds


def curate(ds: Path) -> None:
    from wallwm.clustering.curation import exclude, list_clusters, tag_snapshot

    store = LanceStore(str(ds))
    if store.exists(schemas.CLUSTERS):
        exclude(store, list_clusters(store, level=1)[-1]["cluster_id"], "benchmark cut")
    tag_snapshot(store, TAG)


def decode_all(ds: Path, fmt: str | None = "rgb24") -> tuple[float, int, int]:
    """Seconds and frames to decode every camera window of the tag's episodes; cameras each.

    ``fmt``: the pixel format frames are converted to (None: the decoder's own, no conversion).
    """
    rows = LanceStore(str(ds)).read(schemas.EPISODES, columns=["cameras"], version=TAG)
    t, frames, cameras = time.perf_counter(), 0, 0
    for cams in rows.column("cameras").to_pylist():
        cameras = len(cams)
        for cam in (CameraInfo(**c) for c in cams):
            frames += sum(
                1 for _ in iter_video_frames(cam.uri, cam.from_timestamp_s, cam.to_timestamp_s, fmt)
            )
    return time.perf_counter() - t, frames, cameras


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--dataset", default=None, help="existing curated dataset to export")
    parser.add_argument("--root", default="bench-data/export")
    args = parser.parse_args()
    root = Path(args.root)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    if args.dataset:
        ds = root / "dataset"
        shutil.copytree(args.dataset, ds, ignore=shutil.ignore_patterns("train"))
    else:
        ds = build(root, args.episodes)
    curate(ds)
    decode_s, decoded, cameras = decode_all(ds)
    raw_s, _, _ = decode_all(ds, None)
    runs: list[tuple[str, float, ExportSummary]] = []
    for name, reencode in (("export (copy)", False), ("export (--reencode)", True)):
        out = root / name.split()[1].strip("()-")
        t = time.perf_counter()
        summary = export_lerobot(
            ExportConfig(dataset=str(ds), tag=TAG, out=str(out), reencode=reencode)
        )
        runs.append((name, time.perf_counter() - t, summary))
    title = f"export to LeRobot v3.0: {runs[0][2].episodes_in} episodes, {cameras} cameras"
    table = Table(title=title)
    for col in ("run", "seconds", "episodes out", "frames x cameras", "frames/s", "vs decode"):
        table.add_column(col)
    base = decoded / decode_s
    table.add_row(
        "decode to RGB (baseline)", f"{decode_s:.2f}", "", str(decoded), f"{base:.0f}", "1.00x"
    )
    raw = decoded / raw_s
    table.add_row(
        "decode only (no conversion)", f"{raw_s:.2f}", "", str(decoded), f"{raw:.0f}",
        f"{raw / base:.2f}x",
    )  # fmt: skip
    for name, seconds, s in runs:
        rate = s.frames * cameras / seconds
        table.add_row(
            name, f"{seconds:.2f}", str(s.episodes_out), str(s.frames * cameras), f"{rate:.0f}",
            f"{rate / base:.2f}x",
        )  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
