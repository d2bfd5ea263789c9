"""The OpenAI-compatible backend against a small in-process HTTP server (no vLLM needed)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from wallwm.captioner.backends import CaptionJob, OpenAIBackend, OpenAIBackendConfig
from wallwm.captioner.prompting import EventFacts, build_request, load_prompt

ANSWER = {"caption": "pick up the puck"}


def _server(models: list[str] | None) -> ThreadingHTTPServer:
    """Answers chat completions; lists ``models`` at /v1/models (None: no such route)."""

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
            message = {"role": "assistant", "content": json.dumps(ANSWER)}
            usage = {"prompt_tokens": 10, "completion_tokens": 5}
            self._send(200, {"choices": [{"message": message}], "usage": usage})

        def log_message(self, *args: object) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@pytest.fixture
def serve() -> Iterator:
    started: list[ThreadingHTTPServer] = []

    def start(models: list[str] | None) -> str:
        srv = _server(models)
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
