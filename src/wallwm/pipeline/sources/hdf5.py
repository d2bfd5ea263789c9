"""HDF5 episodes in the ALOHA and robomimic layouts (via h5py).

ALOHA (one episode per file)::

    /action                          (T, A)
    /observations/qpos               (T, S)
    /observations/images/<camera>    (T, H, W, 3) uint8, or (T, N) padded JPEG bytes if compressed
                                     (raw frames may also be (T, 3, H, W), grey, RGBA or floats in
                                     [0, 1]: :func:`~wallwm.pipeline.video.rgb_frame`)

robomimic and LIBERO (many demos per file)::

    /data/demo_<i>/actions           (T, A)
    /data/demo_<i>/obs/<name>_image  (T, H, W, 3) uint8 (LIBERO: ``agentview_rgb``, ...)
    /data/demo_<i>/obs/<low-dim>     (T, D)  -> concatenated (sorted by name) into the state

The gripper opening (larger = more open) comes from the state: ALOHA's 14-D ``qpos`` holds each
arm's normalised gripper position at indices 6 and 13 (7-D: one arm, index 6); robomimic's
``robot<k>_gripper_qpos`` holds the two mirrored finger joints of arm k, whose gap is the opening.

Neither layout stores a language instruction or always an fps: they are read from attributes
(``instruction``/``language_instruction``/``task``/``lang``, ``fps``/``control_freq``) on the
episode group or the file, else from the ingest options (``--instruction``, ``--fps``), else fps
defaults to the layout's usual control rate (ALOHA 50 Hz, robomimic 20 Hz).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from wallwm.pipeline.sources.base import (
    INSTRUCTION_ATTRS,
    BadSignalError,
    CameraSpec,
    CorruptVideoError,
    EpisodeError,
    EpisodeRecord,
    EpisodeRef,
    FloatArray,
    MissingFieldError,
    OptionedSource,
    attr_text,
    orient_gripper,
)
from wallwm.pipeline.tables.arrays import float32_values
from wallwm.pipeline.video import HDF5_SEPARATOR

FORMAT = "hdf5"
SUFFIXES = (".hdf5", ".h5")
DEFAULT_FPS = {"aloha": 50.0, "robomimic": 20.0}
#: ALOHA ``qpos`` widths and where each arm's gripper position sits in them.
_ALOHA_GRIPPER_DIMS = {14: [6, 13], 7: [6]}


def looks_like(root: Path) -> bool:
    """Whether ``root`` is an HDF5 file or a directory holding some."""
    if root.is_file():
        return root.suffix in SUFFIXES
    return root.is_dir() and any(p.suffix in SUFFIXES for p in root.rglob("*") if p.is_file())


#: Mirrored finger joints whose gap is a gripper's opening: robosuite's per-arm
#: ``robot<k>_gripper_qpos``, LIBERO's ``gripper_states``.
_FINGERS = re.compile(r"robot\d+_gripper_qpos|gripper_states")


def _is_camera(name: str, dset: Any) -> bool:
    """Whether a robomimic-layout observation is a camera (colour frames, not depth).

    Frames of 3+ dims, or encoded images named ``*_image``: robomimic's ``agentview_image``,
    LIBERO's ``agentview_rgb`` / ``eye_in_hand_rgb``.
    """
    if "depth" in name.lower() or not hasattr(dset, "ndim"):
        return False
    return bool(name.endswith("image") or (dset.ndim >= 3 and dset.dtype.kind == "u"))


def _problem_instruction(f: Any) -> str | None:
    """LIBERO's instruction: ``language_instruction`` in the ``data`` group's ``problem_info``."""
    data = f.get("data")
    raw = attr_text(data.attrs, ("problem_info",)) if data is not None else None
    if raw is None:
        return None
    try:
        info = json.loads(raw)
    except ValueError:
        return None
    text = info.get("language_instruction") if isinstance(info, dict) else None
    return text.strip() if isinstance(text, str) and text.strip() else None


def _array(f: Any, key: str, file: str) -> FloatArray:
    """A per-frame dataset as (frames, dims) float32."""
    try:
        raw = np.asarray(f[key])
    except (OSError, ValueError, TypeError) as exc:
        raise BadSignalError(file, f"{key}: unreadable dataset: {exc}") from exc
    if raw.ndim == 0 or raw.dtype.kind not in "biuf":
        raise BadSignalError(
            file, f"{key}: expected numbers, one row per frame; got {raw.dtype} of shape "
            f"{raw.shape}", "BadType",
        )  # fmt: skip
    width = int(np.prod(raw.shape[1:], dtype=np.int64))
    flat = float32_values(raw.reshape(-1), max(width, 1), key, file)
    return flat.reshape(len(raw), width)


class HDF5Source(OptionedSource):
    """Reader of ALOHA / robomimic HDF5 episodes.

    ``root``: a ``.hdf5`` file or a directory searched recursively; ``gripper_open`` ``auto``
    keeps both layouts' own conventions (the stored positions grow as the gripper opens).
    """

    format = FORMAT

    def _files(self) -> list[Path]:
        if self.root.is_file():
            return [self.root]
        return sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix in SUFFIXES)

    def list_episodes(self) -> tuple[list[EpisodeRef], list[EpisodeError]]:
        """One ref per ALOHA file or per robomimic demo."""
        import h5py

        refs: list[EpisodeRef] = []
        errors: list[EpisodeError] = []
        for path in self._files():
            rel = str(path.relative_to(self.root)) if self.root.is_dir() else path.name
            try:
                with h5py.File(path, "r") as f:
                    if "data" in f and isinstance(f["data"], h5py.Group):
                        demos = sorted(f["data"].keys(), key=lambda k: (len(k), k))
                        refs.extend(
                            EpisodeRef(
                                self.uri,
                                FORMAT,
                                f"{rel}:{demo}",
                                (str(path),),
                                {
                                    "file": str(path),
                                    "group": f"/data/{demo}",
                                    "layout": "robomimic",
                                },
                            )
                            for demo in demos
                        )
                    elif "action" in f:
                        refs.append(
                            EpisodeRef(
                                self.uri,
                                FORMAT,
                                rel,
                                (str(path),),
                                {"file": str(path), "group": "/", "layout": "aloha"},
                            )
                        )
                    else:
                        errors.append(
                            MissingFieldError(
                                str(path),
                                "neither /action (ALOHA) nor /data/demo_* (robomimic) found",
                                "UnknownLayout",
                            )
                        )
            except OSError as exc:
                errors.append(
                    CorruptVideoError(str(path), f"unreadable HDF5 file: {exc}", "BadHDF5")
                )
        return refs, errors

    def read(self, ref: EpisodeRef) -> EpisodeRecord:
        """Read one episode (signals now; frames are probed lazily by camera URI)."""
        import h5py

        file = str(ref.locator["file"])
        group_path = str(ref.locator["group"])
        layout = str(ref.locator["layout"])
        try:
            with h5py.File(file, "r") as f:
                group = f[group_path]
                if layout == "aloha":
                    actions = _array(group, "action", file)
                    states = (
                        _array(group, "observations/qpos", file)
                        if "observations/qpos" in group
                        else None
                    )
                    image_group = "observations/images"
                    dims = _ALOHA_GRIPPER_DIMS.get(-1 if states is None else states.shape[1])
                    gripper = None if states is None or dims is None else states[:, dims]
                else:
                    actions = _array(group, "actions", file)
                    states, gripper = self._robomimic_state(group, file)
                    image_group = "obs"
                cams = []
                if image_group in group:
                    for name, dset in sorted(group[image_group].items()):
                        if layout == "robomimic" and not _is_camera(name, dset):
                            continue
                        if isinstance(dset, h5py.Dataset):
                            key = f"{group_path.rstrip('/')}/{image_group}/{name}"
                            cams.append(CameraSpec(name, f"{file}{HDF5_SEPARATOR}{key}"))
                instruction = (
                    attr_text(group.attrs, INSTRUCTION_ATTRS)
                    or attr_text(f.attrs, INSTRUCTION_ATTRS)
                    or _problem_instruction(f)
                    or self.instruction
                )
                fps_attr = attr_text(group.attrs, ("fps", "control_freq")) or attr_text(
                    f.attrs, ("fps", "control_freq")
                )
        except OSError as exc:
            raise CorruptVideoError(file, f"unreadable HDF5 file: {exc}", "BadHDF5") from exc
        except KeyError as exc:
            raise MissingFieldError(file, f"{group_path}: missing dataset {exc}") from exc
        try:
            fps = float(fps_attr) if fps_attr else (self.fps or DEFAULT_FPS[layout])
        except ValueError:
            raise MissingFieldError(
                file, f"{group_path}: fps attribute {fps_attr!r} is not a number", "MissingFps"
            ) from None
        return EpisodeRecord(
            ref=ref,
            fps=fps,
            instruction=instruction,
            robot=None,
            actions_TA=actions,
            cameras=cams,
            states_TS=states,
            gripper_TG=orient_gripper(gripper, self.gripper_open),
        )

    @staticmethod
    def _robomimic_state(group: Any, file: str) -> tuple[FloatArray | None, FloatArray | None]:
        obs = group.get("obs")
        if obs is None:
            return None, None
        keys = sorted(
            k
            for k, v in obs.items()
            if not k.endswith("image") and v.ndim <= 2 and v.dtype.kind in "biuf"
        )
        if not keys:
            return None, None
        states = np.concatenate([_array(obs, k, file) for k in keys], axis=1)
        # robosuite's parallel-jaw fingers mirror each other (one joint +, one -): the gap
        # between them is the opening, one value per arm
        openings = []
        for key in sorted(k for k in keys if _FINGERS.fullmatch(k)):
            q = _array(obs, key, file)
            openings.append(q[:, 0] - q[:, 1] if q.shape[1] == 2 else q[:, 0])
        return states, (np.stack(openings, axis=1) if openings else None)
