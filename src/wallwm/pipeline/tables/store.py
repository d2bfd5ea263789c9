"""The table store: every write of every stage goes through here.

:class:`TableStore` is the small protocol the stages depend on; :class:`LanceStore` is the real
implementation (one Lance dataset per table under a root URI) and :class:`MemoryStore` an
in-memory double with the same semantics for pure unit tests.

Writes are keyed upserts (Lance ``merge_insert``): re-writing identical rows is skipped *before*
touching Lance, so an idempotent re-run leaves every table version unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

#: Below this many rows a flat scan is as fast as a vector index, so none is built.
INDEX_MIN_ROWS = 256
#: Partitions of a vector index every query searches at least (:meth:`LanceStore.nearest`).
MIN_PROBES = 20


class StoreError(RuntimeError):
    """A table could not be read or written (names the table and the problem)."""


@dataclass(frozen=True)
class WriteResult:
    """What one write did to one table."""

    table: str
    inserted: int
    updated: int
    deleted: int
    version_before: int | None
    version_after: int | None

    @property
    def changed(self) -> bool:
        """Whether the write created a new table version."""
        return self.version_before != self.version_after


@runtime_checkable
class TableStore(Protocol):
    """Keyed, versioned tables under one dataset root."""

    root: str

    def exists(self, table: str) -> bool:
        """Whether ``table`` has been created."""
        ...

    def version(self, table: str) -> int | None:
        """Current version of ``table`` (None if it does not exist)."""
        ...

    def schema(self, table: str) -> pa.Schema | None:
        """Schema of ``table`` (None if it does not exist)."""
        ...

    def read(
        self,
        table: str,
        columns: list[str] | None = None,
        where: str | None = None,
        version: int | str | None = None,
    ) -> pa.Table:
        """Rows of ``table``: optionally a column subset, a SQL filter, an older version or a tag.

        An unknown version or tag is a :class:`StoreError`.
        """
        ...

    def count(self, table: str, where: str | None = None) -> int:
        """Number of rows of ``table`` matching ``where`` (0 if it does not exist)."""
        ...

    def upsert(
        self, table: str, rows: pa.Table, key: str, volatile: tuple[str, ...] = ()
    ) -> WriteResult:
        """Insert new rows and update changed rows, matched on ``key``; create if missing.

        Columns named in ``volatile`` (run ids, timestamps) are ignored when deciding whether an
        existing row is unchanged, so re-recording the same content writes nothing.
        """
        ...

    def replace(
        self, table: str, rows: pa.Table, key: str, scope: str, volatile: tuple[str, ...] = ()
    ) -> WriteResult:
        """Atomically make the rows matching the SQL filter ``scope`` equal to ``rows``."""
        ...

    def update(self, table: str, where: str, values: dict[str, str]) -> WriteResult:
        """Set columns (SQL expressions) on the rows matching ``where``."""
        ...

    def update_columns(self, table: str, rows: pa.Table, key: str) -> WriteResult:
        """Overwrite the columns present in ``rows`` on existing rows matched on ``key``.

        Other columns (e.g. keyframe bytes) are left untouched; unknown keys are ignored.
        """
        ...

    def ensure_columns(self, table: str, fields: list[pa.Field]) -> None:
        """Add the ``fields`` a table lacks, all null (schema evolution; no data rewrite)."""
        ...

    def index_vectors(self, table: str, column: str, stale: bool) -> bool:
        """Make sure ``column`` has a current cosine vector index; True if one was (re)built.

        Built when the table is large enough for an index to pay off (:data:`INDEX_MIN_ROWS`)
        and there is none yet or ``stale`` says the vectors changed since it was built.
        """
        ...

    def nearest(
        self, table: str, column: str, query: np.ndarray, k: int, columns: list[str]
    ) -> list[dict[str, Any]]:
        """The ``k`` rows nearest to ``query`` by cosine distance, nearest first.

        Each row gets a ``distance``; rows whose vector is null are left out.
        """
        ...


def _align(rows: pa.Table, schema: pa.Schema, table: str) -> pa.Table:
    """Reorder and cast ``rows`` to ``schema``; a clear error names what does not fit.

    Nullable columns the rows lack (added to the table by a later stage, e.g. embeddings) are
    filled with nulls: a rewritten row carries no stale value from an older version of it.
    """
    missing = [f.name for f in schema if f.name not in rows.column_names and not f.nullable]
    if missing:
        raise StoreError(f"table {table!r}: rows lack columns {missing}")
    for f in schema:
        if f.name not in rows.column_names:
            rows = rows.append_column(f, pa.nulls(rows.num_rows, f.type))
    try:
        return rows.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        raise StoreError(f"table {table!r}: rows do not match the table schema: {exc}") from exc


def _unchanged_mask(
    existing: pa.Table, rows: pa.Table, key: str, volatile: tuple[str, ...]
) -> list[bool]:
    """For each row of ``rows``: does an equal row (ignoring ``volatile``) with its key exist?"""
    if existing.num_rows == 0:
        return [False] * rows.num_rows
    names = [n for n in rows.column_names if n not in volatile]
    by_key = {r[key]: r for r in existing.select(names).to_pylist()}
    return [by_key.get(r[key]) == r for r in rows.select(names).to_pylist()]


def _same_rows(old: pa.Table, new: pa.Table, key: str, volatile: tuple[str, ...]) -> bool:
    """Whether two row sets are equal as sets keyed by ``key``, ignoring ``volatile`` columns."""
    if old.num_rows != new.num_rows:
        return False
    names = [n for n in new.column_names if n not in volatile]
    return sorted(old.select(names).to_pylist(), key=lambda r: str(r[key])) == sorted(
        new.select(names).to_pylist(), key=lambda r: str(r[key])
    )


def sql_quote(value: str) -> str:
    """Quote a string literal for a Lance SQL filter."""
    return "'" + value.replace("'", "''") + "'"


def sql_in(column: str, values: list[str]) -> str:
    """``column IN ('a', 'b')`` with proper quoting."""
    quoted = ", ".join(sql_quote(v) for v in values)
    return f"{column} IN ({quoted})"


def _drop_unchanged(
    store: TableStore, table: str, rows: pa.Table, key: str, volatile: tuple[str, ...] = ()
) -> pa.Table:
    """Rows that would actually change the table (new keys, or different content)."""
    if not store.exists(table) or rows.num_rows == 0:
        return rows
    keys = [str(k) for k in rows.column(key).to_pylist()]
    existing = store.read(table, where=sql_in(key, keys))
    mask = _unchanged_mask(existing.select(rows.column_names), rows, key, volatile)
    return rows.filter(pa.array([not m for m in mask]))


class LanceStore:
    """One Lance dataset per table under ``root`` (``<root>/<table>.lance``)."""

    def __init__(self, root: str) -> None:
        """Open (or prepare to create) the dataset root ``root``."""
        self.root = str(root).rstrip("/")
        if "://" not in self.root:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def _merged(self, table: str, stats: dict[str, Any], before: int | None) -> WriteResult:
        """A ``merge_insert``'s counts as a :class:`WriteResult`."""
        return WriteResult(
            table,
            int(stats["num_inserted_rows"]),
            int(stats["num_updated_rows"]),
            int(stats["num_deleted_rows"]),
            before,
            self.version(table),
        )

    def uri(self, table: str) -> str:
        """URI of one table's Lance dataset."""
        return f"{self.root}/{table}.lance"

    def _open(self, table: str, version: int | str | None = None) -> Any:
        import lance

        try:
            return lance.dataset(self.uri(table), version=version)
        except ValueError as exc:
            raise StoreError(f"table {table!r} at {self.uri(table)}: {exc}") from exc

    def at(self, table: str, version: int | str | None = None) -> Any:
        """``table``'s Lance dataset at a version number or tag (None: the current one).

        For reads the row interface does not cover: streaming batches, a version's number.

        Raises:
            StoreError: No such table, version or tag.
        """
        return self._open(table, version)

    def create_tag(self, table: str, name: str, version: int) -> None:
        """Tag ``version`` of ``table`` as ``name`` (tags are immutable: an existing one raises)."""
        self._open(table).tags.create(name, version)

    def tags(self, table: str) -> list[str]:
        """The names of ``table``'s tags (none for a table not created yet)."""
        return sorted(self._open(table).tags.list()) if self.exists(table) else []

    def exists(self, table: str) -> bool:
        """Whether ``table`` has been created."""
        if "://" in self.root:
            try:
                self._open(table)
            except StoreError:
                return False
            return True
        return (Path(self.uri(table)) / "_versions").is_dir()

    def version(self, table: str) -> int | None:
        """Current version of ``table`` (None if it does not exist)."""
        return int(self._open(table).version) if self.exists(table) else None

    def schema(self, table: str) -> pa.Schema | None:
        """Schema of ``table`` (None if it does not exist)."""
        return self._open(table).schema if self.exists(table) else None

    def read(
        self,
        table: str,
        columns: list[str] | None = None,
        where: str | None = None,
        version: int | str | None = None,
    ) -> pa.Table:
        """Rows of ``table`` (optionally a column subset, a SQL filter, a version or tag)."""
        if not self.exists(table):
            return pa.table({})
        return self._open(table, version).to_table(columns=columns, filter=where)

    def count(self, table: str, where: str | None = None) -> int:
        """Number of rows of ``table`` matching ``where`` (0 if it does not exist)."""
        if not self.exists(table):
            return 0
        return int(self._open(table).count_rows(filter=where))

    def upsert(
        self, table: str, rows: pa.Table, key: str, volatile: tuple[str, ...] = ()
    ) -> WriteResult:
        """Insert new rows and update changed rows, matched on ``key``; create if missing."""
        before = self.version(table)
        if before is None:
            if rows.num_rows == 0:
                return WriteResult(table, 0, 0, 0, None, None)
            with self._creating() as locked:
                made = False
                if self.version(table) is None:  # another writer may have made it meanwhile
                    # Unlocked, the table is made empty: a create another writer replaces at
                    # the same moment then loses no rows (all of them are merged below).
                    made = self._create(table, rows if locked else rows.slice(0, 0))
                    if made and locked:
                        return WriteResult(table, rows.num_rows, 0, 0, None, self.version(table))
                before = None if made else self.version(table)
        rows = _align(rows, self._open(table).schema, table)
        rows = _drop_unchanged(self, table, rows, key, volatile)
        if rows.num_rows == 0:
            return WriteResult(table, 0, 0, 0, before, before)
        builder = self._open(table).merge_insert(key).when_matched_update_all()
        return self._merged(table, builder.when_not_matched_insert_all().execute(rows), before)

    @contextlib.contextmanager
    def _creating(self) -> Iterator[bool]:
        """While a table is made: the dataset root locked where it can be (yields whether it is).

        Lance's ``mode="create"`` is not atomic (lance-format/lance#4451): writers creating one
        new table at once can all succeed, each replacing the others' rows (three processes
        ingesting into one new dataset kept 20 of 60 rows in one CI run; six released together
        lost rows in 4 of 8 rounds). A local root is locked (``flock`` on its folder, released
        if the process dies) so that one writer creates and the rest find the table and merge.
        An object store's root has no lock: there :meth:`upsert` creates the table empty and
        merges its rows like any later write (Lance resolves concurrent merges), so a create
        replaced by another writer's loses nothing. Six writers released together, with the
        rows in the create: rows lost in 6 of 6 rounds on S3 (moto's server), 2 of 6 on a
        ``file://`` root (which takes this path on local disk); created empty: none in 8 and
        24 rounds.
        """
        if "://" in self.root:
            yield False
            return
        import fcntl

        fd = os.open(self.root, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield True
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _create(self, table: str, rows: pa.Table) -> bool:
        """Make ``table`` with ``rows``; False where another writer made it first."""
        import lance

        try:
            lance.write_dataset(rows, self.uri(table), mode="create")
        except OSError as exc:
            # Another writer (a second ingest into the same new dataset, on an object store)
            # created the table first: merge into it like any later write.
            if not self.exists(table):
                raise
            log.info("%s was created by another writer (%s): merging", table, exc)
            return False
        return True

    def replace(
        self, table: str, rows: pa.Table, key: str, scope: str, volatile: tuple[str, ...] = ()
    ) -> WriteResult:
        """Atomically make the rows matching the SQL filter ``scope`` equal to ``rows``.

        One ``merge_insert`` commit inserts/updates ``rows`` and deletes the rows in ``scope``
        that ``rows`` does not contain, so readers never see a half-replaced scope.
        """
        before = self.version(table)
        if before is None:
            return self.upsert(table, rows, key)
        rows = _align(rows, self._open(table).schema, table)
        existing = self.read(table, columns=rows.column_names, where=scope)
        if _same_rows(existing, rows, key, volatile):
            return WriteResult(table, 0, 0, 0, before, before)
        builder = self._open(table).merge_insert(key).when_matched_update_all()
        builder = builder.when_not_matched_insert_all().when_not_matched_by_source_delete(scope)
        return self._merged(table, builder.execute(rows), before)

    def ensure_columns(self, table: str, fields: list[pa.Field]) -> None:
        """Add the ``fields`` a table lacks, all null (schema evolution; no data rewrite)."""
        schema = self.schema(table)
        if schema is None:
            raise StoreError(f"table {table!r} does not exist")
        missing = [f for f in fields if f.name not in schema.names]
        if missing:
            self._open(table).add_columns(missing)

    def update_columns(self, table: str, rows: pa.Table, key: str) -> WriteResult:
        """Overwrite the columns present in ``rows`` on existing rows matched on ``key``."""
        before = self.version(table)
        if before is None or rows.num_rows == 0:
            return WriteResult(table, 0, 0, 0, before, before)
        schema = self._open(table).schema
        rows = _align(rows, pa.schema([schema.field(n) for n in rows.column_names]), table)
        rows = _drop_unchanged(self, table, rows, key)
        if rows.num_rows == 0:
            return WriteResult(table, 0, 0, 0, before, before)
        stats = self._open(table).merge_insert(key).when_matched_update_all().execute(rows)
        return WriteResult(table, 0, int(stats["num_updated_rows"]), 0, before, self.version(table))

    def update(self, table: str, where: str, values: dict[str, str]) -> WriteResult:
        """Set columns (SQL expressions) on the rows matching ``where``."""
        before = self.version(table)
        if before is None or self.count(table, where) == 0:
            return WriteResult(table, 0, 0, 0, before, before)
        stats = self._open(table).update(values, where=where)
        return WriteResult(table, 0, int(stats["num_rows_updated"]), 0, before, self.version(table))

    def index_vectors(self, table: str, column: str, stale: bool) -> bool:
        """IVF_FLAT (exact within the probed partitions) with cosine distance on ``column``."""
        rows = self.count(table)
        if rows < INDEX_MIN_ROWS:
            return False
        ds = self._open(table)
        indexed = any(column in i.field_names for i in ds.describe_indices())
        if indexed and not stale:
            return False
        partitions = max(1, min(256, int(np.sqrt(rows))))
        ds.create_index(
            column, index_type="IVF_FLAT", num_partitions=partitions, metric="cosine", replace=True
        )
        return True

    def nearest(
        self, table: str, column: str, query: np.ndarray, k: int, columns: list[str]
    ) -> list[dict[str, Any]]:
        """Lance's vector search (through the index when there is one).

        At least :data:`MIN_PROBES` of the index's partitions are searched (Lance's default
        is one): with one, a neighbour in the next partition was missed -- the 5th nearest of
        300 rows, now and then, as the partitions' k-means starts differ from build to build.
        The index has at most ``sqrt(rows)`` partitions, so up to 400 rows the search is exact.
        """
        if not self.exists(table):
            return []
        found = self._open(table).to_table(
            columns=columns,
            nearest={
                "column": column,
                "q": query,
                "k": k,
                "metric": "cosine",
                "minimum_nprobes": MIN_PROBES,
            },
        )
        out: list[dict[str, Any]] = found.to_pylist()
        for r in out:
            r["distance"] = float(r.pop("_distance"))
        return out


class MemoryStore:
    """In-memory :class:`TableStore` double with the same keyed, versioned semantics.

    Supports the SQL subset the stages use in ``where`` filters through pyarrow: ``col = 'v'``,
    ``col IN (...)`` joined by ``AND``. Meant for pure unit tests of stage logic.
    """

    def __init__(self, root: str = "memory://") -> None:
        """Create an empty store."""
        self.root = root
        self._tables: dict[str, list[pa.Table]] = {}

    def exists(self, table: str) -> bool:
        """Whether ``table`` has been created."""
        return table in self._tables

    def version(self, table: str) -> int | None:
        """Current version of ``table`` (None if it does not exist)."""
        return len(self._tables[table]) if table in self._tables else None

    def schema(self, table: str) -> pa.Schema | None:
        """Schema of ``table`` (None if it does not exist)."""
        return self._tables[table][-1].schema if table in self._tables else None

    def read(
        self,
        table: str,
        columns: list[str] | None = None,
        where: str | None = None,
        version: int | str | None = None,
    ) -> pa.Table:
        """Rows of ``table`` (optionally a column subset, a filter, and a version number)."""
        if table not in self._tables:
            return pa.table({})
        if isinstance(version, str):
            raise StoreError(f"table {table!r}: tags need the Lance store")
        versions = self._tables[table]
        if version is not None and not 1 <= version <= len(versions):
            raise StoreError(f"table {table!r} has no version {version}")
        data = versions[-1 if version is None else version - 1]
        if where:
            data = data.filter(_memory_filter(data, where))
        return data.select(columns) if columns else data

    def count(self, table: str, where: str | None = None) -> int:
        """Number of rows of ``table`` matching ``where``."""
        return int(self.read(table, where=where).num_rows)

    def _commit(self, table: str, data: pa.Table) -> None:
        self._tables.setdefault(table, []).append(data)

    def upsert(
        self, table: str, rows: pa.Table, key: str, volatile: tuple[str, ...] = ()
    ) -> WriteResult:
        """Insert new rows and update changed rows, matched on ``key``."""
        before = self.version(table)
        if before is None:
            if rows.num_rows:
                self._commit(table, rows)
            return WriteResult(table, rows.num_rows, 0, 0, None, self.version(table))
        current = self._tables[table][-1]
        rows = _drop_unchanged(self, table, _align(rows, current.schema, table), key, volatile)
        if rows.num_rows == 0:
            return WriteResult(table, 0, 0, 0, before, before)
        new_keys = pa.array(rows.column(key).to_pylist())
        kept = current.filter(pc.invert(pc.is_in(current.column(key), value_set=new_keys)))
        updated = current.num_rows - kept.num_rows
        self._commit(table, pa.concat_tables([kept, rows]))
        return WriteResult(table, rows.num_rows - updated, updated, 0, before, self.version(table))

    def replace(
        self, table: str, rows: pa.Table, key: str, scope: str, volatile: tuple[str, ...] = ()
    ) -> WriteResult:
        """Atomically make the rows matching ``scope`` equal to ``rows``."""
        before = self.version(table)
        if before is None:
            return self.upsert(table, rows, key)
        current = self._tables[table][-1]
        rows = _align(rows, current.schema, table)
        in_scope = _memory_filter(current, scope)
        old = current.filter(in_scope)
        if _same_rows(old, rows, key, volatile):
            return WriteResult(table, 0, 0, 0, before, before)
        kept = current.filter(pc.invert(in_scope))
        kept = kept.filter(pc.invert(pc.is_in(kept.column(key), value_set=rows.column(key))))
        self._commit(table, pa.concat_tables([kept, rows]))
        old_keys = set(old.column(key).to_pylist())
        new_keys = set(rows.column(key).to_pylist())
        return WriteResult(
            table,
            len(new_keys - old_keys),
            len(new_keys & old_keys),
            len(old_keys - new_keys),
            before,
            self.version(table),
        )

    def ensure_columns(self, table: str, fields: list[pa.Field]) -> None:
        """Add the ``fields`` a table lacks, all null."""
        if table not in self._tables:
            raise StoreError(f"table {table!r} does not exist")
        current = self._tables[table][-1]
        for f in fields:
            if f.name not in current.schema.names:
                current = current.append_column(f, pa.nulls(current.num_rows, f.type))
        self._commit(table, current)

    def update_columns(self, table: str, rows: pa.Table, key: str) -> WriteResult:
        """Overwrite the columns present in ``rows`` on existing rows matched on ``key``."""
        before = self.version(table)
        if before is None or rows.num_rows == 0:
            return WriteResult(table, 0, 0, 0, before, before)
        current = self._tables[table][-1]
        rows = _align(rows, pa.schema([current.schema.field(n) for n in rows.column_names]), table)
        rows = _drop_unchanged(self, table, rows, key)
        by_key = {r[key]: r for r in rows.to_pylist()}
        merged = [{**r, **by_key.get(r[key], {})} for r in current.to_pylist()]
        updated = sum(r[key] in by_key for r in current.to_pylist())
        if not updated:
            return WriteResult(table, 0, 0, 0, before, before)
        self._commit(table, pa.Table.from_pylist(merged, current.schema))
        return WriteResult(table, 0, updated, 0, before, self.version(table))

    def update(self, table: str, where: str, values: dict[str, str]) -> WriteResult:
        """Set columns to SQL literals (``'text'``, ``true``/``false``, numbers)."""
        before = self.version(table)
        if before is None:
            return WriteResult(table, 0, 0, 0, None, None)
        current = self._tables[table][-1]
        mask = _memory_filter(current, where)
        n = int(pc.sum(mask).as_py() or 0)
        if n == 0:
            return WriteResult(table, 0, 0, 0, before, before)
        for name, expr in values.items():
            idx = current.schema.get_field_index(name)
            literal = pa.scalar(_parse_literal(expr), type=current.schema.field(name).type)
            column = pc.if_else(mask, literal, current.column(name))
            current = current.set_column(idx, current.schema.field(name), column)
        self._commit(table, current)
        return WriteResult(table, 0, n, 0, before, self.version(table))

    def index_vectors(self, table: str, column: str, stale: bool) -> bool:
        """No index in memory (``nearest`` scans)."""
        return False

    def nearest(
        self, table: str, column: str, query: np.ndarray, k: int, columns: list[str]
    ) -> list[dict[str, Any]]:
        """Exact cosine distances over every row."""
        q = np.asarray(query, np.float32)
        rows = [r for r in self.read(table, columns=[*columns, column]).to_pylist() if r[column]]
        for r in rows:
            v = np.asarray(r.pop(column), np.float32)
            denom = float(np.linalg.norm(v) * np.linalg.norm(q)) or 1.0
            r["distance"] = 1.0 - float(np.dot(v, q)) / denom
        return sorted(rows, key=lambda r: r["distance"])[:k]


def _parse_literal(expr: str) -> object:
    expr = expr.strip()
    if expr.lower() in ("true", "false"):
        return expr.lower() == "true"
    if expr.startswith("'") and expr.endswith("'"):
        return expr[1:-1].replace("''", "'")
    return float(expr) if "." in expr else int(expr)


def _memory_filter(data: pa.Table, where: str) -> pa.ChunkedArray:
    """Evaluate ``a = 'x' AND b IN ('y', 'z')`` style filters with pyarrow."""
    mask = pc.equal(pa.array([True] * data.num_rows), True)
    for raw_clause in where.split(" AND "):
        clause = raw_clause.strip()
        if " IN (" in clause:
            column, _, rest = clause.partition(" IN (")
            values = [_parse_literal(v) for v in rest.rstrip(")").split(",") if v.strip()]
            term = pc.is_in(data.column(column.strip()), value_set=pa.array(values))
        else:
            column, _, value = clause.partition("=")
            term = pc.equal(data.column(column.strip()), _parse_literal(value))
        mask = pc.and_(mask, term)
    return mask
