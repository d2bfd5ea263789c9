"""Training runs in the dataset's lineage: a ``runs`` row per run, ``failures`` for what failed.

A training run reads a dataset (at a tag) and writes a checkpoint elsewhere, but it is a stage
like the others: the dataset's ``runs`` table says which run trained on which table versions
with which config, and its ``failures`` table holds a run that failed (one line, the option or
file at fault) and the episodes the training view had to leave out -- so ``wallwm failures``
answers for training too. A later successful run resolves both.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wallwm.pipeline.sources.base import EpisodeError
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.lineage import (
    StageRun,
    failure_row,
    resolve_failures,
    stage_failures,
    store_failures,
)
from wallwm.pipeline.tables.store import LanceStore, TableStore, sql_in
from wallwm.trainer.view import view_path

STAGE = "train"


def recorded_training(
    cfg: Any, train: Callable[[], dict[str, Any]], workers: int = 1
) -> dict[str, Any]:
    """Run ``train`` (a training run of ``cfg``, a ``TrainConfig``) in the dataset's lineage.

    Returns the run's last metrics.
    Errors that end the run (``ValueError``, ``OSError``) are recorded before they propagate;
    after a run, the view's skipped episodes are recorded and the episodes it kept resolve
    their earlier training failures.
    """
    store = LanceStore(cfg.dataset)
    run = StageRun(STAGE, {**cfg.model_dump(), "workers": workers})
    with stage_failures(store, run, cfg.dataset):
        last = train()
    view = view_path(cfg.dataset, cfg.tag, cfg.size, cfg.cameras, cfg.trim, cfg.exclude_flags)
    meta = json.loads((view / "meta.json").read_text()) if (view / "meta.json").exists() else {}
    skipped = [str(i) for i in meta.get("skipped_episodes", [])]
    failures = _skipped_failures(store, skipped, meta.get("cameras") or [], run)
    store_failures(store, failures)
    kept = _episode_keys(store, _view_episodes(view))
    for source_uri, keys in kept.items():
        resolve_failures(store, STAGE, "episode_key", keys, None, source_uri)
    run.record(
        store,
        schemas.EVENTS,
        None,
        len(failures),
        f"tag={cfg.tag or 'latest'} versions={json.dumps(meta.get('versions', {}))} "
        f"episodes={meta.get('episodes')} events={meta.get('events')} "
        f"skipped={len(skipped)} step={last.get('step')} loss={last.get('loss')} "
        f"out={cfg.out}",
    )
    return last


def _view_episodes(view: Path) -> list[str]:
    """Ids of the episodes the training view holds."""
    import lance

    if not (view / "episodes.lance").exists():
        return []
    table = lance.dataset(str(view / "episodes.lance")).to_table(columns=["episode_id"])
    return [str(i) for i in table.column(0).to_pylist()]


def _episode_keys(store: TableStore, episode_ids: list[str]) -> dict[str, list[str]]:
    """{source URI: episode keys} of ``episode_ids``."""
    if not episode_ids:
        return {}
    rows = store.read(
        schemas.EPISODES,
        columns=["source_uri", "episode_key"],
        where=sql_in("episode_id", episode_ids),
    ).to_pylist()
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r["source_uri"], []).append(r["episode_key"])
    return out


def _skipped_failures(
    store: LanceStore, skipped: list[str], cameras: list[str], run: StageRun
) -> list[dict[str, Any]]:
    """One failure per episode the view left out (it lacks a camera the model sees)."""
    problem = f"left out of training: it lacks one of the cameras {cameras} the model sees"
    return [
        failure_row(
            EpisodeError(store.uri(schemas.EPISODES), problem, "MissingCamera"),
            source_uri,
            STAGE,
            key,
            run.run_id,
        )
        for source_uri, keys in _episode_keys(store, skipped).items()
        for key in keys
    ]
