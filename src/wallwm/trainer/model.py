"""The event-grounded World Action Model (compact, CPU-trainable presets; scales to GPU).

Shape legend: B batch, N cameras, S image side, P image patches per camera, D model width,
H action horizon (event
mode: up to ``h_max`` steps to the end of the event; chunk/unified: fixed ``chunk_len``),
A action dim, K thought slots, L text tokens.

Inputs become tokens of one trunk: the instruction (text), a conditioning text (event mode: the
description of the event being executed), the proprio state, and the image patches of every
camera (one shared patch encoder; a learned per-camera embedding tells the views apart). Heads:

- action expert: flow matching over the (masked) action horizon -- a small transformer over H
  noisy action tokens that cross-attends to the trunk; trained on ``v = a - eps`` at
  ``x_tau = tau a + (1 - tau) eps`` with ``tau ~ Beta(1.5, 1)``, sampled with Euler steps;
- end-of-event head (text-conditioned modes): for every step of the horizon, is it still inside
  the current event -- so event mode emits exactly the actions up to the event's end (the
  leading run of in-event steps) and a policy knows when to move on to the next event;
- planner: predicts the next event -- an embedding of its description (cosine loss against the
  text encoder's embedding of the true next caption) and a latent;
- world-model head: predicts the (stop-gradient) visual features of the event's last frame.

Modes: ``event`` conditions on the current event's description and emits actions to its end;
``chunk`` (the baseline) conditions on the instruction only and emits a fixed-length chunk;
``chunk_text`` (the key control of the events-vs-chunks experiment) emits fixed-length chunks
conditioned on the current event's description, separating "knowing the subtask" from "acting
to the event's end";
``unified`` conditions on the instruction only and adds K learned thought slots that enter the
top K trunk layers one layer apart (staircase): slot k joins at layer ``L - K + k``, nothing is
sampled, so the action loss trains them too; a distillation loss pulls them toward the encoding
of the true next-event caption.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

Mode = Literal["event", "unified", "chunk", "chunk_text"]
MODES: tuple[str, ...] = ("event", "unified", "chunk", "chunk_text")
#: Modes conditioned on the description of the event being executed.
TEXT_CONDITIONED: tuple[str, ...] = ("event", "chunk_text")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters (a preset names one)."""

    width: int = 192
    depth: int = 6
    heads: int = 6
    expert_depth: int = 2
    patch: int = 8
    vocab: int = 4096
    text_len: int = 16
    thought_slots: int = 4
    image_size: int = 96
    action_dim: int = 4
    state_dim: int = 4
    h_max: int = 32
    chunk_len: int = 16
    num_cameras: int = 1


def preset(name: str, **overrides: Any) -> ModelConfig:
    """``debug`` (tests), ``small`` (~5M parameters, CPU), ``base`` (GPU); did-you-mean errors."""
    import difflib

    presets = {
        "debug": ModelConfig(
            width=32, depth=2, heads=2, expert_depth=1, vocab=512, thought_slots=2
        ),
        "small": ModelConfig(),
        "base": ModelConfig(width=512, depth=12, heads=8, expert_depth=4, vocab=16384),
    }
    if name not in presets:
        close = difflib.get_close_matches(name, presets, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown preset {name!r} (choose from {sorted(presets)}){hint}")
    return ModelConfig(**{**asdict(presets[name]), **overrides})


PAD, EMPTY = 0, 1


def tokenize(texts: list[str], vocab: int, length: int) -> torch.Tensor:
    """Word-hashing tokenizer: deterministic, no vocabulary file.

    Id 0 pads; id 1 stands for an empty text, so no row is ever all padding (attention over a
    fully masked row is NaN in PyTorch's fast inference path); words hash to 2..vocab-1.
    """
    out = torch.full((len(texts), length), PAD, dtype=torch.long)
    for i, text in enumerate(texts):
        words = re.findall(r"[a-z0-9]+", text.lower())[:length]
        for j, w in enumerate(words):
            out[i, j] = 2 + zlib.crc32(w.encode()) % (vocab - 2)
        if not words:
            out[i, 0] = EMPTY
    return out


class TextEncoder(nn.Module):
    """Token embeddings, one transformer layer, masked mean pool: texts -> (B, D)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.width, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(cfg.text_len, cfg.width))
        self.layer = nn.TransformerEncoderLayer(
            cfg.width, cfg.heads, 2 * cfg.width, 0.0, batch_first=True, norm_first=True
        )

    def forward(self, texts: list[str]) -> torch.Tensor:
        """Pooled text embeddings (B, D)."""
        ids_BL = tokenize(texts, self.cfg.vocab, self.cfg.text_len).to(self.pos.device)
        pad_BL = ids_BL == 0
        x_BLD = self.layer(self.embed(ids_BL) + self.pos, src_key_padding_mask=pad_BL)
        keep = (~pad_BL).unsqueeze(-1).float()
        pooled: torch.Tensor = (x_BLD * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return pooled


class ImageEncoder(nn.Module):
    """Patch convolution + positions (+ camera): uint8 (B, N, 3, S, S) -> (B, N*P, D)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.proj_in = nn.Conv2d(3, cfg.width, cfg.patch, stride=cfg.patch)
        self.pos = nn.Parameter(torch.zeros((cfg.image_size // cfg.patch) ** 2, cfg.width))
        # Only multi-camera models carry camera embeddings, so single-camera checkpoints keep
        # the state dict they always had.
        self.camera = (
            nn.Parameter(torch.randn(cfg.num_cameras, 1, cfg.width) * 0.02)
            if cfg.num_cameras > 1
            else None
        )

    def forward(self, images_BNCHW: torch.Tensor) -> torch.Tensor:
        """Patch tokens (B, N*P, D) of uint8 images, camera after camera."""
        b, n = images_BNCHW.shape[:2]
        x = self.proj_in(images_BNCHW.flatten(0, 1).float() / 127.5 - 1.0)
        tokens_BNPD = (x.flatten(2).transpose(1, 2) + self.pos).unflatten(0, (b, n))
        if self.camera is not None:
            tokens_BNPD = tokens_BNPD + self.camera
        tokens: torch.Tensor = tokens_BNPD.flatten(1, 2)
        return tokens


def _block(cfg: ModelConfig) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        cfg.width, cfg.heads, 4 * cfg.width, 0.0, batch_first=True, norm_first=True
    )


class ActionExpert(nn.Module):
    """Flow-matching velocity field over H action tokens, cross-attending to the trunk."""

    def __init__(self, cfg: ModelConfig, horizon: int) -> None:
        super().__init__()
        d = cfg.width
        self.proj_in = nn.Linear(cfg.action_dim, d)
        self.time = nn.Sequential(nn.Linear(1, d), nn.SiLU(), nn.Linear(d, d))
        self.pos = nn.Parameter(torch.zeros(horizon, d))
        self.layers = nn.ModuleList(
            nn.TransformerDecoderLayer(d, cfg.heads, 4 * d, 0.0, batch_first=True, norm_first=True)
            for _ in range(cfg.expert_depth)
        )
        self.head = nn.Linear(d, cfg.action_dim)

    def forward(
        self, x_BHA: torch.Tensor, tau_B: torch.Tensor, context_BND: torch.Tensor
    ) -> torch.Tensor:
        """Velocity (B, H, A) of noisy actions ``x_BHA`` at flow time ``tau_B``."""
        h = (
            self.proj_in(x_BHA)
            + self.pos[: x_BHA.shape[1]]
            + self.time(tau_B[:, None, None].expand(-1, 1, 1))
        )
        for layer in self.layers:
            h = layer(h, context_BND)
        out: torch.Tensor = self.head(h)
        return out


class WorldActionModel(nn.Module):
    """See the module docstring."""

    def __init__(self, cfg: ModelConfig, mode: Mode, stats: dict[str, Any] | None = None) -> None:
        """Build the model for one mode; ``stats`` are the view's normalisation statistics."""
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (choose from {MODES})")
        self.cfg, self.mode = cfg, mode
        d = cfg.width
        self.text = TextEncoder(cfg)
        self.image = ImageEncoder(cfg)
        self.state = nn.Linear(cfg.state_dim, d)
        self.type_embed = nn.Parameter(torch.zeros(4, d))  # instruction, condition, state, image
        self.trunk = nn.ModuleList(_block(cfg) for _ in range(cfg.depth))
        self.thoughts = nn.Parameter(torch.randn(cfg.thought_slots, d) * 0.02)
        self.horizon = cfg.h_max if mode == "event" else cfg.chunk_len
        self.expert = ActionExpert(cfg, self.horizon)
        self.end_head = nn.Linear(d, self.horizon)  # per step: still inside the event
        self.planner_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.world_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.norm = nn.LayerNorm(d)
        self._set_stats(stats)

    def _set_stats(self, stats: dict[str, Any] | None) -> None:
        a, s = self.cfg.action_dim, self.cfg.state_dim

        def vec(part: str, key: str, n: int, default: float) -> torch.Tensor:
            values = ((stats or {}).get(part) or {}).get(key) or [default] * n
            return torch.tensor(values[:n] + [default] * (n - len(values[:n])), dtype=torch.float32)

        self.register_buffer("a_mean", vec("actions", "mean", a, 0.0))
        self.register_buffer("a_std", vec("actions", "std", a, 1.0))
        self.register_buffer("s_mean", vec("states", "mean", s, 0.0))
        self.register_buffer("s_std", vec("states", "std", s, 1.0))

    # ------------------------------------------------------------------ encoding

    def encode(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Trunk tokens (B, N, D) and, in unified mode, the thought slots (B, K, D)."""
        b = batch["images_BNCHW"].shape[0]
        t = self.type_embed
        instr = self.text(batch["instruction"])[:, None] + t[0]
        if self.mode in TEXT_CONDITIONED:
            cond = self.text(batch["caption"])[:, None] + t[1]
        else:
            cond = torch.zeros_like(instr) + t[1]
        state = self.state((batch["state_BS"] - self.s_mean) / self.s_std)[:, None] + t[2]
        image = self.image(batch["images_BNCHW"]) + t[3]
        x = torch.cat([instr, cond, state, image], dim=1)
        k = self.cfg.thought_slots if self.mode == "unified" else 0
        first_slot_layer = self.cfg.depth - k
        for i, layer in enumerate(self.trunk):
            if k and i >= first_slot_layer:  # staircase: slot (i - first) joins at layer i
                x = torch.cat(
                    [x, self.thoughts[i - first_slot_layer][None, None].expand(b, 1, -1)], 1
                )
            x = layer(x)
        x = self.norm(x)
        return (x[:, :-k], x[:, -k:]) if k else (x, None)

    # ------------------------------------------------------------------ training

    def targets(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised action targets (B, H, A) and their mask (B, H) for this mode."""
        if self.mode == "event":
            actions, mask = batch["actions_BHA"], batch["action_mask_BH"]
        else:
            actions, mask = batch["chunk_BCA"], batch["chunk_mask_BC"]
        return (actions - self.a_mean) / self.a_std, mask

    def losses(
        self, batch: dict[str, Any], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Every training loss of this mode (the trainer sums them)."""
        tokens, slots = self.encode(batch)
        context = tokens if slots is None else torch.cat([tokens, slots], 1)
        actions, mask = self.targets(batch)
        b = actions.shape[0]
        tau = torch.distributions.Beta(1.5, 1.0).sample((b,)).to(actions)
        noise = torch.randn(actions.shape, generator=generator).to(actions)
        x_tau = tau[:, None, None] * actions + (1 - tau[:, None, None]) * noise
        velocity = self.expert(x_tau, tau, context)
        per_step = ((velocity - (actions - noise)) ** 2).mean(-1)
        out = {"flow": (per_step * mask).sum() / mask.sum().clamp(min=1)}
        pooled = tokens.mean(1)
        next_text = self.text(batch["next_caption"]).detach()
        has_next = torch.tensor([bool(c) for c in batch["next_caption"]], device=pooled.device)
        planned = self.planner_head(pooled if slots is None else slots.mean(1))
        cos = 1 - F.cosine_similarity(planned, next_text, dim=-1)
        out["planner"] = (cos * has_next).sum() / has_next.sum().clamp(min=1)
        with torch.no_grad():
            end_features = self.image(batch["end_images_BNCHW"]).mean(1)
        out["world"] = F.mse_loss(self.world_head(pooled), end_features)
        if self.mode in TEXT_CONDITIONED:
            inside = batch["action_mask_BH" if self.mode == "event" else "chunk_in_event_BC"]
            out["end"] = F.binary_cross_entropy_with_logits(
                self.end_head(pooled), inside.to(pooled.dtype)
            )
        return out

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def plan_next(self, batch: dict[str, Any]) -> torch.Tensor:
        """The planner's next-event embedding (B, D), without sampling actions."""
        tokens, slots = self.encode(batch)
        planned: torch.Tensor = self.planner_head(
            tokens.mean(1) if slots is None else slots.mean(1)
        )
        return planned

    @torch.no_grad()
    def act(
        self,
        batch: dict[str, Any],
        steps: int = 10,
        generator: torch.Generator | None = None,
        noise_BHA: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """Sample actions with Euler steps of the flow (from ``noise_BHA`` when given).

        Text-conditioned modes also return ``event_steps_B``: how many leading steps the end
        head places inside the current event (at least 1), and ``end_of_event_B`` (1 when the
        event ends within the horizon). Every mode returns its planned next-event embedding.
        """
        tokens, slots = self.encode(batch)
        context = tokens if slots is None else torch.cat([tokens, slots], 1)
        b = tokens.shape[0]
        shape = (b, self.horizon, self.cfg.action_dim)
        if noise_BHA is None:
            noise_BHA = torch.randn(shape, generator=generator)
        elif tuple(noise_BHA.shape) != shape:
            raise ValueError(f"noise_BHA has shape {tuple(noise_BHA.shape)}, expected {shape}")
        x = noise_BHA.to(tokens)
        for i in range(steps):
            tau = torch.full((b,), i / steps, device=x.device)
            x = x + self.expert(x, tau, context) / steps
        a_std, a_mean = self.get_buffer("a_std"), self.get_buffer("a_mean")
        out: dict[str, Any] = {"actions_BHA": x * a_std + a_mean}
        pooled = tokens.mean(1)
        if self.mode in TEXT_CONDITIONED:
            inside_BH = torch.sigmoid(self.end_head(pooled)) > 0.5
            steps_B = inside_BH.long().cumprod(1).sum(1).clamp(min=1)
            out["event_steps_B"] = steps_B
            out["end_of_event_B"] = (steps_B < self.horizon).float()
        out["next_event_BD"] = self.planner_head(pooled if slots is None else slots.mean(1))
        return out
