"""Looking at segmentation results: boundary-quality evaluation, event listings, pictures."""

from __future__ import annotations

import json
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from wallwm.pipeline.segmentation import Segmentation, SegmentConfig, Signals, segment
from wallwm.pipeline.segmentation.evaluate import (
    EMPTY,
    BoundaryScore,
    matched_truths,
    scored_frames,
)
from wallwm.pipeline.segmentation.forms import as_read
from wallwm.pipeline.segmentation.segment import hesitations_taken_out
from wallwm.pipeline.segmentation.selection import pairing_text
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import TableStore, sql_quote


def save_figure(fig: Any, out: str | Path, dpi: int = 100, **kwargs: Any) -> Path:
    """Write a matplotlib figure to ``out`` (creating its folder) and release it."""
    import matplotlib.pyplot as plt

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, **kwargs)
    plt.close(fig)
    return path


def evaluate_segmentation(
    store: TableStore, tolerance_frames: int = 3, until_success: bool = False
) -> dict[str, Any]:
    """Boundary precision/recall/F1 and mean offset of the stored events.

    Per task (an episode's instruction), per robot (its recorded robot, else its source) and
    overall; and the recall per ground-truth event name (the event a boundary starts): which
    kinds of boundary the cut misses. Only episodes with ground-truth events count; episode
    start and end are not boundaries. ``until_success``: an episode whose source marks the
    frame it succeeded at (``success_frame``) is scored before that frame only -- its end for
    the score -- as benchmarks whose ground truth stops at the task's success score it; the
    others whole.
    """
    columns = ["episode_id", "instruction", "num_frames", "gt_events", "robot", "source_uri"]
    schema = store.schema(schemas.EPISODES)  # a table older than the column lacks it
    has_success = schema is not None and "success_frame" in schema.names
    episodes = store.read(
        schemas.EPISODES, columns=[*columns, *(["success_frame"] if has_success else [])]
    ).to_pylist()
    starts: dict[str, list[int]] = defaultdict(list)
    if store.exists(schemas.EVENTS):
        for r in store.read(schemas.EVENTS, columns=["episode_id", "start_frame"]).to_pylist():
            starts[r["episode_id"]].append(r["start_frame"])
    groups: dict[str, dict[str, BoundaryScore]] = {"task": {}, "robot": {}}
    counted: dict[str, dict[str, int]] = {"task": defaultdict(int), "robot": defaultdict(int)}
    by_event: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # name: [found, boundaries]
    skipped = shortened = 0
    for ep in episodes:
        if ep["gt_events"] is None or ep["episode_id"] not in starts:
            skipped += 1
            continue
        end = scored_frames(ep["num_frames"], ep.get("success_frame"), until_success)
        shortened += until_success and ep.get("success_frame") is not None
        truth = [e["start_frame"] for e in ep["gt_events"]]
        score, found = matched_truths(starts[ep["episode_id"]], truth, end, tolerance_frames)
        for e in ep["gt_events"]:
            if 0 < e["start_frame"] < end:  # a boundary, as the score counts them
                counts = by_event[e["name"] or "-"]
                counts[0] += e["start_frame"] in found
                counts[1] += 1
        keys = {"task": ep["instruction"] or "-", "robot": ep["robot"] or ep["source_uri"]}
        for by, key in keys.items():
            groups[by][key] = groups[by].get(key, EMPTY) + score
            counted[by][key] += 1
    overall = sum(groups["task"].values(), EMPTY)

    def table(by: str) -> dict[str, dict[str, Any]]:
        return {
            k: {**s.as_dict(), "episodes": counted[by][k]} for k, s in sorted(groups[by].items())
        }

    return {
        "tolerance_frames": tolerance_frames,
        "until_success": until_success,
        # the episodes scored before their success frame (``until_success``)
        "episodes_until_success": shortened,
        "episodes": sum(counted["task"].values()),
        "episodes_without_ground_truth_or_events": skipped,
        # nothing scored is no score: null, not the perfect score of an empty sum
        "overall": {
            **overall.as_dict(),
            **({} if counted["task"] else dict.fromkeys(("precision", "recall", "f1"))),
        },
        "per_task": table("task"),
        "per_robot": table("robot"),
        "per_event": {
            name: {"boundaries": n, "found": k, "recall": k / n}
            for name, (k, n) in sorted(by_event.items())
        },
    }


def list_events(store: TableStore, episode_id: str | None = None) -> list[dict[str, Any]]:
    """Events (without keyframe bytes), optionally of one episode, in episode/time order."""
    columns = [f.name for f in schemas.events_schema() if f.name != "keyframes"]
    where = None if episode_id is None else f"episode_id = {sql_quote(episode_id)}"
    rows = store.read(schemas.EVENTS, columns=columns, where=where).to_pylist()
    return sorted(rows, key=lambda r: (r["episode_id"], r["event_index"]))


def get_event(store: TableStore, event_id: str) -> dict[str, Any]:
    """One event with its keyframes; KeyError names the id if it does not exist."""
    rows = store.read(schemas.EVENTS, where=f"event_id = {sql_quote(event_id)}").to_pylist()
    if not rows:
        raise KeyError(f"no event {event_id!r} in {store.root}")
    event: dict[str, Any] = rows[0]
    return event


def event_grid(event: dict[str, Any], out: str | Path) -> Path:
    """Write a PNG grid of an event's keyframes (cameras x first/middle/last) with its caption."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cams = sorted({k["camera"] for k in event["keyframes"]})
    positions = ["first", "middle", "last"]
    fig, axes = plt.subplots(
        max(1, len(cams)), 3, figsize=(7.5, 2.6 * max(1, len(cams)) + 0.6), squeeze=False
    )
    frames = {(k["camera"], k["position"]): k for k in event["keyframes"]}
    for r, cam in enumerate(cams or [""]):
        for c, pos in enumerate(positions):
            ax = axes[r][c]
            ax.axis("off")
            k = frames.get((cam, pos))
            if k is None:
                ax.text(0.5, 0.5, "no frame", ha="center", va="center")
                continue
            img = cv2.imdecode(np.frombuffer(k["jpeg"], np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
            ax.imshow(img)
            ax.set_title(f"{cam} {pos} (frame {k['frame_index']})", fontsize=8)
    caption = event.get("caption") or "(no caption yet)"
    fig.suptitle(
        f"event {event['event_index'] + 1}/{event['num_events']}  frames "
        f"[{event['start_frame']}, {event['end_frame']})  {event['duration_s']:.2f}s  "
        f"confidence {event['confidence']:.2f}\n{caption}",
        fontsize=9,
    )
    fig.tight_layout()
    return save_figure(fig, out, dpi=110)


def _segment_config_of(store: TableStore, run_id: str | None) -> tuple[SegmentConfig, str]:
    """The segmenter config a run used (from lineage), else the defaults.

    Also says how its within-event model was chosen (for the plot's title).
    """
    from wallwm.pipeline.segmentation.stage import run_segment_config

    if run_id and store.exists(schemas.RUNS):
        rows = store.read(
            schemas.RUNS, columns=["config_json"], where=f"run_id = {sql_quote(run_id)}"
        ).to_pylist()
        if rows:
            config = json.loads(rows[0]["config_json"])
            choice = config.get("details", {}).get("choice") or {}
            how = {"data": "chosen from the data", "recorded": "the dataset's recorded choice"}
            basis = how.get(choice.get("basis", ""), "as configured")
            return run_segment_config(config["segment"]), basis
    return SegmentConfig(), "defaults"


def _dim_name(names: list[str] | None, j: int) -> str:
    """Dim ``j``'s name where the source named it, else its index."""
    return str(names[j]) if names and j < len(names) else str(j)


def _plot_legend(
    signals: Signals, cfg: SegmentConfig, basis: str, events: int, hesitations: bool
) -> str:
    """The episode plot's second title line: what the colours are and how the cut read it."""
    model = {
        "state_feedback": "actions affine in the state",
        "time": "actions linear in time",
        "smooth": "actions a polynomial in time plus state feedback",
    }
    paired = pairing_text(cfg.action_model, cfg.pairing())
    form = ", cut on the commands' rates" if cfg.action_form == "rates" else ""
    read = as_read(signals, cfg)
    if read.grid is not None:  # frames dropped: the models in time read the time axis
        form += f", {read.grid.dropped} frames dropped: read on the time axis"
    if read.held is not None:  # a command slower than the frames: cut at its own samples
        form += f", commands held {read.held.hold:.3g} frames: cut on their samples"
    if cfg.left_out():
        form += ", action dims " + " ".join(map(str, cfg.left_out())) + " left out (noise alone)"
    return (
        f"red: chosen boundaries ({events} event{'s' if events != 1 else ''}), "
        f"green dashed: ground truth; within an event: "
        f"{model.get(cfg.action_model, cfg.action_model)}{paired}{form}, noise by "
        f"{cfg.noise_model} ({basis}); grey: idle margins trimmed"
        + ("; orange: hesitations taken out" if hesitations else "")
    )


def plot_episode(store: TableStore, episode_id: str, out: str | Path) -> Path:
    """PNG timeline of an episode: signals, cue traces, chosen boundaries and ground truth.

    The boundaries drawn are the stored events; the cue traces are recomputed with the config of
    the run that produced those events (read from lineage), so the picture explains the cuts.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wallwm.pipeline.segmentation.stage import episode_signals, find_episode

    row, actions, states = find_episode(store.root, episode_id)
    episode_id = str(row["episode_id"])  # the argument may have been its key
    events = list_events(store, episode_id)
    cfg, basis = _segment_config_of(store, events[0]["segment_run_id"] if events else None)
    signals = episode_signals(row, actions, states, None)
    seg: Segmentation = segment(signals, cfg)
    gt = store.read(
        schemas.EPISODES,
        columns=["gt_events", "instruction"],
        where=f"episode_id = {sql_quote(episode_id)}",
    ).to_pylist()[0]
    t = np.arange(len(actions))
    fig, axes = plt.subplots(3, 1, figsize=(11, 7.5), sharex=True)
    dot = "o" if len(t) < 3 else None  # a line through one or two frames is invisible
    for j in range(actions.shape[1]):
        axes[0].plot(t, actions[:, j], lw=0.9, marker=dot,
                     label=f"action {_dim_name(row.get('action_names'), j)}")  # fmt: skip
    axes[0].set_ylabel("actions")
    if row.get("gripper"):
        axes[1].plot(t, np.asarray(row["gripper"]), color="k", lw=1.2, label="gripper")
    if states is not None:
        for j in range(min(states.shape[1], 6)):
            label = f"state {_dim_name(row.get('state_names'), j)}"
            axes[1].plot(t, states[:, j], lw=0.7, alpha=0.7, marker=dot, label=label)
    axes[1].set_ylabel("states / gripper")
    axes[2].plot(t, seg.score_T, color="k", lw=1.5, label="boundary strength")
    for name, trace in seg.cues_CT.items():
        axes[2].plot(t, trace, lw=0.8, alpha=0.8, label=name)
    axes[2].set_ylabel("cues")
    axes[2].set_xlabel("frame")
    from wallwm.pipeline.segmentation.idle import episode_trim

    trim_start, trim_end = episode_trim(row, actions, states)
    hesitations = hesitations_taken_out(signals, cfg)  # the stops the cut was made without
    for ax in axes:
        if trim_start > 0:  # the idle margins materialize/export leave out (grey)
            ax.axvspan(0, trim_start, color="0.85", zorder=0)
        if trim_end < len(actions):
            ax.axvspan(trim_end, len(actions), color="0.85", zorder=0)
        for a, b in hesitations:
            ax.axvspan(a, b, color="tab:orange", alpha=0.2, zorder=0)
        for e in events[1:]:
            ax.axvline(e["start_frame"], color="tab:red", lw=1.2)
        for g in (gt["gt_events"] or [])[1:]:
            ax.axvline(g["start_frame"], color="tab:green", lw=1.2, ls="--")
        ax.legend(fontsize=6, loc="upper right", ncol=3)
    legend = _plot_legend(signals, cfg, basis, len(events), bool(hesitations))
    # Wrapped to the figure's width: a 16-dim pairing alone is longer than one line.
    title = f"{row['episode_key']}: {gt['instruction']}"
    axes[0].set_title(textwrap.fill(title, 140) + "\n" + textwrap.fill(legend, 150), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out, dpi=100)
