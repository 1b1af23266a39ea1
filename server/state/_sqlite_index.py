"""How the SQLite state store indexes records: on the record's own row, with counters kept by triggers.

A namespace has up to :data:`MAX_FIELDS` indexed fields. The first write that names a field gives it
one of the columns ``i0``..``i3`` of ``kv`` (the mapping lives in ``kv_fields``); ``sort`` holds the
index's sort string. Each column has a partial index ``(ns, iN, sort)``, so a query by field value is
an index range in sort order, and ``kv_sorted (ns, sort)`` serves "any value". Triggers keep
``kv_count`` (rows per column value) in step with every insert, change and delete, so counting never
reads the records. One row per record, where a side table needed one row per field and three
b-trees for each: measured here, an indexed insert costs about half as much this way.
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Sequence

from llamactl.server.errors import StateStoreError
from llamactl.server.state.base import Index, Versioned

__all__ = [
    "COLUMNS",
    "MAX_FIELDS",
    "IndexedConnection",
    "count",
    "migrate",
    "query",
    "schema",
    "write_columns",
]

MAX_FIELDS = 4
COLUMNS = tuple(f"i{n}" for n in range(MAX_FIELDS))


class IndexedConnection(sqlite3.Connection):
    """A connection that remembers each namespace's field-to-column mapping, and the next offset
    of each log it appended to, for as long as no other connection commits to the file."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.index_columns: dict[str, dict[str, int]] = {}
        self.log_heads: dict[str, int] = {}
        self.savepoints = True
        """Whether multi-statement writes run inside a savepoint (see ``_sqlite_ops._atomic``)."""
        self.data_version: int | None = None
        """``PRAGMA data_version`` when ``log_heads`` were last checked (it moves when another
        connection commits to the file, not when this one does)."""


def schema() -> str:
    """The tables, indexes and triggers of the index (after ``kv`` has its columns)."""
    parts = [
        """
CREATE TABLE IF NOT EXISTS kv_fields (
    ns TEXT NOT NULL, field TEXT NOT NULL, col INTEGER NOT NULL, PRIMARY KEY (ns, field)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv_count (
    ns TEXT NOT NULL, col INTEGER NOT NULL, value TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (ns, col, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_sorted ON kv (ns, sort) WHERE sort IS NOT NULL;
"""
    ]
    for n, col in enumerate(COLUMNS):
        more = f"INSERT INTO kv_count VALUES (new.ns, {n}, new.{col}, 1) ON CONFLICT DO UPDATE SET n = n + 1;"
        less = (
            f"UPDATE kv_count SET n = n - 1 WHERE ns = old.ns AND col = {n} AND value = old.{col}; "
            f"DELETE FROM kv_count WHERE ns = old.ns AND col = {n} AND value = old.{col} AND n <= 0;"
        )
        parts.append(
            f"""
CREATE INDEX IF NOT EXISTS kv_{col} ON kv (ns, {col}, sort) WHERE {col} IS NOT NULL;
CREATE TRIGGER IF NOT EXISTS kv_{col}_added AFTER INSERT ON kv WHEN new.{col} IS NOT NULL
BEGIN {more} END;
CREATE TRIGGER IF NOT EXISTS kv_{col}_removed AFTER DELETE ON kv WHEN old.{col} IS NOT NULL
BEGIN {less} END;
CREATE TRIGGER IF NOT EXISTS kv_{col}_gone AFTER UPDATE OF {col} ON kv
WHEN old.{col} IS NOT NULL AND new.{col} IS NOT old.{col} BEGIN {less} END;
CREATE TRIGGER IF NOT EXISTS kv_{col}_come AFTER UPDATE OF {col} ON kv
WHEN new.{col} IS NOT NULL AND new.{col} IS NOT old.{col} BEGIN {more} END;
"""
        )
    return "".join(parts)


def migrate(conn: sqlite3.Connection) -> None:
    """Bring an older file's ``kv`` up to the index columns; drop the side-table index of schema 2.

    (Records written before have no index entries: the control plane indexes them again.)
    """
    have = {row[1] for row in conn.execute("PRAGMA table_info(kv)")}
    for col in ("sort", *COLUMNS):
        if col not in have:
            conn.execute(f"ALTER TABLE kv ADD COLUMN {col} TEXT")
    old_count = {row[1] for row in conn.execute("PRAGMA table_info(kv_count)")}
    if "field" in old_count:
        conn.execute("DROP TABLE kv_count")
    conn.execute("DROP TABLE IF EXISTS kv_index")  # its triggers go with it


def _columns(c: sqlite3.Connection, ns: str) -> dict[str, int]:
    cache: dict[str, dict[str, int]] | None = getattr(c, "index_columns", None)
    if cache is not None and ns in cache:
        return cache[ns]
    rows = c.execute("SELECT field, col FROM kv_fields WHERE ns = ?", (ns,))
    mapping: dict[str, int] = {str(field): int(col) for field, col in rows}
    if cache is not None:
        cache[ns] = mapping
    return mapping


def _column_for(c: sqlite3.Connection, ns: str, field: str) -> int:
    mapping = _columns(c, ns)
    col = mapping.get(field)
    if col is None:
        if len(mapping) >= MAX_FIELDS:
            raise StateStoreError(
                f"namespace {ns!r} has {MAX_FIELDS} indexed fields already ({', '.join(sorted(mapping))}): "
                f"an Index names at most {MAX_FIELDS} fields per namespace"
            )
        col = len(mapping)
        c.execute("INSERT INTO kv_fields (ns, field, col) VALUES (?, ?, ?)", (ns, field, col))
        mapping[field] = col
    return col


def write_columns(c: sqlite3.Connection, ns: str, index: Index | None) -> tuple[list[str], list[object]]:
    """The ``kv`` columns an indexed write sets (``sort``, unless None, and the fields' columns),
    and their values. Leaving ``sort`` out spares the rewrite of every index entry (each index
    ends with it), not only the moved fields' ones."""
    if index is None:
        return [], []
    names: list[str] = [] if index.sort is None else ["sort"]
    values: list[object] = [] if index.sort is None else [index.sort]
    for field, value in index.fields.items():
        names.append(COLUMNS[_column_for(c, ns, field)])
        values.append(value)
    return names, values


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
    col = _columns(c, ns).get(field)
    if col is None or limit <= 0:
        return []
    name = COLUMNS[col]
    if value is None:
        sql = "SELECT key, value, version, sort FROM kv WHERE ns = ? AND sort IS NOT NULL"
        sql += f" AND {name} IS NOT NULL"
        params: list[object] = [ns]
    else:
        sql = f"SELECT key, value, version, sort FROM kv WHERE ns = ? AND {name} = ?"
        params = [ns, value]
    if after is not None:
        sql += " AND sort < ?" if descending else " AND sort > ?"
        params.append(after)
    sql += " ORDER BY sort DESC LIMIT ?" if descending else " ORDER BY sort LIMIT ?"
    params.append(limit)
    return [(k, Versioned(v, ver), sort) for k, v, ver, sort in c.execute(sql, params)]


def count(c: sqlite3.Connection, ns: str, field: str) -> dict[str, int]:
    col = _columns(c, ns).get(field)
    if col is None:
        return {}
    rows = c.execute("SELECT value, n FROM kv_count WHERE ns = ? AND col = ? AND n > 0", (ns, col))
    return {value: int(n) for value, n in rows}


def assignments(names: Sequence[str]) -> str:
    """``, sort = ?, i1 = ?`` for an UPDATE of these columns (empty for none)."""
    return "".join(f", {name} = ?" for name in names)
