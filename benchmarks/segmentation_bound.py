"""How much of each recording's ground truth the segmentation cost can see at all.

For the recordings of ``benchmarks/segmentation_robots.py`` (read from ``--root``; record them
with that script), each episode is cut by the product path (the model chosen on a spread
sample) and the cost its cuts were weighed with is kept (:func:`weigh_cuts`: the unit-noise
channels after the noise refit). Then an *oracle-neighbour split test* is scored on it:

- every true boundary's gain is the cost it saves when cut between its two true neighbours
  (the test knows every other boundary exactly);
- every true event's null gain is the largest saving of a single cut inside it, more than 3
  frames from both ends (where a cut would be a false one) -- one per event, so the false cuts
  it counts are a lower bound;
- gripper command switches are cuts whatever their gain (as in the product).

One threshold on those gains (in units of the product's BIC price of an event) is swept; the
best F1 it reaches says how well *any* penalty on this cost could do even with the rest of the
cut known. It is not a bound on every method: the product's bend and pause tests look at
more than a cut's gain and can beat it (MetaWorld at noise 0), and a different within-event
model or another signal changes the cost itself.

With ``--sweep 0.25,0.5,...`` the whole product path also runs at those multiples of the
default penalty (what one penalty per dataset, had it a way to choose, could reach).

    python benchmarks/segmentation_bound.py [--root bench-data/robots] [--json out.json]
        [--sweep 0.25,0.5,1,2,4,8,16,32,64]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from segmentation_robots import as_position_targets, load, product_config

from wallwm.pipeline.segmentation import WeighedCuts, segment, weigh_cuts
from wallwm.pipeline.segmentation.evaluate import EMPTY, match_boundaries

#: A cut within this many frames of a true boundary matches it (the benchmarks' F1@3).
TOLERANCE = 3


def gains(
    weighed: WeighedCuts, truth: list[int], t_len: int
) -> tuple[list[float], list[float], int]:
    """(true boundaries' gains, true events' null gains, gripper boundaries), penalty units."""
    cost, penalty = weighed.cost, weighed.penalty

    def saved(a: int, b: int, c: int) -> float:
        return float(cost(np.array([a]), c)[0] - cost(np.array([a, b]), np.array([b, c])).sum())

    edges = [0, *sorted({t for t in truth if 0 < t < t_len}), t_len]
    true_gains, forced = [], 0
    for a, b, c in zip(edges, edges[1:], edges[2:], strict=False):
        if any(abs(b - f) <= 1 for f in weighed.forced):
            forced += 1
        else:
            true_gains.append(saved(a, b, c) / penalty)
    nulls = []
    for a, c in itertools.pairwise(edges):
        inner = np.arange(a + TOLERANCE + 1, c - TOLERANCE)
        if len(inner):
            split = cost(np.full(len(inner), a), inner) + cost(inner, np.full(len(inner), c))
            nulls.append(float(cost(np.array([a]), c)[0] - split.min()) / penalty)
    return true_gains, nulls, forced


def best_threshold(true_gains: list[float], nulls: list[float], forced: int) -> dict[str, float]:
    """The threshold on gains with the best F1, and its recall and precision."""
    g, n = np.asarray(true_gains), np.asarray(nulls)
    total = len(g) + forced
    best = {"f1": 0.0, "threshold": float("nan"), "recall": 0.0, "precision": 0.0}
    for h in sorted({0.0, *g.tolist(), *n.tolist()}):
        tp, fp = forced + int((g > h).sum()), int((n > h).sum())
        f1 = 2 * tp / max(2 * tp + fp + (total - tp), 1)
        if f1 > best["f1"]:
            best = {
                "f1": f1,
                "threshold": h,
                "recall": tp / total,
                "precision": tp / max(tp + fp, 1),
            }
    return best


def measure(episodes: list[dict[str, Any]], sweep: list[float]) -> dict[str, Any]:
    """The product's F1 and the split test's best on one recording (and F1 at ``sweep``)."""
    cfg, _ = product_config(episodes)
    at_multiple = {}
    for m in sweep:  # the whole product path at m x the default penalty
        scaled = cfg.model_copy(update={"penalty": cfg.penalty * m})
        score = EMPTY
        for ep in episodes:
            cut = segment(ep["signals"], scaled, traces=False).starts
            score += match_boundaries(cut, ep["truth"], ep["frames"], TOLERANCE)
        at_multiple[str(m)] = score.f1
    product = EMPTY
    true_gains: list[float] = []
    nulls: list[float] = []
    forced = 0
    for ep in episodes:
        cut = segment(ep["signals"], cfg, traces=False).starts
        product += match_boundaries(cut, ep["truth"], ep["frames"], TOLERANCE)
        weighed = weigh_cuts(ep["signals"], cfg)
        if weighed is None:
            continue
        g, n, f = gains(weighed, ep["truth"], ep["frames"])
        true_gains += g
        nulls += n
        forced += f
    best = best_threshold(true_gains, nulls, forced)
    above = int((np.asarray(true_gains) > 1.0).sum())
    return {
        "model": cfg.action_model,
        "product_f1": product.f1,
        "product_precision": product.precision,
        "product_recall": product.recall,
        "boundaries": len(true_gains) + forced,
        "gripper": forced,
        "gain_above_penalty": above / max(len(true_gains), 1),
        "null_above_penalty": float((np.asarray(nulls) > 1.0).mean()) if nulls else 0.0,
        "bound": best,
        "f1_at_penalty_multiple": at_multiple,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="bench-data/robots")
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--sweep",
        default="",
        help="comma-separated multiples of the default penalty to also run the product at",
    )
    args = parser.parse_args()
    sweep = [float(v) for v in args.sweep.split(",") if v.strip()]
    recordings = sorted(p for p in Path(args.root).iterdir() if p.is_dir())
    if not recordings:
        raise SystemExit(f"{args.root}: no recordings (run benchmarks/segmentation_robots.py)")
    results = {}
    for path in recordings:
        episodes = load(path)
        results[path.name] = measure(episodes, sweep)
        targets = as_position_targets(episodes)
        if targets is not None:  # the same rollouts recorded as the positions reached
            results[f"{path.name} as position targets"] = measure(targets, sweep)
    table = Table(title="what the segmentation cost can see (oracle-neighbour split test)")
    for col in (
        "recording", "model", "boundaries (gripper)", "wallwm F1 (P / R)",
        "true gains > price", "null gains > price", "best split test F1 (P / R)", "at x price",
    ):  # fmt: skip
        table.add_column(col, justify="right")
    for name, r in results.items():
        b = r["bound"]
        table.add_row(
            name,
            r["model"],
            f"{r['boundaries']} ({r['gripper']})",
            f"{r['product_f1']:.3f} ({r['product_precision']:.2f} / {r['product_recall']:.2f})",
            f"{r['gain_above_penalty']:.0%}",
            f"{r['null_above_penalty']:.0%}",
            f"{b['f1']:.3f} ({b['precision']:.2f} / {b['recall']:.2f})",
            f"{b['threshold']:.2f}",
        )
    Console().print(table)
    if sweep:
        grid = Table(title="wallwm F1 at multiples of the default penalty (the whole product path)")
        grid.add_column("recording")
        for m in sweep:
            grid.add_column(f"x{m:g}", justify="right")
        for name, r in results.items():
            grid.add_row(name, *(f"{v:.3f}" for v in r["f1_at_penalty_multiple"].values()))
        Console().print(grid)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
