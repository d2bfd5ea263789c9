"""The OpenAI-compatible backend against a small in-process HTTP server (no vLLM needed)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from wallwm.captioner.backends import CaptionJob, OpenAIBackend, OpenAIBackendConfig
from wallwm.captioner.prompting import EventFacts, build_request, load_prompt

ANSWER = {
    "caption": "pick up the puck",
    "verb": "pick up",
    "object": "puck",
    "target": None,
    "done_state": "the puck is held",
}


def _server(models: list[str] | None, answers: int | None = None) -> ThreadingHTTPServer:
    """Answers chat completions; lists ``models`` at /v1/models (None: no such route).

    ``answers``: how many completions it gives before it dies (drops the next request's
    connection and stops listening: every later request is refused).
    """
    served = [0]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/v1/models" and models is not None:
                self._send(200, {"object": "list", "data": [{"id": m} for m in models]})
            else:
                self._send(404, {"detail": "Not Found"})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                served[0] += 1
                dead = answers is not None and served[0] > answers
            if dead:  # the process is gone: no answer, nobody listening any more
                if served[0] == answers + 1:
                    threading.Thread(target=lambda: (srv.shutdown(), srv.server_close())).start()
                self.close_connection = True
                return
            message = {"role": "assistant", "content": json.dumps(ANSWER)}
            usage = {"prompt_tokens": 10, "completion_tokens": 5}
            self._send(200, {"choices": [{"message": message}], "usage": usage})

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    return srv


@pytest.fixture
def serve() -> Iterator:
    started: list[ThreadingHTTPServer] = []

    def start(models: list[str] | None, answers: int | None = None) -> str:
        srv = _server(models, answers)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/v1"

    yield start
    for srv in started:
        srv.shutdown()


def _jobs(n: int) -> list[CaptionJob]:
    out = []
    for i in range(n):
        facts = EventFacts(f"ev{i}", "pick up the puck", i, n, 10 * i, 10 * i + 10, 0.5, (), None)
        out.append(CaptionJob(facts, build_request(facts, load_prompt())))
    return out


def _backend(url: str, model: str = "qwen2-vl", **kw: object) -> OpenAIBackend:
    return OpenAIBackend(OpenAIBackendConfig(base_url=url, model=model, **kw))


def test_a_served_model_is_asked_for_every_event(serve):
    results = _backend(serve(["qwen2-vl"])).generate(_jobs(5))
    assert [r.error for r in results] == [None] * 5
    assert {json.loads(r.text)["caption"] for r in results} == {ANSWER["caption"]}


def test_no_server_or_another_model_refuses_the_run_in_one_line(serve):
    """A wrong port sent, retried and recorded every event of the dataset as failed (minutes per
    thousand events); a model name the server does not serve failed every request the same."""
    with pytest.raises(ValueError, match=r"--base-url http://127.0.0.1:1/v1: no server answers"):
        _backend("http://127.0.0.1:1/v1", startup_wait_s=0).generate(_jobs(3))
    url = serve(["Qwen/Qwen2-VL-2B-Instruct", "other"])
    with pytest.raises(ValueError, match=r"did you mean 'Qwen/Qwen2-VL-2B-Instruct'\?"):
        _backend(url, model="Qwen/Qwen2-VL-2B").generate(_jobs(3))


def test_a_server_without_a_model_listing_is_not_judged(serve):
    results = _backend(serve(None)).generate(_jobs(2))
    assert [r.error for r in results] == [None, None]


def test_a_server_that_dies_mid_run_is_given_up_on(serve):
    """A server dying mid-run cost every remaining event its retries and backoff (hours for a
    large dataset, to record failures). After ``give_up_after`` requests in a row reach no
    server the rest are not sent, each result saying why."""
    url = serve(["qwen2-vl"], answers=6)
    backend = _backend(url, concurrency=2, max_retries=1, give_up_after=3)
    t0 = time.perf_counter()
    results = backend.generate(_jobs(80))
    elapsed_s = time.perf_counter() - t0
    assert sum(r.error is None for r in results) == 6
    unsent = [r for r in results if r.unsent]
    assert len(unsent) >= 80 - 6 - 3 - 2  # at most the in-flight ones still tried
    assert "stopped answering (3 requests in a row got no answer" in unsent[0].error
    assert elapsed_s < 10  # 74 requests x 2 attempts with backoff: 20 s without giving up
    # the next wave of the same run is not sent either: one round of failures, not one per wave
    assert all(r.unsent for r in backend.generate(_jobs(5)))


def test_a_caption_run_against_a_dying_server_stops_in_one_line_and_resumes(
    serve, synth_dataset, tmp_path, monkeypatch
):
    from typer.testing import CliRunner

    from wallwm.captioner import stage
    from wallwm.cli.main import app
    from wallwm.pipeline.tables import schemas
    from wallwm.pipeline.tables.store import LanceStore

    ds = synth_dataset(tmp_path, episodes=4)
    events = LanceStore(str(ds)).count(schemas.EVENTS)
    url = serve(["qwen2-vl"], answers=4)
    quick = {"give_up_after": 2, "max_retries": 0}  # the defaults (16 x 4 attempts) take longer
    monkeypatch.setattr(
        stage, "make_backend", lambda cfg: OpenAIBackend(cfg.model_copy(update=quick))
    )
    args = ["caption", "-d", str(ds), "--backend", "openai", "--model", "qwen2-vl"]
    result = CliRunner().invoke(app, [*args, "--base-url", url, "--concurrency", "1"])
    out = " ".join(result.output.split())
    assert result.exit_code == 1 and "Traceback" not in out
    unsent = events - 4 - 2
    assert f"caption: {unsent} events not sent: the server at {url} stopped answering" in out
    assert "rerun `wallwm caption` once it is back" in out
    assert "ServerDown" not in out  # one line, not one per event
    # the server is back: the rerun asks for exactly the events without a caption
    again = CliRunner().invoke(app, [*args, "--base-url", serve(["qwen2-vl"])])
    assert again.exit_code == 0, again.output
    assert f"{events - 4} captioned, 4 cached" in " ".join(again.output.split())
