"""The policy server and client: protocol, micro-batching, round trips, auth, bad requests,
concurrency, restart, the CLI, Ray Serve, and served == in-process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import torch

from wallwm.trainer.durations import EventTimeouts
from wallwm.trainer.policy import LocalPolicy, Observation
from wallwm.trainer.serving.client import PolicyClient, RemotePolicy, ServerError
from wallwm.trainer.serving.engine import PolicyEngine
from wallwm.trainer.serving.protocol import (
    InferRequest,
    ModelSpec,
    RequestError,
    decode_array,
    encode_array,
    parse_infer,
)
from wallwm.trainer.serving.server import MicroBatcher, ServeConfig, start_in_thread
from wallwm.trainer.train import TrainConfig, train

SIZE = 32


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, synth_dataset) -> dict[str, Path]:
    """Tiny event-, chunk- and unified-mode checkpoints trained on captioned synthetic episodes."""
    root = tmp_path_factory.mktemp("serve")
    ds = synth_dataset(root, episodes=6, size=SIZE, seed=5, caption=True)
    out = {}
    for mode in ("event", "chunk", "unified"):
        run = root / mode
        train(
            TrainConfig(
                dataset=str(ds),
                size=SIZE,
                preset="debug",
                mode=mode,
                steps=3,
                batch_size=4,
                h_max=8,
                chunk_len=4,
                out=str(run),
            )
        )
        out[mode] = run / "checkpoint.pt"
    return out


def _observation(seed: int = 0) -> Observation:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    return Observation(image, rng.normal(size=4).astype(np.float32), "pick up the block")


@pytest.fixture(scope="module")
def server(checkpoints):
    handle = start_in_thread(
        ServeConfig(
            checkpoints=[str(checkpoints["event"]), str(checkpoints["chunk"])],
            port=0,
            token="s3cret",
            max_body_bytes=64 * 1024,
        )
    )
    yield handle
    handle.stop()


# ---------------------------------------------------------------------- protocol (pure)

SPECS = {"event": ModelSpec("event", SIZE, 4, 4, 8, True)}


def _message(**changes):
    obs = _observation()
    message = InferRequest(obs.image, obs.state_S, obs.instruction).to_wire()
    message.update(changes)
    return {k: v for k, v in message.items() if v is not None}


def test_arrays_round_trip_binary_and_json():
    for array in (np.arange(12, dtype=np.uint8).reshape(2, 2, 3), np.ones(4, np.float32)):
        np.testing.assert_array_equal(decode_array(encode_array(array), "x"), array)
        np.testing.assert_array_equal(decode_array(encode_array(array, binary=False), "x"), array)
    request = parse_infer(_message(seed=7, event="grasp"), SPECS)
    assert request.mode == "event" and request.seed == 7 and request.event == "grasp"


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"image": encode_array(np.zeros((16, 16, 3), np.uint8))}, "image", "expected [32, 32, 3]"),
        ({"image": encode_array(np.zeros((SIZE, SIZE, 3), np.float32))}, "image", "uint8"),
        ({"state": encode_array(np.zeros(7, np.float32))}, "state", "expected [4]"),
        ({"state": encode_array(np.array([0, np.nan, 0, 0], np.float32))}, "state", "NaN"),
        ({"state": [0.0, float("inf"), 0.0, 0.0]}, "state", "NaN or infinity"),
        ({"mode": "dance"}, "mode", "served modes"),
        ({"instruction": ""}, "instruction", "characters"),
        ({"instruction": 5}, "instruction", "expected text"),
        ({"seed": -1}, "seed", "integer"),
        (
            {"image": {"__ndarray__": b"abc", "dtype": "<u1", "shape": [32, 32, 3]}},
            "image",
            "bytes",
        ),
        ({"image": {"__ndarray__": b"", "dtype": "|O", "shape": [0]}}, "image", "dtype"),
        ({"state": "fast"}, "state", "expected an array"),
        ({"state": [[1, 2], [3]]}, "state", "ragged"),
    ],
)
def test_each_bad_field_is_named(changes, field, words):
    with pytest.raises(RequestError) as err:
        parse_infer(_message(**changes), SPECS)
    assert err.value.status == 422 and err.value.field == field and words in err.value.message


def test_missing_and_unknown_fields():
    message = _message()
    del message["state"]
    with pytest.raises(RequestError, match="state: required"):
        parse_infer(message, SPECS)
    with pytest.raises(RequestError, match="unknown fields \\['imgae'\\]"):
        parse_infer(_message(imgae=1), SPECS)


def test_micro_batcher_coalesces_queued_requests_and_survives_errors():
    gate = threading.Event()
    sizes: list[int] = []

    def fn(items: list[int]) -> list[int]:
        gate.wait(5)
        sizes.append(len(items))
        if -1 in items:
            raise ValueError("bad item")
        return [i * 10 for i in items]

    async def scenario():
        batcher = MicroBatcher(fn, max_batch_size=5)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.05)  # the first batch (alone) is running and blocked on the gate
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 8)]
        await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.gather(first, *rest)
        with pytest.raises(ValueError, match="bad item"):
            await batcher.submit(-1)
        return results, await batcher.submit(3)

    results, after = asyncio.run(scenario())
    assert results == [i * 10 for i in range(8)] and after == 30
    assert sizes[:3] == [1, 5, 2]  # what queued meanwhile, capped at max_batch_size


def test_micro_batcher_waits_only_for_batch_mates_the_load_predicts():
    sizes: list[int] = []

    def fn(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return items

    async def scenario():
        batcher = MicroBatcher(fn, max_batch_size=8, max_wait_ms=2000)
        start = time.monotonic()
        for i in range(5):  # a lone client: recent batches of one, so no waiting at all
            await batcher.submit(i)
        lone_s = time.monotonic() - start
        await asyncio.gather(*(batcher.submit(i) for i in range(4)))  # 4 at once
        # now 4 clients whose requests arrive 20 ms apart: gathered into one batch of 4
        staggered = []
        for i in range(4):
            staggered.append(asyncio.ensure_future(batcher.submit(i)))
            await asyncio.sleep(0.02)
        await asyncio.gather(*staggered)
        return lone_s

    lone_s = asyncio.run(scenario())
    assert lone_s < 1.0 and sizes == [1, 1, 1, 1, 1, 4, 4]


# ---------------------------------------------------------------------- over HTTP


def test_round_trip_matches_the_engine(server, checkpoints):
    client = PolicyClient(server.url, token="s3cret")
    assert client.health()["status"] == "ok"
    meta = client.metadata()
    assert meta["modes"] == ["event", "chunk"] and meta["auth"] is True
    event = meta["models"]["event"]
    assert event["image_size"] == SIZE and event["state_dim"] == 4 and event["action_dim"] == 4
    assert event["dataset"]["versions"]["events"] >= 1 and event["step"] == 3
    engine = PolicyEngine([checkpoints["event"], checkpoints["chunk"]])
    obs = _observation()
    for mode in ("event", "chunk"):
        for binary in (True, False):
            client.binary = binary
            served = client.infer(obs.image, obs.state_S, obs.instruction, mode=mode, seed=11)
            (local,) = engine.infer(
                [InferRequest(obs.image, obs.state_S, obs.instruction, mode, seed=11)]
            )
            np.testing.assert_allclose(served.actions_HA, local.actions_HA, rtol=0, atol=1e-6)
            assert (served.event, served.next_event) == (local.event, local.next_event)
            assert served.event_timeout_steps == local.event_timeout_steps
            if mode == "event":  # actions end where the event does
                assert len(served.actions_HA) == served.event_steps <= 8 and served.event
                assert served.end_of_event == (served.event_steps < 8)
                # the timeout comes from how long the training events ran (floor: 4 x h_max)
                state = torch.load(checkpoints["event"], weights_only=True)
                timeouts = EventTimeouts(state["event_durations"], horizon=8)
                assert state["event_durations"]["all"][0] > 0
                expected = timeouts.steps(obs.instruction, served.event)
                assert served.event_timeout_steps == expected >= 32
            else:
                assert served.actions_HA.shape == (4, 4) and served.event == ""
                assert served.event_timeout_steps == 0  # nothing to move past
    conditioned = client.infer(obs.image, obs.state_S, obs.instruction, event="reach", seed=1)
    assert conditioned.event == "reach"


def test_unified_mode_predicts_the_next_event(checkpoints):
    engine = PolicyEngine([checkpoints["unified"]])
    obs = _observation()
    (result,) = engine.infer([InferRequest(obs.image, obs.state_S, obs.instruction, seed=0)])
    assert result.mode == "unified" and result.next_event and result.actions_HA.shape == (4, 4)
    with pytest.raises(ValueError, match="not served"):  # never an answer silently dropped
        engine.infer([InferRequest(obs.image, obs.state_S, obs.instruction, mode="event")])


def test_noise_scale_is_the_flow_temperature(checkpoints):
    """0 makes the answer deterministic (seed-independent); 1 keeps seeded sampling."""
    obs = _observation()
    requests = [
        InferRequest(obs.image, obs.state_S, obs.instruction, "chunk", seed=s) for s in (1, 2)
    ]
    cold = PolicyEngine([checkpoints["chunk"]], noise_scale=0.0)
    a, b = cold.infer(requests)
    np.testing.assert_allclose(a.actions_HA, b.actions_HA, rtol=0, atol=1e-6)
    assert cold.metadata()["noise_scale"] == 0.0
    a, b = PolicyEngine([checkpoints["chunk"]]).infer(requests)
    assert not np.allclose(a.actions_HA, b.actions_HA)
    with pytest.raises(ValueError, match="noise_scale"):
        PolicyEngine([checkpoints["chunk"]], noise_scale=-1.0)


def test_auth(server):
    obs = _observation()
    for token in (None, "wrong"):
        client = PolicyClient(server.url, token=token)
        client.token = token
        assert client.health()["status"] == "ok"  # liveness stays open for load balancers
        with pytest.raises(ServerError) as err:
            client.infer(obs.image, obs.state_S, obs.instruction)
        assert err.value.status == 401
        with pytest.raises(ServerError, match="401"):
            client.metadata()


def test_bad_requests_get_clear_errors_and_the_server_stays_up(server):
    client = PolicyClient(server.url, token="s3cret")
    obs = _observation()
    before = client.health()["errors"]
    cases = [
        (msgpack.packb({"image": 1}), "application/msgpack", 422, "image"),
        (b"\xc1\xc1 not msgpack", "application/msgpack", 400, "malformed_body"),
        (b"[1, 2]", "application/json", 400, "map of fields"),
        (b"{}", "text/plain", 415, "content type"),
        (b"x" * (65 * 1024), "application/json", 413, "bytes"),
        (
            json.dumps({**_message(), "image": None}, default=str).encode(),
            "application/json",
            422,
            "image",
        ),
    ]
    for body, content_type, status, words in cases:
        code, _, data = client.request("POST", "/infer", body, content_type)
        assert code == status, data
        assert words in data.decode("utf-8", "replace")
    assert client.request("GET", "/nowhere")[0] == 404
    assert client.request("GET", "/infer")[0] == 405
    with pytest.raises(ServerError) as err:  # through the typed client: the field is named
        client.infer(np.zeros((8, 8, 3), np.uint8), obs.state_S, obs.instruction)
    assert err.value.status == 422 and err.value.field == "image"
    # an abrupt client (half a request, then gone) does not disturb anyone
    with socket.create_connection((client._host, client._port)) as raw:
        raw.sendall(b"POST /infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\nabc")
    good = client.infer(obs.image, obs.state_S, obs.instruction, seed=3)
    assert len(good.actions_HA) >= 1
    assert client.health()["errors"] >= before + len(cases) + 3


def test_concurrent_clients_are_batched_and_answered_exactly(server):
    obs = [_observation(i) for i in range(8)]

    def run(i: int) -> list[np.ndarray]:
        with PolicyClient(server.url, token="s3cret") as client:
            return [
                client.infer(
                    obs[i].image, obs[i].state_S, obs[i].instruction, mode="chunk", seed=k
                ).actions_HA
                for k in range(10)
            ]

    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(run, range(8)))
    sequential = [run(i) for i in (0, 5)]
    # a seeded request's answer does not depend on its batch-mates
    for got, want in zip([concurrent[0], concurrent[5]], sequential, strict=True):
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    assert PolicyClient(server.url).health()["batches"] >= 1


def test_served_closed_loop_matches_in_process(server, checkpoints):
    pytest.importorskip("metaworld", reason="MetaWorld is the optional 'sim' extra")
    from wallwm.trainer.evaluate import evaluate_metaworld

    class Recording:
        def __init__(self, policy):
            self.policy, self.actions = policy, []

        def reset(self):
            self.policy.reset()

        def act(self, o):
            self.actions.append(self.policy.act(o))
            return self.actions[-1]

    local = Recording(LocalPolicy(checkpoints["event"], replan_every=3, seed=4))
    remote = Recording(
        RemotePolicy(PolicyClient(server.url, token="s3cret"), "event", replan_every=3, seed=4)
    )
    results = [
        evaluate_metaworld(p, ["reach-v3"], episodes=1, image_size=SIZE, max_steps=12)
        for p in (local, remote)
    ]
    assert results[0] == results[1] and len(local.actions) == 12
    np.testing.assert_allclose(np.stack(local.actions), np.stack(remote.actions), atol=1e-5)
    assert local.policy.track.history == remote.policy.track.history


def test_client_reports_a_plain_text_error_from_a_proxy():
    """Before Ray Serve deploys the app its proxy answers plain text: a ServerError, not a crash."""
    import http.server

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"Path '/health' not found."
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ServerError, match=r"404.*not found") as err:
            PolicyClient(f"http://127.0.0.1:{httpd.server_address[1]}").health()
        assert err.value.status == 404
    finally:
        httpd.shutdown()


def test_client_imports_without_torch():
    code = "import sys, wallwm.trainer.serving.client; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ---------------------------------------------------------------------- CLI, restart, Ray Serve


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(client: PolicyClient, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(proc.stderr.read() if proc.stderr else "server exited")
        try:
            if client.health()["status"] == "ok":
                return
        except (OSError, ServerError):  # not listening yet, or not deployed yet
            time.sleep(0.2)
    raise AssertionError("server did not become healthy")


def test_cli_serve_restart_and_eval_through_the_server(checkpoints):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "wallwm.cli.main",
        "serve",
        "--checkpoint",
        str(checkpoints["event"]),
    ]
    cmd += ["--port", str(port)]
    env = {**os.environ, "WALLWM_SERVE_TOKEN": "tok"}
    client = PolicyClient(url, token="tok")
    obs = _observation()
    answers = []
    for _ in range(2):  # serve, kill, serve again: the same client carries on
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            _wait_healthy(client, proc)
            answers.append(client.infer(obs.image, obs.state_S, obs.instruction, seed=2))
            if not answers[1:]:
                pytest.importorskip("metaworld", reason="MetaWorld is the optional 'sim' extra")
                ev = subprocess.run(
                    [
                        *(sys.executable, "-m", "wallwm.cli.main", "eval", "policy"),
                        *("--server", url, "--task", "reach", "--episodes", "1"),
                        *("--max-steps", "4", "--json"),
                    ],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                assert ev.returncode == 0, ev.stderr
                assert json.loads(ev.stdout)["overall"]["episodes"] == 1
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
    np.testing.assert_array_equal(answers[0].actions_HA, answers[1].actions_HA)


def test_connections_beyond_the_bound_get_503_and_the_server_lives(checkpoints):
    """uvicorn's own bound (``--max-connections``): idle sockets hold the slots, the next
    request is answered 503 at once, and once they close the server answers again."""
    port = _free_port()
    cmd = [sys.executable, "-m", "wallwm.cli.main", "serve", "--checkpoint"]
    cmd += [str(checkpoints["event"]), "--port", str(port), "--max-connections", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = PolicyClient(f"http://127.0.0.1:{port}")

    def get_health() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(4096)

    try:
        _wait_healthy(client, proc)
        idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(2)]
        time.sleep(0.5)  # the server has accepted them
        assert get_health().startswith(b"HTTP/1.1 503")
        for s in idle:
            s.close()
        deadline = time.monotonic() + 20  # the server notices the closed sockets
        while not (answer := get_health()).startswith(b"HTTP/1.1 200"):
            assert time.monotonic() < deadline, answer
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def test_cli_serve_refuses_a_bad_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    proc = subprocess.run(
        [sys.executable, "-m", "wallwm.cli.main", "serve", "--checkpoint", str(bad), "--port", "0"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 1 and "bad.pt: holds pickled objects" in proc.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_ray_serve_replicas(checkpoints):
    from ray import serve

    from wallwm.trainer.serving.server import run_ray_serve

    port = _free_port()
    url = run_ray_serve(
        ServeConfig(
            checkpoints=[str(checkpoints["event"])], port=port, replicas=2, cpus_per_replica=0.25
        ),
        block=False,
    )
    try:
        client = PolicyClient(url)
        _wait_healthy(client)
        assert client.metadata()["modes"] == ["event"]
        obs = _observation()
        a = client.infer(obs.image, obs.state_S, obs.instruction, seed=5)
        (b,) = PolicyEngine([checkpoints["event"]]).infer(
            [InferRequest(obs.image, obs.state_S, obs.instruction, seed=5)]
        )
        np.testing.assert_allclose(a.actions_HA, b.actions_HA, atol=1e-6)
        with pytest.raises(ServerError) as err:
            client.infer(obs.image, np.zeros(9, np.float32), obs.instruction)
        assert err.value.status == 422 and err.value.field == "state"
        status = serve.status().applications["wallwm"].deployments["wallwm-policy"]
        assert sum(status.replica_states.values()) == 2
    finally:
        serve.shutdown()


def test_ray_serve_ctrl_c_during_start_up_leaves_nothing_deployed(checkpoints):
    from wallwm.trainer.serving.server import run_ray_serve

    def interrupt(_url: str) -> None:  # Ctrl-C arriving at the end of the start-up
        raise KeyboardInterrupt

    port = _free_port()
    cfg = ServeConfig(
        checkpoints=[str(checkpoints["event"])], port=port, replicas=1, cpus_per_replica=0.25
    )
    url = run_ray_serve(cfg, block=True, on_ready=interrupt)  # returns, like a Ctrl-C later
    with pytest.raises(OSError):
        PolicyClient(url, timeout_s=2).health()


# ---------------------------------------------------------------------- hardening


def _json_message() -> dict[str, Any]:
    obs = _observation()
    return InferRequest(obs.image, obs.state_S, obs.instruction).to_wire(False)


def _app(checkpoints, **options) -> Any:
    from wallwm.trainer.serving.server import build_app

    return build_app(ServeConfig(checkpoints=[str(checkpoints["event"])], token="t", **options))


def _call(app, body: bytes, headers: dict[str, str] | None = None, path="/infer", method="POST"):
    import asyncio

    headers = {"authorization": "Bearer t", "content-type": "application/json", **(headers or {})}
    return asyncio.run(app.handle(method, path, headers, body))


def test_hostile_bodies_are_400s_and_500s_say_nothing(checkpoints, caplog):
    app = _app(checkpoints)
    deep = b"[" * 100_000 + b"]" * 100_000  # Python's JSON parser recurses: RecursionError
    nested_map = b'{"image": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    many_dims = {**_json_message(), "image": {"dtype": "uint8", "shape": [1] * 65, "data": "AA=="}}
    for body in (deep, nested_map, json.dumps(many_dims).encode()):
        reply = _call(app, body)
        assert reply.status in (400, 422), (reply.status, reply.body[:200])
    # an unexpected failure inside the server answers 500 without the exception's text
    app.batcher.fn = lambda items: (_ for _ in ()).throw(RuntimeError("secret path /etc/x"))
    reply = _call(app, json.dumps(_json_message()).encode())
    assert reply.status == 500 and b"secret" not in reply.body and b"RuntimeError" not in reply.body


def test_auth_and_routes_are_judged_before_the_body_is_read(checkpoints):
    app = _app(checkpoints)
    assert app.precheck("POST", "/infer", {}).status == 401  # no token: no body read at all
    assert app.precheck("POST", "/infer", {"authorization": "Bearer nope"}).status == 401
    assert app.precheck("GET", "/nowhere", {}).status == 404
    assert app.precheck("GET", "/infer", {"authorization": "Bearer t"}).status == 405
    assert app.precheck("POST", "/infer", {"authorization": "Bearer t"}) is None
    assert app.precheck("GET", "/health", {}) is None  # liveness stays open


def test_a_full_queue_answers_503_with_retry_after(checkpoints):
    import asyncio
    import threading

    app = _app(checkpoints, max_queue=1, max_batch_size=1)
    release = threading.Event()
    real = app.batcher.fn
    app.batcher.fn = lambda items: (release.wait(10), real(items))[1]
    body = json.dumps(_json_message()).encode()
    headers = {"authorization": "Bearer t", "content-type": "application/json"}

    async def burst() -> list[Any]:
        first = asyncio.create_task(app.handle("POST", "/infer", headers, body))
        await asyncio.sleep(0.3)  # the model takes it and blocks
        rest = [asyncio.create_task(app.handle("POST", "/infer", headers, body)) for _ in range(3)]
        await asyncio.sleep(0.3)  # one waits in the queue, the others find it full
        release.set()
        return await asyncio.gather(first, *rest)

    replies = asyncio.run(burst())
    assert [r.status for r in replies] == [200, 200, 503, 503]
    busy = next(r for r in replies if r.status == 503)
    assert dict(busy.headers)["retry-after"] == "1" and b"busy" in busy.body


def test_checkpoints_cannot_run_code(tmp_path):
    from wallwm.trainer.serving.engine import load_checkpoint

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (marker.write_text, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"mode": "event", "model_config": {}, "ema": Payload()}, evil)
    with pytest.raises(ValueError, match=r"evil\.pt: holds pickled objects beyond tensors"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_fuzzed_infer_requests_never_get_a_500(checkpoints):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    app = _app(checkpoints)
    good = _json_message()
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20)
    )
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=12,
    )
    fields = st.sampled_from([*good, "extra"])
    messages = st.dictionaries(fields, values, max_size=6).map(lambda m: {**good, **m})
    bodies = st.one_of(
        messages.map(lambda m: json.dumps(m, default=str).encode()),
        messages.map(lambda m: msgpack.packb(m, default=str)),
        st.binary(max_size=200),
    )
    headers = st.fixed_dictionaries(
        {
            "content-type": st.sampled_from(
                ["application/json", "application/msgpack", "text/plain", "", "application/json; x"]
            ),
            "authorization": st.sampled_from(["Bearer t", "Bearer t", "bearer t", "", "Bearer"]),
        }
    )

    # 300 per CI run; WALLWM_FUZZ_EXAMPLES=10000 for the full measurement
    examples = int(os.environ.get("WALLWM_FUZZ_EXAMPLES", "300"))

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, head=headers)
    def check(body: bytes, head: dict[str, str]) -> None:
        reply = _call(app, body, head)
        assert reply.status != 500, reply.body[:300]

    check()
    assert _call(app, json.dumps(good).encode()).status == 200  # and it still answers
