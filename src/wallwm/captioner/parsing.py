"""Turning model output into a validated :class:`EventCaption` (pure).

Models wrap JSON in code fences, surround it with prose, or stop mid-object at ``max_tokens``.
:func:`parse_caption` extracts the first JSON object, repairs a truncated tail when what is left
is still a complete set of fields, and validates against the schema. It never guesses a
caption: anything it cannot read raises :class:`CaptionParseError` naming the reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from wallwm.captioner.schema import EventCaption

_FENCE = re.compile(r"```(?:json)?\s*(.*?)(?:```|$)", re.S | re.I)


class CaptionParseError(ValueError):
    """Model output that is not a valid caption (the message says why)."""


def _structure(text: str, start: int = 0) -> Iterator[tuple[int, str, int]]:
    """Yield ``(index, char, depth)`` for characters outside JSON strings (escape-aware).

    ``depth`` is the object/array nesting after the character.
    """
    depth, in_str, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
            continue
        depth += (ch in "{[") - (ch in "}]")
        yield i, ch, depth


def _first_object(text: str) -> tuple[str, bool]:
    """The first ``{...}`` in ``text`` (string-aware), and whether it was closed."""
    start = text.find("{")
    if start < 0:
        raise CaptionParseError("no JSON object in the output")
    for i, ch, depth in _structure(text, start):
        if ch == "}" and depth == 0:
            return text[start : i + 1], True
    return text[start:], False


def _repair_truncated(fragment: str) -> str:
    """Close a JSON object cut off mid-way, dropping a trailing incomplete member."""
    # Keep everything before the last complete "key": value pair (a comma at depth 1).
    commas = [i for i, ch, depth in _structure(fragment) if ch == "," and depth == 1]
    if not commas:
        raise CaptionParseError("output was truncated before the first field was complete")
    return fragment[: commas[-1]] + "}"


def _load(candidate: str) -> Any:
    try:
        return json.loads(candidate, strict=False)
    except json.JSONDecodeError as exc:
        raise CaptionParseError(f"invalid JSON: {exc.msg} at position {exc.pos}") from exc


def _load_truncated(fragment: str) -> Any:
    """A cut-off object: close it if its last value is complete, else drop that member."""
    try:
        return json.loads(fragment.rstrip().rstrip(",") + "}", strict=False)
    except json.JSONDecodeError:
        return _load(_repair_truncated(fragment))


def parse_caption(text: str) -> EventCaption:
    """Extract and validate a caption from raw model output.

    Raises:
        CaptionParseError: No JSON object, unrepairable truncation, or schema violations.
    """
    if not text or not text.strip():
        raise CaptionParseError("empty output")
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    fragment, closed = _first_object(body)
    data = _load(fragment) if closed else _load_truncated(fragment)
    if not isinstance(data, dict):
        raise CaptionParseError("the JSON value is not an object")
    try:
        return EventCaption.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'object'}: {e['msg']}" for e in exc.errors()
        )
        raise CaptionParseError(f"schema violations: {problems}") from exc


def reask_message(error: CaptionParseError) -> str:
    """The follow-up user turn after invalid output (one re-ask, then a recorded failure)."""
    return (
        f"Your answer could not be used ({error}). Reply again with only the JSON object with "
        'the fields "caption", "verb", "object", "target" and "done_state".'
    )
