"""The policy server's wire protocol: messages, array encoding and request validation.

Torch-free on purpose (numpy and msgpack only): the client imports it on a robot computer.

Transport: HTTP/1.1 with keep-alive. ``POST /infer`` bodies are msgpack (``application/msgpack``,
arrays as raw bytes -- a 96 px RGB image is 27 KB, not the ~100 KB of a JSON list) or JSON
(``application/json``, arrays as nested lists, for curl and quick scripts); the answer uses
the request's format. ``GET /health`` (no auth: for load balancers) and ``GET /metadata``
answer JSON. Why HTTP rather than a WebSocket: Ray Serve's proxy balances HTTP requests across
replicas one request at a time (a WebSocket pins a client to one replica), the client needs
only the standard library, and on a kept-alive connection the per-request cost is a fraction of
a millisecond (``benchmarks/serve.py`` measures it).

An ``infer`` request (``INFER_FIELDS``)::

    image        uint8 (S, S, 3) RGB at the model's image size      required
                 (a model reading N cameras: (N, S, S, 3), in the order of its
                 ``cameras`` in ``/metadata``)
    state        (state_dim,) finite numbers                         required
    instruction  the task instruction, 1..1000 characters             required
    mode         which served model (default: the server's first)
    event        text of the event to execute (text-conditioned modes); when absent the
                 planner chooses: the event after ``previous_event``, or -- with no
                 previous event -- the event to do now
    previous_event   the event just finished (see ``event``)
    seed         integer seed of the flow-matching noise (same seed, same actions)

and its answer: ``actions`` float32 (H, A) -- event mode: exactly the steps up to the end of the
event (variable length); other modes: a fixed chunk -- ``event_steps`` (steps inside the
event), ``end_of_event``, ``event`` (the text the actions were conditioned on), ``next_event``
(the planner's predicted next event as the nearest known caption), ``event_timeout_steps``
(text-conditioned modes: executed steps after which a plan follower should move past ``event``
-- twice the 95th percentile of how long such events ran in training, see
:mod:`wallwm.trainer.durations`; 0 otherwise), ``mode``, ``batch_size`` (requests in the
micro-batch that served it) and ``server_ms``.

Errors answer ``{"error": {"code", "message", "field"}}`` with status 400 (malformed), 401
(token), 404, 405, 413 (too large), 415 (content type), 422 (invalid field) or 500.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
MSGPACK = "application/msgpack"
JSON = "application/json"
MAX_TEXT_CHARS = 1000
MAX_SEED = 2**63 - 1
INFER_FIELDS = (
    "image",
    "state",
    "instruction",
    "mode",
    "event",
    "previous_event",
    "seed",
)
_ARRAY_KEY = "__ndarray__"
# no object dtypes, ever: arrays are rebuilt from raw bytes, nothing is unpickled
_SAFE_DTYPES = frozenset(
    {"uint8", "int8", "int16", "int32", "int64", "uint16", "float16", "float32", "float64"}
)


class RequestError(Exception):
    """A request the server refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        """An error answered as ``{"error": {"code", "message", "field"}}``."""
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def to_dict(self) -> dict[str, Any]:
        """The error body."""
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


@dataclass(frozen=True)
class ModelSpec:
    """What one served model expects (from its checkpoint)."""

    mode: str
    image_size: int
    state_dim: int
    action_dim: int
    horizon: int
    text_conditioned: bool
    #: The camera streams the model reads, in order (empty: one, unnamed).
    cameras: tuple[str, ...] = ()

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The ``image`` an ``infer`` call must send."""
        side = (self.image_size, self.image_size, 3)
        return (len(self.cameras), *side) if len(self.cameras) > 1 else side


@dataclass
class InferRequest:
    """One ``infer`` call (see the module docstring)."""

    image: np.ndarray
    state_S: np.ndarray
    instruction: str
    mode: str | None = None
    event: str | None = None
    previous_event: str | None = None
    seed: int | None = None

    def to_wire(self, binary: bool = True) -> dict[str, Any]:
        """The message dict (arrays as raw bytes when ``binary``, else lists)."""
        out: dict[str, Any] = {
            "image": encode_array(self.image, binary),
            "state": encode_array(np.asarray(self.state_S, np.float32), binary),
            "instruction": self.instruction,
        }
        for key in ("mode", "event", "previous_event", "seed"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass
class InferResult:
    """The answer to one ``infer`` call."""

    actions_HA: np.ndarray
    mode: str
    event_steps: int
    end_of_event: bool
    event: str = ""
    next_event: str = ""
    batch_size: int = 1
    server_ms: float = 0.0
    #: Executed steps after which a plan follower moves past ``event`` (0: no advice).
    event_timeout_steps: int = 0

    def to_wire(self, binary: bool = True) -> dict[str, Any]:
        """The message dict."""
        return {
            "actions": encode_array(np.asarray(self.actions_HA, np.float32), binary),
            "mode": self.mode,
            "event_steps": int(self.event_steps),
            "end_of_event": bool(self.end_of_event),
            "event": self.event,
            "next_event": self.next_event,
            "batch_size": int(self.batch_size),
            "server_ms": float(self.server_ms),
            "event_timeout_steps": int(self.event_timeout_steps),
        }

    @classmethod
    def from_wire(cls, message: dict[str, Any]) -> InferResult:
        """Rebuild a result from its message dict."""
        return cls(
            actions_HA=decode_array(message["actions"], "actions").astype(np.float32),
            mode=str(message["mode"]),
            event_steps=int(message["event_steps"]),
            end_of_event=bool(message["end_of_event"]),
            event=str(message.get("event", "")),
            next_event=str(message.get("next_event", "")),
            batch_size=int(message.get("batch_size", 1)),
            server_ms=float(message.get("server_ms", 0.0)),
            event_timeout_steps=int(message.get("event_timeout_steps", 0)),
        )


# ---------------------------------------------------------------------- arrays and bodies


def encode_array(array: np.ndarray, binary: bool = True) -> Any:
    """An array as ``{"__ndarray__": bytes, "dtype", "shape"}`` (binary) or a nested list."""
    array = np.asarray(array)
    if not binary:
        return array.tolist()
    array = np.ascontiguousarray(array)
    return {_ARRAY_KEY: array.tobytes(), "dtype": array.dtype.str, "shape": list(array.shape)}


def decode_array(value: Any, field: str) -> np.ndarray:
    """The array in a message field (binary dict or nested list), or a 422 naming the field."""
    if isinstance(value, dict) and _ARRAY_KEY in value:
        try:
            dtype = np.dtype(value["dtype"])
            shape = tuple(int(n) for n in value["shape"])
            data = value[_ARRAY_KEY]
        except (KeyError, TypeError, ValueError) as exc:
            raise RequestError(
                422, "bad_array", f"{field}: malformed array ({exc})", field
            ) from exc
        if dtype.name not in _SAFE_DTYPES or not isinstance(data, bytes):
            raise RequestError(422, "bad_array", f"{field}: unsupported dtype {dtype}", field)
        if any(n < 0 for n in shape) or math.prod(shape) * dtype.itemsize != len(data):
            raise RequestError(
                422,
                "bad_array",
                f"{field}: {len(data)} bytes do not hold shape {list(shape)} of {dtype.name}",
                field,
            )
        return np.frombuffer(data, dtype).reshape(shape)
    if isinstance(value, list):
        try:
            array = np.asarray(value)
        except ValueError as exc:  # ragged lists
            raise RequestError(422, "bad_array", f"{field}: ragged nested list", field) from exc
        if array.dtype.kind not in "biuf":
            raise RequestError(422, "bad_array", f"{field}: must hold numbers only", field)
        return array
    raise RequestError(
        422, "bad_array", f"{field}: expected an array, got {type(value).__name__}", field
    )


def decode_body(body: bytes, content_type: str) -> dict[str, Any]:
    """Parse a request body by content type; 400/415 on anything else than a map."""
    kind = content_type.split(";", maxsplit=1)[0].strip().lower()
    try:
        if kind == MSGPACK:
            message = msgpack.unpackb(body, raw=False, strict_map_key=True)
        elif kind in (JSON, ""):
            message = json.loads(body)
        else:
            raise RequestError(
                415, "unsupported_media_type", f"content type {kind!r}: use {MSGPACK} or {JSON}"
            )
    except (ValueError, msgpack.exceptions.ExtraData, msgpack.exceptions.UnpackException) as exc:
        raise RequestError(400, "malformed_body", f"cannot decode the body: {exc}") from exc
    if not isinstance(message, dict):
        raise RequestError(400, "malformed_body", "the body must be a map of fields")
    return message


def encode_body(message: dict[str, Any], content_type: str) -> bytes:
    """Serialise a message in the given format."""
    if content_type == MSGPACK:
        return bytes(msgpack.packb(message, use_bin_type=True))
    return json.dumps(message, allow_nan=False).encode()


# ---------------------------------------------------------------------- validation


def _text(message: dict[str, Any], key: str, required: bool = False) -> str | None:
    value = message.get(key)
    if value is None:
        if required:
            raise RequestError(422, "missing_field", f"{key}: required", key)
        return None
    if not isinstance(value, str):
        raise RequestError(
            422, "bad_type", f"{key}: expected text, got {type(value).__name__}", key
        )
    if len(value) > MAX_TEXT_CHARS or (required and not value.strip()):
        raise RequestError(422, "bad_value", f"{key}: must be 1..{MAX_TEXT_CHARS} characters", key)
    return value


def parse_infer(message: dict[str, Any], specs: dict[str, ModelSpec]) -> InferRequest:
    """Validate an ``infer`` message against the served models; 422 names the bad field."""
    unknown = sorted(set(message) - set(INFER_FIELDS))
    if unknown:
        raise RequestError(
            422, "unknown_field", f"unknown fields {unknown}; allowed: {list(INFER_FIELDS)}"
        )
    mode = _text(message, "mode") or next(iter(specs))
    if mode not in specs:
        raise RequestError(
            422, "unknown_mode", f"mode {mode!r}: served modes {list(specs)}", "mode"
        )
    spec = specs[mode]
    if "image" not in message:
        raise RequestError(422, "missing_field", "image: required", "image")
    image = decode_array(message["image"], "image")
    expected = spec.image_shape
    if image.shape != expected:
        views = f", cameras {list(spec.cameras)}" if len(spec.cameras) > 1 else ""
        raise RequestError(
            422,
            "bad_shape",
            f"image: shape {list(image.shape)}, expected {list(expected)} "
            f"(RGB, the model's size{views})",
            "image",
        )
    if image.dtype != np.uint8:
        if image.dtype.kind not in "iu" or image.min() < 0 or image.max() > 255:
            raise RequestError(
                422, "bad_value", f"image: expected uint8 0..255, got {image.dtype}", "image"
            )
        image = image.astype(np.uint8)
    if "state" not in message:
        raise RequestError(422, "missing_field", "state: required", "state")
    state = decode_array(message["state"], "state").astype(np.float32)
    if state.shape != (spec.state_dim,):
        raise RequestError(
            422,
            "bad_shape",
            f"state: shape {list(state.shape)}, expected [{spec.state_dim}]",
            "state",
        )
    if not np.isfinite(state).all():
        raise RequestError(422, "non_finite", "state: contains NaN or infinity", "state")
    seed = message.get("seed")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED
    ):
        raise RequestError(422, "bad_value", f"seed: an integer in 0..{MAX_SEED}", "seed")
    instruction = _text(message, "instruction", required=True)
    assert instruction is not None
    return InferRequest(
        image=image,
        state_S=state,
        instruction=instruction,
        mode=mode,
        event=_text(message, "event"),
        previous_event=_text(message, "previous_event"),
        seed=seed,
    )
