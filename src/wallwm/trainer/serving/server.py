"""The policy server: ``wallwm serve --checkpoint CKPT`` (protocol in :mod:`.protocol`).

Layers, each testable alone:

- :class:`MicroBatcher` -- concurrent requests queue while the model runs; when it is free it
  takes everything queued (up to ``max_batch_size``, optionally waiting ``max_wait_ms`` for
  more) and answers them with one batched call. A lone client never waits for a batch;
  under load the batch grows by itself ("continuous" batching);
- :class:`PolicyApp` -- routing, auth, size limits and validation over
  ``(method, path, headers, body) -> Reply``; every failure becomes an error reply, so a
  malformed request never reaches the model and never takes the server down;
- two adapters: a plain ASGI app run by uvicorn (:func:`run_server`, :func:`start_in_thread`),
  and a Ray Serve deployment for ``--replicas N`` (:func:`run_ray_serve`), both over the same
  :class:`PolicyApp`, so the client and the tests cannot tell them apart.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from wallwm.trainer.serving.protocol import (
    JSON,
    MSGPACK,
    PROTOCOL_VERSION,
    InferRequest,
    InferResult,
    ModelSpec,
    RequestError,
    decode_body,
    encode_body,
    parse_infer,
)

log = logging.getLogger("wallwm.serve")
T = TypeVar("T")
R = TypeVar("R")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ServeConfig(BaseModel):
    """Options of ``wallwm serve``."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    checkpoints: list[str] = Field(min_length=1)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    token: str | None = Field(None, description="Bearer token required by /metadata and /infer.")
    max_batch_size: int = Field(32, ge=1)
    max_wait_ms: float = Field(
        5.0,
        ge=0,
        description="Longest wait for batch-mates the recent load says are coming (0: never).",
    )
    max_body_bytes: int = Field(4 << 20, ge=1024)
    max_queue: int = Field(
        256, ge=1, description="Requests waiting for the model at most; more answer 503."
    )
    max_connections: int = Field(
        512, ge=1, description="Open connections at most (the HTTP server answers 503 beyond)."
    )
    flow_steps: int = Field(10, ge=1)
    noise_scale: float = Field(
        1.0, ge=0, description="Temperature of the action flow's starting noise (0: deterministic)."
    )
    replicas: int = Field(0, ge=0, description="0: one process; N: a Ray Serve deployment.")
    ray_address: str | None = None
    cpus_per_replica: float = Field(1.0, gt=0)
    device: str = Field(
        "auto",
        description="auto (CUDA when present) | cpu | cuda | cuda:N; replicas: one GPU each.",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on GPUs, fp32 elsewhere."
    )
    backbone: str | None = Field(
        None, description="A backbone checkpoint's VLM directory here (default: as trained)."
    )


@dataclass(frozen=True)
class Reply:
    """An HTTP answer."""

    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def inference_thread() -> ThreadPoolExecutor:
    """The one thread that builds and runs a model.

    Every thread that calls into torch gets its own OpenMP thread team; two teams (say, the
    main thread that loaded the model and an executor thread that runs it) fight over the
    cores -- measured here: 22 ms per call from one thread, 55-60 ms once a second thread had
    run torch. So the engine is loaded on the same single thread that later serves it.
    """
    return ThreadPoolExecutor(1, thread_name_prefix="wallwm-infer")


class QueueFullError(Exception):
    """The batcher's queue is at its bound."""


#: Seconds a client is told to wait (Retry-After) when the server is full.
RETRY_AFTER_S = 1


class MicroBatcher(Generic[T, R]):
    """Coalesces concurrent ``submit`` calls into batched calls of ``fn`` (one at a time).

    A batch takes everything queued while the previous one ran. It then waits (at most
    ``max_wait_ms``) for more only while it is smaller than the largest of the recent batches:
    robots in a closed loop send their next request right after each answer, so under steady
    load the batch fills up to the number of active clients, while a lone client (recent
    batches of one) never waits.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], list[R]],
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        executor: ThreadPoolExecutor | None = None,
        max_queue: int = 256,
    ) -> None:
        """``fn`` maps a list of items to a list of results, in order; it runs on ``executor``.

        ``executor`` must have one thread; give the one the model was built on (see
        :func:`inference_thread`). At most ``max_queue`` items wait; more raise
        :class:`QueueFullError` at once (the server answers 503: back-pressure, not a growing
        queue).
        """
        self.fn, self.max_batch_size, self.max_wait_s = fn, max_batch_size, max_wait_ms / 1000
        self.max_queue = max_queue
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = executor or inference_thread()
        self.batches = 0
        self.items = 0
        self._recent: deque[int] = deque(maxlen=16)  # sizes of the last batches

    async def submit(self, item: T) -> R:
        """The result for ``item``, computed in a batch with whatever else is queued."""
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        assert self._queue is not None
        if self._queue.qsize() >= self.max_queue:
            raise QueueFullError(f"{self._queue.qsize()} requests are waiting for the model")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def _collect(self) -> list[tuple[T, asyncio.Future[R]]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        while len(batch) < self.max_batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        expected = min(self.max_batch_size, max(self._recent, default=1))
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < expected:  # batch-mates the recent load says are on their way
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except TimeoutError:
                break
        self._recent.append(len(batch))
        return [(item, f) for item, f in batch if not f.done()]  # drop cancelled callers

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(
                    self._executor, self.fn, [item for item, _ in batch]
                )
            except Exception as exc:  # noqa: BLE001 -- handed to each caller, the loop goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


class PolicyApp:
    """Routes, checks and answers requests (transport-free; see the module docstring)."""

    def __init__(
        self,
        infer: Callable[[list[InferRequest]], list[InferResult]],
        specs: dict[str, ModelSpec],
        metadata: dict[str, Any],
        cfg: ServeConfig,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        """Serve ``infer`` (run on ``executor``) for models described by ``specs``."""
        self.specs, self.cfg = specs, cfg
        self.batcher: MicroBatcher[InferRequest, InferResult] = MicroBatcher(
            infer, cfg.max_batch_size, cfg.max_wait_ms, executor, cfg.max_queue
        )
        self.metadata = {
            **metadata,
            "protocol_version": PROTOCOL_VERSION,
            "auth": cfg.token is not None,
            "limits": {
                "max_body_bytes": cfg.max_body_bytes,
                "max_batch_size": cfg.max_batch_size,
                "max_wait_ms": cfg.max_wait_ms,
            },
        }
        self.started = time.time()
        self.requests = 0
        self.errors = 0

    def health(self) -> dict[str, Any]:
        """Liveness and counters."""
        b = self.batcher
        return {
            "status": "ok",
            "uptime_s": round(time.time() - self.started, 3),
            "requests": self.requests,
            "errors": self.errors,
            "batches": b.batches,
            "mean_batch_size": round(b.items / b.batches, 3) if b.batches else 0.0,
        }

    def _authorised(self, headers: dict[str, str]) -> bool:
        if self.cfg.token is None:
            return True
        given = headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.cfg.token}".encode())

    def refuse(self, error: RequestError, answer_type: str = JSON) -> Reply:
        """Count and answer a refused request."""
        self.errors += 1
        return Reply(error.status, answer_type, encode_body(error.to_dict(), answer_type))

    def check_length(self, size: int | str) -> Reply | None:
        """A 413 reply when ``size`` (declared, or read so far) exceeds the body limit."""
        n = int(size) if str(size).isdigit() else 0
        if n <= self.cfg.max_body_bytes:
            return None
        self.requests += 1
        return self.refuse(
            RequestError(413, "too_large", f"body of {n}+ bytes > {self.cfg.max_body_bytes}")
        )

    async def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        """Answer one request; never raises."""
        self.requests += 1
        content_type = headers.get("content-type", JSON).split(";")[0].strip().lower()
        answer_type = MSGPACK if content_type == MSGPACK else JSON
        try:
            return await self._route(method, path, headers, body, content_type, answer_type)
        except RequestError as exc:
            log.warning("%s %s -> %d %s: %s", method, path, exc.status, exc.code, exc.message)
            return self.refuse(exc, answer_type)
        except QueueFullError as exc:
            log.warning("%s %s -> 503: %s", method, path, exc)
            busy = self.refuse(RequestError(503, "busy", f"{exc}; retry later"), answer_type)
            return Reply(503, busy.content_type, busy.body, (("retry-after", str(RETRY_AFTER_S)),))
        except Exception:
            self.errors += 1
            log.exception("%s %s failed", method, path)  # the details stay in the server log
            error = RequestError(500, "internal", "internal error (see the server log)")
            return Reply(500, answer_type, encode_body(error.to_dict(), answer_type))

    def precheck(self, method: str, path: str, headers: dict[str, str]) -> Reply | None:
        """The refusal of a request before its body is read (unknown route, method, token)."""
        try:
            self._check_route(method, path, headers)
        except RequestError as exc:
            self.requests += 1
            log.warning("%s %s -> %d %s", method, path, exc.status, exc.code)
            return self.refuse(exc)
        return None

    def _check_route(self, method: str, path: str, headers: dict[str, str]) -> str:
        """The normalised path of an allowed request (404/405/401 otherwise)."""
        path = path.rstrip("/") or "/"
        routes = {"/health": "GET", "/metadata": "GET", "/infer": "POST"}
        if path not in routes:
            raise RequestError(404, "not_found", f"{path}: endpoints are {sorted(routes)}")
        if method != routes[path]:
            raise RequestError(405, "method_not_allowed", f"{path} takes {routes[path]}")
        if path != "/health" and not self._authorised(headers):
            raise RequestError(401, "unauthorised", "missing or wrong bearer token")
        return path

    async def _route(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        content_type: str,
        answer_type: str,
    ) -> Reply:
        path = self._check_route(method, path, headers)
        if path == "/health":
            return Reply(200, JSON, encode_body(self.health(), JSON))
        if path == "/metadata":
            return Reply(200, JSON, encode_body(self.metadata, JSON))
        if len(body) > self.cfg.max_body_bytes:  # transports that read the body first
            raise RequestError(413, "too_large", f"body of {len(body)} bytes is over the limit")
        try:
            request = parse_infer(decode_body(body, content_type), self.specs)
        except RequestError:
            raise
        except Exception as exc:  # anything a hostile body provokes in parsing is its fault
            raise RequestError(
                400, "malformed_body", f"cannot read the request ({type(exc).__name__})"
            ) from exc
        result = await self.batcher.submit(request)
        return Reply(
            200, answer_type, encode_body(result.to_wire(answer_type == MSGPACK), answer_type)
        )


# ---------------------------------------------------------------------- ASGI + uvicorn


def asgi_app(app: PolicyApp) -> Callable[..., Awaitable[None]]:
    """A plain ASGI application over ``app`` (HTTP only), enforcing the body limit while reading."""

    async def respond(send: Callable[..., Awaitable[None]], reply: Reply) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [
                    (b"content-type", reply.content_type.encode()),
                    (b"content-length", str(len(reply.body)).encode()),
                    *((k.encode(), v.encode()) for k, v in reply.headers),
                ],
            }
        )
        await send({"type": "http.response.body", "body": reply.body})

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # uvicorn runs with lifespan="off": HTTP is all there is
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        # route, method and token are judged before a byte of the body is read
        refused = app.precheck(scope["method"], scope["path"], headers)
        if refused is None:
            refused = app.check_length(headers.get("content-length", "0"))
        if refused is not None:  # declared too large: answer before reading the body
            await respond(send, refused)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            refused = app.check_length(size)  # chunked bodies without a length: stop early
            if refused is not None:
                await respond(send, refused)
                return
            if not message.get("more_body", False):
                break
        reply = await app.handle(scope["method"], scope["path"], headers, b"".join(chunks))
        await respond(send, reply)

    return application


def build_app(cfg: ServeConfig, checkpoints: Sequence[str | bytes] | None = None) -> PolicyApp:
    """Load the checkpoints into a :class:`PolicyApp`."""
    from wallwm.trainer.serving.engine import PolicyEngine

    thread = inference_thread()
    sources = list(checkpoints or cfg.checkpoints)
    engine = thread.submit(
        lambda: PolicyEngine(
            sources,
            cfg.flow_steps,
            noise_scale=cfg.noise_scale,
            device=cfg.device,
            precision=cfg.precision,
            backbone_path=cfg.backbone,
        )
    ).result()
    return PolicyApp(engine.infer, engine.specs, engine.metadata(), cfg, thread)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _uvicorn(app: PolicyApp) -> Any:
    import uvicorn

    return uvicorn.Server(
        uvicorn.Config(
            asgi_app(app),
            log_level="warning",
            access_log=False,
            lifespan="off",
            # connections beyond the bound get 503 from uvicorn itself
            limit_concurrency=app.cfg.max_connections,
        )
    )


def warn_if_exposed(cfg: ServeConfig) -> str | None:
    """A warning when the server listens beyond this machine without a token."""
    if cfg.host not in LOOPBACK and cfg.token is None:
        return (
            f"listening on {cfg.host} without --token: anyone who can reach this port can "
            "query the policy"
        )
    return None


class ServerHandle:
    """A server running in a background thread (tests, benchmarks, notebooks)."""

    def __init__(self, server: Any, thread: threading.Thread, url: str, app: PolicyApp) -> None:
        """Wrap a started uvicorn server."""
        self.server, self.thread, self.url, self.app = server, thread, url, app

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_in_thread(cfg: ServeConfig, app: PolicyApp | None = None) -> ServerHandle:
    """Serve in a daemon thread; returns once the port accepts connections."""
    app = app or build_app(cfg)
    sock = _bind(cfg.host, cfg.port)
    port = sock.getsockname()[1]
    server = _uvicorn(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the policy server did not start on {cfg.host}:{port}")
        time.sleep(0.01)
    return ServerHandle(server, thread, _url(cfg.host, port), app)


def run_server(cfg: ServeConfig, on_ready: Callable[[str, PolicyApp], None] | None = None) -> None:
    """Serve in this process until interrupted (``wallwm serve``)."""
    app = build_app(cfg)
    sock = _bind(cfg.host, cfg.port)
    if on_ready is not None:
        on_ready(_url(cfg.host, sock.getsockname()[1]), app)
    _uvicorn(app).run(sockets=[sock])


# ---------------------------------------------------------------------- Ray Serve


class PolicyDeployment:
    """A Ray Serve replica: the same :class:`PolicyApp` behind Serve's HTTP proxy."""

    def __init__(self, checkpoint_refs: list[Any], options: dict[str, Any]) -> None:
        """Fetch the (slimmed) checkpoints from the object store and load them."""
        import ray

        blobs = [ray.get(ref) for ref in checkpoint_refs]  # refs in a list are not auto-resolved
        if str(options.get("device", "")).startswith("cuda"):
            options = {**options, "device": "cuda"}  # Ray shows a replica its own GPU only
        self.app = build_app(ServeConfig(**options), blobs)

    async def __call__(self, request: Any) -> Any:
        """Answer one HTTP request."""
        from starlette.responses import Response

        headers = {k.lower(): v for k, v in request.headers.items()}
        reply = self.app.precheck(request.method, request.url.path, headers)
        if reply is None:
            reply = self.app.check_length(headers.get("content-length", "0"))
        if reply is None:
            body = await request.body()
            reply = await self.app.handle(request.method, request.url.path, headers, body)
        return Response(
            reply.body,
            status_code=reply.status,
            media_type=reply.content_type,
            headers=dict(reply.headers),
        )


def run_ray_serve(
    cfg: ServeConfig, block: bool = True, on_ready: Callable[[str], None] | None = None
) -> str:
    """Deploy ``cfg.replicas`` replicas on Ray Serve and return the URL.

    With ``block`` it serves until interrupted (Ctrl-C), then shuts Serve down.

    Checkpoints travel through the object store (their inference part only), so replicas on
    other nodes need no shared filesystem.
    """
    import ray
    from ray import serve

    from wallwm.pipeline.runtime import ensure_ray
    from wallwm.trainer.serving.engine import load_checkpoint, slim_checkpoint

    ensure_ray(cfg.ray_address)
    refs = [ray.put(slim_checkpoint(load_checkpoint(path))) for path in cfg.checkpoints]
    url = _url(cfg.host, cfg.port)
    ready = False
    try:
        serve.start(http_options={"host": cfg.host, "port": cfg.port})
        deployment = serve.deployment(
            PolicyDeployment,
            name="wallwm-policy",
            num_replicas=cfg.replicas,
            # room for a full micro-batch per replica (Serve's default of 5 would cap batching)
            max_ongoing_requests=cfg.max_batch_size * 2,
            ray_actor_options={
                "num_cpus": cfg.cpus_per_replica,
                # a replica asked to run on CUDA reserves a GPU (Ray then makes it visible)
                "num_gpus": 1 if cfg.device.startswith("cuda") else 0,
            },
        )
        serve.run(
            deployment.bind(refs, cfg.model_dump()), name="wallwm", route_prefix="/", blocking=False
        )
        if on_ready is not None:
            on_ready(url)
        ready = True
        while block:
            time.sleep(1)
    except KeyboardInterrupt:
        if not block:
            raise
    finally:
        if block or not ready:  # Ctrl-C during start-up too: no half-deployed app left behind
            serve.shutdown()
    return url
