"""Caption backends behind one protocol, selected by a typed config (discriminated on ``kind``).

- ``signals``: deterministic captions from the robot signals and the instruction, for machines
  without a VLM. Its rows say ``caption_backend = "signals"``; they are never passed off as VLM
  output.
- ``openai``: any OpenAI-compatible server (``vllm serve``, ...). Images go as JPEG data URLs,
  output is constrained with ``response_format`` json_schema; bounded concurrency, per-request
  timeouts, retries with exponential backoff on connection errors, 429 and 5xx.
- ``vllm``: the in-process ``vllm.LLM`` engine inside Ray actors (one per GPU, ``num_gpus=1``),
  batched generation with structured output: the high-throughput GPU path.

Every result carries the ``event_id`` of the request it answers; backends may finish requests in
any order and the caption stage matches results by id, never by position.
"""

from __future__ import annotations

import asyncio
import difflib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from wallwm.captioner import gripper
from wallwm.captioner.gripper import note_kinds
from wallwm.captioner.prompting import CaptionRequest, EventFacts
from wallwm.captioner.schema import caption_json_schema


@dataclass(frozen=True)
class CaptionResult:
    """One backend answer, keyed by the event it is about."""

    event_id: str
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: Transport-level failure (timeout, connection refused, HTTP error) after all retries.
    error: str | None = None
    #: Not sent at all: the backend had given up on its server (``error`` says why).
    unsent: bool = False


@dataclass(frozen=True)
class CaptionJob:
    """What a backend gets per event: the facts (for signal captions) and the VLM request."""

    facts: EventFacts
    request: CaptionRequest


OnResult = Callable[[CaptionResult], None]


class CaptionBackend(Protocol):
    """Turns caption jobs into raw model outputs."""

    kind: str
    model: str

    def sampling(self) -> dict[str, Any]:
        """Sampling parameters (part of every cache key)."""
        ...

    def generate(
        self, jobs: list[CaptionJob], on_result: OnResult | None = None
    ) -> list[CaptionResult]:
        """Answer every job (any order inside; one result per job, matched by ``event_id``)."""
        ...


# --------------------------------------------------------------------------- configs


class SignalsBackendConfig(BaseModel):
    """Deterministic captions from signals (no model)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    kind: Literal["signals"] = "signals"


class OpenAIBackendConfig(BaseModel):
    """An OpenAI-compatible chat-completions server."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    kind: Literal["openai"] = "openai"
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = Field(..., description="Model name as the server knows it.")
    api_key: str = "EMPTY"
    concurrency: int = Field(64, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(3, ge=0)
    max_tokens: int = Field(128, ge=8)
    temperature: float = Field(0.0, ge=0)
    startup_wait_s: float = Field(
        30.0,
        ge=0,
        description="How long the first call waits for the server to answer at all (a vLLM "
        "server still loading its model) before the run is refused in one line.",
    )
    give_up_after: int = Field(
        16,
        ge=1,
        description="Requests in a row that reach no server, each after its retries, before "
        "the rest of the run is not sent (the server went down mid-run: without this every "
        "remaining event paid its retries). A rerun captions what is left.",
    )


class VllmBackendConfig(BaseModel):
    """The in-process vLLM engine in Ray actors (GPU clusters)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    kind: Literal["vllm"] = "vllm"
    model: str = Field(..., description="Local model directory (Hugging Face layout).")
    num_actors: int = Field(1, ge=1, description="One engine per GPU.")
    gpus_per_actor: float = Field(1.0, ge=0, description="0: a CPU engine (vLLM's CPU build).")
    max_model_len: int = 8192
    max_images_per_prompt: int = 4
    gpu_memory_utilization: float = 0.9
    max_tokens: int = 128
    temperature: float = 0.0
    batch_size: int = Field(64, ge=1, description="Requests per generate call on an actor.")
    restarts: int = Field(
        2,
        ge=0,
        description="Times Ray restarts an engine actor whose process died (node lost, OOM "
        "kill) and retries its batch there: generation is deterministic per request, so a "
        "retried batch answers the same. Past that, the batch's events are recorded failures.",
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra vllm.LLM arguments, e.g. tensor_parallel_size, or enforce_eager and "
        "kv_cache_memory_bytes for the CPU build.",
    )


BackendConfig = Annotated[
    SignalsBackendConfig | OpenAIBackendConfig | VllmBackendConfig, Field(discriminator="kind")
]


def make_backend(
    cfg: SignalsBackendConfig | OpenAIBackendConfig | VllmBackendConfig,
) -> CaptionBackend:
    """The backend for a config."""
    if isinstance(cfg, SignalsBackendConfig):
        return SignalsBackend()
    if isinstance(cfg, OpenAIBackendConfig):
        return OpenAIBackend(cfg)
    return VllmBackend(cfg)


# --------------------------------------------------------------------------- signals


class SignalsBackend:
    """Captions from what the signals say happened at the event's start, plus the instruction.

    The words come from what the gripper does in the event (``captioner.gripper``: grasp,
    release, carry, the approach before a grasp), the event's place in the episode and the object
    named in the instruction; nothing visual is claimed.
    """

    kind = "signals"
    #: The caption rules' version: part of every cache key, so changing the rules recaptions.
    model = "signals-v2"

    def sampling(self) -> dict[str, Any]:
        """No sampling: deterministic."""
        return {}

    def generate(
        self, jobs: list[CaptionJob], on_result: OnResult | None = None
    ) -> list[CaptionResult]:
        """One JSON caption per job."""
        import json

        out = []
        for job in jobs:
            result = CaptionResult(job.facts.event_id, json.dumps(signal_caption(job.facts)))
            if on_result:
                on_result(result)
            out.append(result)
        return out


def _object_of(instruction: str) -> str:
    words = instruction.lower().replace(",", " ").split()
    stop = {
        "the",
        "a",
        "an",
        "to",
        "into",
        "onto",
        "on",
        "at",
        "from",
        "and",
        "it",
        "in",
        "of",
        "by",
        "with",
        "its",
        "for",
        "toward",
        "towards",
        "above",
        "under",
        "off",
        "up",
        "down",
        "out",
        "over",
        "then",
        "while",
    }
    # a result after the noun ("slide the window closed") is not part of the object's name
    results = {"closed", "open", "opened", "shut", "forward", "backward", "back", "away", "aside"}
    for i, w in enumerate(words):
        if w == "the" and i + 1 < len(words):
            phrase = [words[i + 1]]
            if i + 2 < len(words) and words[i + 2] not in stop | results:
                phrase.append(words[i + 2])
            return " ".join(phrase)
    content = [w for w in words[1:] if w not in stop]
    return content[0] if content else "object"


def signal_caption(facts: EventFacts) -> dict[str, Any]:
    """A caption from what the gripper does in the event, its place and the instruction.

    A grasp or release starting in the event names it; an event in which the gripper holds what
    it grasped is a carry; the first event is a reach, later ones before the grasp an approach;
    the last one finishes the task.
    """
    obj = _object_of(facts.instruction)
    notes = note_kinds(facts.signal_notes)
    last = facts.index == facts.count - 1
    if gripper.CLOSES in notes:
        verb, caption, done = "grasp", f"grasp the {obj}", f"the gripper holds the {obj}"
    elif gripper.OPENS in notes:
        verb, caption, done = "release", f"release the {obj}", f"the {obj} is released"
    elif gripper.HOLDS in notes:
        verb, caption, done = "carry", f"carry the {obj}", f"the {obj} is moved while held"
    elif facts.index == 0:
        verb, caption, done = "reach", f"reach toward the {obj}", f"the gripper is near the {obj}"
    elif gripper.CLOSES_LATER in notes:
        verb, caption, done = (
            "approach",
            f"approach the {obj} to grasp it",
            f"the gripper is around the {obj}",
        )
    elif last:
        verb, caption, done = "finish", "finish the task", "the task is complete"
    else:
        verb, caption, done = "move", f"move with the {obj}", "the motion step is complete"
    return {"caption": caption, "verb": verb, "object": obj, "target": None, "done_state": done}


# --------------------------------------------------------------------------- openai


class OpenAIBackend:
    """Chat completions against an OpenAI-compatible server, many requests in flight."""

    kind = "openai"

    def __init__(self, cfg: OpenAIBackendConfig) -> None:
        """Use the server and limits in ``cfg``."""
        self.cfg = cfg
        self.model = cfg.model
        self._checked = False  # the server looked at once, before the first requests
        self._unreachable = 0  # requests in a row that reached no server, after their retries
        self._down: str | None = None  # why nothing more is sent, once the server is given up

    def sampling(self) -> dict[str, Any]:
        """What shapes the output."""
        return {"temperature": self.cfg.temperature, "max_tokens": self.cfg.max_tokens}

    def payload(self, request: CaptionRequest) -> dict[str, Any]:
        """The JSON body of one chat-completions call."""
        return {
            "model": self.cfg.model,
            "messages": request.messages(),
            "max_tokens": self.cfg.max_tokens,
            "temperature": self.cfg.temperature,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "event_caption",
                    "strict": True,
                    "schema": caption_json_schema(),
                },
            },
        }

    def generate(
        self, jobs: list[CaptionJob], on_result: OnResult | None = None
    ) -> list[CaptionResult]:
        """Send every request with at most ``concurrency`` in flight."""
        return asyncio.run(self._generate(jobs, on_result))

    async def _generate(
        self, jobs: list[CaptionJob], on_result: OnResult | None
    ) -> list[CaptionResult]:
        import httpx

        limit = asyncio.Semaphore(self.cfg.concurrency)
        headers = {"Authorization": f"Bearer {self.cfg.api_key}"}
        timeout = httpx.Timeout(self.cfg.timeout_s, connect=min(10.0, self.cfg.timeout_s))
        limits = httpx.Limits(max_connections=self.cfg.concurrency)
        async with httpx.AsyncClient(
            base_url=self.cfg.base_url.rstrip("/"), headers=headers, timeout=timeout, limits=limits
        ) as client:
            if not self._checked:
                await self._check_server(client)
                self._checked = True

            async def one(job: CaptionJob) -> CaptionResult:
                async with limit:
                    result = await self._call(client, job.request)
                if on_result:
                    on_result(result)
                return result

            return list(await asyncio.gather(*(one(j) for j in jobs)))

    async def _check_server(self, client: Any) -> None:
        """Refuse the run in one line where no server answers, or it does not serve the model.

        Without this, every event of the dataset was sent, retried and recorded as failed (a
        typo in the port cost minutes per thousand events). A server still starting is waited
        for up to ``startup_wait_s``; one that does not list its models (no ``/models``) is
        not judged. Later outages stay per-event failures, retried on the next run.
        """
        import httpx

        url = self.cfg.base_url
        deadline = time.monotonic() + self.cfg.startup_wait_s
        while True:
            try:
                response = await client.get("/models")
                break
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                if time.monotonic() >= deadline:
                    raise ValueError(
                        f"--base-url {url}: no server answers ({type(exc).__name__}: {exc}; "
                        f"waited {self.cfg.startup_wait_s:g} s)"
                    ) from exc
                await asyncio.sleep(1.0)
        if response.status_code in (401, 403):
            raise ValueError(
                f"--base-url {url}: the server refused the API key (HTTP {response.status_code})"
            )
        try:
            served = [str(m["id"]) for m in response.json()["data"]]
        except (ValueError, KeyError, TypeError):
            return  # no model listing here: the requests themselves will tell
        if served and self.cfg.model not in served:
            close = difflib.get_close_matches(self.cfg.model, served, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"--model {self.cfg.model}: not served at {url} (it serves {served[:8]}){hint}"
            )

    async def _call(self, client: Any, request: CaptionRequest) -> CaptionResult:
        import httpx

        body = self.payload(request)
        error = "no attempt made"
        reached = False  # whether any attempt got an HTTP answer: the server is up
        for attempt in range(self.cfg.max_retries + 1):
            if self._down is not None:  # given up meanwhile: stop retrying into the void
                return CaptionResult(request.event_id, error=self._down, unsent=True)
            if attempt:
                # Exponential backoff with jitter, so a restarting server is not stampeded.
                await asyncio.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random()))  # noqa: S311
            try:
                response = await client.post("/chat/completions", json=body)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                error = f"{type(exc).__name__}: {exc}"
                continue
            reached = True
            self._unreachable = 0
            if response.status_code == 429 or response.status_code >= 500:
                error = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code >= 400:  # a bad request will not get better by retrying
                return CaptionResult(
                    request.event_id, error=f"HTTP {response.status_code}: {response.text[:300]}"
                )
            data = response.json()
            usage = data.get("usage") or {}
            text = (data.get("choices") or [{}])[0].get("message", {}).get("content") or ""
            return CaptionResult(
                request.event_id,
                text,
                int(usage.get("prompt_tokens", 0)),
                int(usage.get("completion_tokens", 0)),
            )
        if not reached:
            self._note_unreachable(error)
        return CaptionResult(
            request.event_id, error=f"gave up after {self.cfg.max_retries + 1} attempts: {error}"
        )

    def _note_unreachable(self, error: str) -> None:
        """Count a request that reached no server; past ``give_up_after`` in a row, stop."""
        self._unreachable += 1
        if self._unreachable >= self.cfg.give_up_after and self._down is None:
            self._down = (
                f"not sent: the server at {self.cfg.base_url} stopped answering "
                f"({self._unreachable} requests in a row got no answer, each after "
                f"{self.cfg.max_retries + 1} attempts; last: {error})"
            )


# --------------------------------------------------------------------------- vllm


class VllmBackend:
    """``vllm.LLM`` engines in Ray actors; requests are sharded across actors in batches.

    Needs a machine where ``import vllm`` works (a GPU build) and Ray GPUs; each actor holds one
    engine for its whole life, so the model loads once per GPU.
    """

    kind = "vllm"

    def __init__(self, cfg: VllmBackendConfig, engine: type | None = None) -> None:
        """Prepare (actors start on first use).

        ``engine``: the actor class (default :class:`VllmEngineActor`; tests pass a double with
        the same constructor and ``generate``, to exercise the Ray side without vLLM).
        """
        self.cfg = cfg
        self.model = cfg.model
        self.engine = engine or VllmEngineActor
        self._actors: list[Any] = []

    def sampling(self) -> dict[str, Any]:
        """What shapes the output."""
        return {"temperature": self.cfg.temperature, "max_tokens": self.cfg.max_tokens}

    def _start(self) -> None:
        if self._actors:
            return
        import ray

        from wallwm.pipeline.runtime import ensure_ray

        ensure_ray()
        have = float(ray.cluster_resources().get("GPU", 0.0))
        need = self.cfg.gpus_per_actor
        if need > have:  # Ray would keep the actors pending forever: the run would hang
            raise ValueError(
                f"--backend vllm needs {need:g} GPU per engine and this Ray cluster has "
                f"{have:g}: run on a GPU machine (or --ray-address a GPU cluster), caption "
                "against a running server with --backend openai --base-url, or use vLLM's CPU "
                "build with gpus_per_actor=0"
            )
        actor_cls = ray.remote(
            num_gpus=self.cfg.gpus_per_actor,
            max_restarts=self.cfg.restarts,
            max_task_retries=self.cfg.restarts,
        )(self.engine)
        self._actors = [actor_cls.remote(self.cfg) for _ in range(self.cfg.num_actors)]

    def generate(
        self, jobs: list[CaptionJob], on_result: OnResult | None = None
    ) -> list[CaptionResult]:
        """Batch the requests over the actors and collect results as batches finish."""
        import ray

        self._start()
        size = self.cfg.batch_size
        batches = [[j.request for j in jobs[i : i + size]] for i in range(0, len(jobs), size)]
        pending = {
            self._actors[i % len(self._actors)].generate.remote(batch): batch
            for i, batch in enumerate(batches)
        }
        results: list[CaptionResult] = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            batch = pending.pop(done[0])
            try:
                answers: list[CaptionResult] = ray.get(done[0])
            except Exception as exc:  # noqa: BLE001 -- a crashed actor fails its batch only
                answers = [CaptionResult(r.event_id, error=f"engine error: {exc}") for r in batch]
            for a in answers:
                if on_result:
                    on_result(a)
            results.extend(answers)
        return results


class VllmEngineActor:
    """Holds one ``vllm.LLM`` (runs inside a Ray actor)."""

    def __init__(self, cfg: VllmBackendConfig) -> None:
        """Load the engine."""
        from vllm import LLM

        self.cfg = cfg
        self.llm = LLM(
            model=cfg.model,
            max_model_len=cfg.max_model_len,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            limit_mm_per_prompt={"image": cfg.max_images_per_prompt, "video": 0},
            **cfg.engine_kwargs,
        )

    def _sampling_params(self) -> Any:
        from vllm import SamplingParams

        schema = caption_json_schema()
        try:  # vLLM >= 0.11: structured_outputs
            from vllm.sampling_params import StructuredOutputsParams

            guided = {"structured_outputs": StructuredOutputsParams(json=schema)}
        except ImportError:  # older releases
            from vllm.sampling_params import GuidedDecodingParams

            guided = {"guided_decoding": GuidedDecodingParams(json=schema)}
        return SamplingParams(
            temperature=self.cfg.temperature, max_tokens=self.cfg.max_tokens, **guided
        )

    def generate(self, requests: list[CaptionRequest]) -> list[CaptionResult]:
        """One batched chat generation; results keep their request's event id."""
        outputs = self.llm.chat(
            [r.messages() for r in requests], self._sampling_params(), use_tqdm=False
        )
        return [
            CaptionResult(
                r.event_id,
                o.outputs[0].text if o.outputs else "",
                len(o.prompt_token_ids or []),
                len(o.outputs[0].token_ids) if o.outputs else 0,
            )
            for r, o in zip(requests, outputs, strict=True)
        ]
