"""The structured caption every backend must produce, and its JSON schema for guided decoding."""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: (min, max) characters per field. Bounds keep guided decoding short and valid even for weak
#: models (an unbounded string lets a model ramble until max_tokens).
BOUNDS: Final = {
    "caption": (2, 80),
    "verb": (1, 24),
    "object": (1, 40),
    "target": (1, 40),
    "done_state": (2, 100),
}


def _pattern(field: str) -> str:
    """Printable text without quotes or backslashes, length bound included.

    The bound lives inside the pattern because xgrammar (vLLM's structured-output backend)
    rejects ``pattern`` combined with ``maxLength``.
    """
    lo, hi = BOUNDS[field]
    return rf'^[^"\\\u0000-\u001f]{{{lo},{hi}}}$'


class EventCaption(BaseModel):
    """One event's caption."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    caption: str = Field(pattern=_pattern("caption"))
    verb: str = Field(pattern=_pattern("verb"))
    object: str = Field(pattern=_pattern("object"))
    target: str | None = Field(None, pattern=_pattern("target"))
    done_state: str = Field(pattern=_pattern("done_state"))

    @field_validator("caption", "verb", "object", "done_state", "target", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = " ".join(value.split())
            return None if value.lower() in {"", "null", "none", "n/a"} else value
        return value


def caption_json_schema() -> dict[str, Any]:
    """Closed JSON schema for ``response_format={"type": "json_schema", ...}``."""
    text = {name: {"type": "string", "pattern": _pattern(name)} for name in BOUNDS}
    properties: dict[str, Any] = dict(text)
    properties["target"] = {"anyOf": [text["target"], {"type": "null"}]}
    return {
        "type": "object",
        "properties": properties,
        "required": list(BOUNDS),
        "additionalProperties": False,
    }
