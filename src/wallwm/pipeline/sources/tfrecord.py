"""TFRecord files of ``tf.train.Example`` protos, read without TensorFlow.

A TFRecord file is a run of records, each framed as::

    uint64 length | uint32 masked CRC-32C of length | data[length] | uint32 masked CRC-32C of data

(little-endian). TFDS writes one ``Example`` per record, uncompressed: a map from feature key to
one of three lists -- bytes, float32 (packed) or int64 (packed varints). This module frames
records (:func:`record_offsets`, :func:`read_record`) and decodes an ``Example`` from the
protobuf wire format (:func:`parse_example`); both are pure and need neither TensorFlow nor a
protobuf schema. The length's CRC is checked (it tells a TFRecord file from any other and finds
a misaligned offset); the data's CRC is not (a pure-Python CRC over megabytes of frames would
cost more than decoding them, and a damaged record fails its parse or its image decode).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

#: Bytes before a record's data (length + its CRC) and after it (the data's CRC).
HEADER_BYTES = 12
FOOTER_BYTES = 4
GZIP_MAGIC = b"\x1f\x8b"

Feature = list[bytes] | npt.NDArray[np.float32] | npt.NDArray[np.int64]


class RecordError(ValueError):
    """A TFRecord file or record is malformed (the message says where and how)."""


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C (Castagnoli) of ``data`` -- for the 8-byte length field."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@dataclass(frozen=True)
class RecordSpan:
    """Where one record's data lies in its file."""

    offset: int  # of the record's header
    length: int  # of its data


def _header(raw: bytes, offset: int, path: str) -> int:
    """The data length a record's 12-byte header states; a bad header is a RecordError."""
    if len(raw) < HEADER_BYTES:
        raise RecordError(f"{path}: truncated at byte {offset} (a record header is cut off)")
    (length,) = struct.unpack("<Q", raw[:8])
    (crc,) = struct.unpack("<I", raw[8:12])
    if crc != masked_crc32c(raw[:8]):
        if offset == 0 and raw[:2] == GZIP_MAGIC:
            raise RecordError(f"{path}: GZIP-compressed TFRecords are not read (gunzip it first)")
        raise RecordError(
            f"{path}: not a TFRecord record at byte {offset} (its length's CRC fails)"
        )
    return int(length)


def record_offsets(path: str | Path) -> Iterator[RecordSpan]:
    """Every record of a TFRecord file, reading only the headers (a seek per record)."""
    name = str(path)
    size = Path(path).stat().st_size
    with Path(path).open("rb") as f:
        offset = 0
        while offset < size:
            length = _header(f.read(HEADER_BYTES), offset, name)
            end = offset + HEADER_BYTES + length + FOOTER_BYTES
            if end > size:
                raise RecordError(
                    f"{name}: truncated (the record at byte {offset} states {length} bytes; "
                    f"the file ends {end - size} bytes short)"
                )
            yield RecordSpan(offset, length)
            offset = end
            f.seek(offset)


def read_record(path: str | Path, offset: int) -> bytes:
    """The data of the record whose header starts at ``offset``."""
    name = str(path)
    with Path(path).open("rb") as f:
        f.seek(offset)
        length = _header(f.read(HEADER_BYTES), offset, name)
        data = f.read(length)
    if len(data) != length:
        raise RecordError(f"{name}: truncated (the record at byte {offset} is cut off)")
    return data


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """A protobuf varint at ``pos``: (value, position after it)."""
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise RecordError("a varint runs past the end of its message")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise RecordError("a varint is longer than 10 bytes")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, memoryview | int]]:
    """(field number, wire type, value) of each field of a message.

    The value is the bytes of a length-delimited field, the integer of a varint, the raw 4 / 8
    bytes of a fixed-width one.
    """
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise RecordError("a field runs past the end of its message")
            yield number, wire, buf[pos : pos + size]
            pos += size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            yield number, wire, buf[pos : pos + width]
            pos += width
        else:
            raise RecordError(f"unsupported protobuf wire type {wire}")


def _packed_varints(buf: memoryview) -> list[int]:
    out, pos = [], 0
    while pos < len(buf):
        value, pos = _varint(buf, pos)
        out.append(value - (1 << 64) if value >= 1 << 63 else value)  # int64, two's complement
    return out


def _feature(buf: memoryview) -> Feature:
    """One ``tf.train.Feature``: a BytesList (1), FloatList (2) or Int64List (3)."""
    for kind, _, value in _fields(buf):
        if not isinstance(value, memoryview):
            continue
        if kind == 1:
            return [bytes(v) for n, _, v in _fields(value) if n == 1 and isinstance(v, memoryview)]
        if kind == 2:
            parts = [
                np.frombuffer(v, dtype="<f4") for n, _, v in _fields(value) if n == 1
                if isinstance(v, memoryview)
            ]  # fmt: skip
            return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
        if kind == 3:
            ints: list[int] = []
            for n, wire, v in _fields(value):
                if n == 1 and isinstance(v, memoryview) and wire == 2:
                    ints.extend(_packed_varints(v))
                elif n == 1 and isinstance(v, int):
                    ints.append(v - (1 << 64) if v >= 1 << 63 else v)
            return np.asarray(ints, dtype=np.int64)
    return []  # a Feature with no list set: an empty value


def parse_example(data: bytes, want: Callable[[str], bool] | None = None) -> dict[str, Feature]:
    """A serialized ``tf.train.Example`` as ``{key: bytes list | float32 array | int64 array}``.

    ``want`` picks the keys to decode (the rest are skipped unread: an episode's signals are
    read without copying its frames).
    """
    out: dict[str, Feature] = {}
    for number, _, features in _fields(memoryview(data)):
        if number != 1 or not isinstance(features, memoryview):
            continue
        for entry_number, _, entry in _fields(features):  # map<string, Feature> entries
            if entry_number != 1 or not isinstance(entry, memoryview):
                continue
            key, value = "", memoryview(b"")
            for n, _, v in _fields(entry):
                if n == 1 and isinstance(v, memoryview):
                    key = bytes(v).decode("utf-8", errors="replace")
                elif n == 2 and isinstance(v, memoryview):
                    value = v
            if want is None or want(key):
                out[key] = _feature(value)
    return out


__all__ = [
    "RecordError",
    "RecordSpan",
    "masked_crc32c",
    "parse_example",
    "read_record",
    "record_offsets",
]
