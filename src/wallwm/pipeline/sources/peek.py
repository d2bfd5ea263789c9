"""A look at a source before it is ingested: what it holds, and what of it would fail.

``wallwm inspect SOURCE`` opens the source as ingest would (format, instruction and fps options
included), lists it, and reads the signals of a spread sample of episodes -- no video is
decoded and nothing is written -- so a data engineer sees the embodiment (action and state
dims, cameras, fps, ground truth) and the problems ingest would record, in seconds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from wallwm.pipeline.segmentation.forms import reading_notes
from wallwm.pipeline.segmentation.stage import record_signals
from wallwm.pipeline.sources.base import EpisodeError, EpisodeRef, GripperOpen
from wallwm.pipeline.sources.registry import open_source
from wallwm.pipeline.validate import validate_signals


@dataclass(frozen=True)
class EpisodePeek:
    """One sampled episode's signals, or the problem that reading them met."""

    key: str
    frames: int | None = None
    fps: float | None = None
    duration_s: float | None = None
    action_dim: int | None = None
    state_dim: int | None = None
    cameras: list[str] = field(default_factory=list)
    #: What each action / state dim is, where the source names them (None: unnamed).
    action_names: list[str] | None = None
    state_names: list[str] | None = None
    instruction: str | None = None
    #: The robot the source names (None: it names none -- ``--robot`` can).
    robot: str | None = None
    ground_truth_events: int | None = None
    #: What the segmenter will read differently from the stored signals (wrapped angles,
    #: quaternion sign flips, held streams, rows stored twice; see
    #: ``wallwm.pipeline.segmentation.forms.reading_notes``).
    reading: list[str] = field(default_factory=list)
    problem: str | None = None


@dataclass(frozen=True)
class SourcePeek:
    """What :func:`peek_source` found."""

    uri: str
    format: str
    listed: int
    listing_failures: list[str]
    sampled: list[EpisodePeek]
    #: What the source's layout suggests stating (a ROS bag's topic that may mark episodes).
    hints: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return dataclasses.asdict(self)


def spread(refs: list[EpisodeRef], n: int) -> list[EpisodeRef]:
    """Up to ``n`` refs evenly spaced over the listing (first and last included)."""
    if n <= 0 or not refs:
        return []
    if len(refs) <= n:
        return list(refs)
    step = (len(refs) - 1) / max(n - 1, 1)
    return [refs[round(k * step)] for k in range(n)]


def peek_episode(source: object, ref: EpisodeRef) -> EpisodePeek:
    """The signals of one episode and the first problem ingest would record for it."""
    try:
        record = source.read(ref)  # type: ignore[attr-defined]
        validate_signals(record)
    except EpisodeError as exc:
        return EpisodePeek(ref.episode_key, problem=f"{exc.file}: {exc.problem}")
    frames = int(record.actions_TA.shape[0])
    return EpisodePeek(
        key=ref.episode_key,
        frames=frames,
        fps=float(record.fps),
        duration_s=round(frames / float(record.fps), 3),
        action_dim=int(record.actions_TA.shape[1]),
        state_dim=0 if record.states_TS is None else int(record.states_TS.shape[1]),
        cameras=[c.name for c in record.cameras],
        action_names=None if record.action_names is None else list(record.action_names),
        state_names=None if record.state_names is None else list(record.state_names),
        instruction=record.instruction,
        robot=record.robot or None,
        ground_truth_events=None if record.gt_events is None else len(record.gt_events),
        reading=reading_notes(record_signals(record)),
    )


def peek_source(
    path: str,
    fmt: str = "auto",
    *,
    instruction: str | None = None,
    fps: float | None = None,
    gripper_open: GripperOpen = "auto",
    sample: int = 5,
    action_topics: tuple[str, ...] = (),
    episode_topic: str | None = None,
) -> SourcePeek:
    """Open and list ``path``, and read ``sample`` spread episodes' signals.

    Raises:
        EpisodeError: The source itself cannot be opened or listed (as ingest would record).
    """
    source = open_source(
        path, fmt, instruction=instruction, fps=fps, gripper_open=gripper_open,
        action_topics=action_topics, episode_topic=episode_topic,
    )  # fmt: skip
    refs, errors = source.list_episodes()
    return SourcePeek(
        uri=source.uri,
        format=source.format,
        listed=len(refs),
        listing_failures=[f"{e.file}: {e.problem}" for e in errors],
        sampled=[peek_episode(source, ref) for ref in spread(refs, sample)],
        hints=_hints(source),
    )


def _hints(source: object) -> list[str]:
    """The source's own suggestions (a source that has none: none).

    A failure to make them is no problem of the source's episodes, and says nothing.
    """
    hints = getattr(source, "hints", None)
    if hints is None:
        return []
    try:
        return list(hints())
    except EpisodeError:
        return []
