"""Merging sources into one dataset: camera names mapped, other embodiments refused.

Teams record the same robot with different rigs and tools: one LeRobot dataset calls the overhead
camera ``observation.images.cam_high``, a folder export calls it ``top``. ``--camera-map
old=new`` renames a source's cameras as it is read (:class:`StatedSource` wraps any source), so
every episode of the dataset shares one set of names -- what the training view and the exporter
select cameras by; ``--robot`` names the robot where the source names none (RLDS, HDF5, ROS
bags), so the dataset's rows, ``eval segmentation``'s per-robot table and the LeRobot export's
``robot_type`` carry it. A source of a *different* embodiment (another action or state layout)
cannot share a dataset's tables: :func:`embodiment_problem` says so in one line before anything
is read.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pyarrow as pa

from wallwm.pipeline.sources.base import EpisodeError, EpisodeRecord, EpisodeRef, EpisodeSource


def parse_camera_map(items: list[str]) -> dict[str, str]:
    """``["old=new", ...]`` as a mapping; a malformed item or a duplicate is a ``ValueError``."""
    out: dict[str, str] = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise ValueError(f"--camera-map {item!r}: expected OLD=NEW, e.g. cam_high=top")
        if old.strip() in out:
            raise ValueError(f"--camera-map: {old.strip()!r} is mapped twice")
        out[old.strip()] = new.strip()
    return out


class StatedSource:
    """An :class:`EpisodeSource` read with what the user states about its episodes.

    Cameras renamed by ``camera_map``; ``robot`` where an episode names none.
    """

    def __init__(
        self, source: EpisodeSource, camera_map: dict[str, str], robot: str | None = None
    ) -> None:
        """Wrap ``source`` (its listing and every other attribute pass through)."""
        self.inner = source
        self.camera_map = dict(camera_map)
        self.robot = robot
        self.format = source.format
        self.uri = source.uri

    def __getattr__(self, name: str) -> Any:
        # only called for what this wrapper does not define (gripper_decision, version, ...)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def list_episodes(self) -> tuple[list[EpisodeRef], list[EpisodeError]]:
        """The wrapped source's listing."""
        return self.inner.list_episodes()

    def read(self, ref: EpisodeRef) -> EpisodeRecord:
        """The wrapped source's episode with its cameras renamed and its robot named."""
        record = self.inner.read(ref)
        record.robot = record.robot or self.robot
        names = [self.camera_map.get(c.name, c.name) for c in record.cameras]
        if len(set(names)) < len(names):
            raise EpisodeError(
                ref.files[0] if ref.files else ref.source_uri,
                f"--camera-map gives two cameras one name: {names}",
                "CameraMapConflict",
            )
        record.cameras = [
            dataclasses.replace(c, name=n) for c, n in zip(record.cameras, names, strict=True)
        ]
        return record


def unknown_cameras(camera_map: dict[str, str], seen: set[str]) -> list[str]:
    """The map's old names that no camera of the ``seen`` episodes has (typos)."""
    return sorted(set(camera_map) - seen)


def embodiment_problem(stored: pa.Schema | None, record: EpisodeRecord) -> str | None:
    """Why ``record`` cannot join a dataset whose episodes table has schema ``stored``, if so."""
    if stored is None:
        return None
    want_a = stored.field("actions").type.value_type.list_size
    want_s = stored.field("states").type.value_type.list_size
    got_a = int(record.actions_TA.shape[1])
    got_s = 0 if record.states_TS is None else int(record.states_TS.shape[1])
    # a state-less dataset stores a 1-wide placeholder (schemas.PLACEHOLDER_STATE_DIM)
    if got_a == want_a and (got_s == want_s or (got_s == 0 and want_s == 1)):
        return None
    return (
        f"a different embodiment: {got_a}-D actions and {got_s}-D states, the dataset's "
        f"episodes have {want_a}-D and {want_s}-D -- ingest it into a dataset of its own"
    )
