"""The caption stage against a deterministic but adversarial stub backend.

The stub answers from a thread pool in random order with random delays, fails some requests,
returns invalid output for others until re-asked, and derives every caption from the request it
answers -- so a caption landing on the wrong event is detectable.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import pytest

from wallwm.captioner.backends import CaptionJob, CaptionResult
from wallwm.captioner.stage import CaptionStageConfig, run_caption
from wallwm.pipeline.ingest import IngestConfig, run_ingest
from wallwm.pipeline.segmentation import SegmentConfig
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import LanceStore

FRAMES = re.compile(r"frames (\d+) to (\d+)")


class StubVlm:
    """Answers each request with a caption naming the frame range its prompt mentions."""

    kind = "stub"

    def __init__(self, model="stub-1", fail_every=0, invalid_first=0, seed=0, workers=8):
        self.model = model
        self.fail_every, self.invalid_first = fail_every, invalid_first
        self.rng = random.Random(seed)
        self.workers = workers
        self.calls = 0
        self.seen_invalid: set[str] = set()
        self.prompts: dict[str, str] = {}
        self.lock = threading.Lock()

    def sampling(self):
        return {"temperature": 0.0}

    def _answer(self, job: CaptionJob, n: int) -> CaptionResult:
        time.sleep(self.rng.random() * 0.01)
        req = job.request
        self.prompts[req.event_id] = req.user
        if self.fail_every and n % self.fail_every == 0:
            return CaptionResult(req.event_id, error="connection reset by peer")
        start, end = FRAMES.search(req.user).groups()
        reasked = bool(req.history)
        with self.lock:
            invalid = (
                not reasked
                and len(self.seen_invalid) < self.invalid_first
                and req.event_id not in self.seen_invalid
            )
            if invalid:
                self.seen_invalid.add(req.event_id)
        if invalid:
            return CaptionResult(req.event_id, "I think the robot moves.", 10, 5)
        caption = {
            "caption": f"span {start} to {end}",
            "verb": "move",
            "object": "thing",
            "target": None,
            "done_state": f"frame {end} reached",
        }
        return CaptionResult(req.event_id, "```json\n" + json.dumps(caption) + "\n```", 100, 20)

    def generate(self, jobs, on_result=None):
        results = []
        with ThreadPoolExecutor(self.workers) as pool:
            futures = []
            for job in jobs:
                self.calls += 1
                futures.append(pool.submit(self._answer, job, self.calls))
            for f in as_completed(futures):  # completion order, not request order
                r = f.result()
                if on_result:
                    on_result(r)
                results.append(r)
        self.rng.shuffle(results)
        return results


@pytest.fixture
def segmented(folder_source, tmp_path):
    src, ds = folder_source(6, cameras=("top",)), tmp_path / "ds"
    run_ingest(
        IngestConfig(source=str(src), dataset=str(ds), executor="local", segment=SegmentConfig())
    )
    return LanceStore(str(ds))


def captions(store):
    return {r["event_id"]: r for r in store.read(schemas.EVENTS).to_pylist()}


def test_shuffled_concurrent_partially_failing_responses_land_on_the_right_events(segmented):
    stub = StubVlm(fail_every=7, invalid_first=5)
    summary = run_caption(CaptionStageConfig(dataset=segmented.root), store=segmented, backend=stub)
    rows = captions(segmented)
    assert summary.events == len(rows) and summary.reasked == 5
    assert summary.failed > 0 and summary.captioned + summary.failed == summary.events
    for r in rows.values():
        if r["caption"] is not None:  # every caption names its own event's frames
            assert r["caption"] == f"span {r['start_frame']} to {r['end_frame']}"
            assert r["caption_backend"] == "stub" and r["caption_model"] == "stub-1"
            assert r["caption_prompt_version"].startswith("event_v1@") and r["caption_cache_key"]
    failed = segmented.read(schemas.FAILURES, where="stage = 'caption'").to_pylist()
    assert len(failed) == summary.failed and {f["error_class"] for f in failed} == {"BackendError"}
    assert all(f["file"].startswith("event ") for f in failed)

    # a re-run captions exactly the failed events (and the events right after them, whose
    # prompt quotes the previous caption), and leaves the rest cached
    rerun = run_caption(
        CaptionStageConfig(dataset=segmented.root), store=segmented, backend=StubVlm(seed=1)
    )
    assert rerun.failed == 0 and rerun.cached >= summary.captioned - summary.failed
    assert all(
        r["caption"] == f"span {r['start_frame']} to {r['end_frame']}"
        for r in captions(segmented).values()
    )
    # every failure the re-run fixed is marked resolved (none is left open, none deleted)
    assert segmented.count(schemas.FAILURES, "stage = 'caption'") == summary.failed
    assert segmented.count(schemas.FAILURES, "stage = 'caption' AND resolved = false") == 0


def test_previous_caption_is_quoted_and_cache_keys_follow_prompt_and_model(segmented):
    stub = StubVlm()
    first = run_caption(CaptionStageConfig(dataset=segmented.root), store=segmented, backend=stub)
    assert first.captioned == first.events and first.failed == 0
    rows = captions(segmented)
    for r in rows.values():
        prompt = stub.prompts[r["event_id"]]
        if r["event_index"] == 0:
            assert "none (first event)" in prompt
        else:
            prev = next(
                p
                for p in rows.values()
                if p["episode_id"] == r["episode_id"] and p["event_index"] == r["event_index"] - 1
            )
            assert f'"{prev["caption"]}"' in prompt
    version = segmented.version(schemas.EVENTS)
    cached = run_caption(
        CaptionStageConfig(dataset=segmented.root), store=segmented, backend=StubVlm()
    )
    assert (cached.captioned, cached.cached) == (0, first.events)
    assert segmented.version(schemas.EVENTS) == version  # nothing written
    other = run_caption(
        CaptionStageConfig(dataset=segmented.root), store=segmented, backend=StubVlm(model="stub-2")
    )
    assert other.captioned == first.events  # a new model recaptions everything
    fewer = run_caption(
        CaptionStageConfig(dataset=segmented.root, max_images=1),
        store=segmented,
        backend=StubVlm(model="stub-2"),
    )
    assert fewer.captioned == first.events  # so does a different prompt content


def test_invalid_twice_is_a_recorded_failure_not_a_guess(segmented):
    class Stubborn(StubVlm):
        def _answer(self, job, n):
            return CaptionResult(job.request.event_id, "the robot does something")

    summary = run_caption(
        CaptionStageConfig(dataset=segmented.root, limit=3), store=segmented, backend=Stubborn()
    )
    assert summary.captioned == 0 and summary.failed == 3 and summary.reasked == 3
    assert all(r["caption"] is None for r in captions(segmented).values())
    failed = segmented.read(schemas.FAILURES, where="stage = 'caption'").to_pylist()
    assert {f["error_class"] for f in failed} == {"CaptionInvalid"}
    assert all("after one re-ask" in f["message"] for f in failed)


def test_answers_for_unknown_events_are_dropped(segmented):
    class Liar(StubVlm):
        def generate(self, jobs, on_result=None):
            real = super().generate(jobs, on_result)
            return [CaptionResult("not-an-event", real[0].text), *real[1:]]

    summary = run_caption(
        CaptionStageConfig(dataset=segmented.root), store=segmented, backend=Liar()
    )
    assert summary.failed >= 1  # the displaced event has no answer: a failure, not a guess
    rows = captions(segmented)
    assert "not-an-event" not in rows
    assert all(
        r["caption"] in (None, f"span {r['start_frame']} to {r['end_frame']}")
        for r in rows.values()
    )


def test_signals_backend_is_labelled(segmented):
    summary = run_caption(CaptionStageConfig(dataset=segmented.root), store=segmented)
    assert summary.captioned == summary.events and summary.failed == 0
    rows = list(captions(segmented).values())
    assert {r["caption_backend"] for r in rows} == {"signals"}
    assert any(r["verb"] == "grasp" for r in rows)  # the pick-place episodes close the gripper


def test_signal_captions_follow_the_simulators_true_phases(synth_dataset, tmp_path):
    """Segmented, then captioned from the gripper signal: verbs against the ground truth.

    The simulator's scripted phases say what the gripper does: the grasp, the held phases after
    it (lift, carry, lower onto the goal), the release. The regression this guards: a held phase
    captioned as a second grasp.
    """
    store = LanceStore(str(synth_dataset(tmp_path, episodes=9, seed=2, caption=True)))
    episodes = {
        e["episode_id"]: e
        for e in store.read(
            schemas.EPISODES, columns=["episode_id", "gt_events", "num_frames"]
        ).to_pylist()
    }
    verbs: dict[str, list[str]] = {}
    for ev in store.read(schemas.EVENTS).to_pylist():
        ep = episodes[ev["episode_id"]]
        starts = sorted(ep["gt_events"], key=lambda g: g["start_frame"])
        ends = [g["start_frame"] for g in starts[1:]] + [ep["num_frames"]]
        overlap = [
            min(ev["end_frame"], end) - max(ev["start_frame"], g["start_frame"])
            for g, end in zip(starts, ends, strict=True)
        ]
        truth = starts[overlap.index(max(overlap))]["name"]
        phase = (
            "held"
            if truth.split()[0] in {"lift", "carry"} or truth.startswith("lower it")
            else truth.split()[0]
        )
        verbs.setdefault(phase, []).append(ev["verb"])

    def share(phase: str, verb: str) -> float:
        return verbs[phase].count(verb) / len(verbs[phase])

    assert share("grasp", "grasp") >= 0.8 and share("release", "release") >= 0.8
    assert share("held", "carry") >= 0.8 and share("held", "grasp") <= 0.1
    assert share("retreat", "finish") >= 0.8
    assert "grasp" not in verbs["move"]  # push's closed-from-the-start gripper grasps nothing
