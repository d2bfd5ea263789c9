"""The event-grounded World Action Model (compact, CPU-trainable presets up to ~300 M on GPUs).

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

Training calls ``forward(batch)``, which returns every loss as a :class:`LossTerm` (a sum and
the count it is a mean over), so a data-parallel run can divide by the counts of the whole global
batch and get exactly the gradient of one process (:mod:`wallwm.trainer.step`). The batch comes
from :mod:`wallwm.trainer.data` with its texts already tokenised and each sample's flow noise and
flow time drawn from the sample's own seed: nothing in a step depends on which process or which
batch-mates a sample had. Parameters a mode never uses (the thought slots outside unified mode,
the end-of-event head outside the text-conditioned modes) are frozen, so data parallelism has no
unused parameters to find.

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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from wallwm.trainer.layers import Block, CrossBlock

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


#: The named architectures: ``debug`` (tests), ``small`` (~5 M parameters, trains on a CPU),
#: ``base`` (~67 M, one GPU), ``large`` (~300 M, GPUs). README.md's preset table gives their
#: FLOPs per sample and measured throughput (``benchmarks/train_throughput.py``).
PRESETS: dict[str, ModelConfig] = {
    "debug": ModelConfig(width=32, depth=2, heads=2, expert_depth=1, vocab=512, thought_slots=2),
    "small": ModelConfig(),
    "base": ModelConfig(width=512, depth=12, heads=8, expert_depth=4, vocab=16384),
    "large": ModelConfig(width=1024, depth=16, heads=16, expert_depth=4, vocab=16384),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The preset ``name`` (see :data:`PRESETS`) with ``overrides``; did-you-mean errors."""
    import difflib

    presets = PRESETS
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
        self.layer = Block(cfg.width, cfg.heads, 2 * cfg.width)

    def forward(self, texts: list[str] | torch.Tensor) -> torch.Tensor:
        """Pooled text embeddings (B, D) of texts, or of their token ids (B, L).

        Training batches carry ids tokenised by the data loader: no tokenising in the step.
        """
        if isinstance(texts, torch.Tensor):
            ids_BL = texts.to(self.pos.device)
        else:
            ids_BL = tokenize(texts, self.cfg.vocab, self.cfg.text_len).to(self.pos.device)
        keep_BL = ids_BL != PAD
        x_BLD = self.layer(self.embed(ids_BL) + self.pos, keep_BL)
        keep = keep_BL.unsqueeze(-1).to(x_BLD.dtype)
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


def _block(cfg: ModelConfig) -> Block:
    return Block(cfg.width, cfg.heads, 4 * cfg.width)


class ActionExpert(nn.Module):
    """Flow-matching velocity field over H action tokens, cross-attending to the trunk."""

    def __init__(self, cfg: ModelConfig, horizon: int) -> None:
        super().__init__()
        d = cfg.width
        self.proj_in = nn.Linear(cfg.action_dim, d)
        self.time = nn.Sequential(nn.Linear(1, d), nn.SiLU(), nn.Linear(d, d))
        self.pos = nn.Parameter(torch.zeros(horizon, d))
        self.layers = nn.ModuleList(
            CrossBlock(d, cfg.heads, 4 * d) for _ in range(cfg.expert_depth)
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


class LossTerm(NamedTuple):
    """One loss as a sum ``total`` and the count ``n`` it is a mean over.

    What is counted depends on the loss: masked action steps, samples with a next event,
    elements.
    """

    total: torch.Tensor
    n: torch.Tensor

    def mean(self) -> torch.Tensor:
        """The loss of this batch alone."""
        return self.total / self.n.clamp(min=1)


def loss_term(values: torch.Tensor, weights: torch.Tensor | None = None) -> LossTerm:
    """A loss term of per-element ``values`` (fp32), optionally weighted by a 0/1 mask."""
    values = values.float()
    if weights is None:
        return LossTerm(values.sum(), torch.tensor(float(values.numel()), device=values.device))
    weights = weights.to(values.dtype)
    return LossTerm((values * weights).sum(), weights.sum())


def normalisation_buffers(
    cfg: ModelConfig, stats: dict[str, Any] | None
) -> dict[str, torch.Tensor]:
    """The view's action and state means and deviations as buffers (defaults: 0 and 1)."""
    a, s = cfg.action_dim, cfg.state_dim

    def vec(part: str, key: str, n: int, default: float) -> torch.Tensor:
        values = ((stats or {}).get(part) or {}).get(key) or [default] * n
        return torch.tensor(values[:n] + [default] * (n - len(values[:n])), dtype=torch.float32)

    return {
        "a_mean": vec("actions", "mean", a, 0.0),
        "a_std": vec("actions", "std", a, 1.0),
        "s_mean": vec("states", "mean", s, 0.0),
        "s_std": vec("states", "std", s, 1.0),
    }


def action_targets(
    mode: str, batch: dict[str, Any], a_mean: torch.Tensor, a_std: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised action targets (B, H, A) and their mask (B, H) of ``mode``.

    Event mode: the actions to the event's end; the other modes: the fixed chunk.
    """
    if mode == "event":
        actions, mask = batch["actions_BHA"], batch["action_mask_BH"]
    else:
        actions, mask = batch["chunk_BCA"], batch["chunk_mask_BC"]
    return (actions - a_mean) / a_std, mask


def sample_flow(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape: tuple[int, int, int],
    steps: int,
    device: torch.device,
    generator: torch.Generator | None = None,
    noise_BHA: torch.Tensor | None = None,
) -> torch.Tensor:
    """Euler steps of a flow from ``noise_BHA`` (drawn with ``generator`` if not given).

    The flow integrates in fp32 whatever precision the network runs in.
    """
    if noise_BHA is None:
        noise_BHA = torch.randn(shape, generator=generator)
    elif tuple(noise_BHA.shape) != shape:
        raise ValueError(f"noise_BHA has shape {tuple(noise_BHA.shape)}, expected {shape}")
    x = noise_BHA.to(device=device, dtype=torch.float32)
    for i in range(steps):
        tau = torch.full((shape[0],), i / steps, device=device)
        x = x + velocity(x, tau).float() / steps
    return x


def event_extent(end_logits_BH: torch.Tensor) -> dict[str, torch.Tensor]:
    """The event's extent from the end head: ``event_steps_B`` and ``end_of_event_B``.

    How many leading steps it places inside the event (at least 1), and whether the event ends
    within the horizon.
    """
    inside_BH = torch.sigmoid(end_logits_BH.float()) > 0.5
    steps_B = inside_BH.long().cumprod(1).sum(1).clamp(min=1)
    return {
        "event_steps_B": steps_B,
        "end_of_event_B": (steps_B < end_logits_BH.shape[1]).float(),
    }


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
        # what this mode never reads gets no gradient: frozen, so neither the optimiser nor
        # data parallelism waits for one (the parameters stay, so every mode's state dict is
        # the same)
        self.thoughts.requires_grad_(mode == "unified")
        self.end_head.requires_grad_(mode in TEXT_CONDITIONED)
        self._set_stats(stats)

    def _set_stats(self, stats: dict[str, Any] | None) -> None:
        for name, buffer in normalisation_buffers(self.cfg, stats).items():
            self.register_buffer(name, buffer)

    def compile_layers(self) -> None:
        """``torch.compile`` every transformer block in place (state dict keys unchanged)."""
        for block in [self.text.layer, *self.trunk, *self.expert.layers]:
            block.compile()

    # ------------------------------------------------------------------ encoding

    def _text(self, batch: dict[str, Any], key: str) -> torch.Tensor:
        """Embeddings of a text field: its token ids when the loader sent them, else the texts."""
        ids = batch.get(f"{key}_ids_BL")
        embedded: torch.Tensor = self.text(ids if ids is not None else batch[key])
        return embedded

    def encode(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Trunk tokens (B, N, D) and, in unified mode, the thought slots (B, K, D)."""
        b = batch["images_BNCHW"].shape[0]
        t = self.type_embed
        instr = self._text(batch, "instruction")[:, None] + t[0]
        if self.mode in TEXT_CONDITIONED:
            cond = self._text(batch, "caption")[:, None] + t[1]
        else:
            cond = torch.zeros_like(instr) + t[1]
        state = self.state((batch["state_BS"] - self.s_mean) / self.s_std)[:, None] + t[2]
        image = self.image(batch["images_BNCHW"]) + t[3]
        x = torch.cat([instr, cond, state, image], dim=1)
        k = self.cfg.thought_slots if self.mode == "unified" else 0
        first_slot_layer = self.cfg.depth - k
        for i, layer in enumerate(self.trunk):
            if k and i >= first_slot_layer:  # staircase: slot (i - first) joins at layer i
                slot = self.thoughts[i - first_slot_layer].to(x.dtype)
                x = torch.cat([x, slot[None, None].expand(b, 1, -1)], 1)
            x = layer(x)
        x = self.norm(x)
        return (x[:, :-k], x[:, -k:]) if k else (x, None)

    # ------------------------------------------------------------------ training

    def targets(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised action targets (B, H, A) and their mask (B, H) for this mode."""
        return action_targets(self.mode, batch, self.get_buffer("a_mean"), self.get_buffer("a_std"))

    def forward(self, batch: dict[str, Any]) -> dict[str, LossTerm]:
        """Every training loss of this mode as a :class:`LossTerm` (see the module docstring).

        The flow's noise and time are the batch's ``flow_noise_BHA`` (at least the horizon's
        length) and ``flow_tau`` (``tau ~ Beta(1.5, 1)``), drawn per sample by the loader.
        """
        tokens, slots = self.encode(batch)
        context = tokens if slots is None else torch.cat([tokens, slots], 1)
        out = {"flow": loss_term(*self._flow_error(batch, context))}
        pooled = tokens.mean(1)
        next_text = self._text(batch, "next_caption").detach()
        planned = self.planner_head(pooled if slots is None else slots.mean(1))
        has_next = batch.get("has_next")
        if has_next is None:  # a batch of strings (no loader): which samples have a next event
            has_next = torch.tensor([bool(c) for c in batch["next_caption"]], device=pooled.device)
        out["planner"] = loss_term(1 - F.cosine_similarity(planned, next_text, dim=-1), has_next)
        with torch.no_grad():
            end_features = self.image(batch["end_images_BNCHW"]).mean(1)
        out["world"] = loss_term((self.world_head(pooled).float() - end_features.float()) ** 2)
        if self.mode in TEXT_CONDITIONED:
            inside = batch["action_mask_BH" if self.mode == "event" else "chunk_in_event_BC"]
            logits = self.end_head(pooled).float()
            out["end"] = loss_term(
                F.binary_cross_entropy_with_logits(logits, inside.float(), reduction="none")
            )
        return out

    def _flow_error(
        self, batch: dict[str, Any], context: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The flow's squared velocity error per step (B, H) and the steps that count."""
        actions, mask = self.targets(batch)
        noise = batch["flow_noise_BHA"][:, : self.horizon].to(actions.dtype)
        tau = batch["flow_tau"].to(actions.dtype)[:, None, None]
        x_tau = tau * actions + (1 - tau) * noise
        velocity = self.expert(x_tau, tau[:, 0, 0], context)
        return ((velocity.float() - (actions - noise)) ** 2).mean(-1), mask

    def sample_flow_losses(self, batch: dict[str, Any]) -> torch.Tensor:
        """Each sample's flow loss (B,): what per-group objectives (group DRO) weigh."""
        tokens, slots = self.encode(batch)
        context = tokens if slots is None else torch.cat([tokens, slots], 1)
        error_BH, mask_BH = self._flow_error(batch, context)
        m = mask_BH.float()
        return (error_BH * m).sum(1) / m.sum(1).clamp(min=1)

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Every training loss of this mode, each the mean over this batch.

        The trainer sums them; see :meth:`forward` for the sums a data-parallel run divides
        itself.
        """
        return {name: term.mean() for name, term in self(batch).items()}

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Texts as the planner's target space (B, D): what a caption bank is matched in."""
        embedded: torch.Tensor = self.text(texts)
        return embedded

    @torch.no_grad()
    def plan_next(self, batch: dict[str, Any]) -> torch.Tensor:
        """The planner's next-event embedding (B, D), without sampling actions."""
        tokens, slots = self.encode(batch)
        planned: torch.Tensor = self.planner_head(
            tokens.mean(1) if slots is None else slots.mean(1)
        )
        return planned.float()

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
        shape = (tokens.shape[0], self.horizon, self.cfg.action_dim)
        x = sample_flow(
            lambda x, tau: self.expert(x, tau, context),
            shape, steps, tokens.device, generator, noise_BHA,
        )  # fmt: skip
        a_std, a_mean = self.get_buffer("a_std"), self.get_buffer("a_mean")
        out: dict[str, Any] = {"actions_BHA": x * a_std + a_mean}
        pooled = tokens.mean(1)
        if self.mode in TEXT_CONDITIONED:
            out.update(event_extent(self.end_head(pooled)))
        planned = self.planner_head(pooled if slots is None else slots.mean(1))
        out["next_event_BD"] = planned.float()
        return out
