"""The plain folder format: one directory per episode.

Layout::

    SOURCE/<episode>/meta.json      {"instruction": str, "fps": number, "robot"?: str,
                                     "events"?: [{"start_frame": int, "name": str}],
                                     "success"?: bool, "success_step"?: int (the first
                                     frame the attempt counts as successful)}
    SOURCE/<episode>/steps.parquet  one row per frame: action list<float> (required);
                                    state list<float>, gripper float|list<float>, timestamp float
                                    (gripper: the opening per gripper, larger = more open)
    SOURCE/<episode>/<camera>.mp4   one video per camera, same frame count as steps.parquet
                                    (.mkv, .webm, .mov and .avi are read too; the recorders
                                    write .mp4)

Every episode is expected to have every camera seen in the source; an episode missing one is a
recorded failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from wallwm.pipeline.sources.base import (
    BadSignalError,
    CameraSpec,
    EpisodeError,
    EpisodeRecord,
    EpisodeRef,
    FloatArray,
    GripperOpen,
    MissingFieldError,
    metadata_fps,
    orient_gripper,
)
from wallwm.pipeline.tables.arrays import column_to_2d

FORMAT = "folder"
META = "meta.json"
STEPS = "steps.parquet"
VIDEO_EXT = ".mp4"
#: Containers a camera may come in (anything FFmpeg decodes inside them: H.264/5, AV1, VP9,
#: MJPEG, ...). A camera is its file's stem; one stem in two containers is refused.
VIDEO_EXTS = (VIDEO_EXT, ".mkv", ".webm", ".mov", ".avi")


def is_episode_dir(path: Path) -> bool:
    """Whether ``path`` looks like one episode of the folder format."""
    return path.is_dir() and (
        (path / META).exists() or (path / STEPS).exists() or bool(_videos(path))
    )


def _videos(episode_dir: Path) -> dict[str, list[Path]]:
    """The episode's video files by camera name (more than one: the same camera twice)."""
    out: dict[str, list[Path]] = {}
    for path in sorted(episode_dir.iterdir()):
        if path.suffix.lower() in VIDEO_EXTS and path.is_file():
            out.setdefault(path.stem, []).append(path)
    return out


def looks_like(root: Path) -> bool:
    """Whether ``root`` holds at least one folder-format episode."""
    return root.is_dir() and any(
        (p / META).exists() and (p / STEPS).exists() for p in root.iterdir() if p.is_dir()
    )


class FolderSource:
    """Reader of the plain folder format."""

    format = FORMAT

    def __init__(self, root: str | Path, gripper_open: GripperOpen = "auto") -> None:
        """Open a folder source rooted at ``root``.

        Args:
            root: The source directory (one subdirectory per episode).
            gripper_open: ``low``: the ``gripper`` column shrinks as the gripper opens (negated
                on read); ``auto``/``high``: it grows, the format's convention.
        """
        self.root = Path(root).resolve()
        self.uri = str(self.root)
        self.gripper_open = gripper_open

    def list_episodes(self) -> tuple[list[EpisodeRef], list[EpisodeError]]:
        """One ref per episode directory; the camera set is the union over all episodes."""
        dirs = sorted(p for p in self.root.iterdir() if is_episode_dir(p))
        videos = {d: _videos(d) for d in dirs}
        cameras = sorted({c for found in videos.values() for c in found})
        refs: list[EpisodeRef] = []
        errors: list[EpisodeError] = []
        for d in dirs:
            missing = [name for name in (META, STEPS) if not (d / name).exists()]
            if missing:
                errors.append(
                    MissingFieldError(str(d / missing[0]), f"episode {d.name!r} lacks {missing[0]}")
                )
                continue
            # a camera missing here keeps its would-be path: the fingerprint sees it appear
            paths = [videos[d].get(c, [d / f"{c}{VIDEO_EXT}"])[0] for c in cameras]
            files = [str(d / STEPS), str(d / META)] + [str(p) for p in paths]
            refs.append(EpisodeRef(self.uri, FORMAT, d.name, tuple(files), {"cameras": cameras}))
        return refs, errors

    def read(self, ref: EpisodeRef) -> EpisodeRecord:
        """Read one episode directory."""
        d = self.root / ref.episode_key
        meta = _read_meta(d / META)
        steps_path = str(d / STEPS)
        table = _read_parquet(steps_path)
        if "action" not in table.column_names:
            raise MissingFieldError(steps_path, "required column 'action' is missing")
        actions = column_to_2d(table.column("action"), "action", steps_path)
        states = _optional_2d(table, "state", steps_path)
        gripper = _optional_2d(table, "gripper", steps_path)
        timestamps = (
            table.column("timestamp").to_numpy().astype(np.float64)
            if "timestamp" in table.column_names
            else None
        )
        cameras = []
        expected = [str(c) for c in _as_list(ref.locator.get("cameras"))]
        videos = _videos(d)
        for cam in expected:
            found = videos.get(cam, [])
            if not found:
                raise MissingFieldError(
                    str(d / f"{cam}{VIDEO_EXT}"),
                    f"camera {cam!r} is missing in this episode "
                    f"(the source has cameras {expected})",
                    "MissingCamera",
                )
            if len(found) > 1:
                raise BadSignalError(
                    str(found[0]),
                    f"camera {cam!r} has {len(found)} videos ({', '.join(p.name for p in found)}); "
                    "keep one",
                    "DuplicateCamera",
                )
            cameras.append(CameraSpec(cam, str(found[0])))
        fps = metadata_fps(meta.get("fps"), str(d / META))
        success, success_frame = _outcome(meta, d / META, len(actions))
        return EpisodeRecord(
            ref=ref,
            fps=fps,
            instruction=_text(meta, "instruction", d / META),
            robot=_text(meta, "robot", d / META),
            actions_TA=actions,
            cameras=cameras,
            states_TS=states,
            gripper_TG=orient_gripper(gripper, self.gripper_open),
            timestamps_s=timestamps,
            action_names=_names(meta, "action_names", d / META),
            state_names=_names(meta, "state_names", d / META),
            gt_events=_gt_events(meta, d / META),
            gt_events_source="meta.json events" if meta.get("events") else None,
            success=success,
            success_frame=success_frame,
        )


def _as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else []


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadSignalError(str(path), f"unreadable meta.json: {exc}", "BadMetadata") from exc
    if not isinstance(meta, dict):
        raise BadSignalError(str(path), "meta.json must hold a JSON object", "BadMetadata")
    return meta


def _read_parquet(path: str) -> pa.Table:
    try:
        # ParquetFile skips the dataset-discovery layer of read_table (~40 % faster per file).
        with pq.ParquetFile(path) as parquet:  # closes the file at once, GC or not
            return parquet.read()
    except (OSError, pa.ArrowException) as exc:
        raise BadSignalError(path, f"unreadable parquet: {exc}", "BadParquet") from exc


def _optional_2d(table: pa.Table, name: str, file: str) -> FloatArray | None:
    if name not in table.column_names:
        return None
    if len(table) and table.column(name).null_count == len(table):
        return None  # null on every row: a recorder's way of writing none
    return column_to_2d(table.column(name), name, file)


def _text(meta: dict[str, Any], key: str, path: Path) -> str | None:
    """A text field of meta.json (None when absent or null)."""
    value = meta.get(key)
    if value is not None and not isinstance(value, str):
        raise BadSignalError(
            str(path), f"{key!r} must be a string, got {value!r}"[:200], "BadMetadata"
        )
    return value


def _names(meta: dict[str, Any], key: str, path: Path) -> list[str] | None:
    """A list-of-names field of meta.json (None when absent or null)."""
    value = meta.get(key)
    if value is not None and not (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
    ):
        raise BadSignalError(
            str(path), f"{key!r} must be a list of strings, got {value!r}"[:200], "BadMetadata"
        )
    return value


def _outcome(meta: dict[str, Any], path: Path, num_frames: int) -> tuple[bool | None, int | None]:
    """The record's ``success`` and ``success_frame`` from meta.json.

    ``success_step`` is what the simulators write: the first frame the attempt counts as done.
    A success step says the attempt succeeded where ``success`` is absent; one that is no frame
    of the episode, or that ``"success": false`` contradicts, is named as meta.json's error.
    """
    success = meta["success"] if isinstance(meta.get("success"), bool) else None
    step = meta.get("success_step")
    if step is None:
        return success, None
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < num_frames:
        problem = f"'success_step' must be a frame of the episode (0 to {num_frames - 1})"
        raise BadSignalError(str(path), f"{problem}, got {step!r}"[:200], "BadMetadata")
    if success is False:
        raise BadSignalError(
            str(path), f"'success_step' {step} contradicts 'success': false", "BadMetadata"
        )
    return True, step


def _gt_events(meta: dict[str, Any], path: Path) -> list[tuple[int, str | None]] | None:
    events = meta.get("events")
    if not events:
        return None
    try:
        out = [(int(e["start_frame"]), e.get("name")) for e in events]
    except (TypeError, KeyError, ValueError) as exc:
        raise BadSignalError(
            str(path), f"'events' must be a list of {{start_frame, name}}: {exc}", "BadGroundTruth"
        ) from exc
    if any(name is not None and not isinstance(name, str) for _, name in out):
        raise BadSignalError(str(path), "'events' names must be strings", "BadGroundTruth")
    return out


def write_folder_episode(
    out_dir: str | Path,
    key: str,
    *,
    instruction: str,
    fps: float,
    actions_TA: FloatArray,
    frames_by_camera: dict[str, np.ndarray],
    states_TS: FloatArray | None = None,
    gripper_T: FloatArray | None = None,
    robot: str | None = None,
    events: list[dict[str, Any]] | None = None,
    extra_meta: dict[str, Any] | None = None,
    codec: str = "libx264",
    timestamps_s: FloatArray | None = None,
) -> Path:
    """Write one episode in the folder format (used by the simulators and test factories).

    ``timestamps_s``: each frame's time (default: ``frame / fps``).
    """
    from wallwm.pipeline.video import write_video

    d = Path(out_dir) / key
    d.mkdir(parents=True, exist_ok=True)
    num_frames = len(actions_TA)
    columns: dict[str, Any] = {
        "frame_index": np.arange(num_frames, dtype=np.int64),
        "timestamp": (
            np.arange(num_frames, dtype=np.float64) / fps
            if timestamps_s is None
            else np.asarray(timestamps_s, dtype=np.float64)
        ),
        "action": [row.tolist() for row in np.asarray(actions_TA, dtype=np.float32)],
    }
    if states_TS is not None:
        columns["state"] = [row.tolist() for row in np.asarray(states_TS, dtype=np.float32)]
    if gripper_T is not None:
        columns["gripper"] = np.asarray(gripper_T, dtype=np.float32).reshape(-1)
    pq.write_table(pa.table(columns), str(d / STEPS))
    meta: dict[str, Any] = {"instruction": instruction, "fps": fps}
    if robot:
        meta["robot"] = robot
    if events:
        meta["events"] = events
    meta.update(extra_meta or {})
    (d / META).write_text(json.dumps(meta, indent=1))
    for cam, frames in frames_by_camera.items():
        write_video(os.fspath(d / f"{cam}{VIDEO_EXT}"), frames, fps, codec=codec)
    return d
