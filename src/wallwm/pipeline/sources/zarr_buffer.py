"""Zarr replay buffers, the layout of Diffusion Policy and UMI (via zarr).

One store holds every episode, its rows concatenated::

    SOURCE.zarr/  (a directory, or SOURCE.zarr.zip)
        data/action              (N, A)        required
        data/<low-dim>           (N,) or (N, D) -> concatenated (sorted by name) into the state
        data/<image>             (N, H, W, 3)   uint8 (any layout ``rgb_frame`` reads) -> a camera
        meta/episode_ends        (E,)           each episode's end row, cumulative

An image array is one of three or more dims; everything else of N rows and at most two dims is
state. ``robot<k>_gripper_width`` (UMI) is arm k's gripper opening. The buffer stores no
instruction and usually no fps: they come from root attributes (``instruction``/``task``/``lang``,
``fps``/``control_freq``) or the ingest options (``--instruction``, ``--fps``); without an fps
every episode fails naming the option (replay buffers are recorded at 10 Hz for PushT and 60 Hz
for UMI: there is no default to guess).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from wallwm.pipeline.image_frames import ZARR_SUFFIXES, open_zarr, read_zarr, zarr_frames_uri
from wallwm.pipeline.sources.base import (
    INSTRUCTION_ATTRS,
    BadSignalError,
    CameraSpec,
    EpisodeError,
    EpisodeRecord,
    EpisodeRef,
    FloatArray,
    MissingFieldError,
    OptionedSource,
    attr_text,
    metadata_fps,
    orient_gripper,
)
from wallwm.pipeline.tables.arrays import float32_values

FORMAT = "zarr"
_GRIPPER = re.compile(r"robot\d+_gripper_width")


def looks_like(root: Path) -> bool:
    """Whether ``root`` is a Zarr replay buffer (``*.zarr`` directory or ``*.zarr.zip``)."""
    if root.is_file():
        return root.name.endswith(".zarr.zip")
    return root.name.endswith(".zarr") and (root / "meta" / "episode_ends").exists()


class ZarrSource(OptionedSource):
    """Reader of a Zarr replay buffer (Diffusion Policy / UMI).

    ``root``: the ``.zarr`` directory or ``.zarr.zip`` file.
    """

    format = FORMAT

    def _ends(self, group: Any) -> list[int]:
        """Each episode's end row; refused in one line unless cumulative and within the data."""
        ends = read_zarr(group, "meta/episode_ends", self.uri)
        rows = int(group["data/action"].shape[0]) if "data/action" in group else None
        if rows is None:
            raise MissingFieldError(self.uri, "data/action: no such array in the Zarr store")
        if ends.ndim != 1 or ends.dtype.kind not in "iu":
            raise BadSignalError(
                self.uri, f"meta/episode_ends must be integers (E,), got {ends.dtype} "
                f"{ends.shape}", "BadMetadata",
            )  # fmt: skip
        out = [int(e) for e in ends]
        bad = next(
            (i for i, (a, b) in enumerate(zip([0, *out], out, strict=False)) if b <= a), None
        )
        if bad is not None or (out and out[-1] > rows):
            where = f"episode {bad}" if bad is not None else f"the last end {out[-1]}"
            raise BadSignalError(
                self.uri, f"meta/episode_ends must rise and stay within the {rows} rows of "
                f"data/action ({where} does not)", "BadMetadata",
            )  # fmt: skip
        return out

    def list_episodes(self) -> tuple[list[EpisodeRef], list[EpisodeError]]:
        """One ref per episode of ``meta/episode_ends``."""
        group = open_zarr(self.uri)
        ends = self._ends(group)
        arrays = sorted(f"data/{k}" for k in group["data"].array_keys())
        # the store first (what a problem's line names), then what its fingerprint watches
        files: tuple[str, ...] = (str(self.root),)
        if self.root.is_dir():
            files += tuple(str(self.root / a) for a in ["meta/episode_ends", *arrays])
        refs = [
            EpisodeRef(
                self.uri,
                FORMAT,
                f"episode_{i:06d}",
                files,
                {"index": i, "start": start, "end": end},
            )
            for i, (start, end) in enumerate(zip([0, *ends], ends, strict=False))
        ]
        return refs, []

    def read(self, ref: EpisodeRef) -> EpisodeRecord:
        """Read one episode's rows (signals now; frames lazily by camera URI)."""
        start, end = int(ref.locator["start"]), int(ref.locator["end"])  # type: ignore[call-overload]
        group = open_zarr(self.uri)
        rows = slice(start, end)
        total = int(group["data/action"].shape[0])
        actions = self._array(group, "action", rows)
        state_keys, cameras = [], []
        for key in sorted(group["data"].array_keys()):
            if key == "action":
                continue
            shape = group[f"data/{key}"].shape
            if not shape or int(shape[0]) != total:
                continue  # not one row per frame (a per-episode table, a constant)
            if len(shape) >= 3:
                uri = zarr_frames_uri(self.uri, f"data/{key}", start, end)
                cameras.append(CameraSpec(key, uri))
            else:
                state_keys.append(key)
        states = (
            np.concatenate([self._array(group, k, rows) for k in state_keys], axis=1)
            if state_keys
            else None
        )
        widths = [self._array(group, k, rows)[:, 0] for k in state_keys if _GRIPPER.fullmatch(k)]
        attrs = dict(group.attrs)
        fps_value = attrs.get("fps", attrs.get("control_freq"))
        if fps_value is None and self.fps is None:
            raise MissingFieldError(
                self.uri, "a Zarr replay buffer stores no frame rate: pass --fps", "MissingFps"
            )
        fps = metadata_fps(fps_value if fps_value is not None else self.fps, self.uri)
        return EpisodeRecord(
            ref=ref,
            fps=fps,
            instruction=attr_text(attrs, INSTRUCTION_ATTRS) or self.instruction,
            robot=attr_text(attrs, ("robot", "robot_type")),
            actions_TA=actions,
            cameras=cameras,
            states_TS=states,
            gripper_TG=orient_gripper(
                np.stack(widths, axis=1) if widths else None, self.gripper_open
            ),
            state_names=[
                k if self._width(group, k) == 1 else f"{k}_{i}"
                for k in state_keys
                for i in range(self._width(group, k))
            ],
        )

    def _array(self, group: Any, key: str, rows: slice) -> FloatArray:
        """``data/<key>`` rows as (frames, dims) float32; not numbers: one line naming it."""
        raw = read_zarr(group, f"data/{key}", self.uri, rows)
        if raw.dtype.kind not in "biuf":
            raise BadSignalError(
                self.uri, f"data/{key}: expected numbers, got {raw.dtype}", "BadType"
            )
        width = int(np.prod(raw.shape[1:], dtype=np.int64))
        flat = float32_values(raw.reshape(-1), max(width, 1), f"data/{key}", self.uri)
        return flat.reshape(len(raw), width)

    @staticmethod
    def _width(group: Any, key: str) -> int:
        shape = group[f"data/{key}"].shape
        return int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1


__all__ = ["FORMAT", "ZARR_SUFFIXES", "ZarrSource", "looks_like"]
