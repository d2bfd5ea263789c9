"""A caption engine's Ray actor SIGKILLed mid-caption: Ray restarts it and retries the batch, so
every event is captioned once, on the right event; with no restarts left the batch's events are
recorded failures and a rerun captions exactly those.

The engine is a double (no vLLM here) with ``VllmEngineActor``'s constructor and ``generate``; the
actor, its process, its death and Ray's restart are real.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest

from wallwm.captioner.backends import CaptionResult, VllmBackend, VllmBackendConfig
from wallwm.captioner.stage import CaptionStageConfig, run_caption
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import LanceStore

pytestmark = pytest.mark.usefixtures("ray_local")

FRAMES = re.compile(r"frames (\d+) to (\d+)")


class DyingEngine:
    """Answers each request with a caption naming its own frames; the first ``generate`` call
    ever (across restarts, remembered in a file) SIGKILLs its own process instead."""

    def __init__(self, cfg: VllmBackendConfig) -> None:
        self.marker = Path(cfg.engine_kwargs["marker"])
        self.deaths = int(cfg.engine_kwargs["deaths"])

    def generate(self, requests):
        died = int(self.marker.read_text()) if self.marker.exists() else 0
        if died < self.deaths:
            self.marker.write_text(str(died + 1))
            os.kill(os.getpid(), signal.SIGKILL)
        out = []
        for r in requests:
            start, end = FRAMES.search(r.user).groups()
            caption = {
                "caption": f"span {start} to {end}",
                "verb": "move",
                "object": "thing",
                "target": None,
                "done_state": f"frame {end} reached",
            }
            out.append(CaptionResult(r.event_id, json.dumps(caption), 50, 20))
        return out


def backend(tmp_path, restarts, deaths):
    cfg = VllmBackendConfig(
        model="dying-engine",
        gpus_per_actor=0,
        batch_size=8,
        restarts=restarts,
        engine_kwargs={"marker": str(tmp_path / "died"), "deaths": deaths},
    )
    return VllmBackend(cfg, engine=DyingEngine)


def right_captions(store):
    rows = store.read(schemas.EVENTS).to_pylist()
    return [r["caption"] == f"span {r['start_frame']} to {r['end_frame']}" for r in rows]


def test_a_killed_engine_is_restarted_and_its_batch_retried(tmp_path, synth_dataset):
    ds = synth_dataset(tmp_path, episodes=4, size=32)
    store = LanceStore(str(ds))
    summary = run_caption(CaptionStageConfig(dataset=str(ds)), backend=backend(tmp_path, 2, 1))
    assert (tmp_path / "died").read_text() == "1"  # the actor process really died once
    assert summary.failed == 0 and summary.captioned == summary.events == store.count("events")
    assert all(right_captions(store))


def test_an_engine_that_stays_dead_fails_its_events_and_a_rerun_does_the_rest(
    tmp_path, synth_dataset
):
    ds = synth_dataset(tmp_path, episodes=4, size=32)
    store = LanceStore(str(ds))
    first = run_caption(CaptionStageConfig(dataset=str(ds)), backend=backend(tmp_path, 0, 1))
    assert first.failed > 0 and first.captioned + first.failed == first.events
    failed = store.read(schemas.FAILURES, where="stage = 'caption'").to_pylist()
    assert len(failed) == first.failed and all("engine error" in f["message"] for f in failed)
    ok = right_captions(store)
    assert sum(ok) == first.captioned  # nothing captioned on a wrong event, nothing guessed
    second = run_caption(CaptionStageConfig(dataset=str(ds)), backend=backend(tmp_path, 0, 1))
    assert second.failed == 0 and all(right_captions(store))
    assert second.cached >= first.captioned - first.failed  # the rest was not asked again
    assert store.count(schemas.FAILURES, "stage = 'caption' AND resolved = false") == 0


def test_engines_that_need_gpus_the_cluster_lacks_are_refused(monkeypatch):
    """``--backend vllm`` on a machine without a GPU: Ray kept the engine actors pending forever
    and the caption run hung. It is refused in one line naming the remedies."""
    import ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    engine = VllmBackend(VllmBackendConfig(model="m", num_actors=2), engine=DyingEngine)
    with pytest.raises(ValueError, match="needs 1 GPU per engine and this Ray cluster has 0"):
        engine.generate([])
