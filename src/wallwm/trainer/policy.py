"""Policies: one small protocol for "observation in, actions out", and the plan follower.

:class:`Policy` is what evaluation talks to, in the style of openpi's ``BasePolicy``.
:class:`ChunkPolicy` turns any ``infer`` function (one request in, an action chunk out) into a
policy that keeps a plan -- the same code whether ``infer`` runs in this process
(:class:`LocalPolicy`) or on a policy server
(:class:`wallwm.trainer.serving.client.RemotePolicy`), so the served path behaves exactly like
the in-process one. This module imports no torch.

How the plan moves through events (text-conditioned modes, ``event`` and ``chunk_text``):

- the first request names no event: the server's planner picks "the event to do now";
- each answer says how many of its steps are still inside the event (``event_steps``);
- at a replan (after ``replan_every`` executed steps, or when the chunk runs out) the policy
  asks for the *same* event again from the new observation, unless the executed steps reached
  the predicted end of the event -- then it asks for the event after it (``previous_event``);
- an event that never ends is moved past, so a policy cannot stall on one event forever: after
  ``event_timeout`` executed steps if given, else after the ``event_timeout_steps`` the server
  answers for that event (twice how long such events ran in training), else 4 x the horizon;
- whenever the planner names the event (nothing asked, or asked for the one after), a new event
  starts and its steps count from zero -- also when it names the same text again (a repeated
  subtask, or "not done yet" after a timeout).

Chunk and unified modes condition on the instruction only and replan every ``replan_every``.
Noise seeds are a pure function of ``(seed, episode, replan index)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from wallwm.trainer.serving.protocol import MAX_SEED, InferRequest, InferResult, ModelSpec

if TYPE_CHECKING:
    from wallwm.trainer.serving.engine import PolicyEngine


@dataclass
class Observation:
    """One robot observation: the RGB image and the proprio state.

    ``image`` is uint8 (S, S, 3) at the model's size, or (N, S, S, 3) for a model reading N
    cameras (in the order of ``ModelSpec.cameras``).
    """

    image: np.ndarray
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
    result: InferResult
    executed: int = 0


@dataclass
class _EventTrack:
    event: str = ""
    steps: int = 0
    history: list[str] = field(default_factory=list)


class ChunkPolicy:
    """A policy over an ``infer`` function (see the module docstring)."""

    def __init__(
        self,
        infer: Callable[[InferRequest], InferResult],
        spec: ModelSpec,
        replan_every: int = 8,
        seed: int = 0,
        event_timeout: int | None = None,
    ) -> None:
        """Follow the chunks ``infer`` returns for the model described by ``spec``."""
        self.infer, self.spec = infer, spec
        self.mode = spec.mode
        self.replan_every, self.seed = max(1, replan_every), seed
        self.event_timeout = event_timeout  # None: the server's per-event advice
        self.episode, self.calls = -1, 0
        self.plan: _Plan | None = None
        self.track = _EventTrack()
        self.reset()

    def reset(self) -> None:
        """A new episode: forget the plan and the event."""
        self.episode += 1
        self.calls = 0
        self.plan = None
        self.track = _EventTrack()

    def _next_seed(self) -> int:
        self.calls += 1
        return ((self.seed * 1_000_003 + self.episode) * 1_000_003 + self.calls) % MAX_SEED

    def _request(self, obs: Observation) -> InferRequest:
        request = InferRequest(
            obs.image, obs.state_S, obs.instruction, self.mode, seed=self._next_seed()
        )
        if self.spec.text_conditioned and self.plan is not None:
            result = self.plan.result
            reached_end = result.end_of_event and self.plan.executed >= result.event_steps
            if reached_end or self.track.steps >= self.timeout(result):
                request.previous_event = self.track.event
            else:
                request.event = self.track.event
        return request

    def timeout(self, result: InferResult) -> int:
        """Executed steps after which the event ``result`` answered for is moved past."""
        return self.event_timeout or result.event_timeout_steps or 4 * self.spec.horizon

    def _replan(self, obs: Observation) -> None:
        request = self._request(obs)
        result = self.infer(request)
        if len(result.actions_HA) == 0:
            raise RuntimeError("the policy returned no actions")
        if result.event != self.track.event:
            self.track.history.append(result.event)
        if result.event != self.track.event or request.event is None:  # the planner named it
            self.track.event, self.track.steps = result.event, 0
        self.plan = _Plan(result)

    def event_trace(self) -> list[str]:
        """The events the planner named this episode, in order (the last: the current one)."""
        return list(self.track.history)

    def act(self, obs: Observation) -> np.ndarray:
        """Next action: follow the plan, replanning every ``replan_every`` steps."""
        plan = self.plan
        if plan is None or plan.executed >= min(self.replan_every, len(plan.result.actions_HA)):
            self._replan(obs)
        assert self.plan is not None
        action = self.plan.result.actions_HA[self.plan.executed]
        self.plan.executed += 1
        self.track.steps += 1
        return np.asarray(action, dtype=np.float32)


class LocalPolicy(ChunkPolicy):
    """A checkpoint evaluated in this process (EMA weights), through :class:`PolicyEngine`."""

    def __init__(
        self,
        checkpoint: str | Path,
        replan_every: int = 8,
        flow_steps: int = 10,
        seed: int = 0,
        event_timeout: int | None = None,
        noise_scale: float = 1.0,
        device: str = "auto",
        backbone_path: str | None = None,
    ) -> None:
        """Load ``checkpoint`` onto ``device`` (``noise_scale``: see :class:`PolicyEngine`).

        ``backbone_path``: a backbone checkpoint's VLM directory on this machine.
        """
        from wallwm.trainer.serving.engine import PolicyEngine

        self.engine: PolicyEngine = PolicyEngine(
            [checkpoint], flow_steps, seed, noise_scale, device=device, backbone_path=backbone_path
        )
        (spec,) = self.engine.specs.values()
        super().__init__(
            lambda r: self.engine.infer([r])[0], spec, replan_every, seed, event_timeout
        )


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))
