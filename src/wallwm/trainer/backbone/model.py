"""The World Action Model on a pretrained vision-language backbone (``wallwm train --backbone``).

Shape legend as in :mod:`wallwm.trainer.model`, plus T prompt tokens, W the language model's
width, E expert layers.

The VLM reads one image per camera, the instruction and (text-conditioned modes) the event
being executed, laid out by its own chat template (:mod:`.vlm`). Its hidden states condition
every head:

- **action expert** (flow matching, as in the compact model): H noisy action tokens and one
  proprio-state token; expert layer ``e`` cross-attends to the VLM's hidden states of layer
  ``layer_ids[e]`` -- evenly spaced, the last expert layer reading the last VLM layer -- each
  through its own norm and projection to the expert's width (a staircase over the backbone's
  depth, as pi0's expert reads the VLM layer by layer);
- **end-of-event head**, **planner** (next event's text embedding, in the VLM's own input
  embedding space) and **world-model head** (the vision tower's pooled features of the event's
  last frame, stop-gradient) read the VLM's pooled last layer.

Modes: ``event`` / ``chunk_text`` put the current event's description in the prompt; ``chunk``
the instruction only; ``unified`` has the VLM *decode* the event to execute from this frame
on (the current event's description; teacher-forced in training with a language-model loss,
generated greedily at inference), and the expert reads the hidden states of those decoded
tokens with the rest: the action loss's gradient flows through them into the language model
(tested) -- staircase decoding with a gradient-continuous path from actions to language.

What trains: LoRA adapters on the language model's linear layers (or the whole language
model), optionally the vision tower, and everything outside the VLM. The state dict holds
exactly that -- the frozen base weights come from the backbone directory, whose fingerprint
the checkpoint keeps.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from wallwm.trainer.backbone.config import BackboneConfig
from wallwm.trainer.backbone.vlm import Prompt, PromptEncoder, load_vlm, text_hidden
from wallwm.trainer.layers import CrossBlock
from wallwm.trainer.model import (
    MODES,
    TEXT_CONDITIONED,
    LossTerm,
    Mode,
    ModelConfig,
    action_targets,
    event_extent,
    loss_term,
    normalisation_buffers,
    sample_flow,
)

#: Distinct texts whose token ids are kept (a dataset's captions; the bank at inference).
TEXT_CACHE_SIZE = 65_536
#: The language model's linear layers LoRA adapts (Qwen2-VL, PaliGemma: `language_model`;
#: Idefics3 / SmolVLM: `text_model`; Qwen2, Llama, Mistral, Gemma layer names).
LORA_TARGETS = (
    r".*(language_model|text_model).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
)


def staircase_layers(expert_depth: int, vlm_layers: int) -> tuple[int, ...]:
    """The VLM layer (index into ``hidden_states``, 0 = embeddings) each expert layer reads."""
    return tuple(round((e + 1) * vlm_layers / expert_depth) for e in range(expert_depth))


class StaircaseExpert(nn.Module):
    """Flow-matching velocity field; layer ``e`` reads VLM layer ``layer_ids[e]``."""

    def __init__(
        self, cfg: ModelConfig, horizon: int, vlm_width: int, layer_ids: tuple[int, ...]
    ) -> None:
        super().__init__()
        d = cfg.width
        self.layer_ids = layer_ids
        self.proj_in = nn.Linear(cfg.action_dim, d)
        self.state = nn.Linear(cfg.state_dim, d)
        self.time = nn.Sequential(nn.Linear(1, d), nn.SiLU(), nn.Linear(d, d))
        self.pos = nn.Parameter(torch.zeros(horizon + 1, d))  # the state token, then H steps
        self.context = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(vlm_width), nn.Linear(vlm_width, d)) for _ in layer_ids
        )
        self.layers = nn.ModuleList(CrossBlock(d, cfg.heads, 4 * d) for _ in layer_ids)
        self.head = nn.Linear(d, cfg.action_dim)

    def contexts(self, hidden_states: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """Each expert layer's context (B, T, D): its VLM layer, normalised and projected."""
        return [
            proj(hidden_states[i].float())
            for proj, i in zip(self.context, self.layer_ids, strict=True)
        ]

    def forward(
        self,
        x_BHA: torch.Tensor,
        tau_B: torch.Tensor,
        state_BS: torch.Tensor,
        contexts: list[torch.Tensor],
        keep_BT: torch.Tensor,
    ) -> torch.Tensor:
        """Velocity (B, H, A) of noisy actions ``x_BHA`` at flow time ``tau_B``."""
        h_steps = x_BHA.shape[1]
        tokens = torch.cat([self.state(state_BS)[:, None], self.proj_in(x_BHA)], 1)
        h = tokens + self.pos[: h_steps + 1] + self.time(tau_B[:, None, None])
        for layer, context in zip(self.layers, contexts, strict=True):
            h = layer(h, context.to(h.dtype), keep_BT)
        out: torch.Tensor = self.head(h[:, 1:])
        return out


class BackboneWorldActionModel(nn.Module):
    """See the module docstring; the training and inference interface of the compact model."""

    def __init__(
        self,
        cfg: ModelConfig,
        mode: Mode,
        stats: dict[str, Any] | None,
        backbone: BackboneConfig,
        weights_dtype: torch.dtype = torch.float32,
        loaded: tuple[Any, PromptEncoder] | None = None,
    ) -> None:
        """Load the backbone from its directory and build the expert and heads for ``mode``.

        ``weights_dtype``: the dtype of the VLM's frozen weights (bf16 halves a LoRA run's
        memory on a GPU); trained weights stay fp32 and the run's autocast sets the compute.
        ``loaded``: a VLM and its prompt encoder already in memory instead of the directory's
        (benchmarks time random-weight models built from a configuration).
        """
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (choose from {MODES})")
        self.cfg, self.mode, self.backbone = cfg, mode, backbone
        vlm, self.prompts = loaded or load_vlm(backbone.path, weights_dtype)
        self.vlm = vlm
        self._text_ids: dict[str, list[int]] = {}
        vlm_layers, width = text_hidden(vlm.config)
        self.vlm_width = width
        self.horizon = cfg.h_max if mode == "event" else cfg.chunk_len
        self._configure_training(weights_dtype)
        d = cfg.width
        self.expert = StaircaseExpert(
            cfg, self.horizon, width, staircase_layers(cfg.expert_depth, vlm_layers)
        )
        self.pool = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, d))
        self.end_head = nn.Linear(d, self.horizon)
        self.planner_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, width))
        # the vision tower's merged features are language-model inputs: width W
        self.world_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, width))
        self.end_head.requires_grad_(mode in TEXT_CONDITIONED)
        for name, buffer in normalisation_buffers(cfg, stats).items():
            self.register_buffer(name, buffer)
        self._trained_vlm = {f"vlm.{n}" for n, p in self.vlm.named_parameters() if p.requires_grad}

    def _configure_training(self, weights_dtype: torch.dtype) -> None:
        """Freeze the base, then add what trains: LoRA or the language model, maybe vision."""
        b = self.backbone
        self.vlm.requires_grad_(False)
        if b.lora_rank:
            import peft

            lora = peft.LoraConfig(
                r=b.lora_rank, lora_alpha=b.lora_alpha, target_modules=LORA_TARGETS
            )
            peft.inject_adapter_in_model(lora, self.vlm)
            for name, p in self.vlm.named_parameters():
                if "lora_" in name:  # master weights in fp32 whatever the base's dtype
                    p.data = p.data.float()
                    p.requires_grad_(True)
        else:
            self.vlm.get_decoder().requires_grad_(True)
            self.vlm.get_input_embeddings().requires_grad_(True)
            # an untied output head only unified mode's language loss reads
            head = self.vlm.get_output_embeddings()
            if head is not None and head.weight is not self.vlm.get_input_embeddings().weight:
                head.requires_grad_(self.mode == "unified")
        if b.train_vision:
            self.visual().requires_grad_(True)
        if b.gradient_checkpointing:
            kwargs = {"use_reentrant": False}  # no input that requires grad needed (LoRA)
            if hasattr(self.vlm, "activation_checkpointing_enable"):  # transformers >= 5.2x
                self.vlm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                self.vlm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if weights_dtype != torch.float32 and (not b.lora_rank or b.train_vision):
            for p in self.vlm.parameters():  # full fine-tuning keeps fp32 master weights
                if p.requires_grad:
                    p.data = p.data.float()

    def visual(self) -> nn.Module:
        """The vision tower (``model.visual`` in Qwen2-VL, ``vision_tower`` elsewhere)."""
        inner = getattr(self.vlm, "model", self.vlm)
        for name in ("visual", "vision_tower", "vision_model"):
            tower = getattr(inner, name, None)
            if isinstance(tower, nn.Module):
                return tower
        raise ValueError(f"--backbone {self.backbone.path}: no vision tower found")

    # ------------------------------------------------------------------ state

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """What trained: everything outside the VLM and the VLM's trained parameters."""
        full = super().state_dict(*args, **kwargs)
        prefix = str(kwargs.get("prefix", ""))
        keep = {prefix + k for k in self._trained_vlm}
        return {
            k: v for k, v in full.items() if not k[len(prefix) :].startswith("vlm.") or k in keep
        }

    def load_state_dict(  # type: ignore[override]
        self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load what :meth:`state_dict` holds (the base weights are the directory's)."""
        expected = set(self.state_dict())
        missing, unexpected = expected - set(state_dict), set(state_dict) - expected
        if strict and (missing or unexpected):
            raise RuntimeError(
                f"state dict does not fit this backbone model: missing {sorted(missing)[:4]}, "
                f"unexpected {sorted(unexpected)[:4]}"
            )
        return super().load_state_dict(state_dict, strict=False, assign=assign)

    def compile_layers(self) -> None:
        """``torch.compile`` the expert's blocks (the VLM runs as transformers built it)."""
        for block in self.expert.layers:
            block.compile()

    # ------------------------------------------------------------------ encoding

    def _prompts(
        self, batch: dict[str, Any], key: str, answers: list[str] | None = None
    ) -> list[Prompt]:
        """One prompt per sample: its cameras' images, instruction and (maybe) event text."""
        images = batch[key].detach().cpu()
        prompts = []
        for i, instruction in enumerate(batch["instruction"]):
            text = f"Task: {instruction}"
            if self.mode in TEXT_CONDITIONED:
                text += f"\nEvent: {batch['caption'][i]}"
            answer = None if answers is None else self._clip(answers[i])
            prompts.append(Prompt(list(images[i].unbind(0)), text, answer))
        return prompts

    def _clip(self, answer: str) -> str:
        """An event description cut to ``event_tokens`` tokens (what inference may decode)."""
        tokenizer = self.prompts.tokenizer
        ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.backbone.event_tokens:
            return answer
        return str(tokenizer.decode(ids[: self.backbone.event_tokens]))

    def _run_vlm(
        self, batch: dict[str, Any], answers: list[str] | None = None
    ) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
        """VLM outputs (all hidden states), input ids, keep mask (B, T) and answer mask.

        Logits are computed only where the language loss reads them: the answers sit at the
        rows' ends (left padding), so the last ``longest answer + 1`` positions.
        """
        device = batch["state_BS"].device
        inputs, answer_BT = self.prompts(self._prompts(batch, "images_BNCHW", answers))
        inputs = {k: v.to(device) for k, v in inputs.items()}
        logits = int(answer_BT.sum(1).max()) + 1 if answers is not None else 1
        out = self.vlm(**inputs, output_hidden_states=True, logits_to_keep=logits, use_cache=False)
        return out, inputs["input_ids"], inputs["attention_mask"].bool(), answer_BT.to(device)

    def _pooled(self, hidden_BTW: torch.Tensor, keep_BT: torch.Tensor) -> torch.Tensor:
        keep = keep_BT[..., None].to(hidden_BTW.dtype)
        mean = (hidden_BTW * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        pooled: torch.Tensor = self.pool(mean.float())
        return pooled

    def _token_ids(self, text: str) -> list[int]:
        """``text``'s token ids, tokenised once per distinct text (captions repeat every step)."""
        ids = self._text_ids.get(text)
        if ids is None:
            tokenizer = self.prompts.tokenizer
            ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
            if len(self._text_ids) < TEXT_CACHE_SIZE:
                self._text_ids[text] = ids
        return ids

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Texts in the VLM's input-embedding space (B, W): the planner's targets and bank.

        The mean of each text's token embeddings (zeros for an empty text), in one lookup.
        """
        table = self.vlm.get_input_embeddings()
        device = table.weight.device
        ids = [self._token_ids(t) for t in texts]
        counts = torch.tensor([len(i) for i in ids], device=device)
        out = torch.zeros(len(texts), self.vlm_width, device=device)
        if int(counts.sum()):
            flat = torch.tensor([t for i in ids for t in i], device=device)
            rows = torch.repeat_interleave(torch.arange(len(texts), device=device), counts)
            out.index_add_(0, rows, table(flat).float())
        return out / counts.clamp(min=1)[:, None]

    @torch.no_grad()
    def _image_features(self, images_BNCHW: torch.Tensor) -> torch.Tensor:
        """The vision tower's features of each sample's images, pooled (B, W)."""
        b, n = images_BNCHW.shape[:2]
        inputs = self.prompts.images(list(images_BNCHW.detach().cpu().flatten(0, 1).unbind(0)))
        grid = inputs["image_grid_thw"].to(images_BNCHW.device)
        pixels = inputs["pixel_values"].to(images_BNCHW.device)
        features = self.vlm.get_image_features(pixels, grid)
        per_image = getattr(features, "pooler_output", features)
        pooled = torch.stack([f.float().mean(0) for f in per_image])
        return pooled.view(b, n, -1).mean(1)

    # ------------------------------------------------------------------ training

    def targets(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised action targets (B, H, A) and their mask (B, H) for this mode."""
        return action_targets(self.mode, batch, self.get_buffer("a_mean"), self.get_buffer("a_std"))

    def _flow_error(
        self, batch: dict[str, Any], hidden: tuple[torch.Tensor, ...], keep_BT: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The flow's squared velocity error per step (B, H) and the steps that count."""
        contexts = self.expert.contexts(hidden)
        actions, mask = self.targets(batch)
        noise = batch["flow_noise_BHA"][:, : self.horizon].to(actions.dtype)
        tau = batch["flow_tau"].to(actions.dtype)[:, None, None]
        x_tau = tau * actions + (1 - tau) * noise
        velocity = self.expert(x_tau, tau[:, 0, 0], self._state(batch), contexts, keep_BT)
        return ((velocity.float() - (actions - noise)) ** 2).mean(-1), mask

    def _state(self, batch: dict[str, Any]) -> torch.Tensor:
        normalised: torch.Tensor = (batch["state_BS"] - self.s_mean) / self.s_std
        return normalised

    def forward(self, batch: dict[str, Any]) -> dict[str, LossTerm]:
        """Every training loss of this mode (``lang``: unified mode's decoded event text)."""
        answers = list(batch["caption"]) if self.mode == "unified" else None
        out, ids_BT, keep_BT, answer_BT = self._run_vlm(batch, answers)
        hidden = out.hidden_states
        losses = {"flow": loss_term(*self._flow_error(batch, hidden, keep_BT))}
        if answers is not None:
            losses["lang"] = self._language_loss(out.logits, ids_BT, answer_BT)
        pooled = self._pooled(hidden[-1], keep_BT)
        next_text = self.embed_texts(list(batch["next_caption"]))
        has_next = torch.tensor([bool(c) for c in batch["next_caption"]], device=pooled.device)
        planned = self.planner_head(pooled)
        losses["planner"] = loss_term(1 - F.cosine_similarity(planned, next_text, dim=-1), has_next)
        end_features = self._image_features(batch["end_images_BNCHW"])
        losses["world"] = loss_term((self.world_head(pooled).float() - end_features) ** 2)
        if self.mode in TEXT_CONDITIONED:
            inside = batch["action_mask_BH" if self.mode == "event" else "chunk_in_event_BC"]
            losses["end"] = loss_term(
                F.binary_cross_entropy_with_logits(
                    self.end_head(pooled).float(), inside.float(), reduction="none"
                )
            )
        return losses

    @staticmethod
    def _language_loss(
        logits_BKV: torch.Tensor, ids_BT: torch.Tensor, answer_BT: torch.Tensor
    ) -> LossTerm:
        """Next-token cross-entropy on the answer's tokens (logits of the last K positions)."""
        k = logits_BKV.shape[1]
        # position t predicts token t + 1: the last k - 1 logits predict the last k - 1 tokens
        predicted = logits_BKV[:, :-1].float()
        target, mask = ids_BT[:, -(k - 1) :], answer_BT[:, -(k - 1) :]
        ce = F.cross_entropy(predicted.transpose(1, 2), target, reduction="none")
        return loss_term(ce, mask)

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Every training loss of this mode, each the mean over this batch."""
        return {name: term.mean() for name, term in self(batch).items()}

    def sample_flow_losses(self, batch: dict[str, Any]) -> torch.Tensor:
        """Each sample's flow loss (B,): what per-group objectives (group DRO) weigh."""
        answers = list(batch["caption"]) if self.mode == "unified" else None
        out, _, keep_BT, _ = self._run_vlm(batch, answers)
        error_BH, mask_BH = self._flow_error(batch, out.hidden_states, keep_BT)
        m = mask_BH.float()
        return (error_BH * m).sum(1) / m.sum(1).clamp(min=1)

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def decode_events(self, batch: dict[str, Any]) -> list[str]:
        """Unified mode: the event text the VLM decodes for each sample (greedy)."""
        device = batch["state_BS"].device
        inputs, _ = self.prompts(self._prompts(batch, "images_BNCHW"))
        inputs = {k: v.to(device) for k, v in inputs.items()}
        tokens = self.vlm.generate(
            **inputs, max_new_tokens=self.backbone.event_tokens, do_sample=False
        )
        new = tokens[:, inputs["input_ids"].shape[1] :]
        texts = self.prompts.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [t.strip() for t in texts]

    @torch.no_grad()
    def plan_next(self, batch: dict[str, Any]) -> torch.Tensor:
        """The planner's next-event embedding (B, W), without sampling actions."""
        out, _, keep_BT, _ = self._run_vlm(batch)
        planned: torch.Tensor = self.planner_head(self._pooled(out.hidden_states[-1], keep_BT))
        return planned.float()

    @torch.no_grad()
    def act(
        self,
        batch: dict[str, Any],
        steps: int = 10,
        generator: torch.Generator | None = None,
        noise_BHA: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """Sample actions (the VLM runs once, the expert ``steps`` times).

        Unified mode first decodes the event text (``event_text_B``) and conditions on it.
        """
        out_texts = self.decode_events(batch) if self.mode == "unified" else None
        out, _, keep_BT, _ = self._run_vlm(batch, out_texts)
        contexts = self.expert.contexts(out.hidden_states)
        state = self._state(batch)
        shape = (keep_BT.shape[0], self.horizon, self.cfg.action_dim)
        x = sample_flow(
            lambda x, tau: self.expert(x, tau, state, contexts, keep_BT),
            shape, steps, keep_BT.device, generator, noise_BHA,
        )  # fmt: skip
        a_std, a_mean = self.get_buffer("a_std"), self.get_buffer("a_mean")
        result: dict[str, Any] = {"actions_BHA": x * a_std + a_mean}
        pooled = self._pooled(out.hidden_states[-1], keep_BT)
        if self.mode in TEXT_CONDITIONED:
            result.update(event_extent(self.end_head(pooled)))
        if out_texts is not None:
            result["event_text_B"] = out_texts
        result["next_event_BD"] = self.planner_head(pooled).float()
        return result
