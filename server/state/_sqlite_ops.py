"""The SQL of the SQLite state store: schema, connection setup and one function per operation.

Every function runs on the writer thread inside a transaction the writer opened. A write of more
than one statement runs inside a SAVEPOINT, so a failing write is undone whole and the rest of
the batch can still commit.

Indexes live on the record's own row: see ``_sqlite_index``.
"""

from __future__ import annotations

import builtins
import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from llamactl.server.errors import StateStoreError
from llamactl.server.state import _sqlite_index as index_module
from llamactl.server.state import _sqlite_many as many
from llamactl.server.state._common import prefix_upper_bound
from llamactl.server.state.base import (
    Append,
    Cas,
    CommitResult,
    DeleteLog,
    Index,
    LogEntry,
    Put,
    Versioned,
    Write,
)

SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    ns      TEXT    NOT NULL,
    key     TEXT    NOT NULL,
    value   BLOB    NOT NULL,
    version INTEGER NOT NULL,
    sort    TEXT,
    i0      TEXT,
    i1      TEXT,
    i2      TEXT,
    i3      TEXT,
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


@contextlib.contextmanager
def _atomic(c: sqlite3.Connection) -> Iterator[None]:
    """Undo everything done inside the block if it raises (the surrounding batch goes on).

    Without a savepoint while the connection's ``savepoints`` is off (the writer's first try of
    a batch): a block that fails before it changed a row has nothing to undo; one that fails
    after raises :class:`RedoWithSavepoints`, and the writer runs the batch again, from its
    start, with them. The two statements a savepoint costs were a tenth of a commit's.
    One constant savepoint name, so that the three statements stay in the statement cache.
    """
    if not getattr(c, "savepoints", True):
        before = c.total_changes
        try:
            yield
        except BaseException as exc:
            # Rolled back whole (disk full, I/O error), the batch fails, and the writer forgets.
            if c.total_changes != before and c.in_transaction:
                raise RedoWithSavepoints() from exc
            raise
        return
    c.execute("SAVEPOINT w")
    try:
        yield
    except BaseException:
        forget_after_rollback(c)  # a field given a column inside the block lost it again
        if c.in_transaction:  # an I/O error may have rolled the whole transaction back already
            c.execute("ROLLBACK TO w")
            c.execute("RELEASE w")
        raise
    c.execute("RELEASE w")


class RedoWithSavepoints(Exception):
    """A block run without a savepoint failed after it changed rows: roll the transaction back
    and run its batch again with savepoints (see :func:`_atomic`)."""


def forget_after_rollback(c: sqlite3.Connection) -> None:
    """Drop what the connection remembers of the file, the field columns and the log heads (after
    a rollback: they are read again)."""
    if isinstance(c, index_module.IndexedConnection):
        c.index_columns.clear()
        c.log_heads.clear()


def check_log_heads(c: sqlite3.Connection) -> None:
    """Call first in every transaction: keep the remembered next offsets of the logs only if no
    other connection (another process sharing the file) committed since the last check."""
    if not isinstance(c, index_module.IndexedConnection):
        return
    (version,) = c.execute("PRAGMA data_version").fetchone()
    if version != c.data_version:
        c.log_heads.clear()
        c.data_version = version


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
    conn = sqlite3.connect(
        path, isolation_level=None, cached_statements=128, factory=index_module.IndexedConnection
    )
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
    # Each commit's SAVEPOINTs need a statement journal; on disk that is a temp file created,
    # written and unlinked per commit (seen with strace: 4 file syscalls per task).
    conn.execute("PRAGMA temp_store = MEMORY")
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise StateStoreError(
            f"SQLite state store {path} has schema version {found}, newer than this llamactl "
            f"understands ({SCHEMA_VERSION}): upgrade llamactl or use another file"
        )
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _statements(_SCHEMA):
            conn.execute(statement)
        index_module.migrate(conn)
        for statement in _statements(index_module.schema()):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _statements(script: str) -> builtins.list[str]:
    """The statements of a script (``executescript`` would commit the open transaction first)."""
    out: builtins.list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    return [s for s in out if s]


# --- key/value ---------------------------------------------------------------------------------


def get(c: sqlite3.Connection, ns: str, key: str) -> Versioned | None:
    row = c.execute("SELECT value, version FROM kv WHERE ns = ? AND key = ?", (ns, key)).fetchone()
    return None if row is None else Versioned(row[0], row[1])


def put(c: sqlite3.Connection, ns: str, key: str, value: bytes, *, index: Index | None = None) -> int:
    with _atomic(c) if index else contextlib.nullcontext():
        return _put(c, ns, key, value, index)


def _put(c: sqlite3.Connection, ns: str, key: str, value: bytes, index: Index | None) -> int:
    names, values = index_module.write_columns(c, ns, index)
    columns = "".join(f", {n}" for n in names)
    marks = ", ?" * len(names)
    updates = "".join(f", {n} = excluded.{n}" for n in names)
    row = c.execute(
        f"INSERT INTO kv (ns, key, value, version{columns}) VALUES (?, ?, ?, 1{marks}) "
        f"ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, version = kv.version + 1{updates} "
        "RETURNING version",
        (ns, key, value, *values),
    ).fetchone()
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
    names, values = index_module.write_columns(c, ns, index)
    if expected is None:
        columns = "".join(f", {n}" for n in names)
        marks = ", ?" * len(names)
        cur = c.execute(
            f"INSERT INTO kv (ns, key, value, version{columns}) VALUES (?, ?, ?, 1{marks}) "
            "ON CONFLICT (ns, key) DO NOTHING",
            (ns, key, value, *values),
        )
        version = 1
    else:
        cur = c.execute(
            f"UPDATE kv SET value = ?, version = version + 1{index_module.assignments(names)} "
            "WHERE ns = ? AND key = ? AND version = ?",
            (value, *values, ns, key, expected),
        )
        version = expected + 1
    return version if cur.rowcount == 1 else None


def delete(c: sqlite3.Connection, ns: str, key: str, expected: int | None) -> bool:
    return _delete(c, ns, key, expected)


def _delete(c: sqlite3.Connection, ns: str, key: str, expected: int | None) -> bool:
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


query = index_module.query
count = index_module.count


def commit(c: sqlite3.Connection, writes: Sequence[Write]) -> CommitResult:
    try:
        with _atomic(c):
            results = _apply_all(c, writes)
    except _ConditionFailed as failed:
        return CommitResult(ok=False, failed=failed.position)
    return CommitResult(ok=True, results=tuple(results))


def _apply_all(c: sqlite3.Connection, writes: Sequence[Write]) -> builtins.list[int]:
    """The writes in order, each run of deletes as one statement (see ``_sqlite_many``)."""
    results: builtins.list[int] = []
    position = 0
    while position < len(writes):
        end = many.run_end(writes, position)
        if end - position > 1:
            results += many.apply_run(c, writes[position:end])
        else:
            results.append(_apply(c, position, writes[position]))
        position = end
    return results


def _apply(c: sqlite3.Connection, position: int, write: Write) -> int:
    """One write of a commit; raises _ConditionFailed when its condition does not hold."""
    if isinstance(write, Append):
        return append(c, write.stream, write.value, write.idem_key)
    if isinstance(write, DeleteLog):
        return delete_log(c, write.stream)
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


def _log_heads(c: sqlite3.Connection) -> dict[str, int] | None:
    """The connection's remembered next offsets, inside a transaction only (None outside one)."""
    heads: dict[str, int] | None = getattr(c, "log_heads", None)
    return heads if c.in_transaction else None


def append(c: sqlite3.Connection, stream: str, value: bytes, idem: str | None) -> int:
    if idem is not None:
        row = c.execute("SELECT off FROM log WHERE stream = ? AND idem = ?", (stream, idem)).fetchone()
        if row is not None:
            return int(row[0])
    # Offsets are taken inside the write transaction (BEGIN IMMEDIATE holds the write lock),
    # so they stay gap-free even with other processes writing the same file. The next offset is
    # remembered until another connection commits (check_log_heads): the MAX lookup made each
    # append cost ~1.6x. Looked up in a statement of its own: one ``INSERT ... SELECT MAX(off)
    # ... RETURNING off`` cost 84 us against 15 for the two (SQLite 3.40 copies a SELECT from the
    # table it inserts into, and a RETURNING's rows, into temporary tables first).
    heads = _log_heads(c)
    off = None if heads is None else heads.get(stream)
    if off is None:
        off = log_length(c, stream)
    c.execute("INSERT INTO log (stream, off, idem, value) VALUES (?, ?, ?, ?)", (stream, off, idem, value))
    if heads is not None:
        heads[stream] = off + 1
    return off


def append_many(c: sqlite3.Connection, stream: str, values: builtins.list[bytes]) -> builtins.list[int]:
    # Inside the batch's write transaction nobody else can append to the stream in between; only
    # an I/O error could fail a row, and that rolls the whole transaction back.
    heads = _log_heads(c)
    start = heads.get(stream) if heads is not None else None
    if start is None:
        start = log_length(c, stream)
    c.executemany(
        "INSERT INTO log (stream, off, idem, value) VALUES (?, ?, NULL, ?)",
        [(stream, start + i, value) for i, value in enumerate(values)],
    )
    if heads is not None:
        heads[stream] = start + len(values)
    return builtins.list(range(start, start + len(values)))


def read(c: sqlite3.Connection, stream: str, from_offset: int, limit: int) -> builtins.list[LogEntry]:
    if limit <= 0:
        return []
    rows = c.execute(
        "SELECT off, value FROM log WHERE stream = ? AND off >= ? ORDER BY off LIMIT ?",
        (stream, from_offset, limit),
    )
    return [LogEntry(off, value) for off, value in rows]


def find_idem(c: sqlite3.Connection, stream: str, idem: str) -> int | None:
    row = c.execute("SELECT off FROM log WHERE stream = ? AND idem = ?", (stream, idem)).fetchone()
    return None if row is None else int(row[0])


def log_length(c: sqlite3.Connection, stream: str) -> int:
    # Offsets are gap-free from 0 and trimming keeps the last entry, so MAX+1 is the number of
    # entries ever appended, at the cost of one index probe.
    row = c.execute("SELECT COALESCE(MAX(off) + 1, 0) FROM log WHERE stream = ?", (stream,)).fetchone()
    return int(row[0])


def delete_log(c: sqlite3.Connection, stream: str) -> int:
    heads = getattr(c, "log_heads", None)
    if heads is not None:
        heads.pop(stream, None)  # a deleted log starts again from offset 0
    return int(c.execute("DELETE FROM log WHERE stream = ?", (stream,)).rowcount)


def trim_log(c: sqlite3.Connection, stream: str, before: int) -> int:
    cur = c.execute(
        "DELETE FROM log WHERE stream = ? AND off < MIN(?, (SELECT MAX(off) FROM log WHERE stream = ?))",
        (stream, min(before, 2**62), stream),
    )
    return int(cur.rowcount)
