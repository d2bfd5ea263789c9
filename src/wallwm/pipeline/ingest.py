"""The ingest stage: source -> ``episodes`` table (+ ``failures``, + lineage in ``runs``).

Pure core: :func:`load_episode` (read, probe, validate one episode) and :func:`episode_row` (turn it
into one Arrow row) run without Ray. The Ray Data chain (:func:`wallwm.pipeline.chain.fan_out`)
only fans them out; the driver commits batches with ``merge_insert`` so each batch is atomic
and a re-run of an unchanged source writes nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from wallwm.pipeline.chain import fan_out, map_items
from wallwm.pipeline.segmentation import Segmentation, SegmentConfig, Signals, segment
from wallwm.pipeline.segmentation.stage import (
    SegmentStageConfig,
    count_readings,
    dataset_model,
    event_rows,
    keyframe_frames,
    readings_text,
    record_signals,
    replace_events,
    spread_sample,
    stored_keys,
    stored_signals,
)
from wallwm.pipeline.sources.base import (
    EpisodeError,
    EpisodeRecord,
    EpisodeRef,
    EpisodeSource,
    GripperOpen,
)
from wallwm.pipeline.sources.merge import StatedSource, embodiment_problem, unknown_cameras
from wallwm.pipeline.sources.registry import SourceFormat, open_source
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.arrays import table_from_ipc, table_to_ipc, to_vector_series
from wallwm.pipeline.tables.ids import episode_id
from wallwm.pipeline.tables.lineage import (
    STAGE_LEVEL,
    StageRun,
    code_version,
    failure_row,
    resolve_failures,
    store_failures,
    utcnow,
)
from wallwm.pipeline.tables.store import LanceStore, TableStore, WriteResult, sql_in, sql_quote
from wallwm.pipeline.validate import validate_cameras, validate_signals
from wallwm.pipeline.video import KeyframeGrabber, probe_camera

STAGE = "ingest"
#: Lineage columns that alone do not make a row new. Not ``config_hash``: a row re-read under
#: other options (``--instruction``, ``--fps``, ``--robot``, ``--camera-map``...) is written with
#: the new hash even where its content came out the same, so the next rerun skips it again.
VOLATILE = ("ingest_run_id", "ingested_at", "code_version")


class IngestConfig(BaseModel):
    """Options of one ingest run (``wallwm ingest``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    source: str = Field(description="Source path (any format of the source registry).")
    dataset: str = Field(description="Dataset root where the Lance tables live.")
    format: SourceFormat = "auto"
    instruction: str | None = Field(None, description="Instruction for episodes that have none.")
    robot: str | None = Field(
        None,
        min_length=1,
        description="The robot of episodes whose source names none (RLDS, HDF5, ROS bags): "
        "the rows, eval segmentation's per-robot table, the LeRobot export's robot_type.",
    )
    fps: float | None = Field(None, gt=0, description="Frame rate for sources that store none.")
    gripper_open: GripperOpen = Field(
        "auto",
        description="Which end of the source's gripper values is open (auto: LeRobot gripper "
        "commands are decided by the end most episodes start at; other formats store openings).",
    )
    action_topics: tuple[str, ...] = Field(
        (), description="A ROS bag's topics whose messages are the actions (default: every "
        "command topic).",
    )  # fmt: skip
    episode_topic: str | None = Field(
        None, description="A ROS bag's topic whose messages mark where its episodes begin (a "
        "std_msgs/Bool: true begins, false ends; default: one bag, one episode).",
    )  # fmt: skip
    frame_tolerance: int = Field(1, ge=0, description="Accepted |video frames - action rows|.")
    batch_episodes: int = Field(32, ge=1, description="Episodes per merge_insert commit.")
    force: bool = Field(False, description="Re-read episodes whose files did not change.")
    strict: bool = Field(False, description="Fail the run (exit 1) on any failed episode.")
    executor: Literal["ray", "local"] = Field("ray", description="local: no Ray (debugging).")
    ray_address: str | None = None
    segment: SegmentConfig | None = Field(
        None,
        description="Also segment each episode in the same pass (`wallwm run`): cut from the "
        "signals, then grab the keyframes during the validation decode -- one decode in total.",
    )
    keyframe_side: int = Field(128, ge=16, description="Keyframe JPEG longer side (fused mode).")
    camera_map: dict[str, str] = Field(
        default_factory=dict,
        description="Rename the source's cameras as they are read (old -> new), so sources "
        "merged into one dataset share camera names.",
    )

    def segment_stage_config(self) -> SegmentStageConfig | None:
        """The equivalent ``wallwm segment`` config (same lineage hash) in fused mode."""
        if self.segment is None:
            return None
        return SegmentStageConfig(
            dataset=self.dataset, segment=self.segment, keyframe_side=self.keyframe_side
        )

    def lineage_config(self) -> dict[str, Any]:
        """The options that determine the output (what the config hash covers)."""
        # gripper_open joins only when stated, so runs with the default keep their earlier hash
        keys = {"format", "instruction", "fps", "frame_tolerance"}
        if self.gripper_open != "auto":
            keys.add("gripper_open")
        if self.camera_map:
            keys.add("camera_map")
        if self.action_topics:
            keys.add("action_topics")
        if self.episode_topic:
            keys.add("episode_topic")
        if self.robot:
            keys.add("robot")
        return self.model_dump(include=keys)


@dataclasses.dataclass(frozen=True)
class EpisodeOutcome:
    """What happened to one episode in a run."""

    episode_key: str
    ok: bool
    num_frames: int = 0
    video_frames: int = 0
    error: EpisodeError | None = None


@dataclasses.dataclass
class IngestSummary:
    """Closing numbers of an ingest run."""

    run_id: str
    source: str
    source_format: str
    listed: int = 0
    unchanged: int = 0
    written: int = 0
    failed: int = 0
    frames: int = 0
    video_frames: int = 0
    seconds: float = 0.0
    episodes_version: int | None = None
    events: int = 0
    #: Fused: episodes whose signals the cut read differently from the stored ones, per kind
    #: (``forms.READING_KINDS``).
    readings: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Fused: the within-event model the cut used and why (the segment run's lineage
    #: ``choice``; None when the config named it).
    model: dict[str, Any] | None = None
    #: How the gripper's open end was decided, where the source had to (LeRobot commands).
    gripper: str = ""
    failures: list[EpisodeError] = dataclasses.field(default_factory=list)

    @property
    def frames_per_s(self) -> float:
        """Ingested frames (all cameras) per wall-clock second."""
        return self.video_frames / self.seconds if self.seconds > 0 else 0.0

    def exit_code(self, strict: bool) -> int:
        """0 unless nothing was ingested (and nothing was already there), or strict and failures."""
        if strict and self.failed:
            return 1
        return 0 if (self.written or self.unchanged) else 1


# --------------------------------------------------------------------------- pure core


def load_episode(source: EpisodeSource, ref: EpisodeRef, frame_tolerance: int) -> EpisodeRecord:
    """Read one episode, decode every camera once to validate it, and check the signals.

    Raises:
        EpisodeError: The first problem found (naming the file).
    """
    return load_and_segment(source, ref, frame_tolerance, None)[0]


def load_and_segment(
    source: EpisodeSource,
    ref: EpisodeRef,
    frame_tolerance: int,
    seg: SegmentConfig | None,
    keyframe_side: int = 128,
    dims: tuple[int, int] | None = None,
) -> tuple[EpisodeRecord, Segmentation | None, dict[str, dict[int, bytes]]]:
    """:func:`load_episode`, optionally cutting the episode into events in the same pass.

    Segmentation needs only the signals, so the cut happens before decoding and the keyframes
    are grabbed by the validation decode itself: one decode per camera for both stages.
    ``dims``: the (action, state) dims ``seg`` was chosen for; an episode of others fails
    (``DimensionMismatch``) before it is cut or decoded.
    """
    record = source.read(ref)
    segmentation = None
    grabs: dict[str, KeyframeGrabber] = {}
    validate_signals(record)  # before the cut, which reads them; before any decoding
    if dims is not None and signal_dims(record) != dims:
        file = record.ref.files[0] if record.ref.files else record.ref.source_uri
        raise EpisodeError(file, _dims_problem(signal_dims(record), dims), "DimensionMismatch")
    if seg is not None:
        segmentation = segment(record_signals(record), seg, traces=False)
        wanted = keyframe_frames(segmentation)
        grabs = {spec.name: KeyframeGrabber(wanted, keyframe_side) for spec in record.cameras}
    record.probed = [probe_camera(spec, grabs.get(spec.name)) for spec in record.cameras]
    validate_cameras(record, frame_tolerance)
    return record, segmentation, {name: g.jpegs for name, g in grabs.items()}


def signal_dims(record: EpisodeRecord | Signals) -> tuple[int, int]:
    """An episode's (action dims, state dims); 0 state dims without states."""
    states = record.states_TS
    return int(record.actions_TA.shape[1]), 0 if states is None else int(states.shape[1])


def content_hash(record: EpisodeRecord) -> str:
    """Hash of everything an episode row is derived from (signals, text, camera refs)."""
    h = hashlib.sha256()
    for arr in (record.actions_TA, record.states_TS, record.gripper_TG, record.timestamps_s):
        h.update(b"-" if arr is None else np.ascontiguousarray(arr).tobytes())
    meta = [
        record.fps,
        record.instruction,
        record.robot,
        record.gt_events,
        record.action_names,
        record.state_names,
        [dataclasses.astuple(c) for c in record.probed],
    ]
    h.update(json.dumps(meta, default=str).encode())
    return h.hexdigest()[:24]


@dataclasses.dataclass(frozen=True)
class RowLineage:
    """Lineage columns stamped on every row a run writes."""

    run_id: str
    config_hash: str
    code_version: str
    ingested_at: datetime


def _trim(record: EpisodeRecord) -> tuple[int, int]:
    """The episode's active frames without its idle start and end (stored, not applied)."""
    from wallwm.pipeline.segmentation.idle import idle_trim

    return idle_trim(record.actions_TA, record.states_TS, float(record.fps))


def episode_row(record: EpisodeRecord, lineage: RowLineage) -> pa.Table:
    """One ``episodes`` row (with the record's own action/state dims) as a 1-row table."""
    ref = record.ref
    num_frames, action_dim = record.actions_TA.shape
    state_dim = 0 if record.states_TS is None else int(record.states_TS.shape[1])
    schema = schemas.episodes_schema(int(action_dim), state_dim)
    cameras = [dataclasses.asdict(c) for c in record.probed]
    trim = _trim(record)
    columns: dict[str, Any] = {
        "episode_id": [episode_id(ref.source_uri, ref.episode_key)],
        "source_uri": [ref.source_uri],
        "source_format": [ref.source_format],
        "episode_key": [ref.episode_key],
        "robot": [record.robot],
        "fps": [float(record.fps)],
        "num_frames": [int(num_frames)],
        "duration_s": [float(num_frames) / float(record.fps)],
        "instruction": [str(record.instruction).strip()],
        "cameras": [cameras],
        "action_dim": [int(action_dim)],
        "state_dim": [state_dim],
        "actions": to_vector_series(record.actions_TA, int(action_dim)),
        "states": (
            pa.nulls(1, schema.field("states").type)
            if record.states_TS is None
            else to_vector_series(record.states_TS, state_dim)
        ),
        "action_names": [record.action_names],
        "state_names": [record.state_names],
        "gripper": [None if record.gripper_TG is None else record.gripper_TG.tolist()],
        "timestamps_s": [None if record.timestamps_s is None else record.timestamps_s.tolist()],
        "gt_events": [
            None
            if record.gt_events is None
            else [{"start_frame": s, "name": n} for s, n in record.gt_events]
        ],
        "gt_events_source": [record.gt_events_source],
        "source_fingerprint": [ref.fingerprint()],
        "content_hash": [content_hash(record)],
        "ingest_run_id": [lineage.run_id],
        "code_version": [lineage.code_version],
        "config_hash": [lineage.config_hash],
        "ingested_at": [lineage.ingested_at],
        "trim_start_frame": [trim[0]],
        "trim_end_frame": [trim[1]],
        "success": [record.success],
        "success_frame": [record.success_frame],
    }
    arrays = [
        col if isinstance(col, pa.Array) else pa.array(col, type=schema.field(name).type)
        for name, col in columns.items()
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


@dataclasses.dataclass(frozen=True)
class FusedSegment:
    """What a fused ingest worker needs to also segment: config and lineage of the events."""

    config: SegmentConfig
    keyframe_side: int
    lineage: tuple[str, str, str]  # (method, segment config hash, segment run id)
    #: The (action, state) dims the model was chosen for; an episode of others is refused.
    dims: tuple[int, int] | None = None


def process_one(
    source: EpisodeSource,
    ref: EpisodeRef,
    frame_tolerance: int,
    lineage: RowLineage,
    fused: FusedSegment | None = None,
) -> dict[str, Any]:
    """Worker body (1:1): one episode ref in, one result row out; never raises.

    The result holds the serialised episode row (and, fused, its events) or the failure.
    """
    out: dict[str, Any] = {
        "events_payload": b"",
        "reading": (),
        "episode_key": ref.episode_key,
        "ok": False,
        "payload": b"",
        "num_frames": 0,
        "video_frames": 0,
        "file": "",
        "error_class": "",
        "message": "",
    }
    try:
        seg_cfg, side, dims = (
            (fused.config, fused.keyframe_side, fused.dims) if fused else (None, 128, None)
        )
        record, cut, keyframes = load_and_segment(source, ref, frame_tolerance, seg_cfg, side, dims)
        row_table = episode_row(record, lineage)
        out["payload"] = table_to_ipc(row_table)
        if fused is not None and cut is not None:
            keys = ["episode_id", "fps", "num_frames", "timestamps_s", "content_hash"]
            row = row_table.select(keys).to_pylist()[0]
            out["events_payload"] = table_to_ipc(event_rows(row, cut, keyframes, fused.lineage))
            out["reading"] = cut.reading
        out["ok"] = True
        out["num_frames"] = int(record.actions_TA.shape[0])
        out["video_frames"] = sum(c.num_frames for c in record.probed)
    except EpisodeError as exc:
        out.update(file=exc.file, error_class=exc.error_class, message=exc.problem)
    except Exception as exc:  # noqa: BLE001 -- one bad episode must never kill the job
        where = ref.files[0] if ref.files else ref.source_uri
        out.update(file=where, error_class=type(exc).__name__, message=f"unexpected error: {exc}")
    return out


def _ingest_item(
    item: dict[str, Any],
    source: EpisodeSource,
    tolerance: int,
    lineage: RowLineage,
    fused: FusedSegment | None,
) -> dict[str, Any]:
    ref = EpisodeRef(**{**item, "files": tuple(item["files"])})
    return process_one(source, ref, tolerance, lineage, fused)


# --------------------------------------------------------------------------- driver


def _unchanged_keys(store: TableStore, refs: list[EpisodeRef], config_hash: str) -> set[str]:
    """Keys of episodes already stored from the same files under the same options (skipped).

    An episode whose files are unchanged but whose stated options changed (``--instruction``,
    ``--fps``, ``--robot``, ...: the config hash) is read again, so the options reach it.
    """
    if not store.exists(schemas.EPISODES) or not refs:
        return set()
    ids = {episode_id(r.source_uri, r.episode_key): r for r in refs}
    stored = store.read(
        schemas.EPISODES,
        columns=["episode_id", "source_fingerprint", "config_hash"],
        where=sql_in("episode_id", list(ids)),
    ).to_pylist()
    return {
        ids[row["episode_id"]].episode_key
        for row in stored
        if ids[row["episode_id"]].fingerprint() == row["source_fingerprint"]
        and row["config_hash"] == config_hash
    }


class _BatchWriter:
    """Accumulates worker outputs and commits them to the store in batches."""

    def __init__(self, store: TableStore, summary: IngestSummary, batch: int) -> None:
        self.store, self.summary, self.batch = store, summary, batch
        self.pending: list[pa.Table] = []
        self.pending_events: list[pa.Table] = []
        self.ok_keys: list[str] = []
        # The stored table's schema, else the first row's: every later row must match it.
        self.schema: pa.Schema | None = None

    def add(self, table: pa.Table, events: pa.Table | None = None) -> EpisodeError | None:
        if self.schema is None:  # looked up once: opening the table per row cost ~0.6 ms
            if self.store.exists(schemas.EPISODES):  # a table from before the trim columns
                self.store.ensure_columns(schemas.EPISODES, list(schemas.APPENDED_FIELDS))
            self.schema = self.store.schema(schemas.EPISODES) or table.schema
        schema = self.schema
        if table.schema != schema:
            key = table.column("episode_key")[0].as_py()
            return EpisodeError(key, _dim_mismatch(table, schema), "DimensionMismatch")
        self.pending.append(table)
        if events is not None:
            self.pending_events.append(events)
        if len(self.pending) >= self.batch:
            self.flush()
        return None

    def flush(self) -> None:
        if not self.pending:
            return
        rows = pa.concat_tables(self.pending)
        self.pending = []
        # Lineage columns alone changing (a --force re-read of identical content) is not a change.
        result = self.store.upsert(schemas.EPISODES, rows, "episode_id", volatile=VOLATILE)
        self.summary.written += result.inserted + result.updated
        self.ok_keys.extend(rows.column("episode_key").to_pylist())
        if self.pending_events:  # fused mode: the batch's events, replaced atomically per episode
            events = pa.concat_tables(self.pending_events)
            self.pending_events = []
            ids = [str(i) for i in rows.column("episode_id").to_pylist()]
            replace_events(self.store, events, ids)
            self.summary.events += events.num_rows


def _dim_mismatch(row: pa.Table, want: pa.Schema) -> str:
    """The dims message for an episode row that does not fit the stored schema ``want``."""
    # A state-less row's column has the placeholder width: its state_dim column is the truth.
    state_dim = int(row.column("state_dim")[0].as_py())
    got = (row.schema.field("actions").type.value_type.list_size, state_dim)
    stored = (
        want.field("actions").type.value_type.list_size,
        want.field("states").type.value_type.list_size,
    )
    return _dims_problem(got, stored)


def _dims_problem(got: tuple[int, int], want: tuple[int, int]) -> str:
    return (
        f"action/state dims {got} differ from the dataset's {want}; "
        "ingest each embodiment into its own --dataset"
    )


def _fused_segment(
    cfg: IngestConfig, store: TableStore, source: EpisodeSource, refs: list[EpisodeRef]
) -> tuple[StageRun | None, FusedSegment | None]:
    """The segment stage's run and worker config when ingest segments too (``wallwm run``).

    A model left ``auto`` is chosen as the segment stage chooses it (kept once recorded): on the
    dataset's stored episodes, or -- a new dataset -- on a spread sample of the source's.
    """
    stage_cfg = cfg.segment_stage_config()
    if stage_cfg is None:
        return None, None

    sampled: list[tuple[int, int]] = []  # the shape a source sample was cut down to

    def sample() -> list[Signals]:
        # Spread over every key the dataset will hold (stored and about to be), as the
        # segment stage spreads over the stored ones: a run that was interrupted chooses on
        # the same episodes as one that was not. Episodes to be (re)written are read from
        # the source, the others from the table.
        stored = stored_keys(store.root) if isinstance(store, LanceStore) else {}
        by_key = {r.episode_key: r for r in refs}
        picked = spread_sample(sorted({*stored, *by_key}))
        from_table = [stored[k] for k in picked if k not in by_key]
        table = stored_signals(store.root, from_table) if from_table else {}
        out: list[Signals] = []
        for key in picked:
            if key not in by_key:
                out += [table[stored[key]]] if stored[key] in table else []
                continue
            try:
                record = source.read(by_key[key])
                validate_signals(record)  # nothing probed yet
            except Exception:  # noqa: BLE001, S112 -- it fails in its own worker, named there
                continue
            out.append(record_signals(record))
        kept, shape = one_shape(out)
        sampled.extend([shape] if shape else [])
        return kept

    spread = functools.partial(map_items, executor=cfg.executor, ray_address=cfg.ray_address)
    resolved, details = dataset_model(store, stage_cfg.segment, sample, map_fn=spread)
    stage_cfg = stage_cfg.model_copy(update={"segment": resolved})
    seg_run = StageRun("segment", stage_cfg.lineage_config(), details=details)
    seg_run.record_start(store, schemas.EVENTS)
    lineage = (stage_cfg.segment.method, seg_run.config_hash, seg_run.run_id)
    # The stored table's dims are the dataset's (the writer holds every row to them); a new
    # dataset's are those of the sample the model was chosen on.
    dims = _stored_dims(store) or (sampled[0] if sampled else None)
    fused = FusedSegment(stage_cfg.segment, stage_cfg.keyframe_side, lineage, dims)
    return seg_run, fused


def one_shape(signals: list[Signals]) -> tuple[list[Signals], tuple[int, int] | None]:
    """The episodes of the sample's most common (action, state) dims, and those dims.

    A model is chosen for one embodiment: a source that mixes several (merged folders) is
    sampled at its most common one (the first seen on a tie); the others fail in their
    workers as a dims mismatch, as they would at the writer.
    """
    shapes = [signal_dims(s) for s in signals]
    if not shapes:
        return [], None
    common = max(dict.fromkeys(shapes), key=shapes.count)
    return [s for s, shape in zip(signals, shapes, strict=True) if shape == common], common


def _stored_dims(store: TableStore) -> tuple[int, int] | None:
    """The dataset's (action, state) dims, from its stored episodes (None: none stored)."""
    if not store.exists(schemas.EPISODES):
        return None
    table = store.read(schemas.EPISODES, columns=["action_dim", "state_dim"])
    if not table.num_rows:
        return None
    return int(table.column(0)[0].as_py()), int(table.column(1)[0].as_py())


def _write_outcome(
    out: dict[str, Any], writer: _BatchWriter, source_uri: str
) -> EpisodeError | None:
    """Queue one worker outcome for writing; the episode's error if it failed or cannot fit."""
    if not out["ok"]:
        return EpisodeError(out["file"], out["message"], out["error_class"])
    events = table_from_ipc(out["events_payload"]) if out["events_payload"] else None
    mismatch = writer.add(table_from_ipc(out["payload"]), events)
    if mismatch is not None:
        return EpisodeError(out["file"] or source_uri, mismatch.problem, mismatch.error_class)
    writer.summary.frames += int(out["num_frames"])
    writer.summary.video_frames += int(out["video_frames"])
    count_readings(writer.summary.readings, out["reading"])
    return None


def _open_and_list(
    cfg: IngestConfig, summary: IngestSummary
) -> tuple[EpisodeSource, list[EpisodeRef], list[EpisodeError]]:
    """Open the source and list its episodes (and the files its listing refused).

    Raises:
        EpisodeError: The source itself cannot be opened or listed.
    """
    source = open_source(
        cfg.source,
        cfg.format,
        instruction=cfg.instruction,
        fps=cfg.fps,
        gripper_open=cfg.gripper_open,
        action_topics=cfg.action_topics,
        episode_topic=cfg.episode_topic,
    )
    summary.source_format = source.format
    refs, listing_errors = source.list_episodes()
    summary.gripper = str(getattr(source, "gripper_decision", "") or "")
    return source, refs, listing_errors


def _record_fused(
    seg_run: StageRun,
    store: TableStore,
    summary: IngestSummary,
    events_before: int | None,
    episodes: int,
) -> None:
    """Record the segment run that ingest carried out alongside (``wallwm run``)."""
    after = store.version(schemas.EVENTS)
    seg_run.record(
        store,
        schemas.EVENTS,
        WriteResult(schemas.EVENTS, summary.events, 0, 0, events_before, after),
        0,
        f"fused with ingest {summary.run_id}: episodes={episodes} events={summary.events}"
        + readings_text(summary.readings),
    )


def run_ingest(
    cfg: IngestConfig,
    store: TableStore | None = None,
    on_start: Callable[[int], None] | None = None,
    on_outcome: Callable[[EpisodeOutcome], None] | None = None,
) -> IngestSummary:
    """Ingest a source into the dataset's ``episodes`` table.

    Args:
        cfg: The run's options.
        store: Table store (defaults to Lance tables under ``cfg.dataset``).
        on_start: Called once with the number of episodes to read.
        on_outcome: Called for every episode as it finishes (progress, console lines).

    Returns:
        The run summary; failures are also stored in the ``failures`` table.
    """
    store = store or LanceStore(cfg.dataset)
    run = StageRun(STAGE, cfg.lineage_config())
    t0 = time.perf_counter()
    summary = IngestSummary(run.run_id, cfg.source, cfg.format)
    summary.episodes_version = store.version(schemas.EPISODES)
    failure_rows: list[dict[str, Any]] = []

    def fail(error: EpisodeError, key: str, source_uri: str) -> None:
        summary.failed += 1
        summary.failures.append(error)
        failure_rows.append(failure_row(error, source_uri, STAGE, key, run.run_id))
        if on_outcome:
            on_outcome(EpisodeOutcome(key, False, error=error))

    try:
        source, refs, listing_errors = _open_and_list(cfg, summary)
    except EpisodeError as exc:
        fail(exc, "", cfg.source)
        return _finish(store, run, summary, failure_rows, t0)
    for err in listing_errors:
        fail(err, err.file, source.uri)
    summary.listed = len(refs) + len(listing_errors)
    unchanged = set() if cfg.force else _unchanged_keys(store, refs, run.config_hash)
    todo = [r for r in refs if r.episode_key not in unchanged]
    summary.unchanged = len(refs) - len(todo)
    refusal = _merge_problem(store, source, todo, cfg.camera_map)
    if refusal is not None:  # the whole source, in one line: nothing of it is read
        fail(refusal, "", source.uri)
        return _finish(store, run, summary, failure_rows, t0)
    if cfg.camera_map or cfg.robot:
        source = StatedSource(source, cfg.camera_map, cfg.robot)
    if on_start:
        on_start(len(todo))
    lineage = RowLineage(run.run_id, run.config_hash, code_version(), utcnow())
    seg_run, fused = _fused_segment(cfg, store, source, todo)
    summary.model = seg_run.details.get("choice") if seg_run is not None else None
    events_before = store.version(schemas.EVENTS)
    outcomes = fan_out(
        [dataclasses.asdict(r) for r in todo],
        _ingest_item,
        {"source": source, "tolerance": cfg.frame_tolerance, "lineage": lineage, "fused": fused},
        cfg.executor,
        cfg.ray_address,
    )
    writer = _BatchWriter(store, summary, cfg.batch_episodes)
    for out in outcomes:
        error = _write_outcome(out, writer, source.uri)
        if error is not None:
            fail(error, out["episode_key"], source.uri)
        elif on_outcome:
            frames, video_frames = int(out["num_frames"]), int(out["video_frames"])
            on_outcome(EpisodeOutcome(out["episode_key"], True, frames, video_frames))
    writer.flush()
    if seg_run is not None:
        _record_fused(seg_run, store, summary, events_before, len(writer.ok_keys))
    # Every key this run tried again: the episodes it read, the source itself (it opened) and
    # the files the listing refused before (the whole listing ran again).
    attempted = [r.episode_key for r in todo] + [STAGE_LEVEL, *_listing_failures(store, source.uri)]
    resolve_failures(store, STAGE, "episode_key", [STAGE_LEVEL], source_uri=cfg.source)
    return _finish(store, run, summary, failure_rows, t0, (source.uri, attempted))


#: Episodes read (signals only) to check a source against the dataset before ingesting it.
MERGE_PROBE = 5


def _merge_problem(
    store: TableStore, source: EpisodeSource, todo: list[EpisodeRef], camera_map: dict[str, str]
) -> EpisodeError | None:
    """Why the source cannot join this dataset (another embodiment, a camera-map typo), if so.

    Reads the signals of a few episodes (no video); episodes that fail to read are left to fail
    in their own workers, naming their own files.
    """
    records = []
    for ref in todo[:MERGE_PROBE]:
        try:
            records.append(source.read(ref))
        except Exception:  # noqa: BLE001, S112 -- it fails in its own worker, named there
            continue
    if not records:
        return None
    # Refused whole only when no probed episode fits: one odd episode among fitting ones fails
    # alone (DimensionMismatch, when written) and does not take the others with it.
    stored = store.schema(schemas.EPISODES)
    problems = [embodiment_problem(stored, r) for r in records]
    if all(p is not None for p in problems):
        return EpisodeError(source.uri, str(problems[0]), "OtherEmbodiment")
    seen = {c.name for r in records for c in r.cameras}
    unknown = unknown_cameras(camera_map, seen)
    if unknown:
        return EpisodeError(
            source.uri,
            f"--camera-map names cameras {unknown} that its episodes do not have "
            f"(cameras: {sorted(seen)})",
            "UnknownCamera",
        )
    return None


def _listing_failures(store: TableStore, source_uri: str) -> list[str]:
    """Keys of the source's open listing failures (keyed by the refused file itself)."""
    if not store.exists(schemas.FAILURES):
        return []
    rows = store.read(
        schemas.FAILURES,
        columns=["episode_key", "file"],
        where=f"stage = {sql_quote(STAGE)} AND resolved = false AND "
        f"source_uri = {sql_quote(source_uri)}",
    ).to_pylist()
    return [r["episode_key"] for r in rows if r["episode_key"] == r["file"]]


def _finish(
    store: TableStore,
    run: StageRun,
    summary: IngestSummary,
    failure_rows: list[dict[str, Any]],
    t0: float,
    attempted: tuple[str, list[str]] | None = None,
) -> IngestSummary:
    """Store failures, resolve the old ones the run retried without reproducing, record lineage.

    ``attempted``: the source URI and the keys the run tried.
    """
    store_failures(store, failure_rows)
    if attempted is not None:
        source_uri, keys = attempted
        failing = {r["failure_id"] for r in failure_rows}
        resolve_failures(store, STAGE, "episode_key", keys, failing, source_uri)
    summary.seconds = time.perf_counter() - t0
    version_before = summary.episodes_version  # set when the run started
    summary.episodes_version = store.version(schemas.EPISODES)
    final = WriteResult(
        schemas.EPISODES, summary.written, 0, 0, version_before, summary.episodes_version
    )
    run.record(
        store,
        schemas.EPISODES,
        final,
        summary.failed,
        f"source={summary.source} listed={summary.listed} unchanged={summary.unchanged} "
        f"written={summary.written} failed={summary.failed}",
    )
    return summary
