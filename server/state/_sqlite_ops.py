"""The SQL of the SQLite state store: schema, connection setup and one function per operation.

Every function runs on the writer thread inside a transaction the writer opened. A write of more
than one statement runs inside a SAVEPOINT, so a failing write is undone whole and the rest of
the batch can still commit.

Indexes: ``kv_index`` holds one row per (key, field) of a record written with an Index; triggers
keep ``kv_count`` (keys per field value) in step, so counting never reads the records.
"""

from __future__ import annotations

import builtins
import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from llamactl.server.errors import StateStoreError
from llamactl.server.state._common import prefix_upper_bound
from llamactl.server.state.base import (
    Append,
    Cas,
    CommitResult,
    Index,
    LogEntry,
    Put,
    Versioned,
    Write,
)

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    ns      TEXT    NOT NULL,
    key     TEXT    NOT NULL,
    value   BLOB    NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (ns, key)
);
CREATE TABLE IF NOT EXISTS log (
    stream TEXT    NOT NULL,
    off    INTEGER NOT NULL,
    idem   TEXT,
    value  BLOB    NOT NULL,
    PRIMARY KEY (stream, off)
);
CREATE UNIQUE INDEX IF NOT EXISTS log_idem ON log (stream, idem) WHERE idem IS NOT NULL;
CREATE TABLE IF NOT EXISTS kv_index (
    ns    TEXT NOT NULL,
    key   TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    sort  TEXT NOT NULL,
    PRIMARY KEY (ns, key, field)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_index_by_value ON kv_index (ns, field, value, sort);
CREATE INDEX IF NOT EXISTS kv_index_by_sort ON kv_index (ns, field, sort);
CREATE TABLE IF NOT EXISTS kv_count (
    ns    TEXT    NOT NULL,
    field TEXT    NOT NULL,
    value TEXT    NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (ns, field, value)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS kv_index_added AFTER INSERT ON kv_index BEGIN
    INSERT INTO kv_count (ns, field, value, n) VALUES (new.ns, new.field, new.value, 1)
    ON CONFLICT (ns, field, value) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS kv_index_removed AFTER DELETE ON kv_index BEGIN
    UPDATE kv_count SET n = n - 1 WHERE ns = old.ns AND field = old.field AND value = old.value;
    DELETE FROM kv_count WHERE ns = old.ns AND field = old.field AND value = old.value AND n <= 0;
END;
CREATE TRIGGER IF NOT EXISTS kv_index_changed AFTER UPDATE OF value ON kv_index
WHEN old.value <> new.value BEGIN
    UPDATE kv_count SET n = n - 1 WHERE ns = old.ns AND field = old.field AND value = old.value;
    DELETE FROM kv_count WHERE ns = old.ns AND field = old.field AND value = old.value AND n <= 0;
    INSERT INTO kv_count (ns, field, value, n) VALUES (new.ns, new.field, new.value, 1)
    ON CONFLICT (ns, field, value) DO UPDATE SET n = n + 1;
END;
"""


@contextlib.contextmanager
def _atomic(c: sqlite3.Connection) -> Iterator[None]:
    """Undo everything done inside the block if it raises (the surrounding batch goes on).

    One constant savepoint name, so that the three statements stay in the statement cache.
    """
    c.execute("SAVEPOINT w")
    try:
        yield
    except BaseException:
        if c.in_transaction:  # an I/O error may have rolled the whole transaction back already
            c.execute("ROLLBACK TO w")
            c.execute("RELEASE w")
        raise
    c.execute("RELEASE w")


class _ConditionFailed(Exception):
    def __init__(self, position: int) -> None:
        self.position = position


def is_memory_path(path: str) -> bool:
    return path in {":memory:", ""}


def connect(path: str, synchronous: str, busy_timeout_ms: int) -> sqlite3.Connection:
    """Open ``path`` (creating its folder), switch to WAL and make sure the schema exists."""
    if not is_memory_path(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: the writer issues BEGIN/COMMIT itself (group commit).
    conn = sqlite3.connect(path, isolation_level=None, cached_statements=64)
    try:
        _configure(conn, path, synchronous, busy_timeout_ms)
    except BaseException:
        conn.close()
        raise
    return conn


def _configure(conn: sqlite3.Connection, path: str, synchronous: str, busy_timeout_ms: int) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
    if mode != "wal" and not is_memory_path(path):
        raise StateStoreError(f"SQLite state store {path}: could not switch to WAL (mode is {mode!r})")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise StateStoreError(
            f"SQLite state store {path} has schema version {found}, newer than this llamactl "
            f"understands ({SCHEMA_VERSION}): upgrade llamactl or use another file"
        )
    conn.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")


# --- key/value ---------------------------------------------------------------------------------


def get(c: sqlite3.Connection, ns: str, key: str) -> Versioned | None:
    row = c.execute("SELECT value, version FROM kv WHERE ns = ? AND key = ?", (ns, key)).fetchone()
    return None if row is None else Versioned(row[0], row[1])


def _set_index(c: sqlite3.Connection, ns: str, key: str, index: Index) -> None:
    c.executemany(
        "INSERT INTO kv_index (ns, key, field, value, sort) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (ns, key, field) DO UPDATE SET value = excluded.value, sort = excluded.sort",
        [(ns, key, name, value, index.sort) for name, value in index.fields.items()],
    )


def put(c: sqlite3.Connection, ns: str, key: str, value: bytes, *, index: Index | None = None) -> int:
    with _atomic(c) if index else contextlib.nullcontext():
        return _put(c, ns, key, value, index)


def _put(c: sqlite3.Connection, ns: str, key: str, value: bytes, index: Index | None) -> int:
    row = c.execute(
        "INSERT INTO kv (ns, key, value, version) VALUES (?, ?, ?, 1) "
        "ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, version = kv.version + 1 "
        "RETURNING version",
        (ns, key, value),
    ).fetchone()
    if index:
        _set_index(c, ns, key, index)
    return int(row[0])


def _storable(version: int) -> bool:
    return -(2**63) <= version < 2**63


def cas(
    c: sqlite3.Connection,
    ns: str,
    key: str,
    value: bytes,
    expected: int | None,
    *,
    index: Index | None = None,
) -> int | None:
    with _atomic(c) if index else contextlib.nullcontext():
        return _cas(c, ns, key, value, expected, index=index)


def _cas(
    c: sqlite3.Connection, ns: str, key: str, value: bytes, expected: int | None, *, index: Index | None
) -> int | None:
    if expected is not None and not _storable(expected):
        return None
    if expected is None:
        cur = c.execute(
            "INSERT INTO kv (ns, key, value, version) VALUES (?, ?, ?, 1) ON CONFLICT (ns, key) DO NOTHING",
            (ns, key, value),
        )
        version = 1
    else:
        cur = c.execute(
            "UPDATE kv SET value = ?, version = version + 1 WHERE ns = ? AND key = ? AND version = ?",
            (value, ns, key, expected),
        )
        version = expected + 1
    if cur.rowcount != 1:
        return None
    if index:
        _set_index(c, ns, key, index)
    return version


def delete(c: sqlite3.Connection, ns: str, key: str, expected: int | None) -> bool:
    with _atomic(c):
        return _delete(c, ns, key, expected)


def _delete(c: sqlite3.Connection, ns: str, key: str, expected: int | None) -> bool:
    if expected is not None and not _storable(expected):
        return False
    if expected is None:
        cur = c.execute("DELETE FROM kv WHERE ns = ? AND key = ?", (ns, key))
    else:
        cur = c.execute("DELETE FROM kv WHERE ns = ? AND key = ? AND version = ?", (ns, key, expected))
    if cur.rowcount > 0:
        c.execute("DELETE FROM kv_index WHERE ns = ? AND key = ?", (ns, key))
    return cur.rowcount > 0


def list_keys(
    c: sqlite3.Connection, ns: str, prefix: str, after: str | None, limit: int
) -> builtins.list[tuple[str, Versioned]]:
    if limit <= 0:
        return []
    # An index range (key >= prefix AND key < bound) rather than LIKE: LIKE folds case and
    # treats % and _ as wildcards.
    sql = "SELECT key, value, version FROM kv WHERE ns = ? AND key >= ?"
    params: builtins.list[object] = [ns, prefix]
    bound = prefix_upper_bound(prefix)
    if bound is not None:
        sql += " AND key < ?"
        params.append(bound)
    if after is not None:
        sql += " AND key > ?"
        params.append(after)
    sql += " ORDER BY key LIMIT ?"
    params.append(limit)
    return [(k, Versioned(v, ver)) for k, v, ver in c.execute(sql, params)]


def query(
    c: sqlite3.Connection,
    ns: str,
    field: str,
    value: str | None,
    *,
    after: str | None,
    limit: int,
    descending: bool,
) -> builtins.list[tuple[str, Versioned, str]]:
    if limit <= 0:
        return []
    sql = (
        "SELECT i.key, kv.value, kv.version, i.sort FROM kv_index i "
        "JOIN kv ON kv.ns = i.ns AND kv.key = i.key WHERE i.ns = ? AND i.field = ?"
    )
    params: builtins.list[object] = [ns, field]
    if value is not None:
        sql += " AND i.value = ?"
        params.append(value)
    if after is not None:
        sql += " AND i.sort < ?" if descending else " AND i.sort > ?"
        params.append(after)
    sql += " ORDER BY i.sort DESC LIMIT ?" if descending else " ORDER BY i.sort LIMIT ?"
    params.append(limit)
    return [(k, Versioned(v, ver), sort) for k, v, ver, sort in c.execute(sql, params)]


def count(c: sqlite3.Connection, ns: str, field: str) -> dict[str, int]:
    rows = c.execute("SELECT value, n FROM kv_count WHERE ns = ? AND field = ? AND n > 0", (ns, field))
    return {value: int(n) for value, n in rows}


def commit(c: sqlite3.Connection, writes: Sequence[Write]) -> CommitResult:
    try:
        with _atomic(c):
            results = tuple(_apply(c, position, write) for position, write in enumerate(writes))
    except _ConditionFailed as failed:
        return CommitResult(ok=False, failed=failed.position)
    return CommitResult(ok=True, results=results)


def _apply(c: sqlite3.Connection, position: int, write: Write) -> int:
    """One write of a commit; raises _ConditionFailed when its condition does not hold."""
    if isinstance(write, Append):
        return append(c, write.stream, write.value, write.idem_key)
    if isinstance(write, Put):
        return _put(c, write.ns, write.key, write.value, write.index)
    if isinstance(write, Cas):
        version = _cas(c, write.ns, write.key, write.value, write.expected_version, index=write.index)
        if version is None:
            raise _ConditionFailed(position)
        return version
    deleted = _delete(c, write.ns, write.key, write.expected_version)
    if not deleted and write.expected_version is not None:
        raise _ConditionFailed(position)
    return int(deleted)


# --- logs --------------------------------------------------------------------------------------


def append(c: sqlite3.Connection, stream: str, value: bytes, idem: str | None) -> int:
    if idem is not None:
        row = c.execute("SELECT off FROM log WHERE stream = ? AND idem = ?", (stream, idem)).fetchone()
        if row is not None:
            return int(row[0])
    # Offsets are taken inside the write transaction (BEGIN IMMEDIATE holds the write lock),
    # so they stay gap-free even with other processes writing the same file.
    row = c.execute(
        "INSERT INTO log (stream, off, idem, value) "
        "SELECT ?, COALESCE(MAX(off) + 1, 0), ?, ? FROM log WHERE stream = ? RETURNING off",
        (stream, idem, value, stream),
    ).fetchone()
    return int(row[0])


def append_many(c: sqlite3.Connection, stream: str, values: builtins.list[bytes]) -> builtins.list[int]:
    # Inside the batch's write transaction nobody else can append to the stream in between; only
    # an I/O error could fail a row, and that rolls the whole transaction back.
    start = log_length(c, stream)
    c.executemany(
        "INSERT INTO log (stream, off, idem, value) VALUES (?, ?, NULL, ?)",
        [(stream, start + i, value) for i, value in enumerate(values)],
    )
    return builtins.list(range(start, start + len(values)))


def read(c: sqlite3.Connection, stream: str, from_offset: int, limit: int) -> builtins.list[LogEntry]:
    if limit <= 0:
        return []
    rows = c.execute(
        "SELECT off, value FROM log WHERE stream = ? AND off >= ? ORDER BY off LIMIT ?",
        (stream, from_offset, limit),
    )
    return [LogEntry(off, value) for off, value in rows]


def log_length(c: sqlite3.Connection, stream: str) -> int:
    # Offsets are gap-free from 0 and trimming keeps the last entry, so MAX+1 is the number of
    # entries ever appended, at the cost of one index probe.
    row = c.execute("SELECT COALESCE(MAX(off) + 1, 0) FROM log WHERE stream = ?", (stream,)).fetchone()
    return int(row[0])


def delete_log(c: sqlite3.Connection, stream: str) -> None:
    c.execute("DELETE FROM log WHERE stream = ?", (stream,))


def trim_log(c: sqlite3.Connection, stream: str, before: int) -> int:
    cur = c.execute(
        "DELETE FROM log WHERE stream = ? AND off < MIN(?, (SELECT MAX(off) FROM log WHERE stream = ?))",
        (stream, min(before, 2**62), stream),
    )
    return int(cur.rowcount)
