"""The caption stage: ``events`` (+ episodes) -> caption columns of ``events``.

Events are captioned in *waves*: wave k holds the k-th event of every episode, so each prompt can
quote the caption just produced for the previous event of the same episode while requests of
different episodes run concurrently. Every request, response and written row is keyed by
``event_id``; results are matched by id, never by position, so shuffled, concurrent or partially
failing responses cannot land on the wrong event.

Each caption row stores backend, model, prompt version and a cache key (hash of backend, model,
sampling parameters, prompt version and the exact prompt content including image bytes). An event
whose stored key equals its current key is skipped, so changing the prompt, the model or an
earlier caption recaptions exactly the affected events. Invalid output gets one re-ask; after
that the event gets a recorded failure, never a guessed caption.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from wallwm.captioner.backends import (
    BackendConfig,
    CaptionBackend,
    CaptionJob,
    CaptionResult,
    SignalsBackendConfig,
    make_backend,
)
from wallwm.captioner.gripper import gripper_names, gripper_notes
from wallwm.captioner.parsing import CaptionParseError, parse_caption, reask_message
from wallwm.captioner.prompting import (
    DEFAULT_PROMPT,
    CaptionRequest,
    EventFacts,
    PromptTemplate,
    build_request,
    load_prompt,
)
from wallwm.captioner.schema import EventCaption
from wallwm.pipeline.sources.base import EpisodeError
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.ids import stable_hash
from wallwm.pipeline.tables.lineage import (
    StageRun,
    event_file,
    failure_row,
    resolve_failures,
    store_failures,
)
from wallwm.pipeline.tables.store import LanceStore, TableStore, WriteResult

STAGE = "caption"
#: The previous-caption text when the previous event has no caption (failed or not yet done).
UNAVAILABLE = "(unavailable)"
CAPTION_COLUMNS = [
    "caption",
    "verb",
    "object",
    "target",
    "done_state",
    "caption_backend",
    "caption_model",
    "caption_prompt_version",
    "caption_cache_key",
]


class CaptionStageConfig(BaseModel):
    """Options of one ``wallwm caption`` run."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    dataset: str
    backend: BackendConfig = Field(default_factory=SignalsBackendConfig)
    prompt: str = DEFAULT_PROMPT
    max_images: int = Field(3, ge=0, description="Keyframes per prompt (first camera).")
    grid: bool = Field(False, description="Send all keyframes tiled into one image instead.")
    limit: int | None = Field(None, ge=1, description="Caption at most this many events.")


@dataclasses.dataclass
class CaptionSummary:
    """Closing numbers of a caption run."""

    run_id: str
    events: int = 0
    cached: int = 0
    captioned: int = 0
    reasked: int = 0
    failed: int = 0
    #: Of ``failed``: events not sent because the backend gave up on its server mid-run.
    unsent: int = 0
    #: Why they were not sent (the backend's words), where some were not.
    unsent_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    failures: list[EpisodeError] = dataclasses.field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        """Captioned events per wall-clock second."""
        return self.captioned / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Prompt + completion tokens per wall-clock second."""
        return (self.prompt_tokens + self.completion_tokens) / self.seconds if self.seconds else 0.0


# --------------------------------------------------------------------------- pure helpers


def cache_key(backend: CaptionBackend, template: PromptTemplate, request: CaptionRequest) -> str:
    """Everything that determines a caption: backend, model, sampling, prompt and its content."""
    h = hashlib.sha256()
    for img in request.images:
        h.update(hashlib.sha256(img).digest())
    return stable_hash(
        {
            "backend": backend.kind,
            "model": backend.model,
            "sampling": backend.sampling(),
            "prompt": template.version,
            "system": request.system,
            "user": request.user,
            "images": h.hexdigest(),
        },
        length=24,
    )


def caption_row(
    event_id: str,
    caption: EventCaption,
    backend: CaptionBackend,
    template: PromptTemplate,
    key: str,
) -> dict[str, Any]:
    """The caption columns of one event."""
    return {
        "event_id": event_id,
        "caption": caption.caption,
        "verb": caption.verb,
        "object": caption.object,
        "target": caption.target,
        "done_state": caption.done_state,
        "caption_backend": backend.kind,
        "caption_model": backend.model,
        "caption_prompt_version": template.version,
        "caption_cache_key": key,
    }


# --------------------------------------------------------------------------- driver


@dataclasses.dataclass
class _Episode:
    episode_id: str
    episode_key: str
    source_uri: str
    instruction: str
    gripper_TG: np.ndarray | None
    events: list[dict[str, Any]]
    gripper_names: list[str] | None = None


def _load(store: TableStore) -> list[_Episode]:
    if not store.exists(schemas.EVENTS):
        return []
    events = store.read(
        schemas.EVENTS,
        columns=[
            "event_id",
            "episode_id",
            "event_index",
            "num_events",
            "start_frame",
            "end_frame",
            "duration_s",
            "cues",
            "keyframes",
            *CAPTION_COLUMNS,
        ],
    ).to_pylist()
    by_episode: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_episode[e["episode_id"]].append(e)
    episodes = store.read(
        schemas.EPISODES,
        columns=[
            "episode_id",
            "episode_key",
            "source_uri",
            "instruction",
            "gripper",
            "action_names",
        ],
    ).to_pylist()
    out = []
    for ep in episodes:
        if ep["episode_id"] not in by_episode:
            continue
        gripper = _gripper_array(ep["gripper"])
        out.append(
            _Episode(
                ep["episode_id"],
                ep["episode_key"],
                ep["source_uri"],
                ep["instruction"],
                gripper,
                sorted(by_episode[ep["episode_id"]], key=lambda e: e["event_index"]),
                None if gripper is None else gripper_names(ep["action_names"], gripper.shape[1]),
            )
        )
    return out


def _gripper_array(rows: list[list[float | None] | None] | None) -> np.ndarray | None:
    """The stored gripper column as (T, G) floats; missing readings are NaN."""
    width = max((len(r) for r in rows or [] if r), default=0)
    if not width:
        return None
    return np.array(
        [
            [np.nan if v is None else v for v in (r or [])] + [np.nan] * (width - len(r or []))
            for r in rows or []
        ],
        dtype=np.float64,
    )


def _facts(ep: _Episode, event: dict[str, Any], previous: str | None) -> EventFacts:
    keyframes = tuple(
        (k["camera"], k["position"], k["jpeg"])
        for k in sorted(event["keyframes"], key=lambda k: (k["camera"], k["frame_index"]))
    )
    return EventFacts(
        event_id=event["event_id"],
        instruction=ep.instruction,
        index=event["event_index"],
        count=event["num_events"],
        start_frame=event["start_frame"],
        end_frame=event["end_frame"],
        duration_s=event["duration_s"],
        cues=tuple(event["cues"]),
        previous_caption=previous,
        signal_notes=gripper_notes(
            ep.gripper_TG, event["start_frame"], event["end_frame"], ep.gripper_names
        ),
        keyframes=keyframes,
    )


class _Wave:
    """One wave's jobs and bookkeeping."""

    def __init__(self) -> None:
        self.jobs: list[CaptionJob] = []
        self.keys: dict[str, str] = {}
        self.episode_of: dict[str, _Episode] = {}


@dataclasses.dataclass(frozen=True)
class _Asker:
    """What turns an event's facts into a request and its cache key."""

    backend: CaptionBackend
    template: PromptTemplate
    cfg: CaptionStageConfig

    def request(self, facts: EventFacts) -> tuple[CaptionRequest, str]:
        request = build_request(facts, self.template, self.cfg.max_images, self.cfg.grid)
        return request, cache_key(self.backend, self.template, request)


def _plan_wave(
    k: int,
    episodes: list[_Episode],
    current: dict[str, str | None],
    asker: _Asker,
    budget: int | None,
    summary: CaptionSummary,
) -> _Wave:
    """Wave ``k``: every episode's k-th event whose cache key changed, up to ``budget`` jobs.

    Events past the budget get ``None`` in ``current`` (not captioned this run), so the next
    wave's prompts say their predecessor's caption is unavailable rather than stale.
    """
    wave = _Wave()
    for ep in episodes:
        if k >= len(ep.events):
            continue
        event = ep.events[k]
        previous = None if k == 0 else (current.get(ep.events[k - 1]["event_id"]) or UNAVAILABLE)
        facts = _facts(ep, event, previous)
        request, key = asker.request(facts)
        if event["caption_cache_key"] == key and event["caption"]:
            summary.cached += 1
            continue
        if budget is not None and len(wave.jobs) >= budget:
            current[event["event_id"]] = None
            continue
        wave.jobs.append(CaptionJob(facts, request))
        wave.keys[event["event_id"]] = key
        wave.episode_of[event["event_id"]] = ep
    return wave


def run_caption(
    cfg: CaptionStageConfig,
    store: TableStore | None = None,
    backend: CaptionBackend | None = None,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[CaptionResult], None] | None = None,
) -> CaptionSummary:
    """Caption every event whose cache key changed, wave by wave, and write the captions.

    Args:
        cfg: Options.
        store: Table store (Lance under ``cfg.dataset`` by default).
        backend: Backend instance (built from ``cfg.backend`` by default; tests pass doubles).
        on_start: Called with the number of events in the dataset.
        on_result: Called for every backend answer (progress).
    """
    store = store or LanceStore(cfg.dataset)
    backend = backend or make_backend(cfg.backend)
    template = load_prompt(cfg.prompt)
    run = StageRun(
        STAGE,
        {
            "backend": backend.kind,
            "model": backend.model,
            "sampling": backend.sampling(),
            "prompt": template.version,
            "max_images": cfg.max_images,
            "grid": cfg.grid,
        },
    )
    summary = CaptionSummary(run.run_id)
    t0 = time.perf_counter()
    before = store.version(schemas.EVENTS)
    episodes = _load(store)
    summary.events = sum(len(ep.events) for ep in episodes)
    if on_start:
        on_start(summary.events)
    # The caption each event has now (stored, or produced in this run).
    current = {e["event_id"]: e["caption"] for ep in episodes for e in ep.events}
    failures: list[dict[str, Any]] = []
    budget = cfg.limit
    asker = _Asker(backend, template, cfg)
    for k in range(max((len(ep.events) for ep in episodes), default=0)):
        wave = _plan_wave(k, episodes, current, asker, budget, summary)
        if budget is not None:
            budget -= len(wave.jobs)
        if wave.jobs:
            rows = _run_wave(wave, backend, template, summary, failures, on_result, run.run_id)
            for row in rows:
                current[row["event_id"]] = row["caption"]
            if rows:
                store.update_columns(
                    schemas.EVENTS, pa.Table.from_pylist(rows, _caption_schema()), "event_id"
                )
    store_failures(store, failures)
    # An event holding a caption now (cached or new) no longer fails: its old failure is fixed.
    captioned = [event_file(event_id) for event_id, caption in current.items() if caption]
    resolve_failures(store, STAGE, "file", captioned, {r["failure_id"] for r in failures})
    summary.seconds = time.perf_counter() - t0
    run.record(
        store,
        schemas.EVENTS,
        WriteResult(schemas.EVENTS, 0, summary.captioned, 0, before, store.version(schemas.EVENTS)),
        summary.failed,
        f"events={summary.events} cached={summary.cached} captioned={summary.captioned} "
        f"reasked={summary.reasked} failed={summary.failed}",
    )
    return summary


def _caption_schema() -> pa.Schema:
    full = schemas.events_schema()
    return pa.schema([full.field("event_id"), *(full.field(c) for c in CAPTION_COLUMNS)])


def _run_wave(
    wave: _Wave,
    backend: CaptionBackend,
    template: PromptTemplate,
    summary: CaptionSummary,
    failures: list[dict[str, Any]],
    on_result: Callable[[CaptionResult], None] | None,
    run_id: str,
) -> list[dict[str, Any]]:
    """Generate, parse, re-ask once, and return caption rows (failures recorded)."""
    by_id = {job.request.event_id: job for job in wave.jobs}
    results = backend.generate(wave.jobs, on_result)
    rows: list[dict[str, Any]] = []
    retry: list[CaptionJob] = []
    errors: dict[str, tuple[str, str]] = {}
    for result in _count_tokens(results, summary):
        job = by_id.get(result.event_id)
        if job is None:  # a backend answered something nobody asked: never attach it anywhere
            continue
        if result.error:
            errors[result.event_id] = (_error_class(result), result.error)
            continue
        try:
            rows.append(
                caption_row(
                    result.event_id,
                    parse_caption(result.text),
                    backend,
                    template,
                    wave.keys[result.event_id],
                )
            )
        except CaptionParseError as exc:
            followup = dataclasses.replace(
                job.request, history=(("assistant", result.text), ("user", reask_message(exc)))
            )
            retry.append(CaptionJob(job.facts, followup))
            errors[result.event_id] = ("CaptionInvalid", str(exc))
    if retry:
        summary.reasked += len(retry)
        for result in _count_tokens(backend.generate(retry, on_result), summary):
            if result.event_id not in errors:
                continue
            if result.error:
                errors[result.event_id] = (_error_class(result), f"re-ask failed: {result.error}")
                continue
            try:
                caption = parse_caption(result.text)
            except CaptionParseError as exc:
                errors[result.event_id] = ("CaptionInvalid", f"after one re-ask: {exc}")
                continue
            rows.append(
                caption_row(result.event_id, caption, backend, template, wave.keys[result.event_id])
            )
            errors.pop(result.event_id)
    answered = {r["event_id"] for r in rows}
    for event_id in by_id:
        if event_id not in answered and event_id not in errors:
            errors[event_id] = ("BackendError", "the backend returned no answer for this event")
    _record_failures(errors, wave, summary, failures, run_id)
    summary.captioned += len(rows)
    return rows


def _record_failures(
    errors: dict[str, tuple[str, str]],
    wave: _Wave,
    summary: CaptionSummary,
    failures: list[dict[str, Any]],
    run_id: str,
) -> None:
    """Count each failed event of a wave and keep its failure row."""
    for event_id, (error_class, message) in errors.items():
        ep = wave.episode_of[event_id]
        summary.failed += 1
        if error_class == SERVER_DOWN:
            summary.unsent += 1
            summary.unsent_reason = message.removeprefix("re-ask failed: ")
        err = EpisodeError(event_file(event_id), message, error_class)
        summary.failures.append(err)
        failures.append(failure_row(err, ep.source_uri, STAGE, ep.episode_key, run_id))


#: The failure class of events not sent because the backend gave up on its server.
SERVER_DOWN = "ServerDown"


def _error_class(result: CaptionResult) -> str:
    return SERVER_DOWN if result.unsent else "BackendError"


def _count_tokens(results: list[CaptionResult], summary: CaptionSummary) -> list[CaptionResult]:
    for r in results:
        summary.prompt_tokens += r.prompt_tokens
        summary.completion_tokens += r.completion_tokens
    return results
