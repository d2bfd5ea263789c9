"""Export a tagged, curated snapshot as a LeRobot v3.0 dataset (``wallwm export lerobot``).

What goes out is what curation kept: events of excluded clusters and events of weight 0 (excluded
or deduplicated) are left out, and an episode whose kept events are not contiguous is split at
the event boundaries into several exported episodes. Events become subtask annotations (a
per-frame ``subtask_index`` and ``meta/subtasks.parquet``, text = the event's caption), and each
exported episode carries its sampling weight (``sampling_weight`` in ``meta/episodes``: the sum of
its events' curated weights, normalised over the export).

Videos are never re-encoded where the source has a video file: LeRobot v3.0 addresses an
episode's frames as a ``[from_timestamp, to_timestamp)`` window of a video file, so each source
file is copied once (hard-linked where the filesystem allows) and every exported episode -- also
a cut one -- points at its window. Frames stored in HDF5 (ALOHA / robomimic sources), and every
stream with ``reencode=True`` (an export that must not carry left-out frames), are decoded and
encoded into one file per exported episode.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from wallwm.pipeline.image_frames import is_stored, stored_frames
from wallwm.pipeline.segmentation.idle import clip_events, episode_trim
from wallwm.pipeline.sources.base import CameraInfo
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.arrays import episode_arrays
from wallwm.pipeline.tables.lineage import StageRun
from wallwm.pipeline.tables.store import LanceStore, StoreError, TableStore
from wallwm.pipeline.video import VideoWriter, iter_video_frames

CODEBASE_VERSION = "v3.0"
CHUNK = "chunk-000"
IMAGE_PREFIX = "observation.images."


class ExportConfig(BaseModel):
    """Options of ``wallwm export lerobot``."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    dataset: str
    tag: str | None = Field(None, description="Snapshot to export (None: the current versions).")
    out: str
    trim: bool = Field(True, description="Leave out each episode's idle start and end.")
    cameras: list[str] | None = Field(
        None,
        description="Camera streams to export (None: every camera of the first exported episode); "
        "episodes lacking one are left out -- a LeRobot dataset has one set of video features.",
    )
    reencode: bool = Field(
        False, description="Encode only the exported frames (default: copy source video files)."
    )
    codec: str = Field(
        "libx264", description="Encoder of re-encoded streams (libx264 H.264, or libsvtav1 AV1)."
    )
    preset: str = Field(
        "ultrafast",
        description="The encoder's speed preset (x264: ultrafast ... veryslow; SVT-AV1: 0-13); "
        "ultrafast keeps --reencode near decoding speed, slower presets make smaller files.",
    )
    episodes_per_file: int = Field(1000, ge=1, description="Episodes per data parquet file.")
    overwrite: bool = False


@dataclasses.dataclass
class ExportSummary:
    """What an export wrote."""

    out: str
    episodes_in: int = 0
    episodes_out: int = 0
    frames: int = 0
    events: int = 0
    events_left_out: int = 0
    videos_copied: int = 0
    videos_encoded: int = 0
    #: Episodes left out because they lack a camera of the export (keys).
    episodes_skipped: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class Span:
    """One exported episode: frames ``[start, end)`` of a source episode and its events."""

    start: int
    end: int
    events: tuple[dict[str, Any], ...]


def kept_spans(events: list[dict[str, Any]], keep: Callable[[dict[str, Any]], bool]) -> list[Span]:
    """Contiguous runs of kept events (``events`` in time order), one span per run."""
    spans: list[Span] = []
    run: list[dict[str, Any]] = []
    for event in [*events, None]:
        if (
            event is not None
            and keep(event)
            and (not run or run[-1]["end_frame"] == event["start_frame"])
        ):
            run.append(event)
            continue
        if run:
            spans.append(Span(run[0]["start_frame"], run[-1]["end_frame"], tuple(run)))
        run = [event] if event is not None and keep(event) else []
    return spans


def subtask_text(event: dict[str, Any]) -> str:
    """An event's annotation: its caption, else its verb/object, else ``event``."""
    if event.get("caption"):
        return str(event["caption"])
    words = " ".join(w for w in (event.get("verb"), event.get("object")) if w)
    return words or "event"


def camera_key(name: str) -> str:
    """The LeRobot feature name of a camera (sources already named so keep their name)."""
    return name if name.startswith(IMAGE_PREFIX) else IMAGE_PREFIX + name


def _read_at(store: TableStore, table: str, tag: str | None, **kw: Any) -> pa.Table:
    try:
        return store.read(table, version=tag, **kw)
    except StoreError as exc:
        raise ValueError(
            f"no tag {tag!r} on {table} (create it with `wallwm clusters tag`)"
        ) from exc


def _keep_rule(store: TableStore, tag: str | None) -> Callable[[dict[str, Any]], bool]:
    """Curation's verdict on an event: not in an excluded cluster, weight not 0."""
    excluded: set[str] = set()
    if store.exists(schemas.CLUSTERS):
        clusters = _read_at(store, schemas.CLUSTERS, tag, columns=["cluster_id", "excluded"])
        excluded = {r["cluster_id"] for r in clusters.to_pylist() if r["excluded"]}

    def keep(event: dict[str, Any]) -> bool:
        weight = event.get("weight")
        return event.get("cluster_id") not in excluded and (weight is None or weight > 0)

    return keep


class _EncodedFile:
    """One re-encoded video file: spans appended in order by its own encoder thread."""

    def __init__(self, path: str, index: int, fps: float, cfg: ExportConfig) -> None:
        self.index, self.frames, self.episodes = index, 0, 0
        self.writer = VideoWriter(path, fps, codec=cfg.codec, preset=cfg.preset)
        self.encoder = ThreadPoolExecutor(max_workers=1)  # one thread: appends stay in order
        self.jobs: list[Future[None]] = []

    def append(self, decoded: Future[np.ndarray], frames: int, fmt: str) -> Future[None]:
        job = self.encoder.submit(lambda: self.writer.write(decoded.result(), fmt))
        self.jobs.append(job)
        self.frames += frames
        self.episodes += 1
        return job

    def finish(self) -> None:
        try:
            for job in self.jobs:
                job.result()
        finally:
            self.encoder.shutdown(wait=True)
            self.writer.close()

    def abandon(self) -> None:
        self.encoder.shutdown(wait=True, cancel_futures=True)
        self.writer.close()


class _Writer:
    """Accumulates frames, episode metadata and video files of the export."""

    def __init__(self, cfg: ExportConfig, fps: float, summary: ExportSummary) -> None:
        self.cfg, self.fps, self.summary = cfg, fps, summary
        self.root = Path(cfg.out + ".partial")  # renamed to ``out`` once complete
        shutil.rmtree(self.root, ignore_errors=True)  # left by a killed export
        self.frames: list[pa.Table] = []
        self.episodes: list[dict[str, Any]] = []
        self.tasks: dict[str, int] = {}
        self.subtasks: dict[str, int] = {}
        self.copied: dict[tuple[str, str], int] = {}  # (camera key, source file) -> file index
        self.files: dict[str, int] = {}  # camera key -> next file index
        self.cameras: dict[str, CameraInfo] = {}
        self.actions: list[np.ndarray] = []
        self.states: list[np.ndarray] = []
        self.index = 0
        self.data_file = 0
        self.camera_set: list[str] | None = None  # the export's cameras (first episode's)
        self.pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
        self.encoded: dict[str, _EncodedFile] = {}  # camera key -> the file being encoded
        self.in_flight: deque[Future[None]] = deque()

    def add(self, row: dict[str, Any], actions: np.ndarray, states: np.ndarray, span: Span) -> None:
        episode_index = len(self.episodes)
        length = span.end - span.start
        task = self.tasks.setdefault(row["instruction"], len(self.tasks))
        subtask, event_index = np.zeros(length, np.int64), np.zeros(length, np.int64)
        for k, e in enumerate(span.events):
            sub = self.subtasks.setdefault(subtask_text(e), len(self.subtasks))
            subtask[e["start_frame"] - span.start : e["end_frame"] - span.start] = sub
            event_index[e["start_frame"] - span.start : e["end_frame"] - span.start] = k
        a, s = actions[span.start : span.end], states[span.start : span.end]
        self.actions.append(a)
        self.states.append(s)
        columns = {"action": _fixed(a), **({"observation.state": _fixed(s)} if s.shape[1] else {})}
        self.frames.append(
            pa.table(
                {
                    **columns,
                    "timestamp": pa.array(np.arange(length) / self.fps, pa.float32()),
                    "frame_index": pa.array(np.arange(length), pa.int64()),
                    "episode_index": pa.array(np.full(length, episode_index), pa.int64()),
                    "index": pa.array(np.arange(self.index, self.index + length), pa.int64()),
                    "task_index": pa.array(np.full(length, task), pa.int64()),
                    "subtask_index": pa.array(subtask, pa.int64()),
                    "event_index": pa.array(event_index, pa.int64()),
                }
            )
        )
        meta: dict[str, Any] = {
            "episode_index": episode_index,
            "tasks": [row["instruction"]],
            "length": length,
            "data/chunk_index": 0,
            "data/file_index": self.data_file,
            "dataset_from_index": self.index,
            "dataset_to_index": self.index + length,
            "sampling_weight": float(
                sum(1.0 if e.get("weight") is None else float(e["weight"]) for e in span.events)
            ),
            "wallwm/episode_id": row["episode_id"],
            "wallwm/from_frame": span.start,
        }
        for cam in (CameraInfo(**c) for c in row["cameras"]):
            if self.camera_set is None or cam.name in self.camera_set:
                meta.update(self._video(cam, span, episode_index))
        self.episodes.append(meta)
        self.index += length
        self.summary.frames += length
        self.summary.events += len(span.events)
        if len(self.episodes) % self.cfg.episodes_per_file == 0:
            self._flush_data()

    def _video(self, cam: CameraInfo, span: Span, episode_index: int) -> dict[str, Any]:
        key = camera_key(cam.name)
        self.cameras.setdefault(key, cam)
        prefix = f"videos/{key}"
        if copyable(cam) and not self.cfg.reencode:
            file_index = self.copied.get((key, cam.uri))
            if file_index is None:
                file_index = self.copied[(key, cam.uri)] = self._next_file(key)
                _link_or_copy(Path(cam.uri), self._video_path(key, file_index))
                self.summary.videos_copied += 1
            start = cam.from_timestamp_s + span.start / self.fps
            return {
                f"{prefix}/chunk_index": 0,
                f"{prefix}/file_index": file_index,
                f"{prefix}/from_timestamp": start,
                f"{prefix}/to_timestamp": start + (span.end - span.start) / self.fps,
            }
        return self._reencode(key, cam, span)

    def _reencode(self, key: str, cam: CameraInfo, span: Span) -> dict[str, Any]:
        """Queue the span for its camera's current output file; its place in that file.

        Spans are decoded concurrently (a thread per core: decoding releases the GIL) and
        appended in order to one file per camera and ``episodes_per_file`` episodes -- one
        encoder start-up per file, not per episode.
        """
        out = self.encoded.get(key)
        if out is None or out.episodes >= self.cfg.episodes_per_file:
            if out is not None:
                out.finish()
            index = self._next_file(key)
            out = self.encoded[key] = _EncodedFile(
                str(self._video_path(key, index)), index, self.fps, self.cfg
            )
            self.summary.videos_encoded += 1
        start_s = out.frames / self.fps
        # bounded read-ahead: decoded frames wait in memory only until their encoder takes them
        while len(self.in_flight) >= 4 * (os.cpu_count() or 1):
            self.in_flight.popleft().result()
        # a video file's frames stay in the decoder's YUV: no RGB round trip before encoding
        # (4:2:0 planes exist only for even sizes; an odd-sized stream goes through RGB)
        odd = cam.width % 2 or cam.height % 2
        fmt = "rgb24" if is_stored(cam.uri) or odd else "yuv420p"
        decoded = self.pool.submit(decode_span, cam, span.start, span.end, self.fps, fmt)
        self.in_flight.append(out.append(decoded, span.end - span.start, fmt))
        prefix = f"videos/{key}"
        return {
            f"{prefix}/chunk_index": 0,
            f"{prefix}/file_index": out.index,
            f"{prefix}/from_timestamp": start_s,
            f"{prefix}/to_timestamp": start_s + (span.end - span.start) / self.fps,
        }

    def _next_file(self, key: str) -> int:
        index = self.files.get(key, 0)
        self.files[key] = index + 1
        return index

    def _video_path(self, key: str, file_index: int) -> Path:
        return self.root / "videos" / key / CHUNK / f"file-{file_index:03d}.mp4"

    def _flush_data(self) -> None:
        if not self.frames:
            return
        path = self.root / "data" / CHUNK / f"file-{self.data_file:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(self.frames), path)
        self.frames = []
        self.data_file += 1

    def finish(self, robot: str | None, names: tuple[list[str] | None, list[str] | None]) -> None:
        self.close()
        self._flush_data()
        meta = self.root / "meta"
        (meta / "episodes" / CHUNK).mkdir(parents=True, exist_ok=True)
        total = sum(e["sampling_weight"] for e in self.episodes) or 1.0
        for e in self.episodes:
            e["sampling_weight"] /= total
        pq.write_table(
            pa.Table.from_pylist(self.episodes), meta / "episodes" / CHUNK / "file-000.parquet"
        )
        _index_parquet(self.tasks, "task", "task_index", meta / "tasks.parquet")
        _index_parquet(self.subtasks, "subtask", "subtask_index", meta / "subtasks.parquet")
        (meta / "info.json").write_text(json.dumps(self._info(robot, names), indent=2))
        (meta / "stats.json").write_text(json.dumps(self._stats(), indent=2))

    def close(self, cancel: bool = False) -> None:
        """Finish the re-encoded files (the first failure is raised), or abandon them."""
        try:
            for out in self.encoded.values():
                if cancel:
                    out.abandon()
                else:
                    out.finish()
        finally:
            self.encoded.clear()
            self.in_flight.clear()
            self.pool.shutdown(wait=True, cancel_futures=cancel)

    def _info(self, robot: str | None, names: tuple[list[str] | None, list[str] | None]) -> Any:
        a_dim, s_dim = self.actions[0].shape[1], self.states[0].shape[1]
        features: dict[str, Any] = {"action": _vector_feature(a_dim, names[0])}
        if s_dim:
            features["observation.state"] = _vector_feature(s_dim, names[1])
        for key, cam in self.cameras.items():
            features[key] = {
                "dtype": "video",
                "shape": [cam.height, cam.width, 3],
                "names": ["height", "width", "channels"],
                "info": {
                    "video.fps": self.fps,
                    "video.height": cam.height,
                    "video.width": cam.width,
                },
            }
        for name, dtype in (
            ("timestamp", "float32"),
            ("frame_index", "int64"),
            ("episode_index", "int64"),
            ("index", "int64"),
            ("task_index", "int64"),
            ("subtask_index", "int64"),
            ("event_index", "int64"),
        ):
            features[name] = {"dtype": dtype, "shape": [1], "names": None}
        return {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": robot or "unknown",
            "total_episodes": len(self.episodes),
            "total_frames": self.index,
            "total_tasks": len(self.tasks),
            "chunks_size": 1000,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 500,
            "fps": self.fps,
            "splits": {"train": f"0:{len(self.episodes)}"},
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": features,
        }

    def _stats(self) -> dict[str, Any]:
        out = {}
        for name, parts in (("action", self.actions), ("observation.state", self.states)):
            x = np.concatenate(parts).astype(np.float64)
            if not x.shape[1]:
                continue
            out[name] = {
                "mean": x.mean(0).tolist(),
                "std": x.std(0).tolist(),
                "min": x.min(0).tolist(),
                "max": x.max(0).tolist(),
                "count": [len(x)],
            }
        return out


def _fixed(x: np.ndarray) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(x, np.float32).reshape(-1), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, x.shape[1])


def _vector_feature(dim: int, names: list[str] | None) -> dict[str, Any]:
    return {
        "dtype": "float32",
        "shape": [dim],
        "names": names if names and len(names) == dim else None,
    }


def _index_parquet(index: dict[str, int], name: str, column: str, path: Path) -> None:
    pa_table = pa.table({name: list(index), column: pa.array(list(index.values()), pa.int64())})
    pq.write_table(pa_table, path)


#: Streams a LeRobot dataset's .mp4 files hold as they are (what its decoders read).
COPIED_CODECS = frozenset({"h264", "hevc", "av1"})


def copyable(cam: CameraInfo) -> bool:
    """Whether the camera's file can be copied into the export as it is.

    An MP4 file of a codec LeRobot reads; any other container (a folder source's .webm, .mkv,
    .avi) or codec (VP9, MJPEG, FFV1, MPEG-4 part 2), and HDF5 frames, are re-encoded -- a copied
    Matroska file named .mp4 would only decode where the decoder sniffs the content.
    """
    if is_stored(cam.uri):
        return False
    return Path(cam.uri).suffix.lower() == ".mp4" and cam.codec in COPIED_CODECS


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another filesystem: a plain copy
        shutil.copyfile(src, dst)


def decode_span(
    cam: CameraInfo, start: int, end: int, fps: float, fmt: str = "rgb24"
) -> np.ndarray:
    """Frames ``[start, end)`` of a camera stream, (T, H, W, 3) uint8 RGB by default.

    A video file's frames come in ``fmt`` (``yuv420p``: (T, H * 3/2, W) planes, to re-encode
    without converting colours); frames stored as images (HDF5, parquet) are RGB whatever
    ``fmt``.
    """
    stored = stored_frames(cam.uri)
    if stored is not None:
        stream: Iterable[Any] = itertools.islice(stored, start, end)
    else:  # the span's own window: the decoder seeks there, and stops at its end
        from_s = cam.from_timestamp_s + start / fps
        frames_s = iter_video_frames(cam.uri, from_s, from_s + (end - start) / fps, fmt)
        stream = itertools.islice((frame for _t, frame in frames_s), end - start)
    frames = [np.asarray(f) for f in stream]
    if len(frames) < end - start and frames:  # within the ingest tolerance: repeat the last
        frames += [frames[-1]] * (end - start - len(frames))
    return np.stack(frames).astype(np.uint8)


def export_lerobot(
    cfg: ExportConfig,
    store: TableStore | None = None,
    on_start: Callable[[int], None] | None = None,
    on_episode: Callable[[], None] | None = None,
) -> ExportSummary:
    """Write the tag's curated episodes to ``cfg.out`` as a LeRobot v3.0 dataset.

    ``on_start`` is told how many episodes the tag holds, ``on_episode`` called as each is
    done (a progress bar).
    """
    t0 = time.perf_counter()
    store = store or LanceStore(cfg.dataset)
    _prepare_out(cfg)
    summary = ExportSummary(cfg.out)
    keep = _keep_rule(store, cfg.tag)
    by_episode = _events_by_episode(store, cfg.tag)
    episodes = _read_at(store, schemas.EPISODES, cfg.tag)
    writer = _Writer(cfg, _one_fps(cfg, episodes), summary)
    if on_start:
        on_start(episodes.num_rows)
    try:
        _write_all(writer, episodes, by_episode, keep, on_episode)
    except BaseException:
        writer.close(cancel=True)
        shutil.rmtree(writer.root, ignore_errors=True)  # no half-written export is left behind
        raise
    # The export appears whole or not at all; an old one goes only once the new one is complete.
    shutil.rmtree(cfg.out, ignore_errors=True)
    writer.root.rename(cfg.out)
    summary.episodes_out = len(writer.episodes)
    summary.seconds = time.perf_counter() - t0
    StageRun("export", cfg.model_dump()).record(
        store,
        schemas.EPISODES,
        None,
        0,
        f"lerobot {CODEBASE_VERSION} to {cfg.out}: episodes {summary.episodes_in} -> "
        f"{summary.episodes_out}, frames={summary.frames} events={summary.events} "
        f"left_out={summary.events_left_out} copied={summary.videos_copied} "
        f"encoded={summary.videos_encoded} skipped_episodes={summary.episodes_skipped}",
    )
    return summary


def _write_all(
    writer: _Writer,
    episodes: pa.Table,
    by_episode: dict[str, list[dict[str, Any]]],
    keep: Callable[[dict[str, Any]], bool],
    on_episode: Callable[[], None] | None = None,
) -> None:
    """Every kept span of every episode through ``writer``, then its metadata."""
    robot: str | None = None
    names: tuple[Any, Any] = (None, None)
    for i in range(episodes.num_rows):
        written = _write_episode(writer, episodes, i, by_episode.get, keep)
        if written is not None:
            robot, names = robot or written[0], written[1]
        if on_episode:
            on_episode()
    if not writer.episodes:
        where = writer.cfg.tag or "the current version"
        raise ValueError(f"{writer.cfg.dataset}: nothing to export at {where} (no kept events)")
    writer.finish(robot, names)


def _write_episode(
    writer: _Writer,
    episodes: pa.Table,
    i: int,
    events_of: Callable[[str], list[dict[str, Any]] | None],
    keep: Callable[[dict[str, Any]], bool],
) -> tuple[str | None, tuple[Any, Any]] | None:
    """Episode ``i``'s kept spans through ``writer``.

    Returns its robot and column names; None where it is left out for lacking a camera.
    """
    summary = writer.summary
    row = {c: episodes.column(c)[i].as_py() for c in EPISODE_COLUMNS if c in episodes.schema.names}
    actions, stored = episode_arrays(episodes, i)
    states = stored if stored is not None else np.zeros((len(actions), 0), np.float32)
    summary.episodes_in += 1
    has = [c["name"] for c in row["cameras"]]
    if writer.camera_set is None:
        writer.camera_set = list(writer.cfg.cameras or has)
    if any(name not in has for name in writer.camera_set):
        summary.episodes_skipped.append(row["episode_key"])
        return None
    mine = events_of(row["episode_id"]) or []
    if writer.cfg.trim:  # the idle start and end go like left-out events
        mine = clip_events(mine, *episode_trim(row, actions, states))
    spans = kept_spans(mine, keep)
    summary.events_left_out += len(mine) - sum(len(s.events) for s in spans)
    for span in spans:
        writer.add(row, actions, states, span)
    return row["robot"], (row["action_names"], row["state_names"])


EPISODE_COLUMNS = (
    "episode_id",
    "fps",
    "instruction",
    "cameras",
    "robot",
    "state_dim",
    "action_dim",
    "action_names",
    "state_names",
    "episode_key",
    "trim_start_frame",
    "trim_end_frame",
)


def _prepare_out(cfg: ExportConfig) -> None:
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {cfg.out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise ValueError(f"--out {cfg.out}: exists and is not empty (--overwrite replaces it)")


def _events_by_episode(store: TableStore, tag: str | None) -> dict[str, list[dict[str, Any]]]:
    columns = ["episode_id", "start_frame", "end_frame", "caption", "verb", "object", "weight"]
    schema = store.schema(schemas.EVENTS)
    if schema is not None and "cluster_id" in schema.names:
        columns.append("cluster_id")
    events = _read_at(store, schemas.EVENTS, tag, columns=columns).to_pylist()
    by_episode: dict[str, list[dict[str, Any]]] = {}
    for e in sorted(events, key=lambda e: (e["episode_id"], e["start_frame"])):
        by_episode.setdefault(e["episode_id"], []).append(e)
    return by_episode


def _one_fps(cfg: ExportConfig, episodes: pa.Table) -> float:
    """The export's frame rate; a LeRobot dataset has one fps and one action/state layout."""
    if episodes.num_rows == 0:
        raise ValueError(f"{cfg.dataset}: no episodes at {cfg.tag or 'the current version'}")
    for column in ("fps", "action_dim", "state_dim"):
        values = sorted(set(episodes.column(column).to_pylist()))
        if len(values) > 1:
            raise ValueError(
                f"{cfg.dataset}: one LeRobot dataset has one {column}, the tag's episodes have "
                f"{values} (export each robot's or rate's episodes from its own dataset)"
            )
    return float(episodes.column("fps")[0].as_py())
