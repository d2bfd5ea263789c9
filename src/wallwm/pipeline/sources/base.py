"""The source protocol and the in-memory episode record every reader produces."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


class EpisodeError(Exception):
    """One episode (or one source) cannot be ingested; names the file and the problem."""

    def __init__(self, file: str, problem: str, error_class: str | None = None) -> None:
        """Create the error.

        Args:
            file: The file at fault (or the source root for source-level problems).
            problem: What is wrong, in words a data engineer can act on.
            error_class: A short stable category (defaults to the exception class name).
        """
        super().__init__(f"{file}: {problem}")
        self.file = file
        self.problem = problem
        self.error_class = error_class or type(self).__name__


class CorruptVideoError(EpisodeError):
    """A video is unreadable, truncated, or has no frames."""


class BadSignalError(EpisodeError):
    """Actions/states are missing, malformed or non-finite."""


class MissingFieldError(EpisodeError):
    """A required field (instruction, camera, column) is missing."""


class FrameCountError(EpisodeError):
    """Video frame count and action rows disagree beyond the tolerance."""


class UnknownFormatError(EpisodeError):
    """The source layout matches no known format."""


@dataclass(frozen=True)
class EpisodeRef:
    """Where one episode lives inside a source (cheap to list, pickled to workers)."""

    source_uri: str
    source_format: str
    episode_key: str
    #: Every file the episode is read from: for the fingerprint and for error messages.
    files: tuple[str, ...]
    #: Format-specific locator (row filter, HDF5 group, ...), JSON-serialisable.
    locator: dict[str, object] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """Cheap change detector: paths, sizes and mtimes of the episode's files."""
        h = hashlib.sha256(self.episode_key.encode())
        for path in sorted(self.files):
            try:
                st = Path(path).stat()
                h.update(f"{path}\x00{st.st_size}\x00{st.st_mtime_ns}\x00".encode())
            except OSError:
                h.update(f"{path}\x00missing\x00".encode())
        return h.hexdigest()[:24]


@dataclass(frozen=True)
class CameraSpec:
    """Where one camera's frames for one episode are, before probing."""

    name: str
    uri: str
    from_timestamp_s: float = 0.0
    to_timestamp_s: float | None = None


@dataclass(frozen=True)
class CameraInfo:
    """A probed camera stream (what the ``episodes.cameras`` column stores)."""

    name: str
    uri: str
    byte_length: int
    codec: str
    width: int
    height: int
    num_frames: int
    from_timestamp_s: float = 0.0
    to_timestamp_s: float | None = None


@dataclass
class EpisodeRecord:
    """One episode as read from a source, before validation and storage.

    Shapes: ``actions_TA`` is (T, A) float32, ``states_TS`` (T, S), ``gripper_TG`` (T, G).
    """

    ref: EpisodeRef
    fps: float
    instruction: str | None
    robot: str | None
    actions_TA: FloatArray
    cameras: list[CameraSpec]
    states_TS: FloatArray | None = None
    gripper_TG: FloatArray | None = None
    timestamps_s: npt.NDArray[np.float64] | None = None
    action_names: list[str] | None = None
    state_names: list[str] | None = None
    #: Ground-truth event starts ``(start_frame, name)``, if the source provides them.
    gt_events: list[tuple[int, str | None]] | None = None
    gt_events_source: str | None = None
    probed: list[CameraInfo] = field(default_factory=list)


@runtime_checkable
class EpisodeSource(Protocol):
    """A reader of one recorded-episode format."""

    format: str
    uri: str

    def list_episodes(self) -> tuple[list[EpisodeRef], list[EpisodeError]]:
        """List episodes cheaply; broken listing entries come back as errors, not exceptions."""
        ...

    def read(self, ref: EpisodeRef) -> EpisodeRecord:
        """Read one episode's signals and camera locations (raises :class:`EpisodeError`)."""
        ...
