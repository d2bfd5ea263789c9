"""The source protocol and the in-memory episode record every reader produces."""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

#: Which end of a source's gripper values is open. Readers return ``gripper_TG`` with larger =
#: more open; a source whose values grow as the gripper closes (LIBERO's and MetaWorld's gripper
#: commands: -1 open, +1 close) is negated on read. ``auto`` lets the reader decide from the data
#: (see :func:`start_open_votes`), ``high``/``low`` state it.
GripperOpen = Literal["auto", "high", "low"]


def gripper_dims(names: list[str] | None) -> list[int]:
    """Indices of the dims named ``*grip*`` (any case): a gripper's command or opening.

    The one rule for every stage -- the reader's orientation vote, segmentation's gripper
    flips and the captioner's gripper names -- so a dim named ``grip`` or ``left_gripper``
    counts as a gripper everywhere or nowhere.
    """
    return [i for i, n in enumerate(names or []) if "grip" in str(n).lower()]


def orient_gripper(gripper_TG: FloatArray | None, gripper_open: GripperOpen) -> FloatArray | None:
    """A measured opening as stored (larger = more open): negated where ``low`` is stated."""
    if gripper_TG is None or gripper_open != "low":
        return gripper_TG
    return -gripper_TG


def start_open_votes(gripper_TG: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Per gripper, which end of its own range an episode starts at: +1 high, -1 low, 0 neither.

    Episodes nearly always start with the gripper open -- before the first grasp -- so the end
    a gripper starts at votes for its open end; summed over a dataset's episodes the sign says
    which end is open even where some episodes start holding something. A gripper that hardly
    moves (range under 5 % of its largest magnitude, what the captioner ignores too) or starts
    mid-range votes 0.

    Args:
        gripper_TG: (T, G) gripper values of one episode (NaN where unknown).

    Returns:
        (G,) votes in {-1, 0, +1}.
    """
    x_TG = np.asarray(gripper_TG, dtype=np.float64)
    if x_TG.ndim == 1:
        x_TG = x_TG[:, None]
    if x_TG.shape[0] == 0 or np.isnan(x_TG).all():
        return np.zeros(x_TG.shape[1], dtype=np.int64)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns vote 0 below
        lo_G, hi_G = np.nanmin(x_TG, axis=0), np.nanmax(x_TG, axis=0)
        start_G = np.nanmedian(x_TG[:3], axis=0)  # the first frames, robust to one glitch
    ptp_G = hi_G - lo_G
    moves_G = ptp_G > 0.05 * np.maximum(np.abs(lo_G), np.abs(hi_G))
    frac_G = (start_G - lo_G) / np.where(moves_G & (ptp_G > 0), ptp_G, 1.0)
    votes_G = np.where(frac_G >= 0.75, 1, np.where(frac_G <= 0.25, -1, 0))
    return np.where(moves_G & np.isfinite(frac_G), votes_G, 0).astype(np.int64)


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
    #: Whether the recorded attempt succeeded, where the source says (None: it does not).
    success: bool | None = None
    #: The first frame at which the source marks the attempt successful (None: it does not
    #: say). A benchmark's ground truth often stops there (decisions after the task is done
    #: are no part of it): ``wallwm eval segmentation --until-success`` scores up to it.
    success_frame: int | None = None
    probed: list[CameraInfo] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A recorder may write a state or gripper vector of no dims: stored as none (a list
        # column of size 0 is no Arrow type), never as an error of the episode.
        if no_dims(self.states_TS):
            self.states_TS, self.state_names = None, None
        if no_dims(self.gripper_TG):
            self.gripper_TG = None


#: Attribute names a file format's metadata may give the instruction under.
INSTRUCTION_ATTRS = ("instruction", "language_instruction", "task", "lang")


def attr_text(attrs: Any, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` in a file's attributes (HDF5, Zarr) as text; None if none is set.

    Bytes are decoded and anything else is written as text (an HDF5 ``fps`` of 50 is "50");
    an empty value counts as unset.
    """
    for name in names:
        if name in attrs:
            value = attrs[name]
            text = (value.decode() if isinstance(value, bytes) else str(value)).strip()
            if text:
                return text
    return None


def metadata_fps(fps: object, file: str) -> float:
    """A metadata file's ``fps``: a positive, finite number (one line naming ``file`` otherwise).

    JSON's NaN and Infinity read as numbers, and a JSON ``true`` as an int: both refused.
    """
    if isinstance(fps, bool) or not isinstance(fps, int | float):
        raise MissingFieldError(
            file, f"'fps' is missing or not a number (got {fps!r})", "MissingFps"
        )
    if not (math.isfinite(fps) and fps > 0):
        raise MissingFieldError(file, f"'fps' must be a positive number, got {fps!r}", "BadFps")
    return float(fps)


def no_dims(values: npt.NDArray[np.floating] | None) -> bool:
    """Whether a per-frame series is present but has no dims (``(T, 0)``): the same as none."""
    return values is not None and np.ndim(values) == 2 and np.shape(values)[1] == 0


class OptionedSource:
    """Base of the readers whose files may not store what ingest needs (HDF5, Zarr, RLDS, bags).

    The instruction, the frame rate and the gripper's open end then come from the options; each
    reader's docstring says what its files do store.
    """

    format: str

    def __init__(
        self,
        root: str | Path,
        instruction: str | None = None,
        fps: float | None = None,
        gripper_open: GripperOpen = "auto",
    ) -> None:
        """Remember where the source is and the options' fallbacks.

        Args:
            root: The source's file or directory.
            instruction: Instruction of episodes whose files carry none.
            fps: Frame rate of episodes whose files carry none.
            gripper_open: ``low``: the gripper values read shrink as it opens (negated on
                read); ``auto``/``high``: they grow.
        """
        self.root = Path(root).resolve()
        self.uri = str(self.root)
        self.instruction = instruction
        self.fps = fps
        self.gripper_open = gripper_open


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
