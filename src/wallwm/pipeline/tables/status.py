"""What a dataset holds: tables, row counts, versions, per-stage progress, open failures."""

from __future__ import annotations

from typing import Any

from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import TableStore

#: (stage, table it fills, rows done filter, rows to do table) -- later stages join as they land.
STAGES: tuple[tuple[str, str, str | None, str], ...] = (
    ("ingest", schemas.EPISODES, None, schemas.EPISODES),
    ("segment", schemas.EVENTS, None, schemas.EPISODES),
    ("caption", schemas.EVENTS, "caption IS NOT NULL", schemas.EVENTS),
    ("cluster", schemas.EVENTS, "cluster_id IS NOT NULL", schemas.EVENTS),
)


def _stage_progress(
    store: TableStore, stage: str, table: str, where: str | None, of: str
) -> dict[str, Any]:
    if stage == "segment":
        done = (
            len(
                set(
                    store.read(schemas.EVENTS, columns=["episode_id"])
                    .column("episode_id")
                    .to_pylist()
                )
            )
            if store.exists(schemas.EVENTS)
            else 0
        )
    else:
        done = store.count(table, where)
    total = store.count(of)
    return {
        "stage": stage,
        "done": done,
        "total": total,
        "unit": "episodes" if of == schemas.EPISODES else "events",
    }


def dataset_status(store: TableStore) -> dict[str, Any]:
    """A JSON-ready summary of the dataset under ``store.root``."""
    tables = [
        {
            "table": name,
            "exists": store.exists(name),
            "rows": store.count(name),
            "version": store.version(name),
        }
        for name in schemas.TABLES
    ]
    stages = [_stage_progress(store, *s) for s in STAGES]
    open_failures: dict[str, int] = {}
    if store.exists(schemas.FAILURES):
        for row in store.read(
            schemas.FAILURES, columns=["stage"], where="resolved = false"
        ).to_pylist():
            open_failures[row["stage"]] = open_failures.get(row["stage"], 0) + 1
    last_runs: dict[str, dict[str, Any]] = {}
    if store.exists(schemas.RUNS):
        for row in sorted(store.read(schemas.RUNS).to_pylist(), key=lambda r: r["finished_at"]):
            last_runs[row["stage"]] = {
                "run_id": row["run_id"],
                "finished_at": row["finished_at"].isoformat(),
                "code_version": row["code_version"],
                "config_hash": row["config_hash"],
                "table": row["table"],
                "version_after": row["version_after"],
                "rows_written": row["rows_written"],
                "rows_failed": row["rows_failed"],
            }
    return {
        "dataset": store.root,
        "tables": tables,
        "stages": stages,
        "open_failures": open_failures,
        "last_runs": last_runs,
    }
