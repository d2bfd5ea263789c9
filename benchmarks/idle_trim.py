"""Idle trimming on three robots: false trims on real starts, and found idle margins.

For every episode of the recordings of ``benchmarks/segmentation_robots.py`` (MetaWorld Sawyer,
the bimanual ALOHA, the Kinova Jaco; clean, 0.3 action noise, hesitations):

- *untouched*: the recording as it is. Its experts start moving at once and stop at success, so
  the right trim is (almost) none: frames trimmed here are false trims;
- *padded*: ``--idle-start`` seconds of the first pose before the episode and ``--idle-end``
  seconds of the last pose after it, with sensor noise on every state frame (0.2 % of the
  dimension's range; actions repeat the held command). The right trim removes the padding and keeps
  ``pad_s`` of it; the error is how far the found range is from that.

Usage: ``python benchmarks/idle_trim.py [--root bench-data/robots] [--json out.json]``
(record the recordings first with ``python benchmarks/segmentation_robots.py``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from wallwm.pipeline.ingest import load_episode
from wallwm.pipeline.segmentation.idle import IdleConfig, idle_trim
from wallwm.pipeline.sources.registry import open_source

#: Sensor noise added to every state (std, share of the dimension's range): encoder-level jitter.
STATE_NOISE = 0.002


def padded(
    x_TD: np.ndarray, before: int, after: int, noise: bool, rng: np.random.Generator
) -> np.ndarray:
    """``x_TD`` held at its first row for ``before`` frames and its last for ``after``; with
    ``noise``, sensor noise on every frame (waiting or moving, as a real sensor has)."""
    out = np.concatenate(
        [np.repeat(x_TD[:1], before, axis=0), x_TD, np.repeat(x_TD[-1:], after, axis=0)]
    )
    if noise:
        out = out + rng.normal(0, 1, out.shape) * STATE_NOISE * np.ptp(x_TD, axis=0)
    return out


def measure(
    folder: Path, cfg: IdleConfig, idle_start_s: float, idle_end_s: float
) -> dict[str, float]:
    source = open_source(folder)
    refs, _ = source.list_episodes()
    rng = np.random.default_rng(0)
    false_frames, false_eps, errors_start, errors_end, frames = 0, 0, [], [], 0
    for ref in refs:
        rec = load_episode(source, ref, frame_tolerance=2)
        a, s, fps = rec.actions_TA, rec.states_TS, rec.fps
        t_len = len(a)
        frames += t_len
        start, end = idle_trim(a, s, fps, cfg)
        false_frames += start + (t_len - end)
        false_eps += (start, end) != (0, t_len)
        before, after = int(idle_start_s * fps), int(idle_end_s * fps)
        pa_ = padded(a, before, after, noise=False, rng=rng)
        ps = None if s is None else padded(s, before, after, noise=True, rng=rng)
        start, end = idle_trim(pa_, ps, fps, cfg)
        pad = round(cfg.pad_s * fps)
        errors_start.append(abs(start - (before - pad)) / fps)
        errors_end.append(abs(end - (before + t_len + pad)) / fps)
    return {
        "episodes": len(refs),
        "false_trim_episodes": false_eps,
        "false_trim_share": false_frames / max(frames, 1),
        "start_error_s": float(np.mean(errors_start)),
        "start_error_p90_s": float(np.percentile(errors_start, 90)),
        "end_error_s": float(np.mean(errors_end)),
        "end_error_p90_s": float(np.percentile(errors_end, 90)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="bench-data/robots")
    parser.add_argument("--idle-start", type=float, default=1.5)
    parser.add_argument("--idle-end", type=float, default=2.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    cfg = IdleConfig()
    folders = sorted(p for p in Path(args.root).iterdir() if p.is_dir())
    rows: list[dict[str, Any]] = [
        {"recording": f.name, **measure(f, cfg, args.idle_start, args.idle_end)} for f in folders
    ]
    table = Table(title=f"idle trimming ({cfg.model_dump()})")
    for col in ("recording", "episodes", "false trims", "frames falsely cut", "start err s (p90)",
                "end err s (p90)"):  # fmt: skip
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["recording"], str(r["episodes"]), str(r["false_trim_episodes"]),
            f"{r['false_trim_share']:.1%}",
            f"{r['start_error_s']:.2f} ({r['start_error_p90_s']:.2f})",
            f"{r['end_error_s']:.2f} ({r['end_error_p90_s']:.2f})",
        )  # fmt: skip
    Console().print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
