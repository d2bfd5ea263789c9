"""Video probing and decoding (PyAV), and every reader of a camera's frames.

A camera URI is either a video file path, or frames stored as images inside a data file (an
HDF5 dataset, a parquet image column, a Zarr array: :mod:`wallwm.pipeline.image_frames`).
Episodes that share one video file (LeRobot v3) are addressed by a
``[from_timestamp_s, to_timestamp_s)`` window.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from wallwm.pipeline.image_frames import (
    HDF5_SEPARATOR,
    iter_hdf5_frames,
    rgb_frame,
    split_hdf5_uri,
    stored_frames,
    stored_layout,
)
from wallwm.pipeline.sources.base import (
    CameraInfo,
    CameraSpec,
    CorruptVideoError,
    MissingFieldError,
)

__all__ = [  # re-exported: the stored-frame readers' names as callers know them
    "HDF5_SEPARATOR",
    "iter_hdf5_frames",
    "rgb_frame",
    "split_hdf5_uri",
]

UInt8Array = npt.NDArray[np.uint8]


def _open_container(path: str) -> Any:
    import av

    if not Path(path).exists():
        raise MissingFieldError(path, "video file is missing", "MissingVideo")
    if Path(path).stat().st_size == 0:
        raise CorruptVideoError(path, "video file is empty (0 bytes)")
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError) as exc:  # type: ignore[attr-defined]
        raise CorruptVideoError(path, f"corrupt or truncated video: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise CorruptVideoError(
            path, "video has zero frames (the file holds no video stream)", "EmptyVideo"
        )
    return container


def iter_video_frames(
    path: str,
    from_s: float = 0.0,
    to_s: float | None = None,
    fmt: str | None = "rgb24",
) -> Iterator[tuple[float, object]]:
    """Yield ``(time_s, frame)`` for each frame of ``path`` inside ``[from_s, to_s)``.

    Args:
        path: Video file.
        from_s: Window start (seconds, as stored in the file's timeline).
        to_s: Window end, exclusive; None for the end of the file.
        fmt: Convert frames to ``ndarray`` in this pixel format; None yields the raw
            ``av.VideoFrame`` (the cheapest path when only counting or validating).

    Raises:
        CorruptVideoError: If the file cannot be opened or decoding fails midway.
    """
    container = _open_container(path)
    try:
        yield from _decode_window(container, path, from_s, to_s, fmt)
    finally:
        container.close()


def _decode_window(
    container: Any, path: str, from_s: float, to_s: float | None, fmt: str | None
) -> Iterator[tuple[float, object]]:
    import av

    try:
        stream = container.streams.video[0]
        # Parallelism comes from decoding many episodes at once; codec threads on top of that
        # measured no faster on 2 cores and would oversubscribe them under Ray.
        rate = float(stream.average_rate or stream.guessed_rate or 30.0)
        half_frame_s = 0.5 / rate
        if from_s > half_frame_s and stream.time_base is not None:
            container.seek(int(from_s / stream.time_base), stream=stream, backward=True)
        # one scaler context for the whole stream: frame.to_ndarray(format=...) builds a new
        # one per frame, which measured ~18x slower than the conversion itself
        reformatter = av.video.reformatter.VideoReformatter()
        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else 0.0
            if t < from_s - half_frame_s:
                continue
            if to_s is not None and t >= to_s - half_frame_s:
                break
            yield t, (reformatter.reformat(frame, format=fmt).to_ndarray() if fmt else frame)
    except av.error.FFmpegError as exc:  # type: ignore[attr-defined]
        raise CorruptVideoError(
            path, f"decoding failed (corrupt or truncated video): {exc}"
        ) from exc


def probe_camera(spec: CameraSpec, grab: KeyframeGrabber | None = None) -> CameraInfo:
    """Decode a camera stream once to validate it and count its frames (no re-encoding).

    Args:
        spec: Where the stream is.
        grab: Collects keyframes from this same decode pass (fused ingest + segment), if given.

    Raises:
        CorruptVideoError: Unreadable, truncated or empty stream.
        MissingFieldError: The file or HDF5 dataset does not exist.
    """
    frames = stored_frames(spec.uri)
    if frames is not None:
        return _probe_stored(spec, frames, grab)
    container = _open_container(spec.uri)
    try:
        ctx = container.streams.video[0].codec_context
        codec = ctx.codec.canonical_name  # "h264", "av1" (not the decoder's name)
        width, height = int(ctx.width), int(ctx.height)
        num_frames = 0
        window = _decode_window(
            container, spec.uri, spec.from_timestamp_s, spec.to_timestamp_s, None
        )
        for _t, frame in window:
            if grab is not None:
                grab.offer_video(num_frames, frame)
            num_frames += 1
            width, height = frame.width, frame.height  # type: ignore[attr-defined]
    finally:
        container.close()
    if num_frames == 0:
        where = (
            ""
            if spec.to_timestamp_s is None
            else f" in [{spec.from_timestamp_s:.3f}s, {spec.to_timestamp_s:.3f}s)"
        )
        raise CorruptVideoError(spec.uri, f"video has zero frames{where}", "EmptyVideo")
    return CameraInfo(
        name=spec.name,
        uri=spec.uri,
        byte_length=Path(spec.uri).stat().st_size,
        codec=codec,
        width=width,
        height=height,
        num_frames=num_frames,
        from_timestamp_s=spec.from_timestamp_s,
        to_timestamp_s=spec.to_timestamp_s,
    )


def _probe_stored(
    spec: CameraSpec, frames: Iterator[UInt8Array], grab: KeyframeGrabber | None = None
) -> CameraInfo:
    """Count and size the frames of a camera stored as images, grabbing keyframes on the way."""
    byte_length, codec = stored_layout(spec.uri)
    num_frames, height, width = 0, 0, 0
    for frame in frames:
        height, width = int(frame.shape[0]), int(frame.shape[1])
        if grab is not None:
            grab.offer_array(num_frames, frame)
        num_frames += 1
    if num_frames == 0:
        file, _, where = spec.uri.partition(HDF5_SEPARATOR)
        raise CorruptVideoError(file, f"{where}: zero frames", "EmptyVideo")
    return CameraInfo(
        name=spec.name,
        uri=spec.uri,
        byte_length=byte_length,
        codec=codec,
        width=width,
        height=height,
        num_frames=num_frames,
    )


def read_frames(info: CameraInfo, fmt: str = "rgb24") -> Iterator[UInt8Array]:
    """Yield every frame of a probed camera stream as an ``(H, W, C)`` uint8 array."""
    stored = stored_frames(info.uri)
    if stored is not None:
        yield from stored
        return
    for _t, frame in iter_video_frames(info.uri, info.from_timestamp_s, info.to_timestamp_s, fmt):
        yield np.asarray(frame, dtype=np.uint8)


@contextlib.contextmanager
def scheduling_kept() -> Iterator[None]:
    """Restore the calling thread's scheduling policy and priority on the way out.

    SVT-AV1 (``libsvtav1``), run as root -- a container's default user -- switches the thread
    that opens it to real-time scheduling (SCHED_FIFO, priority 99) and leaves it there. Every
    thread that thread starts afterwards inherits the policy, and on a busy machine a normal
    thread it waits for may never run: a Ray Data executor started later in the same process
    hung that way (the test suite saw it after its AV1 fixtures). Lowering a policy back needs
    no privilege.
    """
    if not hasattr(os, "sched_getscheduler"):  # not Linux: nothing is switched
        yield
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if (os.sched_getscheduler(0), os.sched_getparam(0)) != (policy, param):
            os.sched_setscheduler(0, policy, param)


class VideoWriter:
    """An open video file that frames are appended to (PyAV; H.264 by default).

    ``preset``: the encoder's speed preset (x264: ``ultrafast`` ... ``veryslow``, default
    ``medium``; SVT-AV1: 0-13, default 12 here).
    """

    def __init__(
        self,
        path: str,
        fps: float,
        codec: str = "libx264",
        crf: int = 23,
        preset: str | None = None,
    ) -> None:
        """Create the file; the stream opens at the first frame (its size comes from it)."""
        import av

        Path(path).resolve().parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(path, mode="w")
        self.fps, self.codec, self.crf, self.preset = fps, codec, crf, preset
        self.stream: Any = None
        self.frames = 0

    def _open(self, height: int, width: int) -> None:
        from fractions import Fraction

        stream = self.container.add_stream(
            self.codec, rate=Fraction(self.fps).limit_denominator(1001)
        )
        stream.width, stream.height = int(width), int(height)
        # x264 cannot subsample the chroma of an odd-sized frame (4:2:0 halves each side): such
        # a stream keeps full chroma at its own size rather than fail to open or be cropped.
        # SVT-AV1 has only 4:2:0 and pads odd sizes itself.
        odd = width % 2 or height % 2
        stream.pix_fmt = "yuv444p" if odd and self.codec == "libx264" else "yuv420p"
        if self.codec == "libx264":
            stream.options = {
                "crf": str(self.crf),
                **({"preset": self.preset} if self.preset else {}),
            }
        elif self.codec == "libsvtav1":
            stream.options = {"crf": "35", "preset": self.preset or "12"}
            # Errors only: SVT-AV1 prints a 20-line banner and its warnings to stderr for every
            # stream it opens, between the command's own progress lines. Read once per process,
            # at its first encoder; a level the user set stays.
            os.environ.setdefault("SVT_LOG", "1")
        self.stream = stream

    def write(self, frames_THWC: UInt8Array, fmt: str = "rgb24") -> None:
        """Append frames: RGB (T, H, W, 3) uint8, or ``fmt="yuv420p"`` planes (T, H * 3/2, W).

        YUV planes as a decoder gives them need no colour conversion on either side.
        """
        import av

        with scheduling_kept():  # whichever call opens the encoder
            if self.stream is None and len(frames_THWC):
                height, width = frames_THWC.shape[1:3]
                self._open(height * 2 // 3 if fmt == "yuv420p" else height, width)
            for frame_HWC in frames_THWC:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_HWC), format=fmt)
                for packet in self.stream.encode(frame):
                    self.container.mux(packet)
        self.frames += len(frames_THWC)

    def close(self) -> None:
        """Flush the encoder and close the file."""
        with scheduling_kept():
            if self.stream is not None:
                for packet in self.stream.encode():
                    self.container.mux(packet)
            self.container.close()


def write_video(
    path: str,
    frames_THWC: UInt8Array,
    fps: float,
    codec: str = "libx264",
    crf: int = 23,
    preset: str | None = None,
) -> None:
    """Encode RGB frames to a video file with PyAV (H.264 by default; ``libsvtav1`` for AV1).

    Used by the simulators, the test factories and ``export --reencode``; ingest itself never
    re-encodes. See :class:`VideoWriter` for ``preset``.
    """
    writer = VideoWriter(path, fps, codec, crf, preset)
    try:
        writer.write(frames_THWC)
    finally:
        writer.close()


def motion_energy(info: CameraInfo, side: int = 32) -> npt.NDArray[np.float32]:
    """Per-frame visible motion: mean |difference| of consecutive downscaled grey frames.

    Frames are shrunk to ``side`` x ``side`` grey by the decoder's scaler (one pass, no RGB
    conversion), which keeps this cue at a small fraction of the decoding cost.
    Frame 0 copies frame 1's value so that the series has one value per frame.
    """
    import cv2

    values: list[float] = []
    prev: npt.NDArray[np.float32] | None = None
    stored = stored_frames(info.uri)
    if stored is not None:
        frames: Iterator[npt.NDArray[np.float32]] = (
            cv2.resize(
                cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (side, side), interpolation=cv2.INTER_AREA
            ).astype(np.float32)
            for f in stored
        )
    else:
        frames = (
            frame.reformat(width=side, height=side, format="gray").to_ndarray().astype(np.float32)  # type: ignore[attr-defined]
            for _t, frame in iter_video_frames(
                info.uri, info.from_timestamp_s, info.to_timestamp_s, None
            )
        )
    for cur in frames:
        values.append(0.0 if prev is None else float(np.abs(cur - prev).mean()))
        prev = cur
    if len(values) > 1:
        values[0] = values[1]
    return np.asarray(values, dtype=np.float32)


def shrink(frame: UInt8Array, max_side: int) -> UInt8Array:
    """Downscale so the longer side is at most ``max_side`` (area interpolation)."""
    import cv2

    h, w = frame.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return frame
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


_THREAD = threading.local()


class KeyframeGrabber:
    """Collects small JPEGs of chosen frames while a stream is being decoded anyway.

    Only the wanted frames are converted; for video the decoder's scaler resizes and converts to
    RGB in one step.
    """

    def __init__(self, indices: list[int], max_side: int = 128, quality: int = 80) -> None:
        """Grab the frames at ``indices`` (frame numbers within the episode)."""
        self.wanted = set(indices)
        self.last = max(self.wanted, default=-1)
        self.max_side = max_side
        self.quality = quality
        self.jpegs: dict[int, bytes] = {}

    def _encode(self, index: int, bgr: UInt8Array) -> None:
        import cv2

        params = [cv2.IMWRITE_JPEG_QUALITY, self.quality]
        ok, buf = cv2.imencode(".jpg", bgr, params)
        if ok:
            self.jpegs[index] = buf.tobytes()

    def offer_video(self, index: int, frame: Any) -> None:
        """A decoded ``av.VideoFrame`` at ``index``."""
        if index in self.wanted:
            import av

            # One scaler context per thread for every episode: building one costs ~10 grabs,
            # and an episode needs only a few (PyAV rebuilds it only when the sizes change).
            reformatter = getattr(_THREAD, "reformatter", None)
            if reformatter is None:
                reformatter = _THREAD.reformatter = av.video.reformatter.VideoReformatter()
            scale = min(1.0, self.max_side / max(frame.width, frame.height, 1))
            small = reformatter.reformat(
                frame,
                width=max(2, round(frame.width * scale)),
                height=max(2, round(frame.height * scale)),
                format="bgr24",  # what the JPEG encoder takes: no channel swap afterwards
            )
            self._encode(index, small.to_ndarray())

    def offer_array(self, index: int, rgb: UInt8Array) -> None:
        """An RGB array at ``index``."""
        if index in self.wanted:
            self._encode(index, np.ascontiguousarray(shrink(rgb, self.max_side)[..., ::-1]))


def keyframes_jpeg(
    info: CameraInfo, indices: list[int], max_side: int = 128, quality: int = 80
) -> dict[int, bytes]:
    """JPEG bytes of the frames at ``indices``, downscaled to ``max_side``.

    One decode pass, stopping after the last wanted frame.
    """
    grab = KeyframeGrabber(indices, max_side, quality)
    stored = stored_frames(info.uri)
    if stored is not None:
        for i, rgb in enumerate(stored):
            grab.offer_array(i, rgb)
            if i >= grab.last:
                break
        return grab.jpegs
    window = iter_video_frames(info.uri, info.from_timestamp_s, info.to_timestamp_s, None)
    for i, (_t, frame) in enumerate(window):
        grab.offer_video(i, frame)
        if i >= grab.last:
            break
    return grab.jpegs
