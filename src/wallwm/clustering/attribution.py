"""Which clusters a policy fails in: closed-loop failures mapped to the curated clusters.

``wallwm eval policy`` records, per rollout, the events the planner named (its plan follower's
event trace); a failed rollout's *last* event is where it was when time ran out. The planner names
events by texts from the training captions (the checkpoint's caption bank), so each maps back to
the dataset's events with that caption and through them to their cluster (the most common one,
if the caption is shared). Per cluster: its curated weight, its share of the training samples
(event weights), and its share of the failures -- a cluster whose failure share is far above its
sample share is where more (or better) data would help.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import TableStore


def failed_events(result: dict[str, Any]) -> list[str | None]:
    """The last planned event of every failed rollout of an ``eval policy`` result."""
    return [
        r.get("last_event")
        for task in result.get("per_task", {}).values()
        for r in task.get("rollouts", [])
        if not r.get("success")
    ]


def failure_attribution(store: TableStore, result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per leaf cluster (and one for unmapped failures): weight, sample share, failures.

    Raises:
        ValueError: The dataset has no clusters yet.
    """
    if not store.exists(schemas.CLUSTERS):
        raise ValueError("no clusters yet: run `wallwm cluster` first")
    clusters = {
        c["cluster_id"]: c
        for c in store.read(
            schemas.CLUSTERS, columns=["cluster_id", "level", "label", "weight", "excluded"]
        ).to_pylist()
        if c["level"] == 1
    }
    events = store.read(schemas.EVENTS, columns=["caption", "cluster_id", "weight"]).to_pylist()
    by_caption: dict[str, Counter[str]] = {}
    mass: Counter[str] = Counter()
    for e in events:
        if e["cluster_id"] is None:
            continue
        mass[e["cluster_id"]] += float(e["weight"] or 0.0)  # type: ignore[assignment]
        if e["caption"]:
            by_caption.setdefault(e["caption"], Counter())[e["cluster_id"]] += 1
    failures: Counter[str] = Counter()
    for text in failed_events(result):
        owners = by_caption.get(text or "")
        failures[owners.most_common(1)[0][0] if owners else "unmapped"] += 1
    total_mass = sum(mass.values()) or 1.0
    total_failures = sum(failures.values()) or 1
    rows = [
        {
            "cluster_id": cid,
            "label": c["label"],
            "weight": float(c["weight"]),
            "excluded": bool(c["excluded"]),
            "sample_share": mass.get(cid, 0.0) / total_mass,
            "failures": failures.get(cid, 0),
            "failure_share": failures.get(cid, 0) / total_failures,
        }
        for cid, c in clusters.items()
    ]
    if failures.get("unmapped"):
        rows.append(
            {
                "cluster_id": "unmapped",
                "label": "(event text not among the dataset's captions)",
                "weight": 0.0,
                "excluded": False,
                "sample_share": 0.0,
                "failures": failures["unmapped"],
                "failure_share": failures["unmapped"] / total_failures,
            }
        )
    return sorted(rows, key=lambda r: (-r["failure_share"], -r["sample_share"], r["cluster_id"]))
