"""The experiment: learning from semantic events vs fixed-length chunks, same everything else.

Same data (MetaWorld tasks recorded by ``wallwm sim record`` with action noise injected into
execution and the expert's clean commands as labels -- DART, ``--action-labels expert``; by
default MT10 with 50 demos per task), same model size, steps, batch and optimiser; only the
conditioning and the action horizon change. Arms:

- ``chunk H``: fixed chunks with the task instruction (every H in ``--chunk-lens``; the best is
  reported as the chunk arm);
- ``chunk H + subtask text``: fixed chunks conditioned on the current event's description (the
  key control: knowing the subtask without acting to its end);
- ``event``: actions to the end of the true current event, conditioned on its description;
- ``unified``: instruction only, with staircase thought slots distilled toward the next event.

Each arm trains with every seed in ``--seeds`` and is evaluated closed-loop on held-out initial
states; success rates with 95 % Wilson intervals per arm (pooled over seeds and tasks) and the
per-task table are printed and written to ``--results`` (default ``<root>/results.json``) and
a plot beside it (``.png``). Keep that file in the repository (``--results benchmarks/results/
NAME.json``): the data and checkpoints under ``--root`` can be rebuilt, hours of seeds cannot.
Arms and seeds may run in separate invocations (e.g. ``--arms event`` today, ``--arms chunk``
tomorrow, ``--seeds 1`` next week, or side by side: the file is re-read and merged under a lock
when an arm finishes): the results accumulate in the one file, each arm with the
settings it ran with and one entry per seed; a new seed joins an arm's earlier seeds only if
every other setting is the same and it trains on the same events (and captions, for the arms
that read them: a fingerprint of event ids and captions is stored per arm) -- otherwise the run
is refused before it trains (``--replace`` lets it replace them), and checked again when it
finishes: if an invocation beside it stored the arm otherwise meanwhile, this run's results go
to ``<results>.<arm>.refused.json`` instead of replacing those seeds. Arms are named by their
horizon and, where they read captions, their captioner (``chunk H=8``, ``event h_max=16
(signals-v2)``, ``unified H=16 (signals-v2)``), so an h_max-8 event arm, or one on VLM
captions, is a new arm beside the others; run directories carry the data fingerprint.
``--report-only`` prints and plots them without running anything.
Full run (hours on a CPU): ``python benchmarks/event_vs_chunk.py``; a quick look:
``python benchmarks/event_vs_chunk.py --tasks reach-v3 push-v3 --demos 10 --steps 300
--seeds 0 --episodes 10 --chunk-lens 16``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import itertools
import json
import shutil
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from rich.console import Console
from rich.table import Table

from wallwm.captioner.stage import CaptionStageConfig, run_caption
from wallwm.pipeline.ingest import IngestConfig, run_ingest
from wallwm.pipeline.segmentation import SegmentConfig
from wallwm.pipeline.sim.metaworld import MT10, MetaWorldConfig, record_metaworld
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.ids import stable_hash
from wallwm.pipeline.tables.store import LanceStore
from wallwm.trainer.evaluate import evaluate_metaworld
from wallwm.trainer.model import MODES
from wallwm.trainer.policy import LocalPolicy, wilson_interval
from wallwm.trainer.train import TrainConfig, train


def main() -> None:
    args = _parse()
    root = Path(args.root)
    saved = Path(args.results) if args.results else root / "results.json"
    # Arms run in earlier invocations on the same root (e.g. ``--arms event`` then ``--arms
    # chunk``) stay in the report: each entry keeps the settings it ran with.
    results = _load_results(saved)
    if args.report_only:  # the table and plot of the arms already run, nothing trained
        _report(args, root, saved, results)
        return
    ds = _prepare(args, root)
    todo = [arm for arm in _arms(args.chunk_lens, _captioner(ds)) if arm[1] in args.arms]
    data = {mode: data_fingerprint(ds, mode in CAPTIONED) for mode in {m for _, m, _ in todo}}
    _check_poolable(args, saved, results, [(name, data[mode]) for name, mode, _ in todo])
    for name, mode, horizon in todo:
        new = _run_arm(args, root, ds, mode, horizon, data[mode])
        _store_arm(args, root, saved, name, new)  # after every arm: a later failure keeps it


#: The modes whose training reads the captions (conditioning, or distillation targets).
CAPTIONED = frozenset({"chunk_text", "event", "unified"})


def _arms(chunk_lens: list[int], captioner: str) -> list[tuple[str, str, int]]:
    """(name, mode, horizon) of every arm; a model's h_max is the invocation's largest H.

    Arms that read captions carry the captioner in their name (``event h_max=16 (signals-v2)``):
    the same arm on other captions is another arm, kept beside it.
    """
    h_max = max(chunk_lens)
    arms = [(f"chunk H={h}", "chunk", h) for h in chunk_lens]
    arms += [(f"chunk H={h} + subtask text", "chunk_text", h) for h in chunk_lens]
    arms += [(f"event h_max={h_max}", "event", h_max), (f"unified H={h_max}", "unified", h_max)]
    return [(f"{n} ({captioner})" if m in CAPTIONED else n, m, h) for n, m, h in arms]


def _captioner(ds: Path) -> str:
    """Who wrote the dataset's captions: their ``caption_model`` values (``signals-v2``, ...)."""
    models = LanceStore(str(ds)).read(schemas.EVENTS, columns=["caption_model"])
    return "+".join(sorted({m for m in models.column(0).to_pylist() if m})) or "uncaptioned"


def data_fingerprint(ds: Path, with_captions: bool) -> str:
    """A hash of the events an arm trains on: their ids (segmentation), and captions if read.

    Event ids derive from the episode's content and the event's frame range, so a re-recorded
    dataset with the same frames and cuts has the same fingerprint; a recaptioned one differs
    only for the arms that read captions.
    """
    rows = LanceStore(str(ds)).read(schemas.EVENTS, columns=["event_id", "caption"]).to_pylist()
    return stable_hash(
        sorted((r["event_id"], r["caption"] if with_captions else None) for r in rows), length=16
    )


@contextlib.contextmanager
def _locked(saved: Path) -> Iterator[None]:
    """An exclusive lock beside the results file, held while it is read, merged and written."""
    saved.parent.mkdir(parents=True, exist_ok=True)
    with saved.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _store_arm(
    args: argparse.Namespace, root: Path, saved: Path, name: str, new: dict[str, Any]
) -> None:
    """Merge one finished arm into the results file, and report.

    The file is read again under a lock: another invocation run beside this one may have
    written it since this one started -- its seeds must not be lost, and an arm of this name
    it stored with other settings must not be replaced. That arm is checked again as at start;
    if refused now, this run's results are kept aside (``<results>.<arm>.refused.json``) rather
    than thrown away, since they cost an hour a seed.
    """
    with _locked(saved):
        results = _load_results(saved)
        try:
            _check_poolable(args, saved, results, [(name, new["data"])])
        except SystemExit as refused:
            aside = saved.with_name(f"{saved.stem}.{_slug(name)}.refused.json")
            aside.write_text(json.dumps({"results": {name: new}}, indent=1) + "\n")
            raise SystemExit(f"{refused} (stored since this run began; kept in {aside})") from None
        results[name] = _merge_seeds(results.get(name), new)
        _report(args, root, saved, results)


def _slug(name: str) -> str:
    """An arm's name as a file-name part: ``chunk H=8 (signals-v2)`` -> ``chunk-H-8-signals-v2``."""
    return "-".join("".join(c if c.isalnum() else " " for c in name).split())


def _load_results(saved: Path) -> dict[str, Any]:
    """The stored results; entries named before arms carried their horizon are renamed."""
    if not saved.exists():
        return {}
    results: dict[str, Any] = json.loads(saved.read_text())["results"]
    legacy = {"event": "event h_max={}", "unified": "unified H={}"}
    return {
        (legacy[name].format(entry["horizon"]) if name in legacy else name): entry
        for name, entry in results.items()
    }


def _check_poolable(
    args: argparse.Namespace,
    saved: Path,
    results: dict[str, Any],
    arms: list[tuple[str, str]],
) -> None:
    """Refuse to run an arm whose stored seeds ran otherwise, unless ``--replace``.

    ``arms`` holds (name, data fingerprint) pairs. A new seed joins an arm's stored seeds only
    when every setting in ``SAME_RUN`` matches and it trains on the same events (and captions,
    where it reads them); otherwise the new run would replace them, and seeds cost an hour each
    on a CPU.
    """
    for name, data in arms:
        if name not in results or args.replace:
            continue
        old = results[name]["args"]
        differ = [f"{k}={old.get(k)!r}" for k in _differing(old, vars(args))]
        if results[name].get("data") != data:
            differ.append(f"data {results[name].get('data')} (now {data})")
        if differ:
            raise SystemExit(
                f"{saved}: arm {name!r} holds seeds {sorted(results[name].get('per_seed', {}))} "
                f"run otherwise ({', '.join(differ)}); running it would replace them -- use "
                "another --results file, or --replace to discard them"
            )


#: Settings that must match for seeds of one arm to be pooled.
SAME_RUN = (
    "tasks", "demos", "steps", "batch_size", "preset", "size", "camera", "episodes", "max_steps",
    "action_labels", "action_noise", "state", "noise_scale", "replan_every", "chunk_lens",
)  # fmt: skip


def _differing(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The ``SAME_RUN`` settings in which two runs' arguments differ."""
    return [k for k in SAME_RUN if old.get(k) != new.get(k)]


def _per_seed(entry: dict[str, Any]) -> dict[str, Any]:
    """An arm's per-seed results (entries written before seeds were kept: their one seed)."""
    if "per_seed" in entry:
        return dict(entry["per_seed"])
    args = entry["args"]
    if len(args["seeds"]) != 1:  # pooled over several seeds: they cannot be told apart
        return {}
    n = int(args["episodes"])
    return {
        str(args["seeds"][0]): {
            "per_task": {t: [round(rate * n), n] for t, rate in entry["per_task"].items()},
            "steps_to_success": entry["steps_to_success"],
            "train_seconds": entry["train_seconds_per_seed"],
        }
    }


def _merge_seeds(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """``new`` with the seeds of ``old`` that it did not rerun, if both ran the same way."""
    if old is None or _differing(old["args"], new["args"]) or old.get("data") != new.get("data"):
        return new
    seeds = {**_per_seed(old), **new["per_seed"]}
    return {**new, **_pooled(seeds), "per_seed": seeds}


def _pooled(per_seed: dict[str, Any]) -> dict[str, Any]:
    """Success pooled over seeds and tasks, with its 95 % interval and the per-seed rates."""
    tasks = {t for r in per_seed.values() for t in r["per_task"]}
    per_task = {t: [0, 0] for t in sorted(tasks)}
    steps: dict[str, list[int]] = {t: [] for t in per_task}
    for r in per_seed.values():
        for t, (wins, n) in r["per_task"].items():
            per_task[t][0] += wins
            per_task[t][1] += n
            steps[t] += r["steps_to_success"].get(t, [])
    wins = sum(w for w, _ in per_task.values())
    trials = sum(n for _, n in per_task.values())
    seed_rates = {
        seed: sum(w for w, _ in r["per_task"].values())
        / max(1, sum(n for _, n in r["per_task"].values()))
        for seed, r in sorted(per_seed.items())
    }
    return {
        "successes": wins,
        "trials": trials,
        "rate": wins / max(trials, 1),
        "ci95": wilson_interval(wins, trials),
        "per_task": {t: w / max(n, 1) for t, (w, n) in per_task.items()},
        "steps_to_success": steps,
        "seed_rates": seed_rates,
        "train_seconds_per_seed": statistics.mean(r["train_seconds"] for r in per_seed.values()),
    }


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", nargs="+", default=list(MT10))
    parser.add_argument("--demos", type=int, default=50)
    parser.add_argument("--steps", type=int, default=5000, help="event mode: ~1 h on 2 cores")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument(
        "--camera",
        action="append",
        help="MetaWorld camera recorded and seen by the model, repeatable (default: corner)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--max-steps", type=int, default=500, help="MetaWorld's own limit")
    parser.add_argument(
        "--action-labels",
        choices=("executed", "expert"),
        default="expert",
        help="demos label the expert's clean commands while executing noisy ones (DART)",
    )
    parser.add_argument("--action-noise", type=float, default=0.3)
    parser.add_argument(
        "--state",
        choices=("proprio", "observation"),
        default="proprio",
        help="robot state recorded and seen by the model: hand + gripper, or MetaWorld's "
        "whole observation (object poses and goal: privileged)",
    )
    parser.add_argument("--noise-scale", type=float, default=1.0, help="flow temperature")
    parser.add_argument("--replan-every", type=int, default=8)
    parser.add_argument("--record-workers", type=int, default=2)
    parser.add_argument("--chunk-lens", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument(
        "--arms", nargs="+", default=["chunk", "chunk_text", "event", "unified"], choices=MODES
    )
    parser.add_argument("--root", default="bench-data/event_vs_chunk")
    parser.add_argument(
        "--results",
        help="results file the seeds accumulate in (default <root>/results.json); the plot "
        "is written beside it",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="print and plot the results file, no runs"
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="let an arm run with other settings than its stored seeds replace them",
    )
    return parser.parse_args()


def _prepare(args: argparse.Namespace, root: Path) -> Path:
    """Record (once), ingest, segment and caption; returns the dataset path."""
    src, ds = root / "source", root / "dataset"
    if not src.exists():  # record aside, then rename: an interrupted recording is never reused
        partial = root / "source.partial"
        shutil.rmtree(partial, ignore_errors=True)
        record_metaworld(
            partial,
            MetaWorldConfig(
                tasks=tuple(args.tasks),
                episodes=args.demos,
                size=128,
                cameras=tuple(args.camera or ["corner"]),
                action_noise=args.action_noise,
                action_labels=args.action_labels,
                state=args.state,
                workers=args.record_workers,
            ),
        )
        partial.rename(src)
    run_ingest(IngestConfig(source=str(src), dataset=str(ds), segment=SegmentConfig()))
    run_caption(CaptionStageConfig(dataset=str(ds)))
    return ds


def _run_dir(root: Path, mode: str, horizon: int, seed: object, data: str | None) -> Path:
    """A seed's run directory; the data fingerprint in its name keeps runs on other data apart."""
    return root / "runs" / (f"{mode}-H{horizon}-s{seed}" + (f"-{data[:8]}" if data else ""))


def _run_arm(
    args: argparse.Namespace, root: Path, ds: Path, mode: str, horizon: int, data: str
) -> dict[str, object]:
    """Train one arm with every seed, evaluate each closed loop; pooled results."""
    per_seed: dict[str, Any] = {}
    for seed in args.seeds:
        out = _run_dir(root, mode, horizon, seed, data)
        # A finished run is only evaluated again: its directory's fingerprint says its events and
        # captions are these, even if the tables were rewritten since (new Lance versions, which
        # a resume would refuse); its checkpoint keeps its training time.
        seconds = _finished_seconds(out / "checkpoint.pt", args.steps)
        if seconds is None:  # train or resume it: the time is summed over resumed processes
            seconds = _train_seed(args, ds, mode, horizon, seed, out)[-1]["seconds"]
        policy = LocalPolicy(
            out / "checkpoint.pt",
            replan_every=min(args.replan_every, horizon),
            seed=seed,
            noise_scale=args.noise_scale,
        )
        ev = evaluate_metaworld(
            policy,
            args.tasks,
            args.episodes,
            args.size,
            camera=list(policy.spec.cameras) or args.camera or ["corner"],
            max_steps=args.max_steps,
            seed=seed,
            state_dim=policy.spec.state_dim,
        )
        per_seed[str(seed)] = {
            "per_task": {t: [r["successes"], r["episodes"]] for t, r in ev["per_task"].items()},
            "steps_to_success": {t: r["steps_to_success"] for t, r in ev["per_task"].items()},
            "train_seconds": seconds,
            "step_seconds": _median_step_seconds(out / "metrics.jsonl"),
        }
    return {
        "mode": mode,
        "horizon": horizon,
        **_pooled(per_seed),
        "per_seed": per_seed,
        "args": vars(args),
        "data": data,
    }


def _train_seed(
    args: argparse.Namespace, ds: Path, mode: str, horizon: int, seed: int, out: Path
) -> list[dict[str, float]]:
    """Train (or resume) one seed of one arm into ``out``; its logged metrics."""
    return train(
        TrainConfig(
            dataset=str(ds),
            size=args.size,
            mode=mode,
            preset=args.preset,
            steps=args.steps,
            batch_size=args.batch_size,
            chunk_len=horizon,
            h_max=max(args.chunk_lens),
            seed=seed,
            out=str(out),
            resume=True,
            checkpoint_every=max(1, args.steps // 4),
        )
    )


def _finished_seconds(checkpoint: Path, steps: int) -> float | None:
    """The training time of a run whose checkpoint has trained all ``steps``; None otherwise.

    Checkpoints older than the time record count 0 s.
    """
    if not checkpoint.exists():
        return None
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)
    return float(state.get("train_seconds", 0.0)) if int(state["step"]) >= steps else None


def _median_step_seconds(log: Path) -> float | None:
    """Median seconds per training step over one run's metrics log (None without a log).

    The median of the logged intervals, unlike a run's total time, is not moved by a pause or
    by minutes of other work sharing the CPU: the figure runs can be compared by.
    """
    if not log.exists():
        return None
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    per_step = [
        (b["seconds"] - a["seconds"]) / (b["step"] - a["step"])
        for a, b in itertools.pairwise(rows)
        # a run resumed before checkpoints kept the training time restarts its clock
        if b["step"] > a["step"] and b["seconds"] > a["seconds"]
    ]
    return statistics.median(per_step) if per_step else None


def _step_seconds(root: Path, entry: dict[str, Any]) -> str:
    """The median over an arm's seeds of their median s/step ("-" where none is known).

    Each seed's figure is stored with its results; seeds stored before that fall back to their
    run's metrics log under ``root``, if it is still there (directories named before they
    carried the data fingerprint too).
    """
    known = [
        r.get("step_seconds")
        or _median_step_seconds(
            _run_dir(root, entry["mode"], entry["horizon"], seed, entry.get("data"))
            / "metrics.jsonl"
        )
        or _median_step_seconds(
            _run_dir(root, entry["mode"], entry["horizon"], seed, None) / "metrics.jsonl"
        )
        for seed, r in entry.get("per_seed", {}).items()
    ]
    values = [v for v in known if v is not None]
    return f"{statistics.median(values):.2f}" if values else "-"


def _report(
    args: argparse.Namespace, root: Path, saved: Path, results: dict[str, dict[str, object]]
) -> None:
    """Write the results file (not for ``--report-only``) and its plot, print the table.

    The plot is ``saved`` with ``.png``; a report-only run leaves the results file as it was,
    since it is kept in the repository and only runs add to it.
    """
    chunk_arms = [k for k in results if results[k]["mode"] == "chunk"]
    best = max(chunk_arms, key=lambda k: float(results[k]["rate"]), default="")  # type: ignore[arg-type]
    saved.parent.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        partial = saved.with_suffix(".partial")  # written aside, then renamed: never half a file
        partial.write_text(
            json.dumps({"args": vars(args), "best_chunk": best, "results": results}, indent=1)
        )
        partial.replace(saved)
    table = Table(
        title=f"closed-loop success, {len(args.tasks)} tasks x {args.demos} demos, "
        f"{args.steps} steps, {args.episodes} episodes/task/seed, pooled over seeds"
    )
    table.add_column("arm", overflow="fold", min_width=16)
    for col in ("success", "95% interval", "per seed", *args.tasks, "train s/seed", "s/step"):
        table.add_column(col, justify="right")
    for name, r in results.items():
        mark = " (best chunk)" if name == best else ""
        low, high = cast("tuple[float, float]", r["ci95"])
        table.add_row(
            name + mark,
            f"{r['rate']:.1%}",
            f"[{low:.0%}, {high:.0%}]",
            " / ".join(f"{v:.0%}" for v in r.get("seed_rates", {}).values()) or "-",  # type: ignore[attr-defined]
            *(f"{r['per_task'].get(t, float('nan')):.0%}" for t in args.tasks),  # type: ignore[attr-defined]
            f"{r['train_seconds_per_seed']:.0f}",
            _step_seconds(root, r),
        )
    Console(width=200).print(table)
    _plot(results, saved.with_suffix(".png"))


#: Bar colour per mode: the chunk baselines, the caption-reading control, the two event arms.
_MODE_COLOURS = {
    "chunk": "#888888",
    "chunk_text": "#c9a227",
    "event": "#3a7bd5",
    "unified": "#2a9d5c",
}


def _plot(results: dict[str, dict[str, Any]], out: Path) -> None:
    """Success per arm with its 95 % interval: horizontal bars, best on top, a colour per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(results, key=lambda n: float(results[n]["rate"]))  # best drawn last: on top
    rates = [float(results[n]["rate"]) for n in names]
    lows = [r - float(results[n]["ci95"][0]) for n, r in zip(names, rates, strict=True)]
    highs = [float(results[n]["ci95"][1]) - r for n, r in zip(names, rates, strict=True)]
    # Arms may have run different numbers of seeds so far: the label says how many are pooled.
    seeds = [len(results[n].get("per_seed", {})) or 1 for n in names]
    labels = [f"{n}  ({k} seed{'s' * (k > 1)})" for n, k in zip(names, seeds, strict=True)]
    colours = [_MODE_COLOURS.get(str(results[n].get("mode")), "#4a7") for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.2))
    ax.barh(labels, rates, xerr=[lows, highs], capsize=3, color=colours)
    for y, rate in enumerate(rates):
        ax.text(0.01, y, f"{rate:.1%}", va="center", color="white", fontsize=8)
    ax.set_xlabel("closed-loop success (pooled over seeds and tasks, 95 % interval)")
    ax.set_xlim(0, 1)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
