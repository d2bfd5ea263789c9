"""Camera frames stored as images inside data files, not as video.

Two kinds of URI name such a camera stream:

- ``<file.hdf5>#<dataset path>``: frames as an HDF5 dataset (ALOHA, robomimic) -- raw pixels
  (``(T, H, W, 3)`` and the other layouts :func:`rgb_frame` reads) or JPEG/PNG bytes per frame;
- ``<file.parquet>#<column>@<episode index>``: one encoded image (PNG/JPEG) per row of a parquet
  column, the rows of one episode in ``frame_index`` order -- LeRobot's ``image`` features,
  which a Hugging Face ``Image`` column stores as ``{bytes, path}``;
- ``<store.zarr>#<array>@<start>:<end>``: rows ``[start, end)`` of an image array in a Zarr
  replay buffer (Diffusion Policy, UMI), every episode's frames concatenated;
- ``<shard.tfrecord-…>#<feature key>@<byte offset>``: a per-step image feature (one encoded
  JPEG/PNG per step) of the episode whose record starts at that offset of an RLDS shard;
- ``<bag>#<topic>@<start_ns>+<step_ns>x<count>``: a ROS bag's image topic read on the episode's
  clock (:mod:`wallwm.pipeline.sources.rosbag`).

:func:`stored_frames` iterates either as (H, W, 3) uint8 RGB; every reader of frames (probing,
keyframes, the training view, the export) goes through it for a URI that is not a video file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from wallwm.pipeline.sources.base import CorruptVideoError, MissingFieldError

UInt8Array = npt.NDArray[np.uint8]
HDF5_SEPARATOR = "#"
#: Between a parquet image column and the episode whose rows it means.
EPISODE_MARK = "@"


def split_hdf5_uri(uri: str) -> tuple[str, str] | None:
    """``("file.hdf5", "/observations/images/cam")`` for an HDF5 frame URI, else None."""
    path, sep, key = uri.partition(HDF5_SEPARATOR)
    if sep and path.endswith((".hdf5", ".h5")):
        return path, key
    return None


def decode_image_bytes(buf: npt.NDArray[np.uint8], where: str) -> UInt8Array:
    """An encoded image (JPEG, PNG, ...) as (H, W, 3) uint8 RGB; undecodable: one line."""
    import cv2

    img = cv2.imdecode(np.asarray(buf, dtype=np.uint8).reshape(-1), cv2.IMREAD_COLOR)
    if img is None:
        raise CorruptVideoError(where, "an encoded image frame could not be decoded")
    return np.asarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def iter_hdf5_frames(path: str, key: str) -> Iterator[UInt8Array]:
    """Yield RGB frames stored in an HDF5 dataset (raw ``(T, H, W, 3)`` or encoded bytes)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if key not in f:
                raise MissingFieldError(path, f"camera dataset {key} is missing", "MissingCamera")
            dset = f[key]
            where = f"{path}{HDF5_SEPARATOR}{key}"
            encoded = dset.ndim <= 2  # (T,) vlen bytes or (T, max_len) padded JPEG (ALOHA)
            top = None if encoded else value_top(dset, where)
            for i in range(dset.shape[0]):
                frame = np.asarray(dset[i])
                yield decode_image_bytes(frame, where) if encoded else rgb_frame(frame, where, top)
    except OSError as exc:
        raise CorruptVideoError(path, f"unreadable HDF5 file: {exc}") from exc


#: Frames a stream's value range is read from (spread over it): one dark frame must not decide.
RANGE_SAMPLE_FRAMES = 16


def value_top(frames: Any, where: str) -> float | None:
    """The value that means full brightness for a stream of raw frames (None: uint8, as is).

    Decided once per camera stream from up to :data:`RANGE_SAMPLE_FRAMES` frames spread over
    it -- per frame, a dark frame of a 0-255 float stream (max <= 1) read as [0, 1] and was
    brightened 255x, and a dark 16-bit frame (max <= 255) read as 8-bit. Floats: 1.0 if every
    sampled value is within [0, 1], else 255; integers wider than 8 bits: 255 if every sampled
    value fits in 8 bits, else their type's maximum.
    """
    dtype = np.dtype(frames.dtype)
    if dtype == np.uint8 or dtype.kind not in "fui" or not len(frames):
        return None
    picks = np.unique(np.linspace(0, len(frames) - 1, RANGE_SAMPLE_FRAMES).round().astype(int))
    try:
        peak = max(float(np.nanmax(np.asarray(frames[int(i)]))) for i in picks)
    except ValueError:  # all-NaN frames: nothing to learn the range from
        return None
    if dtype.kind == "f":
        return 1.0 if peak <= 1.0 else 255.0
    return 255.0 if peak <= 255 else float(np.iinfo(dtype).max)


def rgb_frame(frame: np.ndarray, where: str, top: float | None = None) -> UInt8Array:
    """A stored image as (H, W, 3) uint8 RGB, whichever common layout it was stored in.

    Channels first (C, H, W) as PyTorch pipelines save them, grey (H, W) or (H, W, 1), RGBA, and
    floats in [0, 1] (or [0, 255]) are converted; anything else is refused naming ``where``.
    ``top`` is the value of full brightness, from :func:`value_top` over the frame's stream
    (None: judged from this frame alone).
    """
    file, _, key = where.partition(HDF5_SEPARATOR)
    if frame.ndim == 3 and frame.shape[0] in (1, 3, 4) and frame.shape[2] not in (1, 3, 4):
        frame = np.moveaxis(frame, 0, -1)  # (C, H, W) -> (H, W, C)
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4):
        raise CorruptVideoError(
            file,
            f"{key}: frames must be images (H, W, 3), (3, H, W), "
            f"(H, W, 4) or (H, W), got {frame.shape}",
        )
    if frame.shape[2] == 1:
        frame = np.repeat(frame, 3, axis=2)
    frame = frame[:, :, :3]
    if frame.dtype == np.uint8:
        return np.asarray(frame, dtype=np.uint8)
    if frame.dtype.kind not in "fui":
        raise CorruptVideoError(file, f"{key}: frames of type {frame.dtype} are not images")
    if top is None:
        top = value_top(frame[None], where) or 255.0
    values = np.nan_to_num(frame.astype(np.float32))
    return np.asarray(np.clip(values * (255.0 / top) + 0.5, 0, 255), dtype=np.uint8)


def parquet_frames_uri(path: str, column: str, episode_index: int) -> str:
    """The URI of one episode's frames in a parquet image column."""
    return f"{path}{HDF5_SEPARATOR}{column}{EPISODE_MARK}{episode_index}"


def split_parquet_uri(uri: str) -> tuple[str, str, int] | None:
    """``(file.parquet, column, episode index)`` for a parquet image URI, else None."""
    path, sep, rest = uri.partition(HDF5_SEPARATOR)
    column, mark, index = rest.rpartition(EPISODE_MARK)
    if sep and mark and path.endswith(".parquet") and index.isdigit():
        return path, column, int(index)
    return None


def _parquet_images(path: str, column: str, episode_index: int) -> list[object]:
    """The episode's cells of the image column, in frame order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not Path(path).is_file():
        raise MissingFieldError(path, "episode data parquet is missing", "MissingData")
    try:
        names = set(pq.read_schema(path).names)
        if column not in names:
            raise MissingFieldError(path, f"image column {column!r} is missing", "MissingCamera")
        order = ["frame_index"] if "frame_index" in names else []
        table = pq.read_table(
            path, columns=[column, *order], filters=[("episode_index", "=", episode_index)]
        )
    except (OSError, pa.ArrowException) as exc:
        raise CorruptVideoError(path, f"unreadable parquet: {exc}") from exc
    if order:
        table = table.sort_by("frame_index")
    cells: list[object] = table.column(column).to_pylist()
    return cells


def _image_bytes(cell: object, where: str) -> bytes:
    """An image cell's encoded bytes: ``{bytes, path}`` (a Hugging Face Image) or raw bytes.

    A cell with only a path (images not embedded: LeRobot writes them beside the data while
    recording) reads that file, absolute or under the dataset root (the parent of ``data/``).
    """
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return bytes(cell["bytes"])
        if isinstance(cell.get("path"), str):
            parquet = Path(where.partition(HDF5_SEPARATOR)[0])
            root = next((p.parent for p in parquet.parents if p.name == "data"), parquet.parent)
            file = Path(cell["path"]) if Path(cell["path"]).is_absolute() else root / cell["path"]
            if file.is_file():
                return file.read_bytes()
        raise CorruptVideoError(
            where, f"an image cell has no bytes and no readable file (path {cell.get('path')!r})"
        )
    if isinstance(cell, bytes | bytearray):
        return bytes(cell)
    raise CorruptVideoError(where, f"an image cell is {type(cell).__name__}, not image bytes")


def iter_parquet_frames(path: str, column: str, episode_index: int) -> Iterator[UInt8Array]:
    """Yield one episode's RGB frames from a parquet column of encoded images."""
    where = parquet_frames_uri(path, column, episode_index)
    for cell in _parquet_images(path, column, episode_index):
        buf = np.frombuffer(_image_bytes(cell, where), dtype=np.uint8)
        yield decode_image_bytes(buf, where)


ZARR_SUFFIXES = (".zarr", ".zarr.zip")
#: Frames read from a Zarr image array per slice: its chunks decode a block at a time.
ZARR_BLOCK_FRAMES = 64


def zarr_frames_uri(store: str, array: str, start: int, end: int) -> str:
    """The URI of rows ``[start, end)`` of an image array in a Zarr store."""
    return f"{store}{HDF5_SEPARATOR}{array}{EPISODE_MARK}{start}:{end}"


def split_zarr_uri(uri: str) -> tuple[str, str, int, int] | None:
    """``(store, array, start, end)`` for a Zarr image URI, else None."""
    path, sep, rest = uri.partition(HDF5_SEPARATOR)
    array, mark, span = rest.rpartition(EPISODE_MARK)
    start, colon, end = span.partition(":")
    if (
        sep
        and mark
        and colon
        and path.endswith(ZARR_SUFFIXES)
        and start.isdigit()
        and end.isdigit()
    ):
        return path, array, int(start), int(end)
    return None


def open_zarr(path: str) -> Any:
    """A Zarr store's root group, read-only (a directory, or a ``.zarr.zip`` file)."""
    import zarr

    try:  # UMI's stores compress frames with imagecodecs' codecs, found by id once registered
        from imagecodecs.numcodecs import register_codecs  # type: ignore[import-not-found]

        register_codecs()
    except ImportError:
        pass
    try:
        if path.endswith(".zip"):
            return zarr.open_group(zarr.ZipStore(path, mode="r"), mode="r")
        return zarr.open_group(path, mode="r")
    except (OSError, ValueError, KeyError) as exc:  # zarr: "group not found at path ''"
        raise CorruptVideoError(path, f"unreadable Zarr store: {exc}", "BadZarr") from exc


def read_zarr(group: Any, key: str, path: str, rows: slice = slice(None)) -> np.ndarray:
    """Rows of one array of a Zarr group; a codec that is not installed is named."""
    if key not in group:
        raise MissingFieldError(path, f"{key}: no such array in the Zarr store")
    try:
        return np.asarray(group[key][rows])
    except (ValueError, RuntimeError, TypeError) as exc:  # numcodecs: "codec not available"
        raise CorruptVideoError(
            path, f"{key}: cannot be decoded ({exc}); a compressor from imagecodecs (UMI's "
            "JPEG-XL / JPEG 2000) needs `pip install imagecodecs`", "BadZarr",
        ) from exc  # fmt: skip


def iter_zarr_frames(path: str, array: str, start: int, end: int) -> Iterator[UInt8Array]:
    """Yield rows ``[start, end)`` of a Zarr image array as RGB frames, a block at a time."""
    group = open_zarr(path)
    where = f"{path}{HDF5_SEPARATOR}{array}"
    if array not in group:
        raise MissingFieldError(path, f"{array}: no such array in the Zarr store")
    top = value_top(_Rows(group[array], start, end), where)
    for first in range(start, end, ZARR_BLOCK_FRAMES):
        block = read_zarr(group, array, path, slice(first, min(end, first + ZARR_BLOCK_FRAMES)))
        for frame in block:
            yield rgb_frame(frame, where, top)


class _Rows:
    """Rows ``[start, end)`` of an array, indexable from 0 (one episode's frames)."""

    def __init__(self, array: Any, start: int, end: int) -> None:
        self.array, self.start, self.end = array, start, end
        self.dtype = array.dtype

    def __len__(self) -> int:
        return self.end - self.start

    def __getitem__(self, i: int) -> Any:
        return self.array[self.start + i]


def tfrecord_frames_uri(shard: str, key: str, offset: int) -> str:
    """The URI of one episode's frames: a per-step image feature of the record at ``offset``."""
    return f"{shard}{HDF5_SEPARATOR}{key}{EPISODE_MARK}{offset}"


def split_tfrecord_uri(uri: str) -> tuple[str, str, int] | None:
    """``(shard, feature key, record offset)`` for an RLDS frame URI, else None."""
    path, sep, rest = uri.partition(HDF5_SEPARATOR)
    key, mark, offset = rest.rpartition(EPISODE_MARK)
    if sep and mark and ".tfrecord" in Path(path).name and offset.isdigit():
        return path, key, int(offset)
    return None


def _tfrecord_images(path: str, key: str, offset: int) -> list[bytes]:
    """The encoded images of one per-step image feature of one RLDS record."""
    from wallwm.pipeline.sources import tfrecord

    where = tfrecord_frames_uri(path, key, offset)
    if not Path(path).is_file():
        raise MissingFieldError(path, "the RLDS shard is missing", "MissingData")
    try:
        example = tfrecord.parse_example(tfrecord.read_record(path, offset), want=key.__eq__)
    except (OSError, tfrecord.RecordError) as exc:
        raise CorruptVideoError(where, f"unreadable record: {exc}") from exc
    images = example.get(key)
    if not isinstance(images, list):
        raise MissingFieldError(where, "no such image feature in the record", "MissingCamera")
    return images


def iter_tfrecord_frames(path: str, key: str, offset: int) -> Iterator[UInt8Array]:
    """Yield one RLDS episode's RGB frames from a per-step image feature."""
    where = tfrecord_frames_uri(path, key, offset)
    for image in _tfrecord_images(path, key, offset):
        yield decode_image_bytes(np.frombuffer(image, dtype=np.uint8), where)


def stored_frames(uri: str) -> Iterator[UInt8Array] | None:
    """The frames of a camera stored as images (HDF5, parquet, Zarr, RLDS); None for a video."""
    h5 = split_hdf5_uri(uri)
    if h5 is not None:
        return iter_hdf5_frames(*h5)
    images = split_parquet_uri(uri)
    if images is not None:
        return iter_parquet_frames(*images)
    rows = split_zarr_uri(uri)
    if rows is not None:
        return iter_zarr_frames(*rows)
    record = split_tfrecord_uri(uri)
    if record is not None:
        return iter_tfrecord_frames(*record)
    from wallwm.pipeline.sources import rosbag  # here: it decodes through this module

    topic = rosbag.split_rosbag_uri(uri)
    if topic is not None:
        return rosbag.iter_rosbag_frames(*topic)
    return None


def is_stored(uri: str) -> bool:
    """Whether ``uri`` names frames stored as images (not a video file)."""
    from wallwm.pipeline.sources.rosbag import split_rosbag_uri

    splits = (split_hdf5_uri, split_parquet_uri, split_zarr_uri, split_tfrecord_uri)
    return any(f(uri) is not None for f in (*splits, split_rosbag_uri))


def stored_layout(uri: str) -> tuple[int, str]:
    """(bytes on disk, codec name) of a stored camera stream, for its ``CameraInfo``."""
    h5 = split_hdf5_uri(uri)
    if h5 is not None:
        import h5py

        path, key = h5
        try:
            with h5py.File(path, "r") as f:
                if key not in f:
                    raise MissingFieldError(
                        path, f"camera dataset {key} is missing", "MissingCamera"
                    )
                dset = f[key]
                raw = dset.ndim >= 3  # pixels (any layout rgb_frame reads), not encoded bytes
                return int(dset.id.get_storage_size()), "raw-rgb24" if raw else "jpeg"
        except OSError as exc:
            raise CorruptVideoError(path, f"unreadable HDF5 file: {exc}") from exc
    rows = split_zarr_uri(uri)
    if rows is not None:
        path, array, start, end = rows
        group = open_zarr(path)
        if array not in group:
            raise MissingFieldError(path, f"{array}: no such array in the Zarr store")
        full = group[array]
        per_frame = int(np.prod(full.shape[1:], dtype=np.int64)) * full.dtype.itemsize
        stored = full.nbytes_stored if isinstance(full.nbytes_stored, int) else full.nbytes
        share = (end - start) / max(int(full.shape[0]), 1)  # this episode's part of the array
        codec = "raw-rgb24" if full.compressor is None else str(full.compressor.codec_id)
        return max(int(stored * share), 0) or per_frame * (end - start), codec
    from wallwm.pipeline.sources import rosbag

    topic = rosbag.split_rosbag_uri(uri)
    if topic is not None:
        return rosbag.rosbag_layout(*topic)
    record = split_tfrecord_uri(uri)
    images = split_parquet_uri(uri)
    if record is not None:
        cells = _tfrecord_images(*record)
    elif images is not None:
        cells = [_image_bytes(c, uri) for c in _parquet_images(*images)]
    else:
        raise ValueError(f"{uri}: not a stored-frames URI")
    codec = "png" if cells and cells[0][:4] == b"\x89PNG" else "jpeg"
    return sum(len(c) for c in cells), codec
