"""Curation judged by the policy it produces (issue #29): a messy MetaWorld dataset, six arms.

The dataset (recorded once under ``--root``; MetaWorld MT10 by default, MetaWorld's 39-D
observation as the state, 96 px corner camera):

- **clean** demonstrations: ``--demos`` per task, the scripted expert executed with action
  noise 0.3 and labelled with its clean commands (DART, as in ``event_vs_chunk.py``), and the
  over-represented task (``--heavy-task``) recorded ``--heavy-factor`` x as often;
- a **poor demonstrator**: ``--poor-share`` of all episodes, every task, its own noisy commands
  as labels (action noise ``--poor-noise``), pausing and swerving (the recorder's
  ``hesitations`` / ``corrections``);
- **failed** episodes: clean settings cut off after ``--failed-steps`` steps (no success).

Arms, all with the same model, steps, batch and seed, differing only in what the sampler draws:

- ``events``: uniform over events -- what training sees without curation (clustered with the
  power strategy at alpha 1 and no dedup: every event weighs the same);
- ``balanced``: the product's flow until 2026-12-05 -- uniform over clusters, SemDeDup at
  cosine 0.98;
- ``balanced-nodedup``: the same without dedup (what dedup does to the policy) -- and the
  product's flow since, whose trajectory dedup marks only repeated recordings (none here);
- ``learned``: ``clusters learn-weights`` on the ``balanced`` tag, imported as proposed (its
  first run, 2026-12-05: excess measured per training batch, no shrinkage);
- ``learned-nodedup``: ``clusters learn-weights`` on the ``balanced-nodedup`` tag (today's
  default flow), imported as proposed;
- ``oracle``: trained on the clean demonstrations only, each task ``--demos`` times.

Each arm is evaluated closed-loop on held-out MT10 initial states (``--episodes`` per task,
per seed); success with 95 % Wilson intervals, pooled over ``--seeds``, written to
``--results`` (default ``benchmarks/results/curation.json``; finished arms are kept and not
trained again). Hours on a CPU at full size; a reduced run:

    python benchmarks/curation.py --demos 10 --steps 1000 --episodes 10 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

from wallwm.clustering.curation import import_clusters, tag_snapshot
from wallwm.clustering.embed_stage import run_embed
from wallwm.clustering.stage import ClusterConfig, run_cluster
from wallwm.pipeline.ingest import IngestConfig, run_ingest
from wallwm.pipeline.segmentation import SegmentConfig
from wallwm.pipeline.sim.metaworld import MT10, MetaWorldConfig, record_metaworld
from wallwm.pipeline.tables.store import LanceStore
from wallwm.trainer.evaluate import evaluate_metaworld
from wallwm.trainer.learn_weights import LearnWeightsConfig, learn_weights
from wallwm.trainer.policy import LocalPolicy, wilson_interval
from wallwm.trainer.train import TrainConfig, train

ARMS = ("events", "balanced", "balanced-nodedup", "learned", "learned-nodedup", "oracle")


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", nargs="+", default=list(MT10))
    parser.add_argument("--demos", type=int, default=20, help="clean demos per task")
    parser.add_argument("--heavy-task", default="reach-v3")
    parser.add_argument("--heavy-factor", type=int, default=5)
    parser.add_argument("--poor-share", type=float, default=0.3)
    parser.add_argument("--poor-noise", type=float, default=1.0)
    parser.add_argument("--failed-share", type=float, default=0.1)
    parser.add_argument("--failed-steps", type=int, default=40)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--learn-steps", type=int, default=300, help="reference and proxy")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--episodes", type=int, default=10, help="per task and seed")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--record-workers", type=int, default=2)
    parser.add_argument("--root", default="bench-data/curation")
    parser.add_argument("--results", default="benchmarks/results/curation.json")
    return parser.parse_args()


def _record(args: argparse.Namespace, root: Path) -> tuple[Path, Path]:
    """The messy source and the oracle's clean one (recorded once, aside, then renamed)."""
    messy, clean = root / "messy", root / "clean"
    if messy.exists() and clean.exists():
        return messy, clean
    partial = root / "messy.partial"
    shutil.rmtree(partial, ignore_errors=True)
    common: dict[str, Any] = {"size": 128, "state": "observation", "workers": args.record_workers}
    dart: dict[str, Any] = {"action_noise": 0.3, "action_labels": "expert"}
    n_clean = args.demos * (len(args.tasks) - 1) + args.demos * args.heavy_factor
    n_failed = round(args.failed_share * n_clean / (1 - args.poor_share - args.failed_share))
    n_poor = round(args.poor_share * (n_clean + n_failed) / (1 - args.poor_share))
    others = tuple(t for t in args.tasks if t != args.heavy_task)
    # clean: every task --demos times (seed 0), the heavy task's extra demos (seed 1)
    record_metaworld(partial, MetaWorldConfig(tasks=tuple(args.tasks), episodes=args.demos,
                                              seed=0, **dart, **common))  # fmt: skip
    extra = args.demos * (args.heavy_factor - 1)
    record_metaworld(partial, MetaWorldConfig(tasks=(args.heavy_task,), episodes=extra, seed=1,
                                              **dart, **common))  # fmt: skip
    per_task = max(1, round(n_poor / len(args.tasks)))
    record_metaworld(partial, MetaWorldConfig(
        tasks=tuple(args.tasks), episodes=per_task, seed=2, action_noise=args.poor_noise,
        action_labels="executed", hesitations=0.4, corrections=0.3, **common))  # fmt: skip
    per_task = max(1, round(n_failed / len(others)))
    record_metaworld(partial, MetaWorldConfig(
        tasks=others, episodes=per_task, seed=3, max_steps=args.failed_steps, **dart, **common
    ))  # fmt: skip
    # the oracle: the clean seed-0 demos only (each task --demos times), a copy
    clean_partial = root / "clean.partial"
    shutil.rmtree(clean_partial, ignore_errors=True)
    clean_partial.mkdir(parents=True)
    for ep in partial.iterdir():
        if ep.is_dir() and "-000-" in ep.name:
            shutil.copytree(ep, clean_partial / ep.name)
    clean_partial.rename(clean)
    partial.rename(messy)
    return messy, clean


def _dataset(source: Path, ds: Path) -> Path:
    """Ingest, segment, caption (signals) and embed a source (each stage skips done work)."""
    from wallwm.captioner.stage import CaptionStageConfig, run_caption

    run_ingest(IngestConfig(source=str(source), dataset=str(ds), segment=SegmentConfig()))
    run_caption(CaptionStageConfig(dataset=str(ds)))
    run_embed(str(ds))
    return ds


def _tag(ds: Path, name: str, cfg: ClusterConfig) -> str:
    """Cluster with ``cfg`` and tag the result ``name`` (once)."""
    store = LanceStore(str(ds))
    if name not in store.tags("events"):
        run_cluster(str(ds), cfg)
        tag_snapshot(store, name)
    return name


def _prepare_arm(arm: str, args: argparse.Namespace, messy: Path, oracle: Path) -> tuple[Path, str]:
    """The dataset and tag an arm trains on."""
    # SemDeDup at 0.98 was the product's default when these arms were first run (before
    # 2026-12-05); the default trajectory dedup marks none of this dataset's events (no
    # recording repeats another), so its balanced arm is ``balanced-nodedup``.
    semantic = ClusterConfig(dedup="embedding", dedup_threshold=0.98)
    nodedup = ClusterConfig(dedup="off")
    if arm == "events":
        return messy, _tag(messy, "events", ClusterConfig(strategy="power", alpha=1.0, dedup="off"))
    if arm == "balanced":
        return messy, _tag(messy, "balanced", semantic)
    if arm == "balanced-nodedup":
        return messy, _tag(messy, "balanced-nodedup", nodedup)
    if arm == "oracle":
        return oracle, _tag(oracle, "oracle", semantic)
    # learned: on the SemDeDup tag (first run 2026-12-05, excess per training batch);
    # learned-nodedup: on today's default flow's tag, excess on fixed probes, shrunk by reliability
    base, cfg = ("balanced", semantic) if arm == "learned" else ("balanced-nodedup", nodedup)
    store = LanceStore(str(messy))
    if arm not in store.tags("events"):
        _tag(messy, f"{base}-again", cfg)  # the base clusters, current again
        proposal = learn_weights(LearnWeightsConfig(
            dataset=str(messy), tag=f"{base}-again", out=str(Path(args.root) / f"{arm}.json"),
            preset=args.preset, steps=args.learn_steps, batch_size=args.batch_size,
            size=args.size))  # fmt: skip
        import_clusters(store, proposal.path, f"benchmarks/curation.py: {arm} weights")
        tag_snapshot(store, arm)
    return messy, arm


def _train_and_eval(
    arm: str, ds: Path, tag: str, seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    out = Path(args.root) / "runs" / f"{arm}-s{seed}"
    start = time.perf_counter()
    train(TrainConfig(dataset=str(ds), tag=tag, size=args.size, preset=args.preset,
                      steps=args.steps, batch_size=args.batch_size, seed=seed, out=str(out),
                      resume=True, checkpoint_every=max(1, args.steps // 4)))  # fmt: skip
    trained_s = time.perf_counter() - start
    policy = LocalPolicy(out / "checkpoint.pt", seed=seed)
    ev = evaluate_metaworld(policy, args.tasks, args.episodes, args.size, max_steps=500,
                            seed=seed, state_dim=policy.spec.state_dim)  # fmt: skip
    return {
        "per_task": {t: [r["successes"], r["episodes"]] for t, r in ev["per_task"].items()},
        "train_seconds": round(trained_s, 1),
    }


def _pooled(per_seed: dict[str, Any]) -> dict[str, Any]:
    wins = sum(s for r in per_seed.values() for s, _ in r["per_task"].values())
    total = sum(n for r in per_seed.values() for _, n in r["per_task"].values())
    lo, hi = wilson_interval(wins, total)
    return {"successes": wins, "episodes": total, "rate": wins / max(1, total), "ci95": [lo, hi]}


def main() -> None:
    """Record, build the arms' tags, train and evaluate every arm; print the table."""
    args = _parse()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    messy_src, clean_src = _record(args, root)
    messy = _dataset(messy_src, root / "messy-ds")
    oracle = _dataset(clean_src, root / "oracle-ds")
    results_path = Path(args.results)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    settings = {k: v for k, v in vars(args).items() if k not in ("arms", "seeds", "results")}
    for arm in args.arms:
        ds, tag = _prepare_arm(arm, args, messy, oracle)
        entry = results.get(arm, {"settings": settings, "per_seed": {}})
        if entry["settings"] != settings:
            entry = {"settings": settings, "per_seed": {}}
        for seed in args.seeds:
            if str(seed) not in entry["per_seed"]:
                entry["per_seed"][str(seed)] = _train_and_eval(arm, ds, tag, seed, args)
                entry.update(_pooled(entry["per_seed"]))
                results[arm] = entry
                results_path.parent.mkdir(parents=True, exist_ok=True)
                results_path.write_text(json.dumps(results, indent=1))
        print(
            f"{arm:18s} {entry['rate']:.1%}  [{entry['ci95'][0]:.0%}, {entry['ci95'][1]:.0%}]"
            f"  ({entry['successes']}/{entry['episodes']})",
            flush=True,
        )


if __name__ == "__main__":
    main()
