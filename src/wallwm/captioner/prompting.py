"""Prompt building (pure): templates are versioned ``.txt`` files under ``prompts/``.

A template has a ``[system]`` and a ``[user]`` section; the user section is formatted with the
event's facts. The prompt version is the file's stem plus a hash of its text, so editing a
template changes every cache key that used it.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

PROMPTS_PACKAGE = "wallwm.captioner.prompts"
DEFAULT_PROMPT = "event_v1"


@dataclass(frozen=True)
class PromptTemplate:
    """A loaded template."""

    name: str
    system: str
    user: str

    @property
    def version(self) -> str:
        """``name@hash``: changes whenever the text changes."""
        digest = hashlib.sha256((self.system + "\x00" + self.user).encode()).hexdigest()[:8]
        return f"{self.name}@{digest}"


@cache
def load_prompt(name: str = DEFAULT_PROMPT) -> PromptTemplate:
    """Load ``prompts/<name>.txt``; a clear error lists the available templates."""
    files = resources.files(PROMPTS_PACKAGE)
    path = files / f"{name}.txt"
    if not path.is_file():
        names = sorted(
            p.name.removesuffix(".txt") for p in files.iterdir() if p.name.endswith(".txt")
        )
        raise ValueError(f"no prompt template {name!r}; available: {names}")
    text = path.read_text(encoding="utf-8")
    if "[system]" not in text or "[user]" not in text:
        raise ValueError(f"prompt template {name!r} needs [system] and [user] sections")
    system, user = text.split("[user]", 1)
    return PromptTemplate(name, system.replace("[system]", "", 1).strip(), user.strip())


@dataclass(frozen=True)
class EventFacts:
    """What the prompt says about one event (all from the dataset, nothing guessed)."""

    event_id: str
    instruction: str
    index: int
    count: int
    start_frame: int
    end_frame: int
    duration_s: float
    cues: tuple[str, ...]
    previous_caption: str | None
    #: What the signals say about the event, e.g. ("gripper closes", "pause at the start").
    signal_notes: tuple[str, ...] = ()
    #: JPEG keyframes in time order, per camera: [(camera, position, jpeg)].
    keyframes: tuple[tuple[str, str, bytes], ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class CaptionRequest:
    """One request to a VLM, keyed by the event it is about."""

    event_id: str
    system: str
    user: str
    images: tuple[bytes, ...] = field(default=(), repr=False)
    #: Extra turns after the first user message, e.g. (assistant answer, user re-ask).
    history: tuple[tuple[str, str], ...] = ()

    def messages(self) -> list[dict[str, Any]]:
        """OpenAI chat messages; images as base64 JPEG data URLs."""
        content: list[dict[str, Any]] = [
            {
                "type": "image_url",
                "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(img).decode()},
            }
            for img in self.images
        ]
        content.append({"type": "text", "text": self.user})
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self.system},
            {"role": "user", "content": content},
        ]
        messages += [{"role": role, "content": text} for role, text in self.history]
        return messages


def select_keyframes(
    keyframes: tuple[tuple[str, str, bytes], ...], max_images: int, grid: bool
) -> tuple[list[bytes], str]:
    """Pick the images for a prompt.

    The first camera's first/middle/last keyframes (up to ``max_images``), or every camera's
    keyframes tiled into one grid image.
    """
    if not keyframes or max_images <= 0:
        return [], "no images (none available)"
    if grid:
        from wallwm.captioner.images import tile_jpegs

        return [tile_jpegs([k[2] for k in keyframes])], (
            "keyframes as one grid: one row per camera, columns first/middle/last"
        )
    camera = keyframes[0][0]
    chosen = [k for k in keyframes if k[0] == camera][:max_images]
    positions = "/".join(k[1] for k in chosen)
    return [k[2] for k in chosen], f"{positions} frames from the {camera} camera"


def build_request(
    facts: EventFacts, template: PromptTemplate, max_images: int = 3, grid: bool = False
) -> CaptionRequest:
    """The request for one event."""
    images, note = select_keyframes(facts.keyframes, max_images, grid)
    user = template.user.format(
        instruction=facts.instruction,
        index=facts.index + 1,
        count=facts.count,
        duration_s=facts.duration_s,
        start_frame=facts.start_frame,
        end_frame=facts.end_frame,
        cues=", ".join([*(c.replace("_", " ") for c in facts.cues), *facts.signal_notes]) or "none",
        previous=f'"{facts.previous_caption}"' if facts.previous_caption else "none (first event)",
        image_note=note,
    )
    return CaptionRequest(facts.event_id, template.system, user, tuple(images))
