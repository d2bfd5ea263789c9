"""The segment stage: ``episodes`` -> ``events`` (one row per event, with keyframes).

Pure core: :func:`episode_signals` and :func:`event_rows` build an episode's events from its
stored row; the shared Ray Data chain fans episodes out; the driver replaces each batch of
episodes' events atomically (one ``merge_insert`` that inserts, updates and deletes), so a reader
never sees half of a re-segmented episode. Episodes whose content and segmenter config are
unchanged since their last segmentation are skipped.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wallwm.pipeline.chain import fan_out, map_items
from wallwm.pipeline.segmentation import Segmentation, SegmentConfig, Signals, segment
from wallwm.pipeline.segmentation.selection import (
    SAMPLE_EPISODES,
    ModelChoice,
    SampleMap,
    resolve,
)
from wallwm.pipeline.sources.base import CameraInfo, EpisodeError, EpisodeRecord, gripper_dims
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.arrays import episode_arrays, table_from_ipc, table_to_ipc
from wallwm.pipeline.tables.ids import event_id
from wallwm.pipeline.tables.lineage import (
    StageRun,
    failure_row,
    recorded_configs,
    resolve_failures,
    store_failures,
)
from wallwm.pipeline.tables.store import LanceStore, TableStore, WriteResult, sql_in, sql_quote
from wallwm.pipeline.video import keyframes_jpeg, motion_energy

STAGE = "segment"
GROUP = 8  # episodes per work item
VOLATILE = ("segment_run_id",)
#: Columns of the episodes table the segmenter reads.
EPISODE_COLUMNS = [
    "episode_id",
    "episode_key",
    "source_uri",
    "fps",
    "num_frames",
    "actions",
    "states",
    "state_dim",
    "gripper",
    "timestamps_s",
    "action_names",
    "state_names",
    "cameras",
    "content_hash",
]


class SegmentStageConfig(BaseModel):
    """Options of one ``wallwm segment`` run."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    dataset: str
    segment: SegmentConfig = Field(default_factory=SegmentConfig)
    keyframe_side: int = Field(128, ge=16, description="Longer side of keyframe JPEGs (px).")
    force: bool = Field(False, description="Re-segment episodes that are up to date.")
    reselect: bool = Field(
        False,
        description="Choose the within-event model from the data again instead of keeping the "
        "dataset's recorded choice (action_model/noise_model auto).",
    )
    batch_episodes: int = Field(32, ge=1)
    executor: Literal["ray", "local"] = "ray"
    ray_address: str | None = None

    def lineage_config(self) -> dict[str, Any]:
        """What determines the events (hashed into ``segment_config_hash``)."""
        return {"segment": self.segment.model_dump(), "keyframe_side": self.keyframe_side}


@dataclasses.dataclass
class SegmentSummary:
    """Closing numbers of a segment run."""

    run_id: str
    episodes: int = 0
    up_to_date: int = 0
    segmented: int = 0
    failed: int = 0
    events: int = 0
    frames: int = 0
    seconds: float = 0.0
    events_version: int | None = None
    failures: list[EpisodeError] = dataclasses.field(default_factory=list)
    #: The within-event model the run cut with and why (empty when the config named it).
    model: dict[str, Any] | None = None
    #: Episodes whose signals the cut read differently from the stored ones, per kind
    #: (``forms.READING_KINDS``: a recorder's wrapped angles, held streams, rows stored twice).
    readings: dict[str, int] = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------- pure core


def episode_signals(
    row: dict[str, Any],
    actions_TA: np.ndarray,
    states_TS: np.ndarray | None,
    motion_T: np.ndarray | None,
) -> Signals:
    """The segmenter's input for one stored episode."""
    gripper = row.get("gripper")
    stamps = row.get("timestamps_s")
    return Signals(
        actions_TA=actions_TA,
        fps=float(row["fps"]),
        states_TS=states_TS,
        gripper_TG=None if not gripper else np.asarray(gripper, dtype=np.float32),
        motion_T=motion_T,
        gripper_action_dims=gripper_dims(row.get("action_names")),
        timestamps_s=None if stamps is None else np.asarray(stamps, dtype=np.float64),
    )


def record_signals(record: EpisodeRecord) -> Signals:
    """The segmenter's input for one episode as a source reads it (before it is stored)."""
    return Signals(
        actions_TA=record.actions_TA,
        fps=record.fps,
        states_TS=record.states_TS,
        gripper_TG=record.gripper_TG,
        gripper_action_dims=gripper_dims(record.action_names),
        timestamps_s=record.timestamps_s,
    )


def spread_sample(keys: list[str], n: int = SAMPLE_EPISODES) -> list[str]:
    """Up to ``n`` of ``keys`` spread over the dataset (by a hash of each key, not its order)."""
    import zlib

    return sorted(keys, key=lambda k: (zlib.crc32(k.encode()), k))[:n]


def recorded_model(store: TableStore, requested: SegmentConfig) -> SegmentConfig | None:
    """The model the dataset's last segment run chose for this requested config, if any."""
    wanted = requested.model_dump()
    for config in recorded_configs(store, STAGE):
        if _requested(config.get("details", {}).get("requested")) == wanted:
            return run_segment_config(config["segment"])
    return None


def run_segment_config(recorded: dict[str, Any]) -> SegmentConfig:
    """The segmenter config a run recorded in lineage (its ``segment`` entry).

    Runs recorded before the action form was chosen cut the commands' values; before quiet
    dims were left out, every dim; before the shared gain, each event's own slopes.
    """
    before = {"action_form": "values", "quiet_dims": [], "shared_gain": False}
    return SegmentConfig(**{**before, **recorded})


def _requested(asked: Any) -> dict[str, Any] | None:
    """A recorded request as today's config (a field added since had its default then)."""
    try:
        return SegmentConfig(**asked).model_dump() if isinstance(asked, dict) else None
    except ValidationError:  # a field since removed: another request
        return None


def dataset_model(
    store: TableStore,
    requested: SegmentConfig,
    sample: Callable[[], list[Signals]],
    reselect: bool = False,
    map_fn: SampleMap | None = None,
) -> tuple[SegmentConfig, dict[str, Any]]:
    """The segmenter config of a dataset's run: ``auto`` choices made once and kept.

    Returns the resolved config and the details the run's lineage records (the requested
    config and the evidence of the choice). ``sample`` gives the episodes to choose on; it is
    called only when a choice is made (no recorded one, or ``reselect``). ``map_fn`` costs
    them (:data:`~.selection.SampleMap`: the stages spread them over Ray's CPUs).
    """
    if requested.resolved() or requested.method == "fixed":
        return requested, {}
    recorded = None if reselect else recorded_model(store, requested)
    if recorded is not None:
        choice = ModelChoice(
            recorded.action_model,
            basis="recorded",
            pairing=recorded.pairing(),
            action_form=recorded.action_form,
            quiet_dims=recorded.left_out(),
        )
        return recorded, {"requested": requested.model_dump(), "choice": choice.as_dict()}
    resolved, choice = resolve(requested, sample(), map_fn)
    return resolved, {"requested": requested.model_dump(), "choice": choice.as_dict()}


def table_sample(dataset: str) -> list[Signals]:
    """Signals of a spread sample of the dataset's stored episodes (spread by their keys)."""
    by_key = stored_keys(dataset)
    return list(stored_signals(dataset, [by_key[k] for k in spread_sample(list(by_key))]).values())


def stored_keys(dataset: str) -> dict[str, str]:
    """Each stored episode's id by its key (none where the dataset has no episodes yet).

    Samples are spread over keys, not ids: a source's episodes have their keys before they
    are stored, so the same data is sampled alike read from its source or from the table.
    """
    store = LanceStore(dataset)
    if not store.exists(schemas.EPISODES):
        return {}
    rows = store.read(schemas.EPISODES, columns=["episode_key", "episode_id"]).to_pylist()
    return {r["episode_key"]: r["episode_id"] for r in rows}


def stored_signals(dataset: str, episode_ids: list[str]) -> dict[str, Signals]:
    """The stored episodes' signals by id, in the order of ``episode_ids`` (one scan)."""
    loaded = load_episodes(dataset, episode_ids) if episode_ids else {}
    return {i: episode_signals(*loaded[i], None) for i in episode_ids if i in loaded}


def _seconds(row: dict[str, Any], frame: int) -> float:
    ts = row.get("timestamps_s")
    fps = float(row["fps"])
    if ts and len(ts) == int(row["num_frames"]):
        return float(ts[frame] - ts[0]) if frame < len(ts) else float(ts[-1] - ts[0] + 1.0 / fps)
    return frame / fps


def keyframe_indices(seg: Segmentation) -> dict[int, list[tuple[str, int]]]:
    """First, middle and last frame of every event: {event index: [(position, frame)]}."""
    return {
        i: [("first", s), ("middle", (s + e - 1) // 2), ("last", e - 1)]
        for i, (s, e) in enumerate(zip(seg.starts, seg.ends, strict=True))
    }


def keyframe_frames(seg: Segmentation) -> list[int]:
    """Every frame any event needs a keyframe of (sorted, unique): what one decode grabs."""
    return sorted({f for frames in keyframe_indices(seg).values() for _p, f in frames})


def event_rows(
    row: dict[str, Any],
    seg: Segmentation,
    keyframes: dict[str, dict[int, bytes]],
    lineage: tuple[str, str, str],
) -> pa.Table:
    """The ``events`` rows of one segmented episode.

    Args:
        row: The episode's stored row (the columns in ``EPISODE_COLUMNS``).
        seg: Its segmentation.
        keyframes: ``{camera: {frame: jpeg}}`` (may be empty when video is unavailable).
        lineage: ``(method, config hash, run id)``.
    """
    method, config_hash, run_id = lineage
    n = len(seg.starts)
    by_frame = {b.frame: b for b in seg.boundaries}
    positions = keyframe_indices(seg)
    rows = []
    for i, (start, end) in enumerate(zip(seg.starts, seg.ends, strict=True)):
        b = by_frame.get(start)
        frames = positions[i]
        rows.append(
            {
                "event_id": event_id(row["episode_id"], start, end),
                "episode_id": row["episode_id"],
                "event_index": i,
                "num_events": n,
                "start_frame": start,
                "end_frame": end,
                "start_s": _seconds(row, start),
                "end_s": _seconds(row, end),
                "duration_s": _seconds(row, end) - _seconds(row, start),
                "confidence": 1.0 if b is None else b.confidence,
                "cues": ["episode_start"] if b is None else list(b.cues),
                "action_start": start,
                "action_end": end,
                "keyframes": [
                    {"camera": cam, "position": pos, "frame_index": f, "jpeg": jpegs[f]}
                    for cam, jpegs in keyframes.items()
                    for pos, f in frames
                    if f in jpegs
                ],
                "segment_method": method,
                "segment_config_hash": config_hash,
                "segment_run_id": run_id,
                "episode_content_hash": row["content_hash"],
            }
        )
    return pa.Table.from_pylist(rows, schema=schemas.events_schema())


# --------------------------------------------------------------------------- worker


Loaded = tuple[dict[str, Any], np.ndarray, np.ndarray | None]


def load_episodes(dataset: str, episode_ids: list[str]) -> dict[str, Loaded]:
    """Rows, actions (T, A) and states (T, S) of several episodes, in one filtered scan."""
    table = LanceStore(dataset).read(
        schemas.EPISODES, columns=EPISODE_COLUMNS, where=sql_in("episode_id", episode_ids)
    )
    out: dict[str, Loaded] = {}
    for i, row in enumerate(table.drop_columns(["actions", "states"]).to_pylist()):
        out[row["episode_id"]] = (row, *episode_arrays(table, i))
    return out


def find_episode(dataset: str, id_or_key: str) -> Loaded:
    """One stored episode by its id, or by its key (:func:`resolve_episode_id`)."""
    episode_id = resolve_episode_id(LanceStore(dataset), id_or_key)
    return load_episodes(dataset, [episode_id])[episode_id]


def resolve_episode_id(store: LanceStore, id_or_key: str) -> str:
    """The id of the stored episode with that id, or that key (the name the console uses).

    Raises:
        EpisodeError: No episode has that id or key, or the key names episodes of several
            sources (their ids are listed).
    """
    uri = store.uri(schemas.EPISODES)
    if not store.exists(schemas.EPISODES):
        raise EpisodeError(uri, "the dataset has no episodes table (run `wallwm ingest` first)")
    if store.count(schemas.EPISODES, sql_in("episode_id", [id_or_key])):
        return id_or_key
    matches = store.read(
        schemas.EPISODES,
        columns=["episode_id", "source_uri"],
        where=sql_in("episode_key", [id_or_key]),
    ).to_pylist()
    if not matches:
        raise EpisodeError(uri, f"no episode has the id or key {id_or_key!r}")
    if len(matches) > 1:
        ids = ", ".join(f"{m['episode_id']} ({m['source_uri']})" for m in matches)
        raise EpisodeError(
            uri, f"key {id_or_key!r} names {len(matches)} episodes; give an id: {ids}"
        )
    return str(matches[0]["episode_id"])


def _result(ep: dict[str, Any]) -> dict[str, Any]:
    return {
        "episode_id": ep["episode_id"],
        "episode_key": ep["episode_key"],
        "ok": False,
        "payload": b"",
        "events": 0,
        "frames": 0,
        "reading": [],
        "warning_file": "",
        "warning": "",
        "file": "",
        "error_class": "",
        "message": "",
    }


def segment_group(
    item: dict[str, Any], dataset: str, cfg: SegmentStageConfig, lineage: tuple[str, str, str]
) -> list[dict[str, Any]]:
    """Worker body (1:N): a group of episodes in (read in one scan), one result per episode."""
    try:
        loaded = load_episodes(dataset, [e["episode_id"] for e in item["episodes"]])
        error = "episode not found in the episodes table"
    except Exception as exc:  # noqa: BLE001 -- reported per episode below
        loaded, error = {}, f"could not read the episodes table: {exc}"
    results = []
    for ep in item["episodes"]:
        if ep["episode_id"] in loaded:
            results.append(segment_one(ep, loaded[ep["episode_id"]], cfg, lineage))
        else:
            uri = LanceStore(dataset).uri(schemas.EPISODES)
            results.append(
                {**_result(ep), "file": uri, "error_class": "EpisodeNotReadable", "message": error}
            )
    return results


def segment_one(
    ep: dict[str, Any], loaded: Loaded, cfg: SegmentStageConfig, lineage: tuple[str, str, str]
) -> dict[str, Any]:
    """One episode's serialised events (or a failure); never raises."""
    out = _result(ep)
    row, actions, states = loaded
    try:
        cams = [CameraInfo(**c) for c in row["cameras"]]
        motion = None
        if cfg.segment.weights.get("visual", 0.0) > 0 and cams:
            motion = motion_energy(cams[0])
        seg = segment(episode_signals(row, actions, states, motion), cfg.segment, traces=False)
        wanted = keyframe_frames(seg)
        keyframes: dict[str, dict[int, bytes]] = {}
        for cam in cams:
            try:
                keyframes[cam.name] = keyframes_jpeg(cam, wanted, cfg.keyframe_side)
            except EpisodeError as exc:  # events stand on signals alone; record the gap
                out.update(warning_file=exc.file, warning=f"no keyframes: {exc.problem}")
        out["payload"] = table_to_ipc(event_rows(row, seg, keyframes, lineage))
        out.update(ok=True, events=len(seg.starts), frames=len(actions), reading=seg.reading)
    except EpisodeError as exc:
        out.update(file=exc.file, error_class=exc.error_class, message=exc.problem)
    except Exception as exc:  # noqa: BLE001 -- one bad episode must never kill the job
        out.update(
            file=str(row.get("source_uri", "")),
            error_class=type(exc).__name__,
            message=f"unexpected error: {exc}",
        )
    return out


def count_readings(counts: dict[str, int], reading: Iterable[str]) -> None:
    """Add one episode's reading kinds (``Segmentation.reading``) to a run's ``counts``."""
    for kind in reading:
        counts[kind] = counts.get(kind, 0) + 1


def readings_text(counts: dict[str, int]) -> str:
    """A run record's note of what its cut read differently (empty when nothing)."""
    return "".join(f" {kind}={n}" for kind, n in sorted(counts.items()))


# --------------------------------------------------------------------------- driver


def _todo(store: TableStore, config_hash: str, force: bool) -> tuple[list[dict[str, Any]], int]:
    episodes = store.read(
        schemas.EPISODES, columns=["episode_id", "episode_key", "source_uri", "content_hash"]
    ).to_pylist()
    if force or not store.exists(schemas.EVENTS):
        return episodes, 0
    done = {
        (r["episode_id"], r["episode_content_hash"])
        for r in store.read(
            schemas.EVENTS,
            columns=["episode_id", "episode_content_hash"],
            where=f"segment_config_hash = {sql_quote(config_hash)}",
        ).to_pylist()
    }
    todo = [e for e in episodes if (e["episode_id"], e["content_hash"]) not in done]
    return todo, len(episodes) - len(todo)


def replace_events(store: TableStore, events: pa.Table, episode_ids: list[str]) -> None:
    """Write ``events`` as the whole event list of ``episode_ids``, in one commit.

    Replaced per episode, not upserted: a re-segmented episode's old events (maybe more of them
    than now) go too. Only the run id changing is not a change.
    """
    store.replace(schemas.EVENTS, events, "event_id", sql_in("episode_id", episode_ids), VOLATILE)


def _failure_rows(res: dict[str, Any], src: str, key: str, run_id: str) -> list[dict[str, Any]]:
    """The ``failures`` rows one episode's result adds: a keyframe gap and/or its failure."""
    rows = []
    if res["warning"]:
        gap = EpisodeError(res["warning_file"], res["warning"], "KeyframesUnavailable")
        rows.append(failure_row(gap, src, STAGE, key, run_id))
    if not res["ok"]:
        err = EpisodeError(res["file"], res["message"], res["error_class"])
        rows.append(failure_row(err, src, STAGE, key, run_id))
    return rows


class _EventsWriter:
    """Buffers segmented episodes; each flush replaces those episodes' events in one commit."""

    def __init__(self, store: TableStore, batch_episodes: int) -> None:
        self.store = store
        self.batch = batch_episodes
        self.pending: list[pa.Table] = []
        self.pending_ids: list[str] = []

    def add(self, res: dict[str, Any]) -> None:
        self.pending.append(table_from_ipc(res["payload"]))
        self.pending_ids.append(res["episode_id"])
        if len(self.pending_ids) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if not self.pending_ids:
            return
        replace_events(self.store, pa.concat_tables(self.pending), self.pending_ids)
        self.pending.clear()
        self.pending_ids.clear()


def run_segment(
    cfg: SegmentStageConfig,
    store: TableStore | None = None,
    on_start: Callable[[int], None] | None = None,
    on_episode: Callable[[dict[str, Any]], None] | None = None,
) -> SegmentSummary:
    """Segment every episode that needs it and write the ``events`` table."""
    store = store or LanceStore(cfg.dataset)
    t0 = time.perf_counter()
    spread = functools.partial(map_items, executor=cfg.executor, ray_address=cfg.ray_address)
    resolved, details = dataset_model(
        store, cfg.segment, lambda: table_sample(store.root), cfg.reselect, spread
    )
    cfg = cfg.model_copy(update={"segment": resolved})
    run = StageRun(STAGE, cfg.lineage_config(), details=details)
    run.record_start(store, schemas.EVENTS)
    summary = SegmentSummary(run.run_id, model=details.get("choice"))
    before = store.version(schemas.EVENTS)
    todo, summary.up_to_date = _todo(store, run.config_hash, cfg.force)
    summary.episodes = len(todo) + summary.up_to_date
    if on_start:
        on_start(len(todo))
    source_of = {e["episode_id"]: e["source_uri"] for e in todo}
    lineage = (cfg.segment.method, run.config_hash, run.run_id)
    # Groups of episodes per work item: one filtered Lance scan reads a whole group.
    groups = [{"episodes": todo[i : i + GROUP]} for i in range(0, len(todo), GROUP)]
    results = fan_out(
        groups,
        segment_group,
        {"dataset": store.root, "cfg": cfg, "lineage": lineage},
        cfg.executor,
        cfg.ray_address,
    )
    writer = _EventsWriter(store, cfg.batch_episodes)
    failures: list[dict[str, Any]] = []
    for res in results:
        src, key = source_of[res["episode_id"]], res["episode_key"]
        failures.extend(_failure_rows(res, src, key, run.run_id))
        if not res["ok"]:
            summary.failed += 1
            summary.failures.append(EpisodeError(res["file"], res["message"], res["error_class"]))
        else:
            writer.add(res)
            summary.segmented += 1
            summary.events += int(res["events"])
            summary.frames += int(res["frames"])
            count_readings(summary.readings, res["reading"])
        if on_episode:
            on_episode(res)
    writer.flush()
    store_failures(store, failures)
    failing = {r["failure_id"] for r in failures}
    for src in set(source_of.values()):
        keys = [e["episode_key"] for e in todo if e["source_uri"] == src]
        resolve_failures(store, STAGE, "episode_key", keys, failing, src)
    summary.seconds = time.perf_counter() - t0
    summary.events_version = store.version(schemas.EVENTS)
    run.record(
        store,
        schemas.EVENTS,
        WriteResult(schemas.EVENTS, summary.events, 0, 0, before, summary.events_version),
        summary.failed,
        f"episodes={summary.episodes} up_to_date={summary.up_to_date} "
        f"segmented={summary.segmented} events={summary.events} failed={summary.failed}"
        + readings_text(summary.readings),
    )
    return summary
