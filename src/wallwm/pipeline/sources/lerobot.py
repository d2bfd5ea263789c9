"""LeRobot datasets on local disk, codebase versions v2.0/v2.1 and v3.0 (no ``lerobot`` import).

v2.x: ``meta/info.json``, ``meta/episodes.jsonl``, ``meta/tasks.jsonl``, one parquet per episode at
``info["data_path"]`` and one video per camera and episode at ``info["video_path"]``.

v3.0: ``meta/info.json``, ``meta/tasks.parquet``, ``meta/episodes/chunk-*/file-*.parquet`` (one row
per episode with its data file, its row range and, per camera, its video file and
``[from_timestamp, to_timestamp)`` window), data and videos packing many episodes per file.

Language annotations are kept as ground-truth events: a per-frame ``subtask_index`` (names from
``meta/subtasks.parquet``/``.jsonl``) or ``subtask`` string column, else changes of ``task_index``
inside an episode.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from wallwm.pipeline.image_frames import parquet_frames_uri
from wallwm.pipeline.sources.base import (
    BadSignalError,
    CameraSpec,
    EpisodeError,
    EpisodeRecord,
    EpisodeRef,
    GripperOpen,
    MissingFieldError,
    UnknownFormatError,
    gripper_dims,
    metadata_fps,
    start_open_votes,
)
from wallwm.pipeline.tables.arrays import column_to_2d

FORMAT = "lerobot"
SUPPORTED_VERSIONS = ("v2.0", "v2.1", "v3.0")
#: Episodes read to decide which end of a gripper command is open (``gripper_open="auto"``).
GRIPPER_VOTE_EPISODES = 24


def looks_like(root: Path) -> bool:
    """Whether ``root`` is a LeRobot dataset (has ``meta/info.json``)."""
    return (root / "meta" / "info.json").is_file()


def _flat_names(feature: dict[str, Any] | None) -> list[str] | None:
    """Feature names may be a list, a nested list, or ``{"motors": [...]}``."""
    names = (feature or {}).get("names")
    if isinstance(names, dict):
        names = [
            n for group in names.values() for n in (group if isinstance(group, list) else [group])
        ]
    if isinstance(names, list):
        flat: list[str] = []
        for n in names:
            flat.extend(str(x) for x in n) if isinstance(n, list) else flat.append(str(n))
        return flat
    return None


def _jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON-lines metadata file (one line naming the file and line otherwise)."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadSignalError(str(path), f"unreadable: {exc}", "BadMetadata") from exc
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadSignalError(str(path), f"line {number}: {exc}", "BadMetadata") from exc
        if not isinstance(row, dict):
            raise BadSignalError(str(path), f"line {number} is not a JSON object", "BadMetadata")
        rows.append(row)
    return rows


def _read_meta_parquet(path: Path, skip_prefix: str | None = None) -> pa.Table:
    """A metadata parquet file (without the columns under ``skip_prefix``)."""
    try:
        names = pq.read_schema(path).names
        keep = [n for n in names if not (skip_prefix and n.startswith(skip_prefix))]
        return pq.read_table(path, columns=keep)
    except (OSError, pa.ArrowException) as exc:
        raise BadSignalError(str(path), f"unreadable parquet: {exc}", "BadMetadata") from exc


def _index_table(path: Path, index_col: str, text_col: str) -> dict[int, str]:
    """Read ``tasks``/``subtasks`` (jsonl, or parquet with the text as a column or the index)."""
    if path.with_suffix(".jsonl").is_file():
        rows = _jsonl(path.with_suffix(".jsonl"))
        try:
            return {int(r[index_col]): str(r[text_col]) for r in rows}
        except (KeyError, ValueError, TypeError) as exc:
            raise BadSignalError(
                str(path.with_suffix(".jsonl")),
                f"every line needs an integer {index_col!r} and a {text_col!r} ({exc!r})",
                "BadMetadata",
            ) from exc
    if path.with_suffix(".parquet").is_file():
        table = _read_meta_parquet(path.with_suffix(".parquet"))
        text_cols = [c for c in table.column_names if c != index_col]
        col = text_col if text_col in table.column_names else (text_cols[0] if text_cols else None)
        if col is None or index_col not in table.column_names:
            raise BadSignalError(
                str(path.with_suffix(".parquet")), f"needs {index_col} and {text_col}"
            )
        return dict(
            zip(
                (int(i) for i in table.column(index_col).to_pylist()),
                (str(t) for t in table.column(col).to_pylist()),
                strict=True,
            )
        )
    return {}


class LeRobotSource:
    """Reader of local LeRobot datasets (v2.0, v2.1, v3.0)."""

    format = FORMAT

    def __init__(self, root: str | Path, gripper_open: GripperOpen = "auto") -> None:
        """Open the dataset at ``root`` and load its metadata.

        Args:
            root: The dataset directory (holding ``meta/info.json``).
            gripper_open: Which end of the action dims named ``*grip*`` is open. Conventions
                differ by robot (ALOHA, SO-100: larger = open; LIBERO, MetaWorld: +1 closes), so
                ``auto`` reads a sample of episodes and takes the end most of them start at
                (:func:`~wallwm.pipeline.sources.base.start_open_votes`).

        Raises:
            EpisodeError: If ``meta/info.json`` is missing, unreadable, or of an unknown version.
        """
        self.root = Path(root).resolve()
        self.uri = str(self.root)
        info_path = self.root / "meta" / "info.json"
        try:
            info = json.loads(info_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadSignalError(
                str(info_path), f"unreadable info.json: {exc}", "BadMetadata"
            ) from exc
        if not isinstance(info, dict) or not isinstance(info.get("features", {}), dict):
            raise BadSignalError(
                str(info_path), "info.json must hold an object with a 'features' object",
                "BadMetadata",
            )  # fmt: skip
        self.version = str(info.get("codebase_version", ""))
        if self.version not in SUPPORTED_VERSIONS:
            raise UnknownFormatError(
                str(info_path),
                f"unsupported LeRobot codebase_version {self.version!r} "
                f"(supported: {SUPPORTED_VERSIONS})",
            )
        self.info = info
        self.fps = metadata_fps(info.get("fps"), str(info_path))
        self.robot = info.get("robot_type") if isinstance(info.get("robot_type"), str) else None
        features: dict[str, Any] = {
            k: f for k, f in info.get("features", {}).items() if isinstance(f, dict)
        }
        self.video_keys = [k for k, f in features.items() if f.get("dtype") == "video"]
        #: Cameras stored as encoded images in the data parquet (``dtype: image``), not video.
        self.image_keys = [k for k, f in features.items() if f.get("dtype") == "image"]
        action_keys = [k for k in features if k == "action"] or [
            k for k in features if k.startswith("action")
        ]
        if not action_keys:
            raise MissingFieldError(str(info_path), "no 'action' feature in info.json features")
        self.action_key = action_keys[0]
        self.state_key = "observation.state" if "observation.state" in features else None
        self.action_names = _flat_names(features.get(self.action_key))
        self.state_names = _flat_names(features.get(self.state_key)) if self.state_key else None
        self.tasks = _index_table(self.root / "meta" / "tasks", "task_index", "task")
        self.subtasks = _index_table(self.root / "meta" / "subtasks", "subtask_index", "subtask")
        self.episodes = self._load_episodes()
        self.gripper_open = gripper_open
        self.gripper_dims = gripper_dims(self.action_names)
        #: +1 per gripper dim whose values grow as it opens, -1 where they are negated on read;
        #: decided on the first listing (in the driver, so workers get it pickled with the source).
        stated = [1 if gripper_open == "high" else -1] * len(self.gripper_dims)
        self.gripper_signs: list[int] | None = None if gripper_open == "auto" else stated
        self.gripper_decision = "" if gripper_open == "auto" else f"stated: {gripper_open} = open"

    def _load_episodes(self) -> list[dict[str, Any]]:
        meta = self.root / "meta"
        if self.version.startswith("v2"):
            path = meta / "episodes.jsonl"
            if not path.is_file():
                raise MissingFieldError(str(path), "episodes.jsonl is missing")
            return _jsonl(path)
        files = sorted((meta / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise MissingFieldError(
                str(meta / "episodes"), "no meta/episodes/chunk-*/file-*.parquet"
            )
        tables = [_read_meta_parquet(f, skip_prefix="stats/") for f in files]
        rows: list[dict[str, Any]] = pa.concat_tables(tables, promote_options="default").to_pylist()
        return rows

    def _episode_files(self, ep: dict[str, Any]) -> tuple[str, list[CameraSpec]]:
        idx = int(ep["episode_index"])
        if self.version.startswith("v2"):
            chunk = idx // int(self.info.get("chunks_size", 1000))
            data = self.info["data_path"].format(episode_chunk=chunk, episode_index=idx)
            cams = [
                CameraSpec(
                    k,
                    str(
                        self.root
                        / self.info["video_path"].format(
                            episode_chunk=chunk, video_key=k, episode_index=idx
                        )
                    ),
                )
                for k in self.video_keys
            ]
            return str(self.root / data), cams + self._image_cameras(str(self.root / data), idx)
        data = self.info["data_path"].format(
            chunk_index=int(ep["data/chunk_index"]), file_index=int(ep["data/file_index"])
        )
        cams = []
        for k in self.video_keys:
            path = self.info["video_path"].format(
                video_key=k,
                chunk_index=int(ep[f"videos/{k}/chunk_index"]),
                file_index=int(ep[f"videos/{k}/file_index"]),
            )
            to_s = ep.get(f"videos/{k}/to_timestamp")
            cams.append(
                CameraSpec(
                    k,
                    str(self.root / path),
                    float(ep[f"videos/{k}/from_timestamp"]),
                    None if to_s is None else float(to_s),
                )
            )
        return str(self.root / data), cams + self._image_cameras(str(self.root / data), idx)

    def _image_cameras(self, data: str, idx: int) -> list[CameraSpec]:
        """The episode's cameras stored as image columns of its data parquet."""
        return [CameraSpec(k, parquet_frames_uri(data, k, idx)) for k in self.image_keys]

    def list_episodes(self) -> tuple[list[EpisodeRef], list[EpisodeError]]:
        """One ref per row of the episodes metadata."""
        refs: list[EpisodeRef] = []
        errors: list[EpisodeError] = []
        for ep in self.episodes:
            try:
                data, cams = self._episode_files(ep)
            except (KeyError, ValueError, TypeError) as exc:
                what = f"lacks {exc}" if isinstance(exc, KeyError) else f"is unreadable ({exc})"
                errors.append(
                    BadSignalError(
                        str(self.root / "meta"),
                        f"episode entry {ep.get('episode_index')!r} {what}",
                        "BadMetadata",
                    )
                )
                continue
            idx = int(ep["episode_index"])
            locator = {
                "episode_index": idx,
                "tasks": list(ep.get("tasks") or []),
                "data": data,
                "cameras": [[c.name, c.uri, c.from_timestamp_s, c.to_timestamp_s] for c in cams],
            }
            refs.append(
                EpisodeRef(
                    self.uri, FORMAT, f"episode_{idx:06d}", (data, *(c.uri for c in cams)), locator
                )
            )
        if self.gripper_signs is None:
            self._decide_gripper_signs(refs)
        return refs, errors

    def _decide_gripper_signs(self, refs: list[EpisodeRef]) -> None:
        """Vote on each gripper dim's open end over evenly spaced episodes (``auto``)."""
        if not self.gripper_dims:
            self.gripper_signs = []
            return
        step = max(1, len(refs) // GRIPPER_VOTE_EPISODES)
        votes_G = np.zeros(len(self.gripper_dims), dtype=np.int64)
        voters = 0
        for ref in refs[::step][:GRIPPER_VOTE_EPISODES]:
            try:
                idx = int(ref.locator["episode_index"])  # type: ignore[call-overload]
                # the actions alone (and the frame order): a vote needs no states or labels
                table = self._episode_table(
                    str(ref.locator["data"]), idx, [self.action_key, "frame_index"]
                )
                actions = column_to_2d(table.column(self.action_key), self.action_key, "")
            except (EpisodeError, KeyError, ValueError):
                continue  # a bad episode is reported when it is read; it just does not vote
            if actions.shape[1] == len(self.action_names or []):
                votes_G += start_open_votes(actions[:, self.gripper_dims])
                voters += 1
        self.gripper_signs = [-1 if v < 0 else 1 for v in votes_G]
        self.gripper_decision = "auto: " + ", ".join(
            f"{(self.action_names or [])[d]!r} {'low' if sign < 0 else 'high'} = open "
            f"(vote {int(v):+d} over {voters} episodes)"
            for d, sign, v in zip(self.gripper_dims, self.gripper_signs, votes_G, strict=True)
        )

    def _episode_table(self, data: str, idx: int, columns: list[str] | None = None) -> pa.Table:
        """One episode's rows of its (possibly shared) data parquet, in frame order.

        ``columns``: read only these of them (those the file has); None: all.
        """
        if not Path(data).is_file():
            raise MissingFieldError(data, "episode data parquet is missing", "MissingData")
        try:
            if columns is not None:
                have = set(pq.read_schema(data).names)
                columns = [c for c in columns if c in have]
            table = pq.read_table(data, columns=columns, filters=[("episode_index", "=", idx)])
        except (OSError, pa.ArrowException) as exc:
            raise BadSignalError(data, f"unreadable parquet: {exc}", "BadParquet") from exc
        if "frame_index" in table.column_names:
            table = table.sort_by("frame_index")
        if self.action_key not in table.column_names:
            raise MissingFieldError(data, f"column {self.action_key!r} is missing")
        return table

    def read(self, ref: EpisodeRef) -> EpisodeRecord:
        """Read one episode's rows from its (possibly shared) parquet file."""
        loc = ref.locator
        data = str(loc["data"])
        table = self._episode_table(data, int(loc["episode_index"]))  # type: ignore[call-overload]
        actions = column_to_2d(table.column(self.action_key), self.action_key, data)
        states = (
            column_to_2d(table.column(self.state_key), self.state_key, data)
            if self.state_key and self.state_key in table.column_names
            else None
        )
        gripper = None
        if self.gripper_dims and len(self.action_names or []) == actions.shape[1]:
            if self.gripper_signs is None:  # read before any listing (a single-episode tool)
                self.list_episodes()
            gripper = actions[:, self.gripper_dims] * np.asarray(self.gripper_signs, np.float32)
        tasks = [str(t) for t in loc.get("tasks") or []]  # type: ignore[attr-defined]
        task_ids = (
            table.column("task_index").to_pylist() if "task_index" in table.column_names else []
        )
        instruction = (
            tasks[0] if tasks else (self.tasks.get(int(task_ids[0])) if task_ids else None)
        )
        gt, gt_source = self._ground_truth(table, task_ids)
        success, success_frame = _outcome(table)
        return EpisodeRecord(
            ref=ref,
            fps=self.fps,
            instruction=instruction,
            robot=self.robot,
            actions_TA=actions,
            cameras=[CameraSpec(n, u, f, t) for n, u, f, t in loc["cameras"]],  # type: ignore[attr-defined]
            states_TS=states,
            gripper_TG=gripper,
            timestamps_s=(
                table.column("timestamp").to_numpy().astype(np.float64)
                if "timestamp" in table.column_names
                else None
            ),
            action_names=self.action_names,
            state_names=self.state_names,
            gt_events=gt,
            gt_events_source=gt_source,
            success=success,
            success_frame=success_frame,
        )

    def _ground_truth(
        self, table: pa.Table, task_ids: list[Any]
    ) -> tuple[list[tuple[int, str | None]] | None, str | None]:
        """Event starts from language annotation columns, if the dataset has them."""
        labels: list[str | None] | None = None
        source = None
        for col in table.column_names:
            if "subtask" not in col.lower():
                continue
            values = table.column(col).to_pylist()
            if pa.types.is_integer(table.schema.field(col).type):
                labels = [None if v is None else self.subtasks.get(int(v), str(v)) for v in values]
            else:
                labels = [None if v is None else str(v) for v in values]
            source = f"column {col}"
            break
        if labels is None and len(set(task_ids)) > 1:
            labels = [self.tasks.get(int(t), str(t)) for t in task_ids]
            source = "task_index changes"
        if not labels:
            return None, None
        # A wallwm export's ``event_index`` tells apart two adjacent events with the same text.
        keys: list[Any] = labels
        if "event_index" in table.column_names and source != "task_index changes":
            keys = list(zip(table.column("event_index").to_pylist(), labels, strict=True))
        starts = [0] + [i for i in range(1, len(keys)) if keys[i] != keys[i - 1]]
        return [(i, labels[i]) for i in starts], source


def _outcome(table: pa.Table) -> tuple[bool | None, int | None]:
    """The record's ``success`` and ``success_frame`` from a ``next.success``/``success`` column.

    ``success`` is its last frame's value (the attempt's outcome); ``success_frame`` the first
    frame where it is true (the task done, whether or not it stays done).
    """
    for name in ("next.success", "success"):
        if name in table.column_names and table.num_rows:
            values = table.column(name).to_pylist()
            first = next((i for i, v in enumerate(values) if v), None)
            last = values[-1]
            return (bool(last) if last is not None else None), first
    return None, None
