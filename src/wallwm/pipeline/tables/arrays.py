"""Arrow <-> numpy helpers for per-frame vector columns."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wallwm.pipeline.sources.base import BadSignalError, FloatArray


def column_to_2d(column: pa.ChunkedArray | pa.Array, what: str, file: str) -> FloatArray:
    """Turn a per-frame column (list, fixed-size list or scalar) into a (T, D) float32 array.

    Raises:
        BadSignalError: On null rows or rows of different lengths (names ``file`` and ``what``).
    """
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if arr.null_count:
        first = int(np.flatnonzero(np.asarray(arr.is_null()))[0])
        raise BadSignalError(file, f"{what} is null at frame {first}", "NullValues")
    if (
        pa.types.is_list(arr.type)
        or pa.types.is_large_list(arr.type)
        or pa.types.is_fixed_size_list(arr.type)
    ):
        lengths = np.asarray(pc.list_value_length(arr))
        if len(lengths) and (lengths != lengths[0]).any():
            frame = int(np.flatnonzero(lengths != lengths[0])[0])
            raise BadSignalError(
                file,
                f"{what} rows have different lengths ({lengths[0]} vs {lengths[frame]} at "
                f"frame {frame})",
                "RaggedValues",
            )
        width = int(lengths[0]) if len(lengths) else 0
        values = arr.flatten()
        # numpy would parse "0.5" strings without a word; empty lists infer no type at all
        if not _numeric(values.type) and len(values):
            raise BadSignalError(
                file, f"{what} has unsupported element type {values.type}", "BadType"
            )
        if values.null_count:
            raise BadSignalError(file, f"{what} contains null elements", "NullValues")
        flat = float32_values(values.to_numpy(zero_copy_only=False), max(width, 1), what, file)
        return np.asarray(flat.reshape(len(arr), width), dtype=np.float32)
    if _numeric(arr.type):
        return float32_values(arr.to_numpy(zero_copy_only=False), 1, what, file).reshape(-1, 1)
    raise BadSignalError(file, f"{what} has unsupported type {arr.type}", "BadType")


def _numeric(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
    )


def float32_values(values: np.ndarray, width: int, what: str, file: str) -> FloatArray:
    """``values`` (flat, ``width`` per frame) as float32 (flat).

    A finite value float32 cannot hold is refused by name: the cast would make it infinite,
    then reported as a NaN/inf that the file does not hold.
    """
    if values.dtype.kind == "f" and values.dtype.itemsize > 4:
        big = np.isfinite(values) & (np.abs(values) > np.finfo(np.float32).max)
        if big.any():
            index = int(np.flatnonzero(big)[0])
            raise BadSignalError(
                file,
                f"{what} holds a value float32 cannot represent ({values[index]:.3g}; the limit "
                f"is 3.4e38) at frame {index // width}, dimension {index % width}",
                "OutOfRange",
            )
    return np.asarray(values, dtype=np.float32)


def to_vector_series(values: FloatArray, dim: int) -> pa.Array:
    """(T, D) float32 -> one ``list<fixed_size_list<float32, dim>>`` value (a 1-row array)."""
    flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1))
    frames = pa.FixedSizeListArray.from_arrays(flat, dim)
    offsets = pa.array([0, len(frames)], type=pa.int32())
    return pa.ListArray.from_arrays(offsets, frames)


def from_vector_series(value: pa.ListScalar | pa.Array) -> FloatArray:
    """Inverse of :func:`to_vector_series` for one row."""
    frames = value.values if isinstance(value, pa.ListScalar) else value
    if frames is None or len(frames) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    dim = frames.type.list_size
    flat = frames.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(-1, dim)


def table_to_ipc(table: pa.Table) -> bytes:
    """Serialise a table to Arrow IPC stream bytes (how workers hand rows to the driver)."""
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def table_from_ipc(payload: bytes) -> pa.Table:
    """Inverse of :func:`table_to_ipc`."""
    return pa.ipc.open_stream(payload).read_all()


def episode_arrays(table: pa.Table, i: int) -> tuple[FloatArray, FloatArray | None]:
    """Row ``i`` of an ``episodes`` table as actions (T, A) and states (T, S).

    States are None where the episode has none (``state_dim`` 0: the column holds a placeholder).
    """
    actions = from_vector_series(table.column("actions")[i])
    cell = table.column("states")[i]
    has_states = table.column("state_dim")[i].as_py() and cell.is_valid
    return actions, from_vector_series(cell) if has_states else None
