"""The training view: a materialised, immutable snapshot that training reads instead of video.

``wallwm materialize --dataset DIR --tag NAME --size 96`` writes ``DIR/train/<tag>-<size>/``:

- ``frames.lance``: one row per frame of every episode: every chosen camera at that frame,
  each resized to ``size`` x ``size`` RGB uint8, as one raw (N, S, S, 3) byte string (one
  positional ``take`` fetches all views), episodes stored contiguously. The cameras are chosen
  by name (``--camera``, repeatable; default: every camera of the first episode); an episode
  missing one of them is left out of the view and counted in ``meta.json``;
- ``events.lance``: one row per event -- frame range, row of its episode's first frame,
  caption, next event's caption, instruction, cluster, sampling weight;
- ``episodes.lance``: actions and states per episode (loaded into memory by the dataset);
- ``meta.json``: source dataset, tag, the Lance versions read, normalisation statistics.

The view is written once in ``create`` mode and never merged into, so row positions are stable
and a sample is one positional ``take``. Episodes are decoded once, with the decoder's scaler
resizing each frame, so training never touches video. A rebuild after a change to the events
alone (recaptioned, reweighted, reclustered: the curation loop) keeps the old ``frames.lance``
-- hard-linked, not decoded again -- when it holds the same episodes at the same episodes-table
version.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from wallwm.pipeline.image_frames import stored_frames
from wallwm.pipeline.segmentation.idle import clip_events, episode_trim
from wallwm.pipeline.sources.base import CameraInfo
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.arrays import episode_arrays, to_vector_series
from wallwm.pipeline.tables.store import LanceStore, StoreError
from wallwm.pipeline.video import iter_video_frames


@dataclass(frozen=True)
class ViewSummary:
    """What a materialisation wrote."""

    path: str
    episodes: int
    events: int
    frames: int
    seconds: float
    #: Whether the frames were carried over from the previous view instead of decoded.
    frames_reused: bool = False


def is_remote(dataset: str) -> bool:
    """Whether a dataset root is an object-store URI (``s3://``, ``gs://``, ``az://``...)."""
    return "://" in dataset and not dataset.startswith("file://")


def view_path(
    dataset: str,
    tag: str | None,
    size: int,
    cameras: list[str] | None = None,
    trim: bool = True,
    exclude_flags: list[str] | None = None,
) -> Path:
    """Where the view of ``tag`` (or of the current versions) at ``size`` lives.

    Inside the dataset folder; for a dataset on an object store, in a local cache
    (``$WALLWM_VIEW_CACHE``, default ``~/.cache/wallwm/views``) under a hash of its URI: the view
    is what the data loader reads at every step, so it belongs on a local disk.
    """
    suffix = ("-" + "+".join(cameras) if cameras else "") + ("" if trim else "-untrimmed")
    suffix += "-without-" + "+".join(sorted(exclude_flags)) if exclude_flags else ""
    name = f"{tag or 'latest'}-{size}{suffix}"
    if is_remote(dataset):
        cache = Path(os.environ.get("WALLWM_VIEW_CACHE", "~/.cache/wallwm/views")).expanduser()
        digest = hashlib.sha256(dataset.rstrip("/").encode()).hexdigest()[:16]
        return cache / digest / name
    return Path(dataset) / "train" / name


def resize_frame(frame_HWC: np.ndarray, size: int) -> np.ndarray:
    """An RGB frame as the model sees it: size x size, area interpolation.

    The one resize used for training frames, closed-loop evaluation and (documented for)
    policy-server clients, so a policy never meets a different resampling at test time.
    """
    import cv2

    return np.asarray(cv2.resize(frame_HWC, (size, size), interpolation=cv2.INTER_AREA), np.uint8)


def _frames(cam: CameraInfo, size: int) -> Iterator[np.ndarray]:
    """A camera stream's frames, each resized to size x size RGB uint8, as they are decoded."""
    stored = stored_frames(cam.uri)
    if stored is not None:
        for frame in stored:
            yield resize_frame(frame, size)
        return
    for _t, picture in iter_video_frames(
        cam.uri, cam.from_timestamp_s, cam.to_timestamp_s, "rgb24"
    ):
        yield resize_frame(picture, size)  # type: ignore[arg-type]


def _exactly(frames: Iterator[np.ndarray], num_frames: int, uri: str) -> Iterator[np.ndarray]:
    """``num_frames`` of ``frames``: cut after, or the last repeated (within ingest's tolerance)."""
    last = None
    for last in itertools.islice(frames, num_frames):
        yield last
        num_frames -= 1
    if last is None:
        raise ValueError(f"{uri}: no frame decodes")
    for _ in range(num_frames):
        yield last


#: Frame rows per write of the view: a chunk's bytes stay well inside Arrow's 32-bit offsets
#: (one write of a large view's episode -- four cameras at 512 px over 400 frames is 1.3 GB --
#: overflowed them) and an episode is never held in memory whole.
FRAME_CHUNK_BYTES = 64 << 20

#: The view's frame side: the smallest the model's patches tile, the largest any policy
#: backbone reads (a 1024 px frame is 3 MB; larger only upsamples what the cameras recorded).
MIN_VIEW_SIZE, MAX_VIEW_SIZE = 16, 1024


def _open_at(store: LanceStore, table: str, tag: str | None) -> Any:
    try:
        return store.at(table, tag)
    except StoreError as exc:
        if tag is None:  # the current version: the table itself is missing
            step = "wallwm segment" if table == schemas.EVENTS else "wallwm ingest"
            raise ValueError(f"no {table} yet: run `{step}` first") from exc
        raise ValueError(
            f"no tag {tag!r} on {table} (create it with `wallwm clusters tag`)"
        ) from exc


def _read(
    store: LanceStore, table: str, tag: str | None, columns: list[str] | None = None
) -> tuple[pa.Table, int]:
    ds = _open_at(store, table, tag)
    return ds.to_table(columns=columns), int(ds.version)


def source_versions(dataset: str, tag: str | None = None) -> dict[str, int]:
    """The Lance versions a view of ``dataset`` at ``tag`` (None: current) is built from."""
    store = LanceStore(dataset)
    return {
        "episodes": int(_open_at(store, schemas.EPISODES, tag).version),
        "events": int(_open_at(store, schemas.EVENTS, tag).version),
    }


#: Event columns the view carries over unchanged.
_COPIED_EVENT_COLUMNS = (
    "event_id",
    "episode_id",
    "event_index",
    "num_events",
    "start_frame",
    "end_frame",
    "caption",
    "cluster_id",
)


#: What a view reads of each table: a new version with these columns unchanged (a stage that
#: rewrote its rows as they were) makes the same view. Events first: they change most often and
#: cost least to compare (the episodes carry every action and state).
_VIEW_INPUTS = {
    schemas.EVENTS: [*_COPIED_EVENT_COLUMNS, "weight", "is_duplicate"],
    schemas.EPISODES: ["episode_id", "instruction", "cameras", "state_dim", "actions", "states"],
}


def same_view_inputs(dataset: str, then: dict[str, int], now: dict[str, int]) -> bool:
    """Whether the tables at versions ``now`` hold exactly what a view read at ``then``.

    Versions move on whenever a stage writes, also when it rewrites rows unchanged (a recaption
    with a new prompt that gives the same captions); Lance keeps the old versions, so the
    columns a view reads are compared, in order. False when an old version is gone.
    """
    store = LanceStore(dataset)
    for table, columns in _VIEW_INPUTS.items():
        if then.get(table) == now.get(table):
            continue
        try:
            # Streamed in small batches: the episodes' actions and states of a large dataset
            # do not fit in memory twice over.
            old, new = (
                store.at(table, v).to_batches(columns=columns, batch_size=_COMPARE_BATCH_ROWS)
                for v in (then[table], now[table])
            )
            if not same_rows(old, new):
                return False
        except (StoreError, KeyError, ValueError, OSError):  # a version cleaned up, a column gone
            return False
    return True


#: Rows per batch when two table versions are compared (an episode row holds all its actions).
_COMPARE_BATCH_ROWS = 64


def same_rows(old: Iterable[pa.RecordBatch], new: Iterable[pa.RecordBatch]) -> bool:
    """Whether two streams of record batches hold the same rows in the same order.

    Batch boundaries may differ between the streams (two versions of a table are stored in
    other fragments); rows are compared slice by slice, one batch of each stream in memory.
    """
    olds, news = ((batch for batch in s if len(batch)) for s in (old, new))  # rows only
    a: pa.RecordBatch | None = None  # the unread rows of each stream's current batch
    b: pa.RecordBatch | None = None
    while True:
        a = a if a is not None and len(a) else next(olds, None)
        b = b if b is not None and len(b) else next(news, None)
        if a is None or b is None:
            return a is None and b is None
        n = min(len(a), len(b))
        if not a.slice(0, n).equals(b.slice(0, n)):
            return False
        a, b = a.slice(n), b.slice(n)


class _ViewWriter:
    """Accumulates a view episode by episode, then writes the small tables and meta.json."""

    def __init__(self, tmp: Path, size: int, cameras: list[str] | None, decode: bool) -> None:
        self.tmp, self.size, self.decode = tmp, size, decode  # decode False: frames come later
        self.cameras = cameras  # chosen by the first episode when None
        self.skipped: list[str] = []
        self.frame_rows = 0
        self.events: list[dict[str, Any]] = []
        self.episode_ids: list[str] = []
        self.instructions: list[str] = []
        self.actions: list[np.ndarray] = []
        self.states: list[np.ndarray] = []

    def add_episode(
        self,
        row: dict[str, Any],
        actions: np.ndarray,
        states: np.ndarray,
        events: list[dict[str, Any]],
    ) -> None:
        by_name = {c["name"]: c for c in row["cameras"]}
        if self.cameras is None:
            self.cameras = list(by_name)
        if any(name not in by_name for name in self.cameras):
            self.skipped.append(row["episode_id"])
            return
        if self.decode:
            self._write_frames([CameraInfo(**by_name[n]) for n in self.cameras], len(actions))
        for k, e in enumerate(events):
            weight = e["weight"] if e["weight"] is not None else 1.0
            self.events.append(
                {
                    **{c: e[c] for c in _COPIED_EVENT_COLUMNS},
                    "next_caption": events[k + 1]["caption"] if k + 1 < len(events) else None,
                    "instruction": row["instruction"],
                    "weight": 0.0 if e["is_duplicate"] else float(weight),
                    "frame_row": self.frame_rows,
                    "episode_row": len(self.episode_ids),
                }
            )
        self.episode_ids.append(row["episode_id"])
        self.instructions.append(row["instruction"])
        self.actions.append(actions)
        self.states.append(states)
        self.frame_rows += len(actions)  # _camera pads or cuts every stream to the actions

    def _write_frames(self, cams: list[CameraInfo], num_frames: int) -> None:
        """One row per frame: every camera's view at it, streamed in chunks of rows."""
        import lance

        width = len(cams) * self.size * self.size * 3
        streams = [_exactly(_frames(c, self.size), num_frames, c.uri) for c in cams]
        rows = zip(*streams, strict=True)  # (N, S, S, 3) per frame
        per_chunk = max(1, FRAME_CHUNK_BYTES // width)
        written = 0
        while chunk := list(itertools.islice(rows, per_chunk)):
            frames = pa.array(
                [b"".join(v.tobytes() for v in row) for row in chunk], pa.binary(width)
            )
            mode = "append" if self.frame_rows or written else "create"
            lance.write_dataset(
                pa.table({"frame": frames}), str(self.tmp / "frames.lance"), mode=mode
            )
            written += len(chunk)

    def finish(self, meta: dict[str, Any]) -> dict[str, Any]:
        import lance

        lance.write_dataset(pa.Table.from_pylist(self.events), str(self.tmp / "events.lance"))
        a_dim, s_dim = self.actions[0].shape[1], self.states[0].shape[1]
        padded = [s if s_dim else np.zeros((len(s), 1), np.float32) for s in self.states]
        lance.write_dataset(
            pa.table(
                {
                    "episode_id": self.episode_ids,
                    "instruction": self.instructions,
                    "actions": pa.concat_arrays([to_vector_series(a, a_dim) for a in self.actions]),
                    "states": pa.concat_arrays(
                        [to_vector_series(s, max(s_dim, 1)) for s in padded]
                    ),
                }
            ),
            str(self.tmp / "episodes.lance"),
        )
        meta.update(
            {
                "episodes": len(self.episode_ids),
                "events": len(self.events),
                "frames": self.frame_rows,
                "cameras": self.cameras,
                "skipped_episodes": self.skipped,
                "action_dim": int(a_dim),
                "state_dim": int(s_dim),
                "stats": norm_stats(np.concatenate(self.actions), np.concatenate(self.states)),
            }
        )
        (self.tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        return meta


def materialize(
    dataset: str,
    tag: str | None = None,
    size: int = 96,
    force: bool = False,
    cameras: list[str] | None = None,
    same_as: dict[str, int] | None = None,
    trim: bool = True,
    exclude_flags: list[str] | None = None,
) -> ViewSummary:
    """Write the training view of ``dataset`` at ``tag`` (None: current versions).

    An existing view is reused while the tables it was built from are at the same versions, or
    at new versions that hold the same rows (:func:`same_view_inputs`); once they have changed
    (recaptioned, re-segmented, new episodes, a moved tag) it is rebuilt, so training never reads
    stale captions or events. ``cameras`` names the camera streams to carry
    (None: every camera of the first episode). ``same_as``: versions the caller has already
    found to hold the same view inputs as the current ones (a resume's check), not compared again.
    ``trim``: leave out each episode's idle start and end (events clipped to its trim range).
    ``exclude_flags``: leave out the episodes with any of these quality flags
    (:mod:`wallwm.pipeline.quality`).
    """
    if not MIN_VIEW_SIZE <= size <= MAX_VIEW_SIZE:
        raise ValueError(
            f"--size {size}: the view's frame side must be {MIN_VIEW_SIZE} to {MAX_VIEW_SIZE} px"
        )
    t0 = time.perf_counter()
    store = LanceStore(dataset)
    out = view_path(dataset, tag, size, cameras, trim, exclude_flags)
    if out.exists() and not force:  # views are immutable: reuse while their sources are
        current = _current_view(out, dataset, tag, same_as)
        if current is not None:
            return current
    episodes, ep_version = _read(store, schemas.EPISODES, tag)
    events, ev_version = _read(store, schemas.EVENTS, tag, _VIEW_INPUTS[schemas.EVENTS])
    excluded = _flagged(store, tag, exclude_flags or [])
    by_episode: dict[str, list[dict[str, Any]]] = {}
    for e in events.to_pylist():
        if e["episode_id"] not in excluded:
            by_episode.setdefault(e["episode_id"], []).append(e)
    tmp = out.with_name(out.name + ".partial")
    # Only the events moved on (the curation loop): the episodes and so their frames may be
    # the old view's -- a first pass without decoding tells, then the frames are linked over.
    old = None if force else _old_frames(out, ep_version)
    writer = _ViewWriter(_fresh(tmp), size, cameras, decode=old is None)
    writer = _fill(writer, episodes, by_episode, trim)
    reused = old is not None and old == (writer.episode_ids, writer.frame_rows, writer.cameras)
    if reused:
        shutil.copytree(out / "frames.lance", tmp / "frames.lance", copy_function=os.link)
    elif old is not None:  # other episodes (or cameras): decode after all
        decoding = _ViewWriter(_fresh(tmp), size, cameras, decode=True)
        writer = _fill(decoding, episodes, by_episode, trim)
    if not writer.events:
        shutil.rmtree(tmp)
        wanted = f" with cameras {cameras}" if cameras else " with video"
        raise ValueError(
            f"{dataset}: no segmented episodes{wanted} at {tag or 'the current version'}"
        )
    meta = writer.finish(
        {
            "dataset": dataset if is_remote(dataset) else str(Path(dataset).resolve()),
            "tag": tag,
            "size": size,
            "versions": {"episodes": ep_version, "events": ev_version},
            "frames_reused": reused,
            "trim": trim,
            "exclude_flags": sorted(exclude_flags or []),
            "excluded_episodes": sorted(excluded),
        }
    )
    _publish(tmp, out)
    return ViewSummary(
        str(out),
        meta["episodes"],
        meta["events"],
        meta["frames"],
        time.perf_counter() - t0,
        reused,
    )


def _current_view(
    out: Path, dataset: str, tag: str | None, same_as: dict[str, int] | None
) -> ViewSummary | None:
    """The existing view at ``out`` if its sources still hold the same inputs, else None."""
    meta = json.loads((out / "meta.json").read_text())
    now = source_versions(dataset, tag)
    if meta["versions"] in (now, same_as) or same_view_inputs(dataset, meta["versions"], now):
        if meta["versions"] != now:  # rewritten unchanged: the view is current at ``now``
            fresh = out / "meta.json.tmp"
            fresh.write_text(json.dumps({**meta, "versions": now}, indent=1))
            fresh.replace(out / "meta.json")
        return ViewSummary(str(out), meta["episodes"], meta["events"], meta["frames"], 0.0)
    return None


def _publish(tmp: Path, out: Path) -> None:
    """Move a finished view into place: whole or not at all, the old one gone only after."""
    stale = out.with_name(out.name + ".stale")
    shutil.rmtree(stale, ignore_errors=True)
    if out.exists():
        out.rename(stale)
    tmp.rename(out)
    shutil.rmtree(stale, ignore_errors=True)


def _flagged(store: LanceStore, tag: str | None, flags: list[str]) -> set[str]:
    """Ids of the episodes with any of ``flags`` (unknown flag names are a ``ValueError``)."""
    if not flags:
        return set()
    from wallwm.pipeline.quality import FLAGS, dataset_quality, unknown_flags

    unknown = unknown_flags(flags)
    if unknown:
        raise ValueError(f"--exclude-flag: no flag {', '.join(unknown)} (flags: {list(FLAGS)})")
    wanted = set(flags)
    return {q.episode_id for q in dataset_quality(store, tag) if wanted & set(q.flags)}


def _fresh(path: Path) -> Path:
    """``path`` as a new empty directory."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _fill(
    writer: _ViewWriter,
    episodes: pa.Table,
    by_episode: dict[str, list[dict[str, Any]]],
    trim: bool,
) -> _ViewWriter:
    """Add every segmented episode with video to ``writer``, in the episodes table's order.

    With ``trim``, each episode's events are clipped to its active frames.
    """
    for i in range(episodes.num_rows):
        row = episodes.slice(i, 1).drop_columns(["actions", "states"]).to_pylist()[0]
        evs = sorted(by_episode.get(row["episode_id"], []), key=lambda e: e["event_index"])
        if not evs or not row["cameras"]:
            continue  # not segmented at this version, or no camera: nothing to train on
        actions, stored = episode_arrays(episodes, i)
        states = stored if stored is not None else np.zeros((len(actions), 0), np.float32)
        if trim:
            evs = clip_events(evs, *episode_trim(row, actions, states))
        writer.add_episode(row, actions, states, evs)
    return writer


def _old_frames(out: Path, ep_version: int) -> tuple[list[str], int, list[str]] | None:
    """The episodes, frame count and cameras of the old view at ``out``, or None.

    None unless it was built from the same episodes-table version: its frames are then exactly
    these episodes' frames.
    """
    import lance

    try:
        meta = json.loads((out / "meta.json").read_text())
        if meta["versions"]["episodes"] != ep_version or not (out / "frames.lance").is_dir():
            return None
        ids = lance.dataset(str(out / "episodes.lance")).to_table(columns=["episode_id"])
    except (OSError, ValueError, KeyError):
        return None  # no view, or one from an older layout: build it whole
    return ids.column(0).to_pylist(), int(meta["frames"]), list(meta["cameras"])


def norm_stats(actions_NA: np.ndarray, states_NS: np.ndarray) -> dict[str, dict[str, list[float]]]:
    """Mean/std/min/max per dimension (stored with the view and every checkpoint)."""

    def one(x: np.ndarray) -> dict[str, list[float]]:
        if x.size == 0:
            return {"mean": [], "std": [], "min": [], "max": []}
        return {
            "mean": x.mean(0).tolist(),
            "std": np.maximum(x.std(0), 1e-6).tolist(),
            "min": x.min(0).tolist(),
            "max": x.max(0).tolist(),
        }

    return {"actions": one(actions_NA), "states": one(states_NS)}
