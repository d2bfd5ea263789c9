"""Format registry: detect a source's format and open the matching reader.

``open_source(path, "auto")`` detects the format: a LeRobot dataset has ``meta/info.json``, a folder
source has ``<episode>/meta.json`` + ``steps.parquet``, an HDF5 source is a ``.hdf5`` file or a
directory of them, a Zarr replay buffer a ``*.zarr`` directory with ``meta/episode_ends`` (or a
``*.zarr.zip``), an RLDS dataset a TFDS version directory (``dataset_info.json`` +
``features.json``) or a folder of versions, ROS bags a ``.bag`` / ``.mcap`` file, a directory
with ``metadata.yaml``, or a folder of them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from wallwm.pipeline.sources import folder, hdf5, lerobot, rlds, rosbag, zarr_buffer
from wallwm.pipeline.sources.base import (
    EpisodeSource,
    GripperOpen,
    UnknownFormatError,
)

SourceFormat = Literal["auto", "lerobot", "folder", "hdf5", "zarr", "rlds", "rosbag"]
FORMATS: tuple[str, ...] = ("lerobot", "folder", "hdf5", "zarr", "rlds", "rosbag")


def detect_format(path: str | Path) -> str:
    """Name the format of the source at ``path``.

    Raises:
        UnknownFormatError: If the path does not exist or matches no known layout.
    """
    root = Path(path)
    if not root.exists():
        raise UnknownFormatError(str(path), "source path does not exist", "MissingSource")
    if lerobot.looks_like(root):
        return lerobot.FORMAT
    if folder.looks_like(root):
        return folder.FORMAT
    if zarr_buffer.looks_like(root):
        return zarr_buffer.FORMAT
    if rlds.looks_like(root):
        return rlds.FORMAT
    if rosbag.looks_like(root):
        return rosbag.FORMAT
    if hdf5.looks_like(root):
        return hdf5.FORMAT
    inside = _sources_below(root)
    if inside:  # a folder of datasets (a Hub cache, a lab's share): name them
        shown = ", ".join(f"{p.relative_to(root)} ({fmt})" for p, fmt in inside[:6])
        more = f" and {len(inside) - 6} more" if len(inside) > 6 else ""
        raise UnknownFormatError(
            str(path),
            f"not one source but a folder of {len(inside)}: {shown}{more}; ingest each "
            "(a dataset holds one embodiment)",
        )
    raise UnknownFormatError(
        str(path),
        "unknown source format: expected meta/info.json (LeRobot v2.1/v3.0), "
        "<episode>/meta.json + steps.parquet (folder), .hdf5 files (ALOHA/robomimic), a "
        ".zarr replay buffer (Diffusion Policy/UMI), an RLDS dataset (dataset_info.json + "
        "features.json, Open X-Embodiment), or ROS bags (a .bag or .mcap file, a directory with "
        "metadata.yaml, or a folder of them)",
    )


def _sources_below(root: Path) -> list[tuple[Path, str]]:
    """Sources one or two levels below ``root`` (``cache/lerobot/pusht``), with their formats.

    A child that is a source is not looked into (an RLDS dataset's version directories are
    the dataset, read at its newest version).
    """
    if not root.is_dir():
        return []
    found = []
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        for candidate in (child, *sorted(p for p in child.iterdir() if p.is_dir())):
            fmt = _collection_format(candidate)
            if fmt is not None:
                found.append((candidate, fmt))
                if candidate == child:
                    break
    return found


def _collection_format(path: Path) -> str | None:
    """The format of a dataset found inside a folder of datasets (formats kept as a tree)."""
    for module in (lerobot, zarr_buffer, rlds):
        if module.looks_like(path):
            return str(module.FORMAT)
    return None


#: The readers whose files may not store the instruction or fps (:class:`OptionedSource`s):
#: the options give them.
_OPTIONED: dict[str, Callable[..., EpisodeSource]] = {
    hdf5.FORMAT: hdf5.HDF5Source,
    zarr_buffer.FORMAT: zarr_buffer.ZarrSource,
    rlds.FORMAT: rlds.RldsSource,
}


def open_source(
    path: str | Path,
    fmt: str = "auto",
    *,
    instruction: str | None = None,
    fps: float | None = None,
    gripper_open: GripperOpen = "auto",
    action_topics: tuple[str, ...] = (),
    episode_topic: str | None = None,
) -> EpisodeSource:
    """Open a source, detecting its format when ``fmt`` is ``"auto"``.

    ``gripper_open`` says which end of the source's gripper values is open (readers return
    larger = more open); ``auto`` decides from the data where the format has no convention.
    ``action_topics`` names a ROS bag's action topics, ``episode_topic`` the topic that marks
    its episodes (other formats have no topics: refused).

    Raises:
        UnknownFormatError: Unknown format name or undetectable layout.
        EpisodeError: The source's metadata is unreadable.
    """
    if fmt == "auto":
        fmt = detect_format(path)
    topic_option = "--action-topic" if action_topics else "--episode-topic" if episode_topic else ""
    if topic_option and fmt != rosbag.FORMAT:
        raise UnknownFormatError(
            str(path), f"{topic_option} is for ROS bags; this source is {fmt}", "BadOption"
        )
    if fmt == rosbag.FORMAT:
        return rosbag.RosbagSource(
            path, instruction=instruction, fps=fps, gripper_open=gripper_open,
            action_topics=action_topics, episode_topic=episode_topic,
        )  # fmt: skip
    if fmt == lerobot.FORMAT:
        return lerobot.LeRobotSource(path, gripper_open=gripper_open)
    if fmt == folder.FORMAT:
        return folder.FolderSource(path, gripper_open=gripper_open)
    optioned = _OPTIONED.get(fmt)
    if optioned is not None:
        return optioned(path, instruction=instruction, fps=fps, gripper_open=gripper_open)
    close = difflib.get_close_matches(fmt, FORMATS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UnknownFormatError(str(path), f"unknown format {fmt!r} (choose from {FORMATS}){hint}")
