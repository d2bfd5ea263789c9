"""Training-data loading: the Lance training view vs decoding video on the fly.

Records synthetic episodes (160 px H.264 with sensor noise), runs ``wallwm run`` (ingest +
segment), materialises the training view at 96 px, then draws the same cluster-balanced samples
(frame t inside an event + 16-step action chunk) through:

- ``decode on the fly`` (the LeRobot-style baseline): per sample, open the episode's video, seek
  to t, decode up to t, convert and resize; the action chunk is sliced from the episode's
  parquet, which this baseline keeps in memory (generous to it);
- ``wallwm view``: one positional Lance ``take`` per batch, signals from memory.

Both with 0 and 2 DataLoader workers (spawn), batch 32, ``torch.set_num_threads(1)``; beside
them, the samples/s the ``small`` model trains on (event mode, batch 32, every core): the loader
must outrun it several times over.
Usage: ``python benchmarks/loader.py [--episodes 30] [--batches 40] [--train-steps 10]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Dataset

from wallwm.pipeline.ingest import IngestConfig, run_ingest
from wallwm.pipeline.segmentation import SegmentConfig
from wallwm.pipeline.sim.synthetic import SynthConfig, record_synthetic
from wallwm.trainer.data import ClusterBalancedSampler, EventFrameDataset, collate, make_loader
from wallwm.trainer.view import materialize


class DecodeOnTheFly(Dataset):  # type: ignore[type-arg]
    """LeRobot-style: video decoded per sample."""

    def __init__(
        self,
        view: EventFrameDataset,
        source: Path,
        episode_keys: dict[str, str],
        size: int,
        chunk: int,
    ) -> None:
        self.view, self.source, self.size, self.chunk = view, source, size, chunk
        self.episode_keys = episode_keys  # episode id -> its folder under the source
        self.steps: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.view)

    def _actions(self, episode_dir: Path) -> np.ndarray:
        import pyarrow.parquet as pq

        key = str(episode_dir)
        if key not in self.steps:
            table = pq.read_table(episode_dir / "steps.parquet", columns=["action"])
            self.steps[key] = np.array(table.column("action").to_pylist(), np.float32)
        return self.steps[key]

    def __getitem__(self, item: tuple[int, int]) -> dict[str, Any]:
        import av

        plan = self.view._plan(item)
        event, t = plan.event, plan.t
        ep_dir = self.source / self.episode_keys[event["episode_id"]]
        with av.open(str(ep_dir / "top.mp4")) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate)
            target = t / fps
            container.seek(int(target / stream.time_base), stream=stream, backward=True)
            frame = None
            for frame in container.decode(stream):
                if frame.time is not None and frame.time >= target - 0.5 / fps:
                    break
            assert frame is not None
            image = frame.reformat(width=self.size, height=self.size, format="rgb24").to_ndarray()
        actions = self._actions(ep_dir)[t : t + self.chunk]
        chunk = np.zeros((self.chunk, actions.shape[1]), np.float32)
        chunk[: len(actions)] = actions
        return {
            "images_NCHW": torch.from_numpy(image.transpose(2, 0, 1).copy())[None],
            "chunk_CA": torch.from_numpy(chunk),
            "t": t,
        }


def rate(loader: Any, batches: int) -> float:
    it = iter(loader)
    next(it)  # warm-up (worker start-up excluded from both)
    t = time.perf_counter()
    n = 0
    for _ in range(batches):
        n += len(next(it)["t"])
    return n / (time.perf_counter() - t)


def training_rate(dataset: Path, out: Path, steps: int) -> float:
    """Samples/s the ``small`` model consumes in event mode (batch 32, every core, warm)."""
    from wallwm.trainer.train import Run, TrainConfig

    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        run = Run(TrainConfig(dataset=str(dataset), out=str(out), steps=steps + 2))
        loader = make_loader(run.data, batch_size=32, num_workers=0, sampler=run.sampler)
        batches: list[Any] = []
        while len(batches) < steps + 2:  # a small dataset's epoch can be shorter than that
            batches += [b for b, _ in zip(loader, range(steps + 2 - len(batches)), strict=False)]
        for batch in batches[:2]:  # warm-up: first-step allocations
            run.train_step(batch)
        t = time.perf_counter()
        for batch in batches[2:]:
            run.train_step(batch)
        return 32 * steps / (time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--root", default="bench-data/loader")
    parser.add_argument("--train-steps", type=int, default=10, help="timed training steps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(args.root)
    shutil.rmtree(root, ignore_errors=True)
    src, ds = root / "source", root / "dataset"
    record_synthetic(src, SynthConfig(episodes=args.episodes, size=160, noise_std=6.0))
    run_ingest(IngestConfig(source=str(src), dataset=str(ds), segment=SegmentConfig()))
    t = time.perf_counter()
    view = materialize(str(ds), None, size=96)
    mat_s = time.perf_counter() - t
    data = EventFrameDataset(view.path, h_max=32, chunk_len=16)
    from wallwm.pipeline.tables.store import LanceStore

    keys = {
        r["episode_id"]: r["episode_key"]
        for r in LanceStore(str(ds))
        .read("episodes", columns=["episode_id", "episode_key"])
        .to_pylist()
    }
    baseline = DecodeOnTheFly(data, src, keys, 96, 16)
    results = {}
    for workers in (0, 2):
        sampler = ClusterBalancedSampler(data.weights, samples_per_epoch=10**6, seed=0)
        ours = make_loader(data, batch_size=32, num_workers=workers, sampler=sampler)
        results[("wallwm view", workers)] = rate(ours, args.batches)
        sampler = ClusterBalancedSampler(data.weights, samples_per_epoch=10**6, seed=0)
        theirs = DataLoader(
            baseline,
            batch_size=32,
            sampler=sampler,
            collate_fn=collate,
            num_workers=workers,
            multiprocessing_context="spawn" if workers else None,
            persistent_workers=workers > 0,
        )
        results[("decode on the fly", workers)] = rate(theirs, max(4, args.batches // 8))
    train_rate = training_rate(ds, root / "run", args.train_steps)
    table = Table(
        title=f"loader samples/s, batch 32, frame + 16-step chunk, {view.episodes} episodes, "
        f"{view.events} events (view written in {mat_s:.1f} s); the `small` model trains on "
        f"{train_rate:,.1f} samples/s (event mode, batch 32, all cores)"
    )
    for col in ("loader", "workers", "samples/s", "vs decode on the fly", "vs training"):
        table.add_column(col, justify="right")
    for (name, workers), r in results.items():
        base = results[("decode on the fly", workers)]
        table.add_row(name, str(workers), f"{r:,.0f}", f"{r / base:.1f}x", f"{r / train_rate:.0f}x")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
