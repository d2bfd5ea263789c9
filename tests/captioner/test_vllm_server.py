"""The real path: ``vllm serve`` (CPU build, tiny random-weight Qwen2-VL built here) + the
``openai`` backend + the caption stage. Marked ``vllm``; runs in CI (``make test`` builds
``.venv-vllm``) and skips only where that environment could not be built."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from wallwm.captioner.backends import CaptionJob, OpenAIBackend, OpenAIBackendConfig
from wallwm.captioner.local_server import VllmServer
from wallwm.captioner.parsing import parse_caption
from wallwm.captioner.prompting import EventFacts, build_request, load_prompt
from wallwm.captioner.stage import CaptionStageConfig, run_caption
from wallwm.pipeline.ingest import IngestConfig, run_ingest
from wallwm.pipeline.segmentation import SegmentConfig
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import LanceStore

pytestmark = pytest.mark.vllm
ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-vllm"
READY = VENV / ".wallwm-vllm-ready"
BUILDER = ROOT / "tests" / "vllm_support" / "build_tiny_qwen2vl.py"
MAX_TOKENS = 400  # random weights fill every field to its maximum length


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    if not READY.exists():
        pytest.skip(
            f"the vLLM CPU environment {VENV} could not be built (see `make test` output "
            "of scripts/build_vllm_env.sh)"
        )
    out = tmp_path_factory.mktemp("tiny-qwen2vl")
    subprocess.run(
        [str(VENV / "bin" / "python"), str(BUILDER), str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    srv = VllmServer(
        tiny_model,
        vllm_bin=VENV / "bin" / "vllm",
        served_name="tiny",
        log_path=tmp_path_factory.mktemp("logs") / "vllm.log",
    )
    srv.start()
    yield srv
    srv.stop()


def backend(srv, concurrency=16):
    return OpenAIBackend(
        OpenAIBackendConfig(
            base_url=srv.base_url,
            model="tiny",
            concurrency=concurrency,
            max_tokens=MAX_TOKENS,
            timeout_s=60,
            max_retries=1,
        )
    )


def jobs(n, images=3):
    img = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (96, 96, 3), np.uint8))[1]
    kf = tuple(("cam", p, img.tobytes()) for p in ("first", "middle", "last"))
    out = []
    for i in range(n):
        facts = EventFacts(
            f"ev{i}",
            "pick up the puck",
            i,
            n,
            10 * i,
            10 * i + 10,
            0.5,
            ("action_change",),
            None,
            keyframes=kf,
        )
        out.append(CaptionJob(facts, build_request(facts, load_prompt(), max_images=images)))
    return out


def test_structured_output_and_image_tokens(server):
    with_images = backend(server).generate(jobs(4, images=3))
    without = backend(server).generate(jobs(4, images=0))
    for r in with_images + without:
        assert r.error is None, r.error
        parse_caption(r.text)  # schema-valid JSON from a random-weight model: guided decoding
    # every image adds its tokens to the prompt count
    assert min(r.prompt_tokens for r in with_images) > max(r.prompt_tokens for r in without) + 3 * 4


def test_caption_stage_concurrent_against_vllm(server, folder_source, tmp_path):
    ds = tmp_path / "ds"
    run_ingest(
        IngestConfig(
            source=str(folder_source(3, cameras=("top",))),
            dataset=str(ds),
            executor="local",
            segment=SegmentConfig(),
        )
    )
    summary = run_caption(CaptionStageConfig(dataset=str(ds)), backend=backend(server))
    assert summary.failed == 0 and summary.captioned == summary.events > 3
    assert summary.prompt_tokens > 0 and summary.completion_tokens > 0
    rows = LanceStore(str(ds)).read(schemas.EVENTS).to_pylist()
    assert all(
        r["caption"] and r["caption_backend"] == "openai" and r["caption_model"] == "tiny"
        for r in rows
    )


def test_server_killed_mid_run_loses_nothing_and_rerun_completes(server, folder_source, tmp_path):
    ds = tmp_path / "ds"
    run_ingest(
        IngestConfig(
            source=str(folder_source(6, cameras=("top",))),
            dataset=str(ds),
            executor="local",
            segment=SegmentConfig(),
        )
    )
    store = LanceStore(str(ds))
    answered = threading.Event()
    seen = []

    def on_result(r):
        seen.append(r)
        if len(seen) >= 3:
            answered.set()

    def killer():
        answered.wait(120)
        server.stop()

    thread = threading.Thread(target=killer)
    thread.start()
    summary = run_caption(
        CaptionStageConfig(dataset=str(ds)), backend=backend(server, 2), on_result=on_result
    )
    thread.join()
    assert summary.failed > 0 and summary.captioned > 0
    assert summary.captioned + summary.failed <= summary.events
    rows = store.read(schemas.EVENTS).to_pylist()
    assert sum(r["caption"] is not None for r in rows) == summary.captioned
    failures = store.read(schemas.FAILURES, where="stage = 'caption'").to_pylist()
    classes = [f["error_class"] for f in failures]
    # those in flight failed after their retries; once 16 in a row had, the rest were not sent
    assert len(failures) == summary.failed and set(classes) <= {"BackendError", "ServerDown"}
    assert classes.count("ServerDown") == summary.unsent
    assert summary.unsent == 0 or "stopped answering" in (summary.unsent_reason or "")

    server.start()  # a restarted server; the re-run completes exactly the rest
    rerun = run_caption(CaptionStageConfig(dataset=str(ds)), backend=backend(server))
    assert rerun.failed == 0 and rerun.cached >= summary.captioned - summary.failed
    assert all(r["caption"] for r in store.read(schemas.EVENTS).to_pylist())
