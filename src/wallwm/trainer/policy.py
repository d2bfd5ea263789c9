"""Policies: one small protocol for "observation in, actions out", and its in-process version.

:class:`Policy` is what evaluation (and, later, the policy server) talks to, in the style of
openpi's ``BasePolicy``. :class:`LocalPolicy` loads a checkpoint (EMA weights) and keeps a plan:

- event mode conditions on a description of the event to execute. At test time that comes from
  the model's own planner: its predicted next-event embedding is matched to the nearest caption
  the model saw in training for this instruction (the checkpoint's caption bank). The policy
  replans when the end-of-event head fires or after ``replan_every`` executed steps;
- chunk and unified modes condition on the instruction only and replan every ``replan_every``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from wallwm.trainer.model import TEXT_CONDITIONED, ModelConfig, WorldActionModel


@dataclass
class Observation:
    """One robot observation: an RGB image (S, S, 3) uint8 at the model's size, and the state."""

    image_HWC: np.ndarray
    state_S: np.ndarray
    instruction: str


class Policy(Protocol):
    """Observation in, the next action out (the policy keeps its own plan)."""

    def reset(self) -> None:
        """Forget the current plan (a new episode)."""
        ...

    def act(self, obs: Observation) -> np.ndarray:
        """The action to execute now, shape (A,)."""
        ...


@dataclass
class _Plan:
    actions_HA: np.ndarray
    executed: int = 0
    caption: str = ""
    ends: bool = False
    history: list[str] = field(default_factory=list)


class LocalPolicy:
    """A checkpoint evaluated in this process."""

    def __init__(
        self, checkpoint: str | Path, replan_every: int = 8, flow_steps: int = 10, seed: int = 0
    ) -> None:
        """Load ``checkpoint`` (the EMA weights are used)."""
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        self.mode = state["mode"]
        self.model = WorldActionModel(
            ModelConfig(**state["model_config"]), self.mode, state["stats"]
        )
        self.model.load_state_dict(state["ema"]["shadow"])
        self.model.eval()
        self.bank: Sequence[tuple[str, str]] = [tuple(x) for x in state.get("caption_bank", [])]  # type: ignore[misc]
        self.replan_every, self.flow_steps = replan_every, flow_steps
        self.generator = torch.Generator().manual_seed(seed)
        self.plan: _Plan | None = None
        self._bank_cache: dict[str, tuple[list[str], torch.Tensor]] = {}

    def reset(self) -> None:
        """Forget the plan."""
        self.plan = None

    def _captions_for(self, instruction: str) -> tuple[list[str], torch.Tensor]:
        if instruction not in self._bank_cache:
            captions = sorted({c for i, c in self.bank if i == instruction}) or sorted(
                {c for _, c in self.bank}
            )
            with torch.no_grad():
                emb = (
                    self.model.text(captions) if captions else torch.zeros(0, self.model.cfg.width)
                )
            self._bank_cache[instruction] = (captions, emb)
        return self._bank_cache[instruction]

    def _batch(self, obs: Observation, caption: str) -> dict[str, Any]:
        return {
            "image_BCHW": torch.from_numpy(np.ascontiguousarray(obs.image_HWC.transpose(2, 0, 1)))[
                None
            ],
            "state_BS": torch.as_tensor(obs.state_S, dtype=torch.float32)[None],
            "instruction": [obs.instruction],
            "caption": [caption],
            "next_caption": [""],
        }

    def _replan(self, obs: Observation) -> None:
        caption = ""
        if self.mode in TEXT_CONDITIONED:
            previous = self.plan.caption if self.plan else ""
            caption = self._next_caption(obs, previous)
        out = self.model.act(self._batch(obs, caption), self.flow_steps, self.generator)
        ends = bool(out.get("end_of_event_B", torch.zeros(1))[0] > 0.5)
        history = (self.plan.history if self.plan else []) + ([caption] if caption else [])
        self.plan = _Plan(out["actions_BHA"][0].numpy(), 0, caption, ends, history)

    def _next_caption(self, obs: Observation, current: str) -> str:
        """The planner's next event, as the nearest known caption for this instruction."""
        captions, emb = self._captions_for(obs.instruction)
        if not captions:
            return ""
        if not current:  # the first event: plan from the instruction alone
            probe = self.model.act(self._batch(obs, ""), 1, self.generator)["next_event_BD"]
        else:
            probe = self.model.act(self._batch(obs, current), 1, self.generator)["next_event_BD"]
        scores = F.cosine_similarity(probe, emb)
        return captions[int(scores.argmax())]

    def act(self, obs: Observation) -> np.ndarray:
        """Next action: follow the plan, replanning at event ends or every ``replan_every``."""
        plan = self.plan
        if plan is None or plan.executed >= min(self.replan_every, len(plan.actions_HA)):
            self._replan(obs)
        assert self.plan is not None
        action = self.plan.actions_HA[self.plan.executed]
        self.plan.executed += 1
        return np.asarray(action, dtype=np.float32)


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))
