"""The SQL of the SQLite state store: schema, connection setup and one function per operation.

Every function runs on the writer thread inside a transaction the writer opened. A write does
at most one modifying statement, so a failing write is undone by SQLite's statement rollback
and the rest of the batch can still commit.
"""

from __future__ import annotations

import builtins
import sqlite3
from pathlib import Path

from llamactl.server.errors import StateStoreError
from llamactl.server.state._common import prefix_upper_bound
from llamactl.server.state.base import LogEntry, Versioned

SCHEMA_VERSION = 1

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
"""


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


def put(c: sqlite3.Connection, ns: str, key: str, value: bytes) -> int:
    row = c.execute(
        "INSERT INTO kv (ns, key, value, version) VALUES (?, ?, ?, 1) "
        "ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, version = kv.version + 1 "
        "RETURNING version",
        (ns, key, value),
    ).fetchone()
    return int(row[0])


def _storable(version: int) -> bool:
    return -(2**63) <= version < 2**63


def cas(c: sqlite3.Connection, ns: str, key: str, value: bytes, expected: int | None) -> int | None:
    if expected is not None and not _storable(expected):
        return None
    if expected is None:
        cur = c.execute(
            "INSERT INTO kv (ns, key, value, version) VALUES (?, ?, ?, 1) ON CONFLICT (ns, key) DO NOTHING",
            (ns, key, value),
        )
        return 1 if cur.rowcount == 1 else None
    cur = c.execute(
        "UPDATE kv SET value = ?, version = version + 1 WHERE ns = ? AND key = ? AND version = ?",
        (value, ns, key, expected),
    )
    return expected + 1 if cur.rowcount == 1 else None


def delete(c: sqlite3.Connection, ns: str, key: str, expected: int | None) -> bool:
    if expected is not None and not _storable(expected):
        return False
    if expected is None:
        cur = c.execute("DELETE FROM kv WHERE ns = ? AND key = ?", (ns, key))
    else:
        cur = c.execute("DELETE FROM kv WHERE ns = ? AND key = ? AND version = ?", (ns, key, expected))
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
    # Offsets are gap-free from 0, so MAX+1 is the count and costs one index probe.
    row = c.execute("SELECT COALESCE(MAX(off) + 1, 0) FROM log WHERE stream = ?", (stream,)).fetchone()
    return int(row[0])


def delete_log(c: sqlite3.Connection, stream: str) -> None:
    c.execute("DELETE FROM log WHERE stream = ?", (stream,))
