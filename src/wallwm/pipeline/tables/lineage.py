"""Lineage: every stage run records what ran, with which config, and what it changed."""

from __future__ import annotations

import contextlib
import functools
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from wallwm import __version__
from wallwm.pipeline.sources.base import EpisodeError
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.ids import failure_id, new_run_id, stable_hash
from wallwm.pipeline.tables.store import TableStore, WriteResult


@functools.cache
def code_version() -> str:
    """Package version, plus the git commit when running from a source checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+g{sha}" if sha else __version__


def utcnow() -> datetime:
    """Timezone-aware current time (what every timestamp column stores)."""
    return datetime.now(UTC)


@dataclass
class StageRun:
    """One run of one stage: its id, config and the writes it made."""

    stage: str
    config: dict[str, Any]
    run_id: str = ""
    started_at: datetime = field(default_factory=utcnow)
    #: Recorded with the config but not hashed: how the config came about (e.g. the evidence
    #: of a model choice), which must not make an otherwise identical run look different.
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.run_id:
            self.run_id = new_run_id(self.stage)

    @property
    def config_hash(self) -> str:
        """Hash of the config that determines the stage's output."""
        return stable_hash(self.config)

    def record(
        self,
        store: TableStore,
        table: str,
        result: WriteResult | None,
        rows_failed: int,
        message: str,
    ) -> None:
        """Append this run's lineage row to the ``runs`` table."""
        row = {
            "run_id": self.run_id,
            "stage": self.stage,
            "code_version": code_version(),
            "config_hash": self.config_hash,
            "config_json": json.dumps(
                {**self.config, **({"details": self.details} if self.details else {})},
                sort_keys=True,
                default=str,
            ),
            "started_at": self.started_at,
            "finished_at": utcnow(),
            "table": table,
            "version_before": result.version_before if result else None,
            "version_after": result.version_after if result else None,
            "rows_written": (result.inserted + result.updated) if result else 0,
            "rows_failed": rows_failed,
            "message": message,
        }
        store.upsert(schemas.RUNS, pa.Table.from_pylist([row], schemas.runs_schema()), "run_id")

    def record_start(self, store: TableStore, table: str) -> None:
        """Record the run before its work (the row :meth:`record` later completes).

        Decisions made at the start (a segmenter model chosen on a sample) are then in lineage
        even if the run is killed: a rerun continues with the same decision instead of making
        its own on what is left.
        """
        self.record(store, table, None, 0, "started; not finished (yet)")


def recorded_configs(store: TableStore, stage: str) -> list[dict[str, Any]]:
    """The config (with its ``details``) of every recorded run of ``stage``, newest first."""
    from wallwm.pipeline.tables.store import sql_quote

    if not store.exists(schemas.RUNS):
        return []
    runs = store.read(
        schemas.RUNS, columns=["config_json", "finished_at"], where=f"stage = {sql_quote(stage)}"
    ).to_pylist()
    runs.sort(key=lambda r: r["finished_at"], reverse=True)
    return [dict(json.loads(r["config_json"])) for r in runs]


def failure_row(
    error: EpisodeError, source_uri: str, stage: str, key: str, run_id: str
) -> dict[str, Any]:
    """One ``failures`` row for ``error``."""
    return {
        "failure_id": failure_id(source_uri, stage, key, error.file, error.error_class),
        "source_uri": source_uri,
        "stage": stage,
        "episode_key": key,
        "file": error.file,
        "error_class": error.error_class,
        "message": error.problem,
        "run_id": run_id,
        "failed_at": utcnow(),
        "resolved": False,
    }


def event_file(event_id: str) -> str:
    """The ``file`` of a failure about one event (caption, embed); it keys the failure."""
    return f"event {event_id}"


def store_failures(store: TableStore, rows: list[dict[str, Any]]) -> None:
    """Upsert ``failure_row`` rows; a failure seen again keeps one row, its run and time updated."""
    if rows:
        store.upsert(
            schemas.FAILURES,
            pa.Table.from_pylist(rows, schemas.failures_schema()),
            "failure_id",
            volatile=("run_id", "failed_at"),
        )


def resolve_failures(
    store: TableStore,
    stage: str,
    column: str,
    attempted: list[str],
    still_failing: set[str] | None = None,
    source_uri: str | None = None,
) -> int:
    """Mark resolved the open failures of ``stage`` that a run retried and did not reproduce.

    A failure is retried when its ``column`` value is in ``attempted``, and reproduced when its
    ``failure_id`` is in ``still_failing``.

    ``column`` is what the stage's failures are keyed on: ``episode_key`` (ingest, segment),
    ``file`` (caption: one failure per event); ``source_uri`` narrows it to one source (episode
    keys are unique only within their source). Returns how many were resolved.
    """
    from wallwm.pipeline.tables.store import sql_in, sql_quote

    if not attempted or not store.exists(schemas.FAILURES):
        return 0
    still_failing = still_failing or set()
    resolved = 0
    for start in range(0, len(attempted), _IN_CHUNK):
        where = (
            f"stage = {sql_quote(stage)} AND resolved = false AND "
            f"{sql_in(column, attempted[start : start + _IN_CHUNK])}"
        )
        if source_uri is not None:
            where += f" AND source_uri = {sql_quote(source_uri)}"
        open_ids = [
            i
            for i in store.read(schemas.FAILURES, columns=["failure_id"], where=where)
            .column(0)
            .to_pylist()
            if i not in still_failing
        ]
        if open_ids:
            store.update(schemas.FAILURES, sql_in("failure_id", open_ids), {"resolved": "true"})
            resolved += len(open_ids)
    return resolved


#: Values per ``IN (...)`` filter: long lists are split so one SQL string stays small.
_IN_CHUNK = 2000

#: The ``episode_key`` of a failure of a whole stage run (not of one episode or event).
STAGE_LEVEL = ""


@contextlib.contextmanager
def stage_failures(store: TableStore, run: StageRun, file: str) -> Iterator[None]:
    """Record an error that ends a whole stage run in ``failures``, then re-raise it.

    A run that completes resolves the stage's earlier stage-level failures.

    ``file`` names what the error is about (the dataset, a model path). User errors
    (``ValueError``, ``OSError``, ``KeyError``) are recorded; programming errors are not.
    """
    try:
        yield
    except (ValueError, OSError, KeyError) as exc:
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        error = EpisodeError(file, message, type(exc).__name__)
        with contextlib.suppress(Exception):  # a broken store must not hide the first error
            store_failures(
                store, [failure_row(error, store.root, run.stage, STAGE_LEVEL, run.run_id)]
            )
        raise
    resolve_failures(store, run.stage, "episode_key", [STAGE_LEVEL], source_uri=store.root)
