"""The embed and cluster stages: events -> embeddings -> clusters table + per-event weights.

``run_embed`` writes the embedding columns (text through a Ray Data actor pool, trajectory and
optional visual parts in the driver) and builds a Lance vector index on ``embedding``.
``run_cluster`` builds the hierarchy (or, with ``assign_only``, places events in the existing
clusters without re-clustering and reports drift), marks near-duplicates, and writes
``cluster_id``/``is_duplicate``/``weight`` on events. Curated cluster weights and exclusions are
kept across ``--assign-only`` runs; a full re-cluster starts a new hierarchy (its clusters get
new ids) and says so in lineage.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from wallwm.clustering.embed import (
    EmbedConfig,
    TextEmbedder,
    VisualEncoder,
    combine,
    embed_texts_ray,
    trajectory_features,
)
from wallwm.clustering.kmeans import _assign, balanced_weights, hierarchical_kmeans, semantic_dedup
from wallwm.pipeline import schemas
from wallwm.pipeline.arrays import from_vector_series
from wallwm.pipeline.lineage import StageRun
from wallwm.pipeline.store import LanceStore, TableStore, WriteResult

EMBED_COLUMNS = ("text_embedding", "traj_embedding", "visual_embedding", "embedding")


@dataclasses.dataclass
class EmbedSummary:
    """Closing numbers of an embed run."""

    run_id: str
    events: int = 0
    embedded: int = 0
    dims: dict[str, int] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    text_seconds: float = 0.0

    @property
    def captions_per_s(self) -> float:
        """Text-embedding throughput (captions per second, model load included)."""
        return self.embedded / self.text_seconds if self.text_seconds > 0 else 0.0


def _event_text(e: dict[str, Any], instruction: str) -> str:
    """What the text embedding sees: the caption (with its done state), else the instruction."""
    if e.get("caption"):
        return f"{e['caption']}. {e.get('done_state') or ''}".strip()
    return instruction


def _trajectories(
    store: TableStore, events: list[dict[str, Any]], steps: int
) -> dict[str, np.ndarray]:
    """Trajectory features per event (dataset-wide z-scoring of actions + states)."""
    table = store.read(schemas.EPISODES, columns=["episode_id", "actions", "states", "state_dim"])
    series: dict[str, np.ndarray] = {}
    for i in range(table.num_rows):
        actions = from_vector_series(table.column("actions")[i])
        states_cell = table.column("states")[i]
        parts = [actions]
        if table.column("state_dim")[i].as_py() and states_cell.is_valid:
            parts.append(from_vector_series(states_cell))
        series[table.column("episode_id")[i].as_py()] = np.concatenate(parts, axis=1)
    allframes = np.concatenate(list(series.values())) if series else np.zeros((1, 1))
    mean, std = allframes.mean(axis=0), np.maximum(allframes.std(axis=0), 1e-6)
    return {
        e["event_id"]: trajectory_features(
            series[e["episode_id"]][e["start_frame"] : e["end_frame"]],
            mean,
            std,
            e["duration_s"],
            steps,
        )
        for e in events
    }


def run_embed(
    dataset: str,
    cfg: EmbedConfig | None = None,
    store: TableStore | None = None,
    text_factory: Callable[[], TextEmbedder] | None = None,
) -> EmbedSummary:
    """Compute and store every event's embeddings; (re)build the vector index."""
    cfg = cfg or EmbedConfig()
    store = store or LanceStore(dataset)
    run = StageRun("embed", cfg.model_dump())
    summary = EmbedSummary(run.run_id)
    t0 = time.perf_counter()
    before = store.version(schemas.EVENTS)
    events = store.read(
        schemas.EVENTS,
        columns=[
            "event_id",
            "episode_id",
            "start_frame",
            "end_frame",
            "duration_s",
            "caption",
            "done_state",
            "keyframes",
        ],
    ).to_pylist()
    instructions = {
        r["episode_id"]: r["instruction"]
        for r in store.read(schemas.EPISODES, columns=["episode_id", "instruction"]).to_pylist()
    }
    summary.events = len(events)
    if not events:
        return summary
    ids = [e["event_id"] for e in events]
    t = time.perf_counter()
    text = embed_texts_ray(
        ids,
        [_event_text(e, instructions[e["episode_id"]]) for e in events],
        cfg.text_model,
        cfg.batch_size,
        text_factory,
    )
    summary.text_seconds = time.perf_counter() - t
    parts: dict[str, np.ndarray] = {"text": np.stack([text[i] for i in ids])}
    traj = _trajectories(store, events, cfg.traj_steps)
    parts["traj"] = np.stack([traj[i] for i in ids])
    if cfg.visual_weights and cfg.weights.get("visual", 0) > 0:
        encoder = VisualEncoder(cfg.visual_weights)
        middles = [
            next((k["jpeg"] for k in e["keyframes"] if k["position"] == "middle"), b"")
            for e in events
        ]
        parts["visual"] = encoder.embed_jpegs(middles)
    combined = combine(parts, cfg.weights)
    columns = {"text": "text_embedding", "traj": "traj_embedding", "visual": "visual_embedding"}
    data: dict[str, pa.Array] = {"event_id": pa.array(ids)}
    fields = []
    for name, x in [*parts.items(), ("combined", combined)]:
        col = columns.get(name, "embedding")
        fields.append(schemas.embedding_field(col, x.shape[1]))
        data[col] = pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(x, np.float32).reshape(-1)), x.shape[1]
        )
        summary.dims[col] = int(x.shape[1])
    _ensure_dims(store, fields)
    store.update_columns(schemas.EVENTS, pa.table(data), "event_id")
    summary.embedded = len(ids)
    _build_index(store, len(ids))
    summary.seconds = time.perf_counter() - t0
    run.record(
        store,
        schemas.EVENTS,
        WriteResult(schemas.EVENTS, 0, len(ids), 0, before, store.version(schemas.EVENTS)),
        0,
        f"embedded={len(ids)} dims={summary.dims}",
    )
    return summary


def _ensure_dims(store: TableStore, fields: list[pa.Field]) -> None:
    schema = store.schema(schemas.EVENTS)
    assert schema is not None
    for f in fields:
        if f.name in schema.names and schema.field(f.name).type != f.type:
            raise ValueError(
                f"events.{f.name} holds {schema.field(f.name).type}, "
                f"the new embedding is {f.type}: "
                "the embedding model changed dimension; drop the column or use a new dataset"
            )
    store.ensure_columns(schemas.EVENTS, fields)


def _build_index(store: TableStore, rows: int) -> None:
    """IVF_FLAT (exact within probed partitions) on the combined embedding; Lance only."""
    if not isinstance(store, LanceStore) or rows < 256:
        return  # a flat scan is as fast as an index on small tables
    partitions = max(1, min(256, int(np.sqrt(rows))))
    store._open(schemas.EVENTS).create_index(
        "embedding", index_type="IVF_FLAT", num_partitions=partitions, metric="cosine", replace=True
    )


def similar_events(store: TableStore, event_id: str, k: int = 10) -> list[dict[str, Any]]:
    """The ``k`` events nearest to ``event_id`` by cosine distance of the combined embedding."""
    from wallwm.pipeline.store import sql_quote

    rows = store.read(
        schemas.EVENTS, columns=["embedding"], where=f"event_id = {sql_quote(event_id)}"
    ).to_pylist()
    if not rows:
        raise KeyError(f"no event {event_id!r} in {store.root}")
    if rows[0]["embedding"] is None:
        raise KeyError(f"event {event_id!r} has no embedding yet (run wallwm embed)")
    query = np.asarray(rows[0]["embedding"], dtype=np.float32)
    cols = ["event_id", "episode_id", "event_index", "caption", "cluster_id"]
    if isinstance(store, LanceStore):
        table = store._open(schemas.EVENTS).to_table(
            columns=cols,
            nearest={"column": "embedding", "q": query, "k": k + 1, "metric": "cosine"},
        )
        out = [r for r in table.to_pylist() if r["event_id"] != event_id][:k]
        for r in out:
            r["distance"] = float(r.pop("_distance"))
        return out
    table = store.read(schemas.EVENTS, columns=[*cols, "embedding"]).to_pylist()
    scored = [
        {**{c: r[c] for c in cols}, "distance": float(1 - np.dot(query, r["embedding"]))}
        for r in table
        if r["event_id"] != event_id and r["embedding"] is not None
    ]
    return sorted(scored, key=lambda r: r["distance"])[:k]


# --------------------------------------------------------------------------- clustering


class ClusterConfig(BaseModel):
    """Options of ``wallwm cluster``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ks: list[int] = Field(
        default_factory=lambda: [64, 8], description="Clusters per level, finest first."
    )
    assign_only: bool = Field(False, description="Place events in existing clusters; report drift.")
    dedup_threshold: float = Field(0.98, gt=0, le=1, description="Cosine similarity of duplicates.")
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


def _embeddings(store: TableStore) -> tuple[list[dict[str, Any]], np.ndarray]:
    schema = store.schema(schemas.EVENTS)
    if schema is None or "embedding" not in schema.names:
        raise ValueError("events have no embeddings yet: run `wallwm embed` first")
    table = store.read(
        schemas.EVENTS, columns=["event_id", "embedding", "cluster_id", "verb", "object", "caption"]
    )
    rows = table.drop_columns(["embedding"]).to_pylist()
    col = table.column("embedding").combine_chunks()
    if col.null_count:
        raise ValueError(f"{col.null_count} events have no embedding: run `wallwm embed` again")
    dim = col.type.list_size
    return rows, col.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)


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
    t0 = time.perf_counter()
    before = store.version(schemas.EVENTS)
    rows, x = _embeddings(store)
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
    dup = semantic_dedup(x, labels, centroids, cfg.dedup_threshold)
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
    return summary


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
