"""Batched inference over one or more checkpoints: what the policy server (and ``LocalPolicy``) run.

A :class:`PolicyEngine` holds one model per mode (a server may serve an event-mode and a
chunk-mode checkpoint side by side) and answers a list of :class:`InferRequest` at once:

1. text-conditioned requests without an ``event`` are planned in one batch: the planner's
   next-event embedding given ``previous_event`` (or, with none, given no event text: "the
   event to do now") is matched to the nearest caption of the instruction in the checkpoint's
   caption bank (the training captions; test-time conditioning never invents text);
2. one batched flow-matching call samples every request's actions, each from its own noise
   (seeded by the request's ``seed``, so a request's answer does not depend on which other
   requests shared its micro-batch);
3. event mode cuts the actions at the end-of-event head's predicted event end.

The models run on ``device`` (``auto``: CUDA when present) in ``precision`` (``auto``: bf16
autocast on GPUs), whichever device trained the checkpoint; the noise is drawn on the CPU from
each request's seed, so a seeded request gets the same noise on every device.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from wallwm.trainer.checkpoint import read_checkpoint
from wallwm.trainer.device import autocast_dtype, inference_mode, resolve_device
from wallwm.trainer.durations import EventTimeouts
from wallwm.trainer.factory import model_from_checkpoint
from wallwm.trainer.model import TEXT_CONDITIONED, ModelConfig
from wallwm.trainer.serving.protocol import InferRequest, InferResult, ModelSpec

#: What inference needs from a training checkpoint (the rest is optimiser and RNG state).
INFERENCE_KEYS = (
    "mode", "model_config", "stats", "ema", "caption_bank", "event_durations", "dataset", "step",
    "cameras", "backbone",
)  # fmt: skip


def load_checkpoint(source: str | Path | bytes) -> dict[str, Any]:
    """A checkpoint from a path or its bytes, with a clear error when it is not one.

    Loaded with ``weights_only=True``: tensors and plain data only, so a checkpoint file cannot
    run code in the process that serves or evaluates it. Checkpoints from before the RNG state
    was stored as plain data load too when only their inference part is read (the slim form
    Ray Serve replicas receive) -- a full older checkpoint is refused in one line.
    """
    state = read_checkpoint(source)
    missing = [k for k in ("mode", "model_config", "ema") if k not in state]
    if missing:
        name = "checkpoint bytes" if isinstance(source, bytes) else str(source)
        raise ValueError(f"{name}: not a wallwm checkpoint (missing {missing})")
    return dict(state)


def slim_checkpoint(state: dict[str, Any]) -> bytes:
    """The inference part of a checkpoint, serialised (what Ray Serve replicas receive)."""
    buffer = io.BytesIO()
    torch.save({k: state[k] for k in INFERENCE_KEYS if k in state}, buffer)
    return buffer.getvalue()


class _Served:
    """One checkpoint ready to answer: the EMA model, its spec and its caption bank."""

    def __init__(
        self,
        state: dict[str, Any],
        name: str,
        device: torch.device,
        backbone_path: str | None = None,
    ) -> None:
        self.name = name
        self.mode = str(state["mode"])
        cfg = ModelConfig(**state["model_config"])
        self.model = model_from_checkpoint(state, name, backbone_path)
        self.model.to(device).eval()
        self.spec = ModelSpec(
            mode=self.mode,
            image_size=cfg.image_size,
            state_dim=cfg.state_dim,
            action_dim=cfg.action_dim,
            horizon=self.model.horizon,
            text_conditioned=self.mode in TEXT_CONDITIONED,
            cameras=tuple(state.get("cameras") or ()),
        )
        self.bank = [(str(i), str(c)) for i, c in state.get("caption_bank", [])]
        self.timeouts = EventTimeouts(state.get("event_durations"), self.model.horizon)
        self.lineage = {
            "checkpoint": name,
            "step": int(state.get("step", 0)),
            "dataset": state.get("dataset", {}),
            "model_config": asdict(cfg),
            # the pretrained VLM the model runs on (None: the compact model)
            "backbone": (
                {k: state["backbone"][k] for k in ("path", "fingerprint", "lora_rank")}
                if state.get("backbone")
                else None
            ),
        }
        self._instructions = {i for i, _ in self.bank}
        self._bank_cache: dict[str, tuple[list[str], torch.Tensor]] = {}

    def captions_for(self, instruction: str) -> tuple[list[str], torch.Tensor]:
        """The bank's captions of this instruction (all captions for an unknown one)."""
        if instruction not in self._instructions:
            instruction = "\x00unknown"  # one shared entry: clients cannot grow the cache
        if instruction not in self._bank_cache:
            captions = sorted({c for i, c in self.bank if i == instruction}) or sorted(
                {c for _, c in self.bank}
            )
            with torch.no_grad():
                emb = self.model.embed_texts(captions).float() if captions else torch.zeros(0, 1)
            self._bank_cache[instruction] = (captions, emb)
        return self._bank_cache[instruction]

    def nearest(self, instructions: Sequence[str], planned_BD: torch.Tensor) -> list[str]:
        """The nearest bank caption to each planned embedding ("" with an empty bank)."""
        banks = [self.captions_for(instruction) for instruction in instructions]
        picks = [  # on the device; one copy to the host for the whole batch
            F.cosine_similarity(probe[None], emb).argmax()
            for probe, (captions, emb) in zip(planned_BD, banks, strict=True)
            if captions
        ]
        chosen = iter(torch.stack(picks).tolist() if picks else [])
        return [captions[next(chosen)] if captions else "" for captions, _ in banks]


class PolicyEngine:
    """Answers batches of ``infer`` requests for one model per mode (see the module docstring)."""

    def __init__(
        self,
        checkpoints: Sequence[str | Path | bytes],
        flow_steps: int = 10,
        seed: int = 0,
        noise_scale: float = 1.0,
        device: str = "auto",
        precision: str = "auto",
        backbone_path: str | None = None,
    ) -> None:
        """Load each checkpoint (a path or serialised bytes); one per mode.

        Args:
            checkpoints: One checkpoint per served mode.
            flow_steps: Euler steps of the action flow.
            seed: Seed of the noise of requests that carry none.
            noise_scale: Scale of the flow's starting noise (its temperature). 1 samples the
                learned action distribution; below 1 moves toward its most likely actions,
                which removes demonstration noise from precise moves (0: deterministic).
            device: Where the models run (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
            precision: ``auto`` (bf16 autocast on GPUs), ``fp32`` or ``bf16``.
            backbone_path: Where a backbone checkpoint's VLM directory is on this machine
                (default: the path it trained with); its content must be the same.
        """
        if noise_scale < 0:
            raise ValueError(f"noise_scale must be >= 0, got {noise_scale}")
        if not checkpoints:
            raise ValueError("no checkpoint given")
        self.device = resolve_device(device)
        autocast_dtype(precision, self.device)  # an unknown precision fails here, not per request
        self.precision = precision
        self.models: dict[str, _Served] = {}
        for k, source in enumerate(checkpoints):
            name = f"checkpoint-{k}" if isinstance(source, bytes) else str(source)
            served = _Served(load_checkpoint(source), name, self.device, backbone_path)
            if served.mode in self.models:
                raise ValueError(
                    f"{name}: a {served.mode}-mode checkpoint is already served "
                    f"({self.models[served.mode].name}); serve one checkpoint per mode"
                )
            self.models[served.mode] = served
        self.flow_steps, self.noise_scale = flow_steps, noise_scale
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def specs(self) -> dict[str, ModelSpec]:
        """What each served mode expects (the first is the default)."""
        return {mode: m.spec for mode, m in self.models.items()}

    def metadata(self) -> dict[str, Any]:
        """Modes, shapes and the lineage of every served checkpoint."""
        return {
            "modes": list(self.models),
            "default_mode": next(iter(self.models)),
            "flow_steps": self.flow_steps,
            "noise_scale": self.noise_scale,
            "device": str(self.device),
            "models": {
                mode: {**asdict(m.spec), **m.lineage, "captions": len(m.bank)}
                for mode, m in self.models.items()
            },
        }

    def infer(self, requests: Sequence[InferRequest]) -> list[InferResult]:
        """Answer requests (validated by :func:`~wallwm.trainer.serving.protocol.parse_infer`)."""
        start = time.perf_counter()
        results: list[InferResult | None] = [None] * len(requests)
        default = next(iter(self.models))
        unknown = {r.mode for r in requests if (r.mode or default) not in self.models}
        if unknown:  # answers stay aligned with requests: never drop one silently
            raise ValueError(
                f"modes {sorted(map(str, unknown))} are not served ({list(self.models)})"
            )
        for mode, served in self.models.items():
            index = [i for i, r in enumerate(requests) if (r.mode or default) == mode]
            if index:
                with inference_mode(self.device, self.precision):
                    answers = self._infer_mode(served, [requests[i] for i in index])
                for i, result in zip(index, answers, strict=True):
                    results[i] = result
        elapsed_ms = (time.perf_counter() - start) * 1000
        out = [r for r in results if r is not None]
        for r in out:
            r.batch_size, r.server_ms = len(requests), elapsed_ms
        return out

    def _batch(self, requests: Sequence[InferRequest], texts: Sequence[str]) -> dict[str, Any]:
        # (B, N, S, S, 3): a single-camera image is one view
        views = np.stack([r.image.reshape(-1, *r.image.shape[-3:]) for r in requests])
        images = torch.from_numpy(np.ascontiguousarray(views.transpose(0, 1, 4, 2, 3)))
        states = torch.from_numpy(np.stack([r.state_S for r in requests])).float()
        return {
            "images_BNCHW": images.to(self.device),
            "state_BS": states.to(self.device),
            "instruction": [r.instruction for r in requests],
            "caption": list(texts),
            "next_caption": [""] * len(requests),
        }

    def _noise(self, requests: Sequence[InferRequest], shape: tuple[int, int]) -> torch.Tensor:
        """Per-request noise: a seeded request's actions never depend on its batch-mates."""
        return self.noise_scale * torch.stack(
            [
                torch.randn(
                    shape,
                    generator=(
                        torch.Generator().manual_seed(r.seed)
                        if r.seed is not None
                        else self.generator
                    ),
                )
                for r in requests
            ]
        )

    def _infer_mode(self, served: _Served, requests: list[InferRequest]) -> list[InferResult]:
        spec = served.spec
        for r in requests:  # the server validates; in-process callers get the same check
            if r.image.shape != spec.image_shape:
                raise ValueError(
                    f"image of shape {list(r.image.shape)}; the {spec.mode} model reads "
                    f"{list(spec.image_shape)} (cameras {list(spec.cameras) or ['one']})"
                )
        texts = [r.event or "" for r in requests]
        if spec.text_conditioned:
            todo = [i for i, r in enumerate(requests) if not r.event]
            if todo:  # step 1: the planner names the event to execute
                probe = self._batch(
                    [requests[i] for i in todo], [requests[i].previous_event or "" for i in todo]
                )
                chosen = served.nearest(probe["instruction"], served.model.plan_next(probe))
                for i, caption in zip(todo, chosen, strict=True):
                    texts[i] = caption
        batch = self._batch(requests, texts)
        out = served.model.act(  # step 2: one flow-matching call for the whole batch
            batch,
            self.flow_steps,
            noise_BHA=self._noise(requests, (spec.horizon, spec.action_dim)),
        )
        if "event_text_B" in out:  # unified mode on a VLM: the event it decoded
            texts = list(out["event_text_B"])
        next_events = served.nearest(batch["instruction"], out["next_event_BD"])
        steps = out.get("event_steps_B", torch.full((len(requests),), spec.horizon)).tolist()
        actions_BHA = out["actions_BHA"].cpu().numpy()
        results = []
        for i in range(len(requests)):
            n = int(steps[i])
            actions = actions_BHA[i]
            results.append(
                InferResult(
                    # step 3: event mode emits exactly the actions up to the event's end
                    actions_HA=actions[:n] if spec.mode == "event" else actions,
                    mode=spec.mode,
                    event_steps=n,
                    end_of_event=spec.text_conditioned and n < spec.horizon,
                    event=texts[i],
                    next_event=next_events[i],
                    event_timeout_steps=(
                        served.timeouts.steps(requests[i].instruction, texts[i])
                        if spec.text_conditioned
                        else 0
                    ),
                )
            )
        return results
