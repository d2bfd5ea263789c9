"""A light client of the policy server: the standard library, numpy and msgpack -- no torch.

    from wallwm.trainer.serving.client import PolicyClient, RemotePolicy

    client = PolicyClient("http://127.0.0.1:8000", token="...")
    client.metadata()["modes"]
    result = client.infer(image, state_S, "pick up the puck")   # InferResult
    policy = RemotePolicy(client, replan_every=8)                      # a Policy

One kept-alive HTTP connection per client (reconnects once if the server closed it); one
client per thread. Errors from the server raise :class:`ServerError` with its status, code,
message and field.
"""

from __future__ import annotations

import http.client
import os
import socket
import urllib.parse
from typing import Any

import numpy as np

from wallwm.trainer.policy import ChunkPolicy
from wallwm.trainer.serving.protocol import (
    JSON,
    MSGPACK,
    InferRequest,
    InferResult,
    ModelSpec,
    RequestError,
    decode_body,
    encode_body,
)

TOKEN_ENV = "WALLWM_SERVE_TOKEN"  # noqa: S105 -- the variable name, not a secret


class ServerError(RuntimeError):
    """The server refused or failed a request."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        """Wrap an ``{"code", "message", "field"}`` error body."""
        self.status = status
        self.code = str(error.get("code", "unknown"))
        self.field = error.get("field")
        self.message = str(error.get("message", ""))
        super().__init__(f"{status} {self.code}: {self.message}")


class PolicyClient:
    """Talks to ``wallwm serve`` (or its Ray Serve deployment) over HTTP."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        token: str | None = None,
        timeout_s: float = 60.0,
        binary: bool = True,
    ) -> None:
        """``token`` defaults to ``$WALLWM_SERVE_TOKEN``; ``binary`` picks msgpack over JSON."""
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"{url!r}: expected http://HOST:PORT")
        self.url, self.timeout_s, self.binary = url.rstrip("/"), timeout_s, binary
        self._host, self._port = parsed.hostname, parsed.port or 80
        self._https = parsed.scheme == "https"
        self._prefix = parsed.path.rstrip("/")
        self.token = token if token is not None else os.environ.get(TOKEN_ENV)
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.timeout_s)
            self._conn.connect()
            if self._conn.sock is not None:  # small requests: no Nagle delay
                self._conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._conn

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> PolicyClient:
        """Use as a context manager."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close on exit."""
        self.close()

    def request(
        self, method: str, path: str, body: bytes = b"", content_type: str = JSON
    ) -> tuple[int, str, bytes]:
        """One raw request: ``(status, content type, body)``; retries once on a stale socket."""
        headers = {"Content-Type": content_type}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in (0, 1):
            try:
                conn = self._connection()
                conn.request(method, self._prefix + path, body=body or None, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()  # the server restarted or dropped an idle connection
                if attempt:
                    raise
                continue
            except OSError:
                self.close()
                raise
            return response.status, response.getheader("Content-Type", JSON), data
        raise AssertionError("unreachable")

    def _call(self, method: str, path: str, message: dict[str, Any] | None = None) -> Any:
        content_type = MSGPACK if self.binary else JSON
        body = encode_body(message, content_type) if message is not None else b""
        status, answer_type, data = self.request(method, path, body, content_type)
        if status != 200:
            try:  # ours is a JSON/msgpack error; a proxy in front may answer plain text
                error = decode_body(data, answer_type).get("error") if data else None
            except RequestError:
                error = None
            raise ServerError(status, error or {"message": data[:200].decode("utf-8", "replace")})
        return decode_body(data, answer_type) if data else {}

    def health(self) -> dict[str, Any]:
        """Liveness and counters (raises :class:`ServerError` until the app answers)."""
        return dict(self._call("GET", "/health"))

    def metadata(self) -> dict[str, Any]:
        """Modes, shapes and lineage of the served checkpoints."""
        return dict(self._call("GET", "/metadata"))

    def spec(self, mode: str | None = None) -> ModelSpec:
        """The input/output spec of one served mode (the default one when ``None``)."""
        meta = self.metadata()
        model = meta["models"][mode or meta["default_mode"]]
        return ModelSpec(**{k: model[k] for k in ModelSpec.__dataclass_fields__})

    def infer_request(self, request: InferRequest) -> InferResult:
        """Send one request."""
        return InferResult.from_wire(
            self._call("POST", "/infer", request.to_wire(binary=self.binary))
        )

    def infer(
        self,
        image: np.ndarray,
        state_S: np.ndarray,
        instruction: str,
        mode: str | None = None,
        event: str | None = None,
        previous_event: str | None = None,
        seed: int | None = None,
    ) -> InferResult:
        """Actions for one observation (see :mod:`wallwm.trainer.serving.protocol`)."""
        return self.infer_request(
            InferRequest(image, state_S, instruction, mode, event, previous_event, seed)
        )


class RemotePolicy(ChunkPolicy):
    """The served model as a :class:`~wallwm.trainer.policy.Policy` (same plan logic as local)."""

    def __init__(
        self,
        client: PolicyClient,
        mode: str | None = None,
        replan_every: int = 8,
        seed: int = 0,
        event_timeout: int | None = None,
    ) -> None:
        """Follow the chunks the server returns for ``mode`` (the server's default if None)."""
        self.client = client
        super().__init__(client.infer_request, client.spec(mode), replan_every, seed, event_timeout)
