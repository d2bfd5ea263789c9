"""Segmentation quality and speed on MetaWorld MT10, side by side with two baselines.

Records MT10 (``--episodes`` per task, Gaussian action noise 0.3 so that boundaries vary), ingests
it, then scores on the same episodes in one run:

- ``wallwm events``: our change-point segmenter on the robot signals (default config: actions
  affine in the paired proprio state within an event);
- ``wallwm events (line in time)``: the same with ``action_model="time"`` (the ablation: actions
  a line in time within an event, the model before the state-feedback one);
- ``fixed (best H)``: fixed chunks, the chunk length in {4, 8, 16, 32} with the best overall F1@3;
- ``PySceneDetect``: ContentDetector (the visual-shot peer) on the episode videos, at its default
  threshold and at the best of a small threshold sweep (so the peer is not judged on a bad
  setting).

Boundary F1 within 3 frames and within 1 frame (episode start/end excluded, each ground-truth
boundary matched at most once), per task and overall, plus frames/s of each method. A second
table times ``wallwm ingest`` + ``wallwm segment`` against decoding the same videos alone.

Usage: ``python benchmarks/segmentation.py [--episodes 10] [--size 128] [--reuse]
[--task T ...] [--root DIR] [--seed S] [--workers W]`` (``--task`` repeatable, default the
MT10 tasks: pass other MetaWorld tasks to check that the defaults carry over to tasks they were
not chosen on; ``--seed`` records a fresh sample of the same tasks).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from wallwm.pipeline.ingest import IngestConfig, run_ingest
from wallwm.pipeline.runtime import ensure_ray
from wallwm.pipeline.segmentation import SegmentConfig, segment
from wallwm.pipeline.segmentation.evaluate import (
    EMPTY,
    BoundaryScore,
    match_boundaries,
    scored_frames,
)
from wallwm.pipeline.segmentation.stage import SegmentStageConfig, episode_signals, run_segment
from wallwm.pipeline.sim.metaworld import MT10, MetaWorldConfig, record_metaworld
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.arrays import from_vector_series
from wallwm.pipeline.tables.store import LanceStore


def load_episodes(store: LanceStore) -> list[dict[str, Any]]:
    table = store.read(schemas.EPISODES)
    out = []
    for i in range(table.num_rows):
        row = table.slice(i, 1).drop_columns(["actions", "states"]).to_pylist()[0]
        row["actions_TA"] = from_vector_series(table.column("actions")[i])
        states = table.column("states")[i]
        row["states_TS"] = (
            from_vector_series(states) if states.is_valid and row["state_dim"] else None
        )
        row["task"] = row["episode_key"].rsplit("-", 2)[0]
        row["truth"] = [e["start_frame"] for e in row["gt_events"] or []]
        row.setdefault("success_frame", None)  # a dataset ingested before the column
        out.append(row)
    return out


def score(
    episodes: list[dict[str, Any]],
    cuts: dict[str, list[int]],
    tol: int,
    until_success: bool = False,
) -> dict[str, BoundaryScore]:
    """F1 inputs per task and overall; ``until_success``: each episode before its first
    successful frame (the frames MetaWorld records after success are no part of the truth)."""
    per: dict[str, BoundaryScore] = defaultdict(lambda: EMPTY)
    for ep in episodes:
        end = scored_frames(ep["num_frames"], ep["success_frame"], until_success)
        per[ep["task"]] += match_boundaries(cuts[ep["episode_id"]], ep["truth"], end, tol)
    per["overall"] = sum((v for k, v in per.items()), EMPTY)
    return per


def run_signal_method(
    episodes: list[dict[str, Any]], cfg: SegmentConfig
) -> tuple[dict[str, list[int]], float]:
    t = time.perf_counter()
    cuts = {
        ep["episode_id"]: segment(
            episode_signals(ep, ep["actions_TA"], ep["states_TS"], None), cfg
        ).starts
        for ep in episodes
    }
    return cuts, time.perf_counter() - t


def run_scenedetect(
    episodes: list[dict[str, Any]], threshold: float
) -> tuple[dict[str, list[int]], float]:
    from scenedetect import ContentDetector, detect

    t = time.perf_counter()
    cuts = {}
    for ep in episodes:
        scenes = detect(
            ep["cameras"][0]["uri"], ContentDetector(threshold=threshold, min_scene_len=1)
        )
        cuts[ep["episode_id"]] = [0, *(s[0].get_frames() for s in scenes[1:])]
    return cuts, time.perf_counter() - t


def decode_all(episodes: list[dict[str, Any]]) -> float:
    import av

    t = time.perf_counter()
    for ep in episodes:
        for cam in ep["cameras"]:
            with av.open(cam["uri"]) as c:
                for _ in c.decode(video=0):
                    pass
    return time.perf_counter() - t


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def time_paths(src: Path, root: Path, repeats: int) -> dict[str, float]:
    """Median seconds of each path over ``repeats`` rounds (each round times every path once).

    The shared VM's speed drifts by tens of percent within minutes, so every path is timed in
    each round, side by side, and the medians are compared. A warm-up ingest first starts Ray's
    worker processes (their start-up is a one-time cost per cluster, not per frame).
    """
    shutil.rmtree(root / "warmup", ignore_errors=True)
    run_ingest(IngestConfig(source=str(src), dataset=str(root / "warmup")))
    episodes = load_episodes(LanceStore(str(root / "warmup")))
    workers = os.cpu_count() or 1
    shards = [episodes[i::workers] for i in range(workers)]
    ingest = IngestConfig(source=str(src), dataset=str(root / "dataset"))
    fused = IngestConfig(source=str(src), dataset=str(root / "fused"), segment=SegmentConfig())
    rounds: dict[str, list[float]] = defaultdict(list)
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(decode_all, [episodes[:1]] * workers))  # start the pool
        for _ in range(repeats):
            for name in ("dataset", "fused"):
                shutil.rmtree(root / name, ignore_errors=True)
            paths = {
                "decode only (1 proc)": _timed(decode_all, episodes),
                f"decode only ({workers} procs)": _timed(
                    lambda: list(pool.map(decode_all, shards))
                ),
                "wallwm ingest": _timed(run_ingest, ingest),
                "wallwm segment": _timed(run_segment, SegmentStageConfig(dataset=ingest.dataset)),
                "wallwm run (fused)": _timed(run_ingest, fused),
            }
            segmented, fused_run = paths["wallwm segment"][1], paths["wallwm run (fused)"][1]
            assert fused_run.events == segmented.events and segmented.failed == 0
            for name, (secs, _out) in paths.items():
                rounds[name].append(secs)
    out = {name: statistics.median(v) for name, v in rounds.items()}
    out["ingest, then segment"] = out["wallwm ingest"] + out["wallwm segment"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--action-noise", type=float, default=0.3)
    parser.add_argument("--root", default="bench-data/segmentation")
    parser.add_argument("--reuse", action="store_true", help="reuse an existing recording")
    parser.add_argument("--task", action="append", help="MetaWorld task (default: MT10)")
    parser.add_argument("--repeats", type=int, default=3, help="timing rounds (median)")
    parser.add_argument("--seed", type=int, default=0, help="recording seed (a fresh sample)")
    parser.add_argument("--workers", type=int, default=1, help="recording processes")
    args = parser.parse_args()
    root = Path(args.root)
    src = root / "source"
    if not (args.reuse and src.exists()):
        shutil.rmtree(root, ignore_errors=True)
        t = time.perf_counter()
        record_metaworld(
            src,
            MetaWorldConfig(
                tasks=tuple(args.task or MT10),
                episodes=args.episodes,
                size=args.size,
                action_noise=args.action_noise,
                seed=args.seed,
                workers=args.workers,
            ),
        )
        print(
            f"recorded {len(args.task or MT10)} tasks x {args.episodes} "
            f"in {time.perf_counter() - t:.0f} s"
        )
    ensure_ray()
    timings = time_paths(src, root, args.repeats)
    store = LanceStore(str(root / "dataset"))
    episodes = load_episodes(store)
    frames = sum(ep["num_frames"] for ep in episodes)

    methods: dict[str, tuple[dict[str, list[int]], float]] = {}
    methods["wallwm events"] = run_signal_method(episodes, SegmentConfig())
    ablation = "wallwm events (line in time)"
    methods[ablation] = run_signal_method(episodes, SegmentConfig(action_model="time"))
    fixed = {
        h: run_signal_method(episodes, SegmentConfig(method="fixed", chunk_len=h))
        for h in (4, 8, 16, 32)
    }
    best_h = max(fixed, key=lambda h: score(episodes, fixed[h][0], 3)["overall"].f1)
    methods[f"fixed (best H={best_h})"] = fixed[best_h]
    sweeps = {th: run_scenedetect(episodes, th) for th in (27.0, 15.0, 8.0, 4.0)}
    best_th = max(sweeps, key=lambda th: score(episodes, sweeps[th][0], 3)["overall"].f1)
    methods["PySceneDetect (default 27)"] = sweeps[27.0]
    methods[f"PySceneDetect (best {best_th:g})"] = sweeps[best_th]

    scores3 = {m: score(episodes, cuts, 3) for m, (cuts, _s) in methods.items()}
    scores1 = {m: score(episodes, cuts, 1) for m, (cuts, _s) in methods.items()}
    console = Console(width=200)
    title = (
        f"segmentation F1@3 frames per task: MetaWorld, {len(episodes)} episodes, "
        f"action noise {args.action_noise}, {args.size}px"
    )
    table = Table(title=title)
    table.add_column("task")
    for m in methods:
        table.add_column(m, justify="right")
    tasks = sorted(t for t in scores3["wallwm events"] if t != "overall")
    for task in [*tasks, "overall"]:
        table.add_row(task, *(f"{scores3[m][task].f1:.3f}" for m in methods))
    table.add_row("overall F1@1", *(f"{scores1[m]['overall'].f1:.3f}" for m in methods))
    table.add_row(
        "overall precision@3", *(f"{scores3[m]['overall'].precision:.3f}" for m in methods)
    )
    table.add_row("overall recall@3", *(f"{scores3[m]['overall'].recall:.3f}" for m in methods))
    until = {m: score(episodes, cuts, 3, until_success=True) for m, (cuts, _s) in methods.items()}
    table.add_row(
        "overall F1@3 before success", *(f"{until[m]['overall'].f1:.3f}" for m in methods)
    )
    table.add_row("frames/s", *(f"{frames / s:,.0f}" for _c, s in methods.values()))
    console.print(table)
    wins = [
        t
        for t in tasks
        if all(
            scores3["wallwm events"][t].f1 > scores3[m][t].f1
            for m in methods
            if m not in ("wallwm events", ablation)
        )
    ]
    console.print(f"wallwm events beats every baseline on {len(wins)}/{len(tasks)} tasks")

    cpus = os.cpu_count() or 1
    speed = Table(
        title=f"ingest + segment vs decode-only ({frames} frames, {len(episodes)} episodes, "
        f"{cpus} CPUs, Ray workers warm, median of {args.repeats} rounds)"
    )
    for col in ("path", "seconds", "frames/s", "vs decode (1 proc)", f"vs decode ({cpus} procs)"):
        speed.add_column(col, justify="right")
    decode_s, decode_n_s = timings["decode only (1 proc)"], timings[f"decode only ({cpus} procs)"]
    order = ("wallwm ingest", "wallwm segment", "ingest, then segment", "wallwm run (fused)")
    for name, secs in [(n, timings[n]) for n in (*list(timings)[:2], *order)]:
        fps = frames / secs
        speed.add_row(
            name,
            f"{secs:.2f}",
            f"{fps:,.0f}",
            f"{fps * decode_s / frames:.2f}x",
            f"{fps * decode_n_s / frames:.2f}x",
        )
    console.print(speed)


if __name__ == "__main__":
    main()
