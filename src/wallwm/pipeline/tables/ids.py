"""Content-derived identifiers and hashes (every stage keys its rows on these)."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any, Final

#: Namespace of every wallwm uuid5; changing it would re-key every dataset ever written.
WALLWM_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://wallwm.dev/ids/v1")


def episode_id(source_uri: str, episode_key: str) -> str:
    """Stable id of an episode: uuid5 of its source URI and its key inside that source."""
    return str(uuid.uuid5(WALLWM_NAMESPACE, f"episode\x00{source_uri}\x00{episode_key}"))


def event_id(episode_id_: str, start_frame: int, end_frame: int) -> str:
    """Stable id of an event: uuid5 of its episode and frame range."""
    return str(
        uuid.uuid5(WALLWM_NAMESPACE, f"event\x00{episode_id_}\x00{start_frame}\x00{end_frame}")
    )


def failure_id(source_uri: str, stage: str, episode_key: str, file: str, error_class: str) -> str:
    """Stable id of a failure, so the same failure seen again merges instead of piling up."""
    key = "\x00".join(("failure", source_uri, stage, episode_key, file, error_class))
    return str(uuid.uuid5(WALLWM_NAMESPACE, key))


def stable_hash(obj: Any, length: int = 16) -> str:
    """Short sha256 of the canonical JSON form of ``obj`` (config hashes, cache keys)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def new_run_id(stage: str) -> str:
    """A fresh id for one run of a stage (runs are events in time, not content)."""
    return f"{stage}-{uuid.uuid4().hex[:12]}"
