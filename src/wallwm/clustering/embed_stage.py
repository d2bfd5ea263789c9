"""The embed stage: events -> embedding columns on ``events`` + a vector index.

Incremental like every other stage: each event's embeddings carry an ``embed_key``, a hash of
everything they are computed from (the text the model sees, the episode's content and the
event's frames, the models and weights, and the trajectory normaliser). A run embeds only the
events whose key changed -- new events, re-segmented or re-captioned ones, or all of them when a
model or weight changes -- so a rerun on unchanged data writes nothing (the ``events`` table
keeps its version) and the vector index is rebuilt only when vectors changed.

The trajectory normaliser (per-dimension mean and std of actions + states) is fitted once, over
the whole dataset, and recorded in the run's lineage; later runs reuse it, so new events are
embedded on the same scale as the old ones. ``refit=True`` (``wallwm embed --refit``) fits it
again on today's episodes and, since it is part of every key, re-embeds every event.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from wallwm.clustering.embed import (
    EmbedConfig,
    TextEmbedder,
    VisualEncoder,
    combine,
    default_text_model,
    embed_texts_ray,
    trajectory_features,
)
from wallwm.pipeline.sources.base import EpisodeError
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.arrays import episode_arrays
from wallwm.pipeline.tables.ids import stable_hash
from wallwm.pipeline.tables.lineage import (
    StageRun,
    event_file,
    failure_row,
    recorded_configs,
    resolve_failures,
    stage_failures,
    store_failures,
)
from wallwm.pipeline.tables.store import LanceStore, TableStore, WriteResult, sql_in, sql_quote

STAGE = "embed"
EMBED_COLUMNS = ("text_embedding", "traj_embedding", "visual_embedding", "embedding")
KEY_COLUMN = "embed_key"


@dataclasses.dataclass
class EmbedSummary:
    """Closing numbers of an embed run."""

    run_id: str
    events: int = 0
    embedded: int = 0
    up_to_date: int = 0
    failed: int = 0
    dims: dict[str, int] = dataclasses.field(default_factory=dict)
    indexed: bool = False
    norm_frames: int = 0
    norm_fitted: bool = False
    seconds: float = 0.0
    text_seconds: float = 0.0

    @property
    def captions_per_s(self) -> float:
        """Text-embedding throughput (captions per second, model load included)."""
        return self.embedded / self.text_seconds if self.text_seconds > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class TrajNorm:
    """Per-dimension z-scoring of the concatenated actions + states, fitted on ``frames``."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    frames: int

    @property
    def key(self) -> str:
        """Content hash (part of every event's embed key)."""
        return stable_hash([self.mean, self.std])

    def as_dict(self) -> dict[str, Any]:
        """JSON form kept in the run's lineage details."""
        return {"mean": list(self.mean), "std": list(self.std), "frames": self.frames}


def _episode_series(store: TableStore, where: str | None = None) -> dict[str, np.ndarray]:
    """(T, A + S) actions followed by states of each episode matching ``where``."""
    table = store.read(
        schemas.EPISODES, columns=["episode_id", "actions", "states", "state_dim"], where=where
    )
    series: dict[str, np.ndarray] = {}
    for i in range(table.num_rows):
        actions, states = episode_arrays(table, i)
        parts = [actions] if states is None else [actions, states]
        series[table.column("episode_id")[i].as_py()] = np.concatenate(parts, axis=1)
    return series


def fit_traj_norm(store: TableStore) -> TrajNorm:
    """The normaliser fitted on every frame of every episode (std floored at 1e-6)."""
    series = list(_episode_series(store).values())
    widths = {s.shape[1] for s in series}
    if len(widths) > 1:
        raise ValueError(
            f"episodes of {store.root} have different action + state widths {sorted(widths)}: "
            "one embedding space needs one robot layout (embed each robot's dataset on its own)"
        )
    frames = np.concatenate(series) if series else np.zeros((1, 1))
    std = np.maximum(frames.std(axis=0), 1e-6)
    return TrajNorm(tuple(frames.mean(axis=0).tolist()), tuple(std.tolist()), len(frames))


def recorded_traj_norm(store: TableStore) -> TrajNorm | None:
    """The normaliser the dataset's last embed run used, if any."""
    for config in recorded_configs(store, STAGE):
        norm = config.get("details", {}).get("traj_norm")
        if norm:
            return TrajNorm(tuple(norm["mean"]), tuple(norm["std"]), int(norm["frames"]))
    return None


def _file_fingerprint(path: str) -> str:
    """Names and sizes of a model's files (a directory) or the file's sha256."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        return stable_hash([(str(f.relative_to(p)), f.stat().st_size) for f in files])
    if p.is_file():
        return hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    raise OSError(f"{path}: no such model file or directory")


def models_key(cfg: EmbedConfig, text_factory: Callable[[], TextEmbedder] | None) -> str:
    """What identifies the models and weights behind every vector of a run."""
    if text_factory is not None:  # a test double: its name is its identity
        text = f"factory:{getattr(text_factory, '__qualname__', repr(text_factory))}"
    else:
        path = cfg.text_model or default_text_model()
        text = f"{Path(path).name}:{_file_fingerprint(path)}"
    visual = (
        _file_fingerprint(cfg.visual_weights) if cfg.visual_weights and _uses_visual(cfg) else None
    )
    return stable_hash(
        {"text": text, "visual": visual, "weights": cfg.weights, "traj_steps": cfg.traj_steps}
    )


def _uses_visual(cfg: EmbedConfig) -> bool:
    return bool(cfg.visual_weights) and cfg.weights.get("visual", 0) > 0


def event_text(e: dict[str, Any], instruction: str) -> str:
    """What the text embedding sees: the caption (with its done state), else the instruction."""
    if e.get("caption"):
        return f"{e['caption']}. {e.get('done_state') or ''}".strip()
    return instruction


def _middle_jpeg(e: dict[str, Any]) -> bytes:
    return next((k["jpeg"] for k in e.get("keyframes") or [] if k["position"] == "middle"), b"")


@dataclasses.dataclass
class _Plan:
    """The events a run must embed, with their texts and new keys, and those it cannot."""

    todo: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    texts: list[str] = dataclasses.field(default_factory=list)
    keys: list[str] = dataclasses.field(default_factory=list)
    up_to_date: int = 0
    failures: list[tuple[dict[str, Any], EpisodeError]] = dataclasses.field(default_factory=list)


def _plan(store: TableStore, cfg: EmbedConfig, base_key: str) -> _Plan:
    """Compare each event's stored key with the key of what it would be embedded from now."""
    schema = store.schema(schemas.EVENTS)
    columns = ["event_id", "episode_id", "start_frame", "end_frame", "duration_s", "caption"]
    columns += ["done_state", *(["keyframes"] if _uses_visual(cfg) else [])]
    if schema is not None and KEY_COLUMN in schema.names:
        columns.append(KEY_COLUMN)  # written in the same commit as the vectors
    episodes = {
        r["episode_id"]: r
        for r in store.read(
            schemas.EPISODES, columns=["episode_id", "instruction", "content_hash", "source_uri"]
        ).to_pylist()
    }
    plan = _Plan()
    for e in store.read(schemas.EVENTS, columns=columns).to_pylist():
        episode = episodes.get(e["episode_id"])
        if episode is None:
            problem = f"its episode {e['episode_id']} is not in the episodes table"
            plan.failures.append((e, EpisodeError(event_file(e["event_id"]), problem, "Orphan")))
            continue
        text = event_text(e, episode["instruction"])
        visual = hashlib.sha256(_middle_jpeg(e)).hexdigest()[:16] if _uses_visual(cfg) else None
        key = stable_hash(
            [base_key, text, episode["content_hash"], e["start_frame"], e["end_frame"], visual]
        )
        if e.get(KEY_COLUMN) == key:
            plan.up_to_date += 1
            continue
        plan.todo.append({**e, "source_uri": episode["source_uri"]})
        plan.texts.append(text)
        plan.keys.append(key)
    return plan


def _vectors(
    store: TableStore,
    plan: _Plan,
    cfg: EmbedConfig,
    norm: TrajNorm,
    text_factory: Callable[[], TextEmbedder] | None,
    summary: EmbedSummary,
) -> dict[str, np.ndarray]:
    """Every part's (N, D) vectors for the planned events, and their blend (``combined``)."""
    ids = [e["event_id"] for e in plan.todo]
    t = time.perf_counter()
    text = embed_texts_ray(ids, plan.texts, cfg.text_model, cfg.batch_size, text_factory)
    summary.text_seconds = time.perf_counter() - t
    parts: dict[str, np.ndarray] = {"text": np.stack([text[i] for i in ids])}
    series = _episode_series(
        store, sql_in("episode_id", sorted({e["episode_id"] for e in plan.todo}))
    )
    mean, std = np.asarray(norm.mean), np.asarray(norm.std)
    for s in series.values():
        if s.shape[1] != len(mean):
            raise ValueError(
                f"episodes have {s.shape[1]} action + state dimensions, the recorded trajectory "
                f"normaliser {len(mean)}: run `wallwm embed --refit`"
            )
    parts["traj"] = np.stack(
        [
            trajectory_features(
                series[e["episode_id"]][e["start_frame"] : e["end_frame"]],
                mean,
                std,
                e["duration_s"],
                cfg.traj_steps,
            )
            for e in plan.todo
        ]
    )
    if _uses_visual(cfg):
        assert cfg.visual_weights is not None
        encoder = VisualEncoder(cfg.visual_weights)
        parts["visual"] = encoder.embed_jpegs([_middle_jpeg(e) for e in plan.todo])
    return {**parts, "combined": combine(parts, cfg.weights)}


def _write(
    store: TableStore, plan: _Plan, vectors: dict[str, np.ndarray], summary: EmbedSummary
) -> WriteResult:
    """The planned events' vectors and keys, in one commit (unknown ids are ignored)."""
    names = {"text": "text_embedding", "traj": "traj_embedding", "visual": "visual_embedding"}
    data: dict[str, pa.Array] = {"event_id": pa.array([e["event_id"] for e in plan.todo])}
    fields = [pa.field(KEY_COLUMN, pa.string())]
    for part, x in vectors.items():
        column = names.get(part, "embedding")
        fields.append(schemas.embedding_field(column, x.shape[1]))
        data[column] = pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(x, np.float32).reshape(-1)), x.shape[1]
        )
        summary.dims[column] = int(x.shape[1])
    data[KEY_COLUMN] = pa.array(plan.keys, pa.string())
    _ensure_dims(store, fields)
    return store.update_columns(schemas.EVENTS, pa.table(data), "event_id")


def run_embed(
    dataset: str,
    cfg: EmbedConfig | None = None,
    store: TableStore | None = None,
    text_factory: Callable[[], TextEmbedder] | None = None,
    refit: bool = False,
) -> EmbedSummary:
    """Embed the events whose embeddings are missing or stale; keep the vector index current.

    Args:
        dataset: Dataset root.
        cfg: Models and weights (defaults: the packaged text model, text + trajectory).
        store: Table store (Lance under ``dataset`` by default).
        text_factory: Builds the text embedder in the worker (tests pass doubles).
        refit: Fit the trajectory normaliser again (re-embeds every event).
    """
    cfg = cfg or EmbedConfig()
    store = store or LanceStore(dataset)
    run = StageRun(STAGE, cfg.model_dump())
    summary = EmbedSummary(run.run_id)
    t0 = time.perf_counter()
    with stage_failures(store, run, dataset):
        result = _embed(store, cfg, run, text_factory, refit, summary)
    summary.seconds = time.perf_counter() - t0
    run.record(
        store,
        schemas.EVENTS,
        result,
        summary.failed,
        f"events={summary.events} embedded={summary.embedded} up_to_date={summary.up_to_date} "
        f"failed={summary.failed} dims={summary.dims} index_rebuilt={summary.indexed} "
        f"norm_frames={summary.norm_frames}",
    )
    return summary


def _embed(
    store: TableStore,
    cfg: EmbedConfig,
    run: StageRun,
    text_factory: Callable[[], TextEmbedder] | None,
    refit: bool,
    summary: EmbedSummary,
) -> WriteResult:
    """The run's work inside its failure record: plan, embed what changed, write, index."""
    before = store.version(schemas.EVENTS)
    norm = None if refit else recorded_traj_norm(store)
    summary.norm_fitted = norm is None
    norm = norm or fit_traj_norm(store)
    summary.norm_frames = norm.frames
    run.details["traj_norm"] = norm.as_dict()
    plan = _plan(store, cfg, stable_hash([models_key(cfg, text_factory), norm.key]))
    summary.events = len(plan.todo) + plan.up_to_date + len(plan.failures)
    summary.up_to_date = plan.up_to_date
    result = WriteResult(schemas.EVENTS, 0, 0, 0, before, before)
    if plan.todo:
        result = _write(
            store, plan, _vectors(store, plan, cfg, norm, text_factory, summary), summary
        )
        summary.embedded = len(plan.todo)
    summary.indexed = store.index_vectors(schemas.EVENTS, "embedding", stale=result.changed)
    failures = [
        failure_row(err, e.get("source_uri", store.root), STAGE, e["episode_id"], run.run_id)
        for e, err in plan.failures
    ]
    summary.failed = len(failures)
    store_failures(store, failures)
    done = [event_file(e["event_id"]) for e in plan.todo]
    resolve_failures(store, STAGE, "file", done, {r["failure_id"] for r in failures})
    schema = store.schema(schemas.EVENTS)
    for column in EMBED_COLUMNS:  # what the table holds (also when nothing was embedded)
        if schema is not None and column in schema.names:
            summary.dims[column] = int(schema.field(column).type.list_size)
    return WriteResult(schemas.EVENTS, 0, result.updated, 0, before, store.version(schemas.EVENTS))


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


def similar_events(store: TableStore, event_id: str, k: int = 10) -> list[dict[str, Any]]:
    """The ``k`` events nearest to ``event_id`` by cosine distance of the combined embedding."""
    rows = store.read(
        schemas.EVENTS, columns=["embedding"], where=f"event_id = {sql_quote(event_id)}"
    ).to_pylist()
    if not rows:
        raise KeyError(f"no event {event_id!r} in {store.root}")
    if rows[0]["embedding"] is None:
        raise KeyError(f"event {event_id!r} has no embedding yet (run wallwm embed)")
    query = np.asarray(rows[0]["embedding"], dtype=np.float32)
    cols = ["event_id", "episode_id", "event_index", "caption", "cluster_id"]
    near = store.nearest(schemas.EVENTS, "embedding", query, k + 1, cols)
    return [r for r in near if r["event_id"] != event_id][:k]
