"""How long events run, learnt from the training events: the plan follower's per-event timeout.

A text-conditioned policy follows one event until the model says it has ended; if it never does,
the follower moves past it after a timeout so it cannot stall. A fixed multiple of the horizon is
the wrong scale -- an approach to a far goal runs ten times longer than a grasp -- so the
checkpoint keeps the training events' durations (the 95th percentile of their steps per caption
of each task, per task, and overall) and the engine answers each request with the timeout of the
event it named: :data:`TIMEOUT_FACTOR` times that percentile, taken from the narrowest group
holding at least :data:`MIN_EVENTS` events (free-text VLM captions are mostly unique, so their
task's durations stand in). Pure: no torch, no Lance.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

#: Fewer training events than this under a caption (or a task): the wider group's durations.
MIN_EVENTS = 5
#: A closed-loop policy is slower than the demonstrations; twice the 95th percentile of their
#: durations leaves room for that while still catching an event that never ends.
TIMEOUT_FACTOR = 2.0
_ALL = "\x00all"


def duration_table(events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The 95th percentile of event durations in steps, with counts, per caption, task and all.

    Args:
        events: Training events with ``instruction``, ``caption``, ``start_frame`` and
            ``end_frame`` (a step per frame; end exclusive).

    Returns:
        ``{"by_caption": [[instruction, caption, n, p95]], "by_instruction": [[instruction, n,
        p95]], "all": [n, p95]}`` -- plain lists, so a checkpoint holds it without pickling.
    """
    by_caption: dict[tuple[str, str], list[int]] = defaultdict(list)
    by_instruction: dict[str, list[int]] = defaultdict(list)
    every: list[int] = []
    for e in events:
        steps = int(e["end_frame"]) - int(e["start_frame"])
        instruction, caption = str(e.get("instruction") or ""), str(e.get("caption") or "")
        if caption:
            by_caption[instruction, caption].append(steps)
        by_instruction[instruction].append(steps)
        every.append(steps)
    return {
        "by_caption": [[i, c, len(v), _p95(v)] for (i, c), v in sorted(by_caption.items())],
        "by_instruction": [[i, len(v), _p95(v)] for i, v in sorted(by_instruction.items())],
        "all": [len(every), _p95(every)],
    }


def _p95(steps: list[int]) -> int:
    return int(np.ceil(np.percentile(steps, 95))) if steps else 0


class EventTimeouts:
    """Look-ups in a :func:`duration_table`: the timeout of one event of one task."""

    def __init__(self, table: Mapping[str, Any] | None, horizon: int) -> None:
        """Index ``table`` (None or empty: older checkpoints -- every timeout is the floor).

        Args:
            table: A :func:`duration_table`.
            horizon: The model's action horizon; no timeout is shorter than four of it (the
                fixed timeout used before durations were kept), so a short event still gets
                several replans before it is moved past.
        """
        table = table or {}
        self.floor = 4 * horizon
        self._groups: dict[tuple[str, str], tuple[int, int]] = {
            (i, c): (n, p) for i, c, n, p in table.get("by_caption", [])
        }
        self._groups |= {(i, _ALL): (n, p) for i, n, p in table.get("by_instruction", [])}
        if table.get("all"):
            n, p95 = table["all"]
            self._groups[_ALL, _ALL] = (int(n), int(p95))

    def steps(self, instruction: str, caption: str) -> int:
        """Executed steps after which the event ``caption`` of ``instruction`` is moved past."""
        for key in ((instruction, caption), (instruction, _ALL), (_ALL, _ALL)):
            n, p95 = self._groups.get(key, (0, 0))
            if n >= MIN_EVENTS:
                return max(self.floor, round(TIMEOUT_FACTOR * p95))
        return self.floor
