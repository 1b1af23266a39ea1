"""The SQL of the PostgreSQL state store: one function per operation, on a pooled connection.

Indexes live on the record's own row, as in the SQLite store: a namespace's first write naming a
field gives it one of the columns ``i0``..``i3`` (``kv_fields``, assigned under an advisory lock so
that two processes never pick the same column), and a trigger counts each write in
``kv_count_delta``, folded into ``kv_count`` every second (:func:`fold_counts`). A commit's SQL
is in ``_pg_commit``.
"""

from __future__ import annotations

import builtins
from collections import Counter
from collections.abc import Sequence

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from llamactl.server.errors import StateStoreError
from llamactl.server.state._common import prefix_upper_bound
from llamactl.server.state.base import (
    Append,
    Index,
    LogEntry,
    Versioned,
)

__all__ = ["MAX_FIELDS", "Columns", "ConditionFailed", "Connection"]

Connection = asyncpg.Connection | PoolConnectionProxy
"""A connection of its own or one lent by the pool: the operations take either."""

MAX_FIELDS = 4
_COLUMNS = tuple(f"i{n}" for n in range(MAX_FIELDS))
BIGINT = range(-(2**63), 2**63)


class ConditionFailed(Exception):
    """A commit's condition did not hold (the transaction is rolled back)."""

    def __init__(self, position: int) -> None:
        self.position = position


class Columns:
    """Each namespace's field -> column mapping, kept once read (a field never changes column;
    another process may add fields, so a miss reads the mapping again).

    A column given inside a transaction is known to that transaction alone until the connection
    is handed back (:meth:`settle`): before its commit, another call of this store that wrote it
    would keep its value there if the transaction rolled back, under no field, or the next one.
    """

    def __init__(self) -> None:
        self._known: dict[str, dict[str, int]] = {}
        self._given: dict[int, dict[str, dict[str, int]]] = {}
        """id(connection) -> namespace -> the columns its open transaction gave or read since."""

    def settle(self, c: Connection, *, committed: bool) -> None:
        """``c``'s call ended: what it gave becomes known to every call if it committed."""
        given = self._given.pop(id(c), None)
        if given and committed:
            for ns, columns in given.items():
                self._known.setdefault(ns, {}).update(columns)

    async def of(self, c: Connection, ns: str) -> dict[str, int]:
        given = self._given.get(id(c))
        mapping = self._known.get(ns)
        if mapping is None:
            rows = await c.fetch("SELECT field, col FROM kv_fields WHERE ns = $1", ns)
            mapping = {str(r["field"]): int(r["col"]) for r in rows}
            if given is None:
                self._known[ns] = mapping
            else:  # may hold the transaction's own columns
                given.setdefault(ns, {}).update(mapping)
        if given is not None and ns in given:
            return {**mapping, **given[ns]}
        return mapping

    async def column(self, c: Connection, ns: str, field: str) -> int | None:
        """The column of ``field``, or None when it has none. A miss reads the mapping again:
        another process may have given the field its column since."""
        col = (await self.of(c, ns)).get(field)
        if col is None:
            self._known.pop(ns, None)
            col = (await self.of(c, ns)).get(field)
        return col

    def cached(self, ns: str, index: Index | None) -> bool:
        """True when writing ``index`` needs no new column (so a write is one statement)."""
        if index is None:
            return True
        mapping = self._known.get(ns)
        return mapping is not None and all(f in mapping for f in index.fields)

    async def assign(self, c: Connection, ns: str, index: Index | None) -> tuple[list[str], list[object]]:
        """The columns an indexed write sets (``sort`` and its fields') and their values.

        Must run inside a transaction when a field is new (its column is inserted).
        """
        if index is None:
            return [], []
        mapping = await self.of(c, ns)
        names: list[str] = [] if index.sort is None else ["sort"]
        values: list[object] = [] if index.sort is None else [index.sort]
        for field, value in index.fields.items():
            col = mapping.get(field)
            if col is None:
                col = await self._new_column(c, ns, field)
            names.append(_COLUMNS[col])
            values.append(value)
        return names, values

    async def _new_column(self, c: Connection, ns: str, field: str) -> int:
        await c.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "llamactl-fields:" + ns)
        rows = await c.fetch("SELECT field, col FROM kv_fields WHERE ns = $1", ns)
        taken = {str(r["field"]): int(r["col"]) for r in rows}
        given = self._given.setdefault(id(c), {}).setdefault(ns, {})
        given.update(taken)
        if field in taken:
            return taken[field]
        if len(taken) >= MAX_FIELDS:
            raise StateStoreError(
                f"namespace {ns!r} has {MAX_FIELDS} indexed fields already ({', '.join(sorted(taken))}): "
                f"an Index names at most {MAX_FIELDS} fields per namespace"
            )
        col = len(taken)
        await c.execute("INSERT INTO kv_fields (ns, field, col) VALUES ($1, $2, $3)", ns, field, col)
        given[field] = col
        return col


def _rowcount(status: str) -> int:
    """The row count of a command status such as ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[-1])


# --- key/value ---------------------------------------------------------------------------------


async def get(c: Connection, ns: str, key: str) -> Versioned | None:
    row = await c.fetchrow("SELECT value, version FROM kv WHERE ns = $1 AND key = $2", ns, key)
    return None if row is None else Versioned(bytes(row[0]), int(row[1]))


async def put(  # noqa: PLR0917 (a write's fields, in the order of the dataclass)
    c: Connection, cols: Columns, ns: str, key: str, value: bytes, index: Index | None
) -> int:
    names, values = await cols.assign(c, ns, index)
    version = await c.fetchval(put_sql(names), ns, key, value, *values)
    return int(version)


def put_sql(names: Sequence[str]) -> str:
    """A Put's statement, returning the new version; parameters: ns, key, value, the columns'."""
    columns = "".join(f", {n}" for n in names)
    marks = "".join(f", ${i + 4}" for i in range(len(names)))
    updates = "".join(f", {n} = excluded.{n}" for n in names)
    return (
        f"INSERT INTO kv (ns, key, value, version{columns}) VALUES ($1, $2, $3, 1{marks}) "
        f"ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, version = kv.version + 1{updates} "
        "RETURNING version"
    )


def cas_sql(names: Sequence[str], *, create: bool) -> str:
    """A Cas's statement, returning the new version or no row; parameters: ns, key, value, then
    (``create`` False) the expected version, then the columns'."""
    if create:
        columns = "".join(f", {n}" for n in names)
        marks = "".join(f", ${i + 4}" for i in range(len(names)))
        return (
            f"INSERT INTO kv (ns, key, value, version{columns}) VALUES ($1, $2, $3, 1{marks}) "
            "ON CONFLICT (ns, key) DO NOTHING RETURNING version"
        )
    sets = "".join(f", {n} = ${i + 5}" for i, n in enumerate(names))
    return (
        f"UPDATE kv SET value = $3, version = version + 1{sets} "
        "WHERE ns = $1 AND key = $2 AND version = $4 RETURNING version"
    )


async def cas(  # noqa: PLR0917 (a write's fields, in the order of the dataclass)
    c: Connection,
    cols: Columns,
    ns: str,
    key: str,
    value: bytes,
    expected: int | None,
    index: Index | None,
) -> int | None:
    if expected is not None and expected not in BIGINT:
        return None
    names, values = await cols.assign(c, ns, index)
    known = () if expected is None else (expected,)
    version = await c.fetchval(cas_sql(names, create=expected is None), ns, key, value, *known, *values)
    return None if version is None else int(version)


async def delete(c: Connection, ns: str, key: str, expected: int | None) -> bool:
    if expected is None:
        status = await c.execute("DELETE FROM kv WHERE ns = $1 AND key = $2", ns, key)
    elif expected not in BIGINT:
        return False
    else:
        status = await c.execute(
            "DELETE FROM kv WHERE ns = $1 AND key = $2 AND version = $3", ns, key, expected
        )
    return _rowcount(status) > 0


async def get_many(c: Connection, ns: str, keys: Sequence[str]) -> dict[str, Versioned]:
    rows = await c.fetch(
        "SELECT key, value, version FROM kv WHERE ns = $1 AND key = ANY($2::text[])", ns, list(keys)
    )
    return {str(r[0]): Versioned(bytes(r[1]), int(r[2])) for r in rows}


async def delete_keys(c: Connection, ns: str, keys: builtins.list[str]) -> Counter[str]:
    """Delete these keys of ``ns`` in one statement; which ones were there (1 each)."""
    rows = await c.fetch("DELETE FROM kv WHERE ns = $1 AND key = ANY($2::text[]) RETURNING key", ns, keys)
    return Counter(row[0] for row in rows)


async def list_keys(
    c: Connection, ns: str, prefix: str, after: str | None, limit: int
) -> builtins.list[tuple[str, Versioned]]:
    if limit <= 0:
        return []
    sql = "SELECT key, value, version FROM kv WHERE ns = $1 AND key >= $2"
    params: builtins.list[object] = [ns, prefix]
    bound = prefix_upper_bound(prefix)
    if bound is not None:
        params.append(bound)
        sql += f" AND key < ${len(params)}"
    if after is not None:
        params.append(after)
        sql += f" AND key > ${len(params)}"
    params.append(limit)
    sql += f" ORDER BY key LIMIT ${len(params)}"
    return [(r[0], Versioned(bytes(r[1]), int(r[2]))) for r in await c.fetch(sql, *params)]


async def query(
    c: Connection,
    cols: Columns,
    ns: str,
    field: str,
    value: str | None,
    *,
    after: str | None,
    limit: int,
    descending: bool,
) -> builtins.list[tuple[str, Versioned, str]]:
    col = await cols.column(c, ns, field)
    if col is None or limit <= 0:
        return []
    name = _COLUMNS[col]
    params: builtins.list[object] = [ns]
    if value is None:
        sql = "SELECT key, value, version, sort FROM kv WHERE ns = $1 AND sort IS NOT NULL"
        sql += f" AND {name} IS NOT NULL"
    else:
        params.append(value)
        sql = f"SELECT key, value, version, sort FROM kv WHERE ns = $1 AND {name} = $2"
    if after is not None:
        params.append(after)
        sql += f" AND sort {'<' if descending else '>'} ${len(params)}"
    params.append(limit)
    sql += f" ORDER BY sort {'DESC' if descending else 'ASC'} LIMIT ${len(params)}"
    return [(r[0], Versioned(bytes(r[1]), int(r[2])), r[3]) for r in await c.fetch(sql, *params)]


async def count(c: Connection, cols: Columns, ns: str, field: str) -> dict[str, int]:
    col = await cols.column(c, ns, field)
    if col is None:
        return {}
    rows = await c.fetch(_COUNT, ns, col)
    return {str(r[0]): int(r[1]) for r in rows}


_COUNT = """
SELECT value, sum(n)::bigint FROM (
    SELECT value, n FROM kv_count WHERE ns = $1 AND col = $2
    UNION ALL
    SELECT value, n FROM kv_count_delta WHERE ns = $1 AND col = $2
) AS counted GROUP BY value HAVING sum(n) > 0
"""
"""The counts folded and the deltas not folded yet, read in one snapshot (a fold moving rows
from one to the other commits wholly before it or after it)."""


async def fold_counts(c: Connection) -> int:
    """Fold the committed counter deltas into the counts; return how many counters changed."""
    return int(await c.fetchval("SELECT llamactl_fold_counts()"))


# --- logs --------------------------------------------------------------------------------------


async def append(c: Connection, channel: str, stream: str, value: bytes, idem: str | None) -> int:
    return int(await c.fetchval("SELECT llamactl_append($1, $2, $3, $4)", stream, idem, value, channel))


async def append_each(
    c: Connection, channel: str, stream: str, appends: Sequence[Append]
) -> builtins.list[int]:
    """Append ``appends`` (all to ``stream``) in order, each with its idempotency key."""
    offsets = await c.fetchval(
        "SELECT llamactl_append_each($1, $2, $3, $4)",
        stream,
        [a.idem_key for a in appends],
        [a.value for a in appends],
        channel,
    )
    return [int(offset) for offset in offsets]


async def append_many(
    c: Connection, channel: str, stream: str, values: Sequence[bytes]
) -> builtins.list[int]:
    first = int(await c.fetchval("SELECT llamactl_append_many($1, $2, $3)", stream, list(values), channel))
    return builtins.list(range(first, first + len(values)))


async def read(c: Connection, stream: str, from_offset: int, limit: int) -> builtins.list[LogEntry]:
    if limit <= 0:
        return []
    rows = await c.fetch(
        "SELECT off, value FROM log WHERE stream = $1 AND off >= $2 ORDER BY off LIMIT $3",
        stream,
        max(min(from_offset, 2**63 - 1), -(2**63)),
        limit,
    )
    return [LogEntry(int(r[0]), bytes(r[1])) for r in rows]


async def find_idem(c: Connection, stream: str, idem: str) -> int | None:
    found = await c.fetchval("SELECT off FROM log WHERE stream = $1 AND idem = $2", stream, idem)
    return None if found is None else int(found)


async def log_length(c: Connection, stream: str) -> int:
    found = await c.fetchval("SELECT next FROM log_head WHERE stream = $1", stream)
    return 0 if found is None else int(found)


async def delete_log(c: Connection, stream: str) -> int:
    status = await c.execute("DELETE FROM log WHERE stream = $1", stream)
    await c.execute("DELETE FROM log_head WHERE stream = $1", stream)
    return _rowcount(status)


async def delete_logs(c: Connection, streams: builtins.list[str]) -> Counter[str]:
    """Delete these logs in one statement (and their heads in another); how many entries each had."""
    rows = await c.fetch(
        "WITH d AS (DELETE FROM log WHERE stream = ANY($1::text[]) RETURNING stream) "
        "SELECT stream, count(*) FROM d GROUP BY stream",
        streams,
    )
    await c.execute("DELETE FROM log_head WHERE stream = ANY($1::text[])", streams)
    return Counter({row[0]: int(row[1]) for row in rows})


async def trim_log(c: Connection, stream: str, before: int) -> int:
    status = await c.execute(
        "DELETE FROM log WHERE stream = $1 AND off < LEAST($2, (SELECT MAX(off) FROM log WHERE stream = $1))",
        stream,
        max(min(before, 2**62), -(2**62)),
    )
    return _rowcount(status)
