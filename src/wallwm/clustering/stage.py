"""The cluster stage: event embeddings -> clusters table + per-event weights.

Embeddings come from :mod:`wallwm.clustering.embed_stage`. ``run_cluster`` builds the
hierarchy (or, with ``assign_only``, places events in the existing
clusters without re-clustering and reports drift), marks near-duplicates, and writes
``cluster_id``/``is_duplicate``/``weight`` on events. Curated cluster weights and exclusions are
kept across ``--assign-only`` runs; a full re-cluster starts a new hierarchy (its clusters get
new ids) and says so in lineage.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from wallwm.clustering.kmeans import (
    IntArray,
    _assign,
    balanced_weights,
    hierarchical_kmeans,
    semantic_dedup,
    trajectory_dedup,
)
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.lineage import StageRun, stage_failures
from wallwm.pipeline.tables.store import LanceStore, TableStore, WriteResult

# --------------------------------------------------------------------------- clustering


class ClusterConfig(BaseModel):
    """Options of ``wallwm cluster``."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    ks: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [64, 8],
        min_length=1,
        description="Clusters per level, finest first.",
    )
    assign_only: bool = Field(False, description="Place events in existing clusters; report drift.")
    dedup: Literal["trajectory", "embedding", "off"] = Field(
        "trajectory",
        description="What makes an event a duplicate: its action/state trajectory repeating a "
        "kept one's within `dedup_rms` (the same motion recorded twice: the default, as "
        "repeats of a task are a demonstration dataset's signal), its embedding's cosine "
        "similarity above `dedup_threshold` (SemDeDup), or nothing.",
    )
    dedup_threshold: float = Field(
        0.98, gt=0, le=1, description="Cosine similarity of duplicates (`dedup='embedding'`)."
    )
    dedup_rms: float = Field(
        0.01,
        ge=0,
        description="RMS difference of two trajectory vectors, in dataset standard deviations, "
        "below which they repeat each other (`dedup='trajectory'`). Distinct demonstrations "
        "measured >= 0.013 apart (three MetaWorld datasets); a copy is 0.",
    )
    strategy: Literal["uniform", "power"] = "uniform"
    alpha: float = Field(0.5, ge=0, description="Exponent of the power strategy.")
    representatives: int = Field(5, ge=1)
    seed: int = 0


@dataclasses.dataclass
class ClusterSummary:
    """Closing numbers of a cluster run."""

    run_id: str
    events: int = 0
    clusters: dict[int, int] = dataclasses.field(default_factory=dict)
    duplicates: int = 0
    assigned: int = 0
    drift: dict[str, float] = dataclasses.field(default_factory=dict)
    replaced_curated: int = 0
    seconds: float = 0.0


def _vectors(table: pa.Table, column: str) -> np.ndarray:
    """A fixed-size-list column as an (N, D) float32 array."""
    col = table.column(column).combine_chunks()
    flat = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    return flat.reshape(-1, col.type.list_size)


def _embeddings(
    store: TableStore, trajectories: bool = False
) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray | None]:
    """Event rows, their combined embeddings and (``trajectories``) trajectory vectors: one read."""
    schema = store.schema(schemas.EVENTS)
    if schema is None or "embedding" not in schema.names:
        raise ValueError("events have no embeddings yet: run `wallwm embed` first")
    if trajectories and "traj_embedding" not in schema.names:
        raise ValueError("events have no trajectory embeddings: run `wallwm embed` again")
    vectors = ["embedding", *(["traj_embedding"] if trajectories else [])]
    table = store.read(
        schemas.EVENTS,
        columns=["event_id", *vectors, "cluster_id", "verb", "object", "caption"],
    )
    rows = table.drop_columns(vectors).to_pylist()
    for name in vectors:
        if table.column(name).null_count:
            raise ValueError(
                f"{table.column(name).null_count} events have no {name}: run `wallwm embed` again"
            )
    traj = _vectors(table, "traj_embedding") if trajectories else None
    return rows, _vectors(table, "embedding"), traj


def _label(rows: list[dict[str, Any]]) -> str:
    """Most frequent verb/object of the cluster's captions (``unlabelled`` without captions)."""
    verbs = Counter(r["verb"] for r in rows if r.get("verb"))
    objects = Counter(r["object"] for r in rows if r.get("object"))
    if not verbs:
        return "unlabelled"
    verb = verbs.most_common(1)[0][0]
    return f"{verb} {objects.most_common(1)[0][0]}" if objects else verb


def run_cluster(
    dataset: str, cfg: ClusterConfig | None = None, store: TableStore | None = None
) -> ClusterSummary:
    """Cluster (or assign) every embedded event, dedup, and write weights."""
    cfg = cfg or ClusterConfig()
    store = store or LanceStore(dataset)
    run = StageRun("cluster", cfg.model_dump())
    summary = ClusterSummary(run.run_id)
    with stage_failures(store, run, dataset):
        _cluster(store, cfg, run, summary)
    return summary


def _cluster(store: TableStore, cfg: ClusterConfig, run: StageRun, summary: ClusterSummary) -> None:
    """The run's work inside its failure record."""
    t0 = time.perf_counter()
    before = store.version(schemas.EVENTS)
    rows, x, traj = _embeddings(store, trajectories=cfg.dedup == "trajectory")
    summary.events = len(rows)
    if cfg.assign_only:
        clusters = _assign_only(store, rows, x, summary)
    else:
        clusters = _full(store, rows, x, cfg, run.run_id, summary)
    leaf_ids = [c["cluster_id"] for c in clusters if c["level"] == 1]
    centroids = np.stack(
        [np.asarray(c["centroid"], np.float32) for c in clusters if c["level"] == 1]
    )
    labels, _ = _assign(x, centroids)
    dup = _duplicates(x, traj, labels, centroids, cfg)
    summary.duplicates = int(dup.sum())
    curated = {
        i: (0.0 if c["excluded"] else float(c["weight"]))
        for i, c in enumerate(c for c in clusters if c["level"] == 1)
    }
    weights = balanced_weights(labels, dup, curated, cfg.strategy, cfg.alpha)
    store.update_columns(
        schemas.EVENTS,
        pa.table(
            {
                "event_id": [r["event_id"] for r in rows],
                "cluster_id": [leaf_ids[i] for i in labels],
                "is_duplicate": pa.array(dup, pa.bool_()),
                "weight": pa.array(weights, pa.float32()),
            }
        ),
        "event_id",
    )
    dup_counts = Counter(leaf_ids[i] for i in labels[dup])
    sizes = Counter(leaf_ids[i] for i in labels)
    updates = [
        {"cluster_id": cid, "size": sizes.get(cid, 0), "duplicates": dup_counts.get(cid, 0)}
        for cid in leaf_ids
    ]
    store.update_columns(
        schemas.CLUSTERS,
        pa.Table.from_pylist(
            updates,
            pa.schema(
                [
                    pa.field("cluster_id", pa.string()),
                    pa.field("size", pa.int64()),
                    pa.field("duplicates", pa.int64()),
                ]
            ),
        ),
        "cluster_id",
    )
    summary.seconds = time.perf_counter() - t0
    run.record(
        store,
        schemas.EVENTS,
        WriteResult(schemas.EVENTS, 0, len(rows), 0, before, store.version(schemas.EVENTS)),
        0,
        f"{'assign-only' if cfg.assign_only else 'clustered'} events={len(rows)} "
        f"duplicates={summary.duplicates} drift={summary.drift} "
        f"replaced_curated_clusters={summary.replaced_curated}",
    )


def _duplicates(
    x: np.ndarray,
    traj: np.ndarray | None,
    labels: IntArray,
    centroids: np.ndarray,
    cfg: ClusterConfig,
) -> npt.NDArray[np.bool_]:
    """The events ``cfg.dedup`` marks duplicate (``traj``: their trajectory vectors)."""
    if cfg.dedup == "off":
        return np.zeros(len(x), dtype=bool)
    if cfg.dedup == "embedding":
        return semantic_dedup(x, labels, centroids, cfg.dedup_threshold)
    assert traj is not None  # read with the embeddings for dedup="trajectory"
    return trajectory_dedup(x, labels, centroids, traj, cfg.dedup_rms)


def _full(
    store: TableStore,
    rows: list[dict[str, Any]],
    x: np.ndarray,
    cfg: ClusterConfig,
    run_id: str,
    summary: ClusterSummary,
) -> list[dict[str, Any]]:
    """A new hierarchy with new ids: curation (weights, exclusions, notes) starts afresh.

    Curation survives ``--assign-only`` runs; a full re-cluster is a new set of clusters and the
    number of curated clusters it replaces is recorded in lineage.
    """
    levels = hierarchical_kmeans(x, effective_ks(cfg.ks, len(x)), seed=cfg.seed)
    if store.exists(schemas.CLUSTERS):
        summary.replaced_curated = store.count(schemas.CLUSTERS, "weight != 1.0 OR excluded = true")
    tag = run_id.rsplit("-", maxsplit=1)[-1][:6]
    ids = [
        [f"L{lvl + 1}-{tag}-{i:04d}" for i in range(len(level.centroids))]
        for lvl, level in enumerate(levels)
    ]
    members = levels[0].labels
    clusters = []
    for lvl, level in enumerate(levels):
        parent = levels[lvl + 1].labels if lvl + 1 < len(levels) else None
        for i, centroid in enumerate(level.centroids):
            # events of this cluster: follow the finest labels up to this level
            mask = members == i if lvl == 0 else np.isin(members, _descendants(levels, lvl, i))
            member_rows = [rows[j] for j in np.flatnonzero(mask)]
            dists = ((x[mask] - centroid) ** 2).sum(axis=1)
            reps = [member_rows[j]["event_id"] for j in np.argsort(dists)[: cfg.representatives]]
            cid = ids[lvl][i]
            clusters.append(
                {
                    "cluster_id": cid,
                    "level": lvl + 1,
                    "parent_id": ids[lvl + 1][int(parent[i])] if parent is not None else None,
                    "centroid": centroid.astype(np.float32).tolist(),
                    "size": int(mask.sum()),
                    "label": _label(member_rows),
                    "representatives": reps,
                    "duplicates": 0,
                    "weight": 1.0,
                    "excluded": False,
                    "notes": "",
                    "cluster_run_id": run_id,
                }
            )
        summary.clusters[lvl + 1] = len(level.centroids)
    table = pa.Table.from_pylist(clusters, schemas.clusters_schema(x.shape[1]))
    if store.exists(schemas.CLUSTERS):
        scope = "cluster_id IS NOT NULL"  # a full re-cluster replaces the whole hierarchy at once
        store.replace(schemas.CLUSTERS, table, "cluster_id", scope)
    else:
        store.upsert(schemas.CLUSTERS, table, "cluster_id")
    return clusters


def effective_ks(ks: list[int], n: int) -> list[int]:
    """Cap the requested clusters per level for small datasets.

    At least ~4 events per finest cluster and at least 2 children per parent; levels that would
    not merge anything are dropped.
    """
    out: list[int] = []
    limit = max(1, n // 4)
    for requested in ks:
        k = max(1, min(requested, limit))
        if out and k >= out[-1]:
            break
        out.append(k)
        limit = max(1, k // 2)
    return out


def _descendants(levels: list[Any], lvl: int, index: int) -> np.ndarray:
    """Level-1 cluster indices under cluster ``index`` of level ``lvl`` (0-based levels)."""
    nodes = np.array([index])
    for down in range(lvl, 0, -1):
        nodes = np.flatnonzero(np.isin(levels[down].labels, nodes))
    return nodes


def _assign_only(
    store: TableStore, rows: list[dict[str, Any]], x: np.ndarray, summary: ClusterSummary
) -> list[dict[str, Any]]:
    """Keep the hierarchy (and its curated weights); measure how well new events fit it."""
    if not store.exists(schemas.CLUSTERS):
        raise ValueError("no clusters yet: run `wallwm cluster` without --assign-only first")
    clusters: list[dict[str, Any]] = store.read(schemas.CLUSTERS).to_pylist()
    leaves = [c for c in clusters if c["level"] == 1]
    centroids = np.stack([np.asarray(c["centroid"], np.float32) for c in leaves])
    if centroids.shape[1] != x.shape[1]:
        raise ValueError("the embedding dimension changed since clustering: re-cluster fully")
    _labels, dists = _assign(x, centroids)
    new = np.array([r["cluster_id"] is None for r in rows])
    summary.assigned = int(new.sum())
    old = dists[~new]
    if new.any() and old.size:
        p95 = float(np.percentile(old, 95))
        summary.drift = {
            "new_events": float(new.sum()),
            "mean_distance_ratio": float(dists[new].mean() / max(old.mean(), 1e-12)),
            "fraction_beyond_p95": float((dists[new] > p95).mean()),
        }
    for lvl in sorted({c["level"] for c in clusters}):
        summary.clusters[lvl] = sum(c["level"] == lvl for c in clusters)
    return clusters
