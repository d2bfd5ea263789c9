"""Episode quality flags: which episodes a data engineer should look at before training on them.

Each flag is a named, explained verdict computed from what the episodes table already stores
(signals, timestamps, probed cameras, the source's success mark), so it is always consistent with
the current data, and never deletes anything -- ``materialize --exclude-flag NAME`` leaves the
flagged episodes out of a training view, ``wallwm quality`` lists them.

Per episode:

- ``frame_drops``: timestamps with gaps of more than 1.5 frame periods (dropped frames; the
  models in time cut them on the time axis, ``wallwm.pipeline.segmentation.gaps``);
- ``repeated_rows``: rows that repeat the row before in every command and state, for one or two
  frames while the commands move on either side -- samples a late recorder missed and stored
  again (the timestamps may not show it; the cut reads them as missed samples,
  ``wallwm.pipeline.segmentation.held``); a stream held by design is not flagged;
- ``glitches``: commands off their neighbours for one frame only -- a device or packet glitch
  (the models in time read them between their neighbours,
  ``wallwm.pipeline.segmentation.glitches``);
- ``camera_desync``: a camera stream holds a different number of frames than the signals;
- ``still``: nothing ever leaves its start pose (the idle-trim rule finds no motion at all);
- ``failed``: the source marks the attempt unsuccessful.

Against the rest of the dataset (robust z-score of ``OUTLIER_Z`` or more over median and MAD,
from ``MIN_EPISODES_FOR_OUTLIERS`` episodes on -- an outlier needs a population):

- ``jerky``: mean action jerk (third difference, each dimension scaled by its range over the
  dataset) far above the others';
- ``gripper_chatter``: gripper reversals (open/close turns, each more than 10 % of its range)
  per second far above the others', or reversals closer than 0.2 s anywhere (no gripper acts
  that fast);
- ``near_duplicate``: actions equal to another episode's up to 0.1 % of each dimension's range
  after resampling both to the same length (a recording saved twice, a replay).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt

from wallwm.pipeline.segmentation.idle import is_still
from wallwm.pipeline.tables.store import TableStore

FloatArray = npt.NDArray[np.floating]

FLAGS = {
    "frame_drops": "timestamps with gaps over 1.5 frame periods",
    "repeated_rows": "rows stored twice: samples a late recorder missed",
    "glitches": "commands off their neighbours for one frame: device or packet glitches",
    "camera_desync": "a camera holds a different number of frames than the signals",
    "still": "nothing ever moves",
    "failed": "the source marks the attempt unsuccessful",
    "jerky": "action jerk an outlier in the dataset",
    "gripper_chatter": "the gripper reverses faster than a gripper acts, or far more often",
    "near_duplicate": "actions equal to another episode's",
}
OUTLIER_Z = 3.5
MIN_EPISODES_FOR_OUTLIERS = 8
#: Reversals closer than this are chatter whatever the dataset (no gripper acts that fast).
CHATTER_GAP_S = 0.2
DUPLICATE_TOLERANCE = 1e-3
_SIGNATURE_STEPS = 32


@dataclasses.dataclass
class EpisodeSignals:
    """What the flags are computed from, for one episode."""

    episode_id: str
    episode_key: str
    fps: float
    actions_TA: FloatArray
    states_TS: FloatArray | None
    gripper_TG: FloatArray | None
    timestamps_s: FloatArray | None
    camera_frames: dict[str, int]
    success: bool | None


@dataclasses.dataclass
class EpisodeQuality:
    """One episode's flags and the numbers behind them."""

    episode_id: str
    episode_key: str
    flags: list[str]
    details: dict[str, Any]


def _gaps(ts: FloatArray | None, fps: float) -> int:
    from wallwm.pipeline.segmentation.gaps import GAP_PERIODS  # the cut reads the same gaps

    if ts is None or len(ts) < 2:
        return 0
    return int((np.diff(ts) > GAP_PERIODS / fps).sum())


def _reversals(g_T: FloatArray, fps: float) -> tuple[float, float]:
    """Gripper reversals per second, and the shortest time between two (inf if < 2)."""
    span = float(np.ptp(g_T))
    if span <= 0 or len(g_T) < 3:
        return 0.0, float("inf")
    # turning points of the gripper signal, kept only where it travelled > 10 % of its range
    step = 0.1 * span
    direction, anchor, turns = 0, float(g_T[0]), []
    for t, v in enumerate(g_T[1:], start=1):
        move = float(v) - anchor
        if abs(move) < step:
            continue
        d = 1 if move > 0 else -1
        if direction and d != direction:
            turns.append(t)
        direction, anchor = d, float(v)
    gaps = np.diff(turns) / fps if len(turns) > 1 else np.array([np.inf])
    return len(turns) / (len(g_T) / fps), float(gaps.min())


def _repeated_rows(e: EpisodeSignals) -> int:
    """Rows a late recorder stored twice (none where the whole stream is held by design)."""
    from wallwm.pipeline.segmentation.config import Signals
    from wallwm.pipeline.segmentation.held import command_samples, repeated_rows

    s = Signals(e.actions_TA, e.fps, e.states_TS)
    return 0 if command_samples(s) is not None else len(repeated_rows(s))


def _glitches(e: EpisodeSignals) -> int:
    """Commands off their neighbours for one frame, as the cut reads them before mending.

    Rows stored twice, wrapped angles and held streams are read as such first, not counted.
    """
    from wallwm.pipeline.segmentation.config import SegmentConfig, Signals
    from wallwm.pipeline.segmentation.forms import as_read
    from wallwm.pipeline.segmentation.glitches import glitch_count

    s = Signals(e.actions_TA, e.fps, e.states_TS, timestamps_s=e.timestamps_s)
    return glitch_count(as_read(s, SegmentConfig(mend_glitches=False)).signals)


def _jerk(a_TA: FloatArray, scale_A: FloatArray) -> float:
    if len(a_TA) < 4:
        return 0.0
    return float(np.abs(np.diff(a_TA / scale_A, n=3, axis=0)).mean())


def _signature(a_TA: FloatArray, scale_A: FloatArray) -> FloatArray:
    src = np.linspace(0, 1, len(a_TA))
    dst = np.linspace(0, 1, _SIGNATURE_STEPS)
    cols = [np.interp(dst, src, a_TA[:, j] / scale_A[j]) for j in range(a_TA.shape[1])]
    return np.asarray(np.stack(cols, axis=1).reshape(-1), np.float64)


def _robust_outliers(values: FloatArray) -> npt.NDArray[np.bool_]:
    if len(values) < MIN_EPISODES_FOR_OUTLIERS:
        return np.zeros(len(values), bool)
    median = float(np.median(values))
    mad = 1.4826 * float(np.median(np.abs(values - median)))
    if mad <= 0:  # most episodes share one value (e.g. no gripper reversal at all): no scale
        return np.zeros(len(values), bool)
    return np.asarray((values - median) / mad >= OUTLIER_Z)


def _duplicates(signatures: list[FloatArray]) -> dict[int, int]:
    """{episode: an earlier episode it duplicates} over signatures of equal length."""
    out: dict[int, int] = {}
    by_len: dict[int, list[int]] = {}
    for i, s in enumerate(signatures):
        by_len.setdefault(len(s), []).append(i)
    for idx in by_len.values():
        x = np.stack([signatures[i] for i in idx])
        for k, i in enumerate(idx[1:], start=1):
            dist = np.abs(x[:k] - x[k]).max(axis=1)
            j = int(np.argmin(dist))
            if dist[j] <= DUPLICATE_TOLERANCE:
                out[i] = idx[j]
    return out


def _own_flags(e: EpisodeSignals, scale_A: FloatArray) -> tuple[EpisodeQuality, float, float]:
    """An episode's flags that need no other episode, and its jerk and reversal rate."""
    t_len = len(e.actions_TA)
    flags: list[str] = []
    details: dict[str, Any] = {}
    gaps = _gaps(e.timestamps_s, e.fps)
    if gaps:
        flags.append("frame_drops")
        details["timestamp_gaps"] = gaps
    repeated = _repeated_rows(e)
    if repeated:
        flags.append("repeated_rows")
        details["repeated_rows"] = repeated
    glitches = _glitches(e)
    if glitches:
        flags.append("glitches")
        details["glitches"] = glitches
    desync = {n: f for n, f in e.camera_frames.items() if f != t_len}
    if desync:
        flags.append("camera_desync")
        details["camera_frames"] = {**desync, "signals": t_len}
    if is_still(e.actions_TA, e.states_TS, e.fps):
        flags.append("still")
    if e.success is False:
        flags.append("failed")
    jerk = _jerk(e.actions_TA, scale_A)
    g = e.gripper_TG
    rate, closest = _reversals(g[:, 0], e.fps) if g is not None and g.size else (0.0, np.inf)
    details.update(jerk=round(jerk, 6), gripper_reversals_per_s=round(rate, 3))
    if closest < CHATTER_GAP_S:
        flags.append("gripper_chatter")
        details["closest_reversals_s"] = round(closest, 3)
    return EpisodeQuality(e.episode_id, e.episode_key, flags, details), jerk, rate


def assess(episodes: list[EpisodeSignals]) -> list[EpisodeQuality]:
    """Every episode's flags (per episode, and against the others of the list)."""
    widths = {e.actions_TA.shape[1] for e in episodes}
    one_layout = len(widths) == 1
    pooled = np.concatenate([e.actions_TA for e in episodes]) if one_layout and episodes else None
    results, jerks, rates = [], [], []
    for e in episodes:
        source = pooled if pooled is not None else e.actions_TA
        quality, jerk, rate = _own_flags(e, np.maximum(np.ptp(source, axis=0), 1e-9))
        results.append(quality)
        jerks.append(jerk)
        rates.append(rate)
    jerky_E, chatty_E = _robust_outliers(np.asarray(jerks)), _robust_outliers(np.asarray(rates))
    for r, jerky, chatty in zip(results, jerky_E, chatty_E, strict=True):
        if jerky:
            r.flags.append("jerky")
        if chatty and "gripper_chatter" not in r.flags:
            r.flags.append("gripper_chatter")
    if pooled is not None:
        scale = np.maximum(np.ptp(pooled, axis=0), 1e-9)
        signatures = [_signature(e.actions_TA, scale) for e in episodes]
        for i, j in _duplicates(signatures).items():
            results[i].flags.append("near_duplicate")
            results[i].details["duplicate_of"] = episodes[j].episode_key
    return results


def unknown_flags(names: list[str]) -> list[str]:
    """Names among ``names`` that are not flags, each with a did-you-mean where one is close."""
    import difflib

    out = []
    for name in names:
        if name not in FLAGS:
            close = difflib.get_close_matches(name, list(FLAGS), n=1)
            out.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return out


def dataset_quality(store: TableStore, tag: str | None = None) -> list[EpisodeQuality]:
    """Flags of every episode of the dataset (at ``tag``; one scan of the episodes table)."""
    from wallwm.pipeline.tables import schemas
    from wallwm.pipeline.tables.arrays import episode_arrays

    if not store.exists(schemas.EPISODES):
        return []
    table = store.read(schemas.EPISODES, version=tag)
    has_success = "success" in table.column_names
    episodes = []
    for i in range(table.num_rows):
        row = {
            c: table.column(c)[i].as_py()
            for c in ("episode_id", "episode_key", "fps", "state_dim", "gripper", "timestamps_s",
                      "cameras")
        }  # fmt: skip
        actions, states = episode_arrays(table, i)
        episodes.append(
            EpisodeSignals(
                episode_id=row["episode_id"],
                episode_key=row["episode_key"],
                fps=float(row["fps"]),
                actions_TA=actions,
                states_TS=states,
                gripper_TG=None if row["gripper"] is None else np.asarray(row["gripper"]),
                timestamps_s=(
                    None if row["timestamps_s"] is None else np.asarray(row["timestamps_s"])
                ),
                camera_frames={c["name"]: int(c["num_frames"]) for c in row["cameras"]},
                success=table.column("success")[i].as_py() if has_success else None,
            )
        )
    return assess(episodes)
