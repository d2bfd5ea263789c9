"""Curation: inspect clusters, edit weights, exclude, export/import, tag snapshots, diff them.

Every edit is a new Lance version of ``clusters`` (and of ``events``, whose per-event weights are
recomputed from the curated cluster weights) plus a ``runs`` row carrying the edit's message. A
tag names the current versions of ``episodes``, ``events`` and ``clusters`` together, so training
can refer to exactly that curated snapshot by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from wallwm.clustering.kmeans import balanced_weights
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.lineage import StageRun, recorded_configs
from wallwm.pipeline.tables.store import LanceStore, TableStore, WriteResult, sql_quote

TAGGED_TABLES = (schemas.EPISODES, schemas.EVENTS, schemas.CLUSTERS)
SUMMARY_COLUMNS = [
    "cluster_id",
    "level",
    "parent_id",
    "size",
    "duplicates",
    "label",
    "weight",
    "excluded",
    "notes",
]


class CurationError(ValueError):
    """A curation request that cannot be applied (names what is wrong)."""


def list_clusters(
    store: TableStore, level: int | None = None, version: int | str | None = None
) -> list[dict[str, Any]]:
    """Clusters without centroids, coarse levels first, biggest first."""
    table = _clusters(store, version)
    levels = sorted(set(table.column("level").to_pylist()))
    if level is not None and level not in levels:
        raise CurationError(f"--level {level}: no clusters at that level (levels: {levels})")
    rows = [
        {c: r[c] for c in SUMMARY_COLUMNS}
        for r in table.to_pylist()
        if level is None or r["level"] == level
    ]
    return sorted(rows, key=lambda r: (-r["level"], -r["size"], r["cluster_id"]))


def _clusters(store: TableStore, version: int | str | None = None) -> pa.Table:
    if not store.exists(schemas.CLUSTERS):
        raise CurationError("no clusters yet: run `wallwm cluster` first")
    if version is None:
        return store.read(schemas.CLUSTERS)
    if not isinstance(store, LanceStore):
        raise CurationError("versions and tags need the Lance store")
    try:
        return store.at(schemas.CLUSTERS, version).to_table()
    except Exception as exc:
        raise CurationError(f"no clusters version or tag {version!r}: {exc}") from exc


def show_cluster(store: TableStore, cluster_id: str, examples: int = 10) -> dict[str, Any]:
    """One cluster with its children and example captions (representatives first)."""
    rows = [r for r in list_clusters(store) if r["cluster_id"] == cluster_id]
    if not rows:
        raise CurationError(f"no cluster {cluster_id!r}")
    info = rows[0]
    full = store.read(schemas.CLUSTERS, where=f"cluster_id = {sql_quote(cluster_id)}").to_pylist()[
        0
    ]
    info["representatives"] = full["representatives"]
    info["children"] = [
        r["cluster_id"] for r in list_clusters(store) if r["parent_id"] == cluster_id
    ]
    if info["level"] == 1:
        events = store.read(
            schemas.EVENTS,
            columns=["event_id", "caption", "is_duplicate", "weight"],
            where=f"cluster_id = {sql_quote(cluster_id)}",
        ).to_pylist()
        rank = {e: i for i, e in enumerate(full["representatives"])}
        events.sort(key=lambda e: rank.get(e["event_id"], len(rank)))
        info["examples"] = events[:examples]
    return info


def _last_cluster_config(store: TableStore) -> dict[str, Any]:
    configs = recorded_configs(store, "cluster")
    return configs[0] if configs else {"strategy": "uniform", "alpha": 0.5}


def reweight(store: TableStore) -> int:
    """Recompute every event's weight from the curated cluster weights.

    Uses the strategy of the last ``wallwm cluster`` run; returns the number of events.
    """
    cfg = _last_cluster_config(store)
    leaves = [r for r in store.read(schemas.CLUSTERS).to_pylist() if r["level"] == 1]
    index = {c["cluster_id"]: i for i, c in enumerate(leaves)}
    events = store.read(
        schemas.EVENTS, columns=["event_id", "cluster_id", "is_duplicate"]
    ).to_pylist()
    events = [e for e in events if e["cluster_id"] in index]
    labels = np.array([index[e["cluster_id"]] for e in events], dtype=np.int64)
    dup = np.array([bool(e["is_duplicate"]) for e in events])
    curated = {i: 0.0 if c["excluded"] else float(c["weight"]) for i, c in enumerate(leaves)}
    weights = balanced_weights(
        labels, dup, curated, cfg.get("strategy", "uniform"), float(cfg.get("alpha", 0.5))
    )
    store.update_columns(
        schemas.EVENTS,
        pa.table(
            {"event_id": [e["event_id"] for e in events], "weight": pa.array(weights, pa.float32())}
        ),
        "event_id",
    )
    return len(events)


def _edit(store: TableStore, updates: list[dict[str, Any]], message: str) -> WriteResult:
    """Apply cluster edits, recompute event weights, record lineage with the message."""
    known = {r["cluster_id"]: r for r in list_clusters(store)}
    unknown = [u["cluster_id"] for u in updates if u["cluster_id"] not in known]
    if unknown:
        raise CurationError(f"unknown cluster ids: {unknown}")
    for u in updates:
        if "weight" in u and not (np.isfinite(u["weight"]) and u["weight"] >= 0):
            raise CurationError(f"{u['cluster_id']}: weight must be a finite number >= 0")
    run = StageRun("curate", {"updates": updates, "message": message})
    fields = {
        "cluster_id": pa.string(),
        "weight": pa.float64(),
        "excluded": pa.bool_(),
        "notes": pa.string(),
    }
    result = WriteResult(
        schemas.CLUSTERS, 0, 0, 0, store.version(schemas.CLUSTERS), store.version(schemas.CLUSTERS)
    )
    for keys in {tuple(sorted(u)) for u in updates}:  # one write per set of edited columns
        group = [u for u in updates if tuple(sorted(u)) == keys]
        schema = pa.schema([pa.field(k, fields[k]) for k in keys])
        result = store.update_columns(
            schemas.CLUSTERS, pa.Table.from_pylist(group, schema), "cluster_id"
        )
    reweight(store)
    run.record(store, schemas.CLUSTERS, result, 0, message or "curation edit")
    return result


def set_weight(store: TableStore, cluster_id: str, weight: float, message: str = "") -> WriteResult:
    """Set a cluster's curated weight (multiplies its sampling mass; 0 drops it)."""
    return _edit(
        store,
        [{"cluster_id": cluster_id, "weight": float(weight)}],
        message or f"set weight of {cluster_id} to {weight}",
    )


def exclude(
    store: TableStore, cluster_id: str, message: str = "", excluded: bool = True
) -> WriteResult:
    """Exclude (or re-include) a cluster from sampling."""
    return _edit(
        store,
        [{"cluster_id": cluster_id, "excluded": excluded}],
        message or f"{'exclude' if excluded else 'include'} {cluster_id}",
    )


def export_clusters(store: TableStore, path: str | Path) -> int:
    """Write the curation state (ids, labels, sizes, weights, exclusions, notes) as JSON."""
    rows = list_clusters(store)
    Path(path).write_text(json.dumps({"dataset": store.root, "clusters": rows}, indent=1))
    return len(rows)


def import_clusters(store: TableStore, path: str | Path, message: str = "") -> int:
    """Apply weights, exclusions and notes from an exported (and edited) JSON file."""
    try:
        data = json.loads(Path(path).read_text())
        rows = data["clusters"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CurationError(f"{path}: not a clusters export ({exc})") from exc
    updates = [
        {
            "cluster_id": r["cluster_id"],
            "weight": float(r["weight"]),
            "excluded": bool(r["excluded"]),
            "notes": str(r.get("notes", "")),
        }
        for r in rows
    ]
    _edit(store, updates, message or f"import {path}")
    return len(updates)


def tag_snapshot(store: TableStore, name: str) -> dict[str, int]:
    """Tag the current versions of episodes, events and clusters with ``name``.

    A dataset not clustered yet tags its episodes and events (a snapshot to train on uncurated);
    one without events cannot be trained on and is refused.
    """
    if not isinstance(store, LanceStore):
        raise CurationError("tags need the Lance store")
    if not store.exists(schemas.EVENTS):
        raise CurationError("no events yet: run `wallwm segment` first")
    versions = {}
    for table in (t for t in TAGGED_TABLES if store.exists(t)):
        if name in store.tags(table):
            raise CurationError(f"tag {name!r} already exists on {table} (tags are immutable)")
        versions[table] = int(store.at(table).version)
    for table, version in versions.items():
        store.create_tag(table, name, version)
    return versions


def diff_clusters(store: TableStore, a: int | str, b: int | str) -> dict[str, Any]:
    """What changed in the clusters between two tags or versions."""
    left = {r["cluster_id"]: r for r in list_clusters(store, version=_version(a))}
    right = {r["cluster_id"]: r for r in list_clusters(store, version=_version(b))}
    changed = []
    for cid in sorted(left.keys() & right.keys()):
        delta = {
            k: (left[cid][k], right[cid][k])
            for k in ("weight", "excluded", "notes", "size", "duplicates")
            if left[cid][k] != right[cid][k]
        }
        if delta:
            changed.append(
                {"cluster_id": cid, **{k: {"from": v[0], "to": v[1]} for k, v in delta.items()}}
            )
    return {
        "from": a,
        "to": b,
        "added": sorted(right.keys() - left.keys()),
        "removed": sorted(left.keys() - right.keys()),
        "changed": changed,
    }


def _version(ref: int | str) -> int | str:
    return int(ref) if isinstance(ref, str) and ref.isdigit() else ref
