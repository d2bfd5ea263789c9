"""The plan follower and the event timeouts it follows -- pure, no model, no torch."""

from __future__ import annotations

import numpy as np
import pytest

from wallwm.trainer.durations import MIN_EVENTS, TIMEOUT_FACTOR, EventTimeouts, duration_table
from wallwm.trainer.policy import ChunkPolicy, Observation
from wallwm.trainer.serving.protocol import InferRequest, InferResult, ModelSpec

SPEC = ModelSpec("event", 8, 3, 2, horizon=4, text_conditioned=True)
OBS = Observation(np.zeros((8, 8, 3), np.uint8), np.zeros(3, np.float32), "do it")


def _events(instruction: str, caption: str, lengths: list[int]) -> list[dict[str, object]]:
    return [
        {"instruction": instruction, "caption": caption, "start_frame": 10, "end_frame": 10 + n}
        for n in lengths
    ]


def test_timeouts_come_from_the_narrowest_group_with_enough_events() -> None:
    long_reach = _events("reach", "move to the goal", [60] * MIN_EVENTS)
    grasp = _events("pick", "grasp the puck", [6] * MIN_EVENTS)
    rare = _events("pick", "a caption seen once", [100])
    carry = _events("pick", "carry the puck", [40] * MIN_EVENTS)
    table = duration_table(long_reach + grasp + rare + carry)
    timeouts = EventTimeouts(table, horizon=4)
    assert timeouts.steps("reach", "move to the goal") == TIMEOUT_FACTOR * 60
    assert timeouts.steps("pick", "carry the puck") == TIMEOUT_FACTOR * 40
    # short events keep the floor of four horizons: several replans before moving past
    assert timeouts.steps("pick", "grasp the puck") == 16
    # a caption with too few events: its task's durations (p95 of 11 events, the 100 included)
    pick = [6] * MIN_EVENTS + [100] + [40] * MIN_EVENTS
    expected = round(TIMEOUT_FACTOR * int(np.ceil(np.percentile(pick, 95))))
    assert timeouts.steps("pick", "a caption seen once") == expected
    # an unknown task: every event's; an old checkpoint without durations: the floor
    assert timeouts.steps("stack", "anything") > 16
    assert EventTimeouts(None, horizon=4).steps("reach", "move to the goal") == 16


class _Scripted:
    """An ``infer`` stand-in: answers 4-step chunks for the events it is told to name."""

    def __init__(self, planner_names: list[str], timeout_steps: int) -> None:
        self.planner_names, self.timeout_steps = list(planner_names), timeout_steps
        self.requests: list[InferRequest] = []

    def __call__(self, request: InferRequest) -> InferResult:
        self.requests.append(request)
        event = request.event or self.planner_names.pop(0)  # the planner names one
        return InferResult(
            np.zeros((4, 2), np.float32),
            "event",
            event_steps=4,
            end_of_event=False,  # never ends by itself: only the timeout moves past it
            event=event,
            event_timeout_steps=self.timeout_steps,
        )


def _run(policy: ChunkPolicy, steps: int) -> None:
    for _ in range(steps):
        policy.act(OBS)


def test_the_servers_timeout_moves_past_and_a_renamed_event_starts_afresh() -> None:
    infer = _Scripted(["approach", "approach", "grasp"], timeout_steps=12)
    policy = ChunkPolicy(infer, SPEC, replan_every=4)
    _run(policy, 12)  # three chunks of "approach": asked by name after the first
    assert [r.event for r in infer.requests] == [None, "approach", "approach"]
    _run(policy, 1)  # 12 steps done: asks for the event after it; the planner says "approach"
    assert infer.requests[-1].previous_event == "approach"
    assert policy.track.steps == 1  # named again by the planner: counted from zero
    _run(policy, 11)
    assert [r.event for r in infer.requests[-2:]] == ["approach", "approach"]
    _run(policy, 1)  # another 12 steps: moved past again, now to "grasp"
    assert infer.requests[-1].previous_event == "approach"
    assert policy.track.history == ["approach", "grasp"]


@pytest.mark.parametrize(("given", "advised", "moves_after"), [(8, 12, 8), (None, 0, 16)])
def test_a_given_timeout_wins_and_four_horizons_is_the_fallback(
    given: int | None, advised: int, moves_after: int
) -> None:
    infer = _Scripted(["approach", "grasp"], timeout_steps=advised)
    policy = ChunkPolicy(infer, SPEC, replan_every=4, event_timeout=given)
    _run(policy, moves_after)
    assert all(r.previous_event is None for r in infer.requests)
    _run(policy, 1)
    assert infer.requests[-1].previous_event == "approach"
