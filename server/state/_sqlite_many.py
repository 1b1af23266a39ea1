"""Many keys in one statement for the SQLite store: runs of deletes within a commit, and reads.

Pruning deletes a batch of finished tasks in one commit: each task's record, its event log and
its other per-task keys, and reads the sessions made for them. One statement per row cost the
SQL about twice as much as one statement per run of them (measured on the real schema: ~28-40
against ~14-17 us per task), and a Python call more per row besides: each statement is prepared,
run and reset, and the record's count triggers are set up again for each. So consecutive
unconditional deletes in one namespace, and consecutive log deletes, go as
``DELETE ... WHERE key IN (...) RETURNING key``, which tells which of them found something, so
each write still gets its own result.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence

from llamactl.server.state.base import Delete, DeleteLog, Versioned, Write

__all__ = ["apply_run", "get_many", "run_end"]

_MAX_MARKS = 512
"""Keys per statement at most; fewer are padded with NULL up to a power of two (NULL matches
nothing), so that a few statements, not one per batch size, sit in the statement cache."""


def run_end(writes: Sequence[Write], start: int) -> int:
    """Where the run of deletes that ``writes[start]`` begins ends (``start + 1``: no run)."""
    first = writes[start]
    end = start + 1
    if isinstance(first, DeleteLog):
        while end < len(writes) and isinstance(writes[end], DeleteLog):
            end += 1
    elif isinstance(first, Delete) and first.expected_version is None:
        while end < len(writes) and _unconditional_in(writes[end], first.ns):
            end += 1
    return end


def _unconditional_in(write: Write, ns: str) -> bool:
    return isinstance(write, Delete) and write.expected_version is None and write.ns == ns


def apply_run(c: sqlite3.Connection, run: Sequence[Write]) -> list[int]:
    """Apply a run :func:`run_end` found; the result of each write as one statement per write
    would give it (a key deleted twice: the second finds nothing)."""
    if isinstance(run[0], DeleteLog):
        streams = [w.stream for w in run if isinstance(w, DeleteLog)]
        heads = getattr(c, "log_heads", None)
        if heads is not None:
            for stream in streams:
                heads.pop(stream, None)  # a deleted log starts again from offset 0
        sql = "DELETE FROM log WHERE stream IN ({}) RETURNING stream"
        found = Counter(
            row[0] for marks, chunk in _in_lists(streams) for row in c.execute(sql.format(marks), chunk)
        )
        return [found.pop(stream, 0) for stream in streams]
    keys = [w.key for w in run if isinstance(w, Delete)]
    first = run[0]
    assert isinstance(first, Delete)
    sql = "DELETE FROM kv WHERE ns = ? AND key IN ({}) RETURNING key"
    deleted = Counter(
        row[0] for marks, chunk in _in_lists(keys) for row in c.execute(sql.format(marks), (first.ns, *chunk))
    )
    return [deleted.pop(key, 0) for key in keys]


def get_many(c: sqlite3.Connection, ns: str, keys: Sequence[str]) -> dict[str, Versioned]:
    """The value and version of each of ``keys`` that ``ns`` holds."""
    sql = "SELECT key, value, version FROM kv WHERE ns = ? AND key IN ({})"
    return {
        key: Versioned(value, version)
        for marks, chunk in _in_lists(keys)
        for key, value, version in c.execute(sql.format(marks), (ns, *chunk))
    }


def _in_lists(keys: Sequence[str]) -> Iterator[tuple[str, list[str | None]]]:
    """``keys`` without repeats, a chunk at a time: the chunk's ``?`` marks and its values."""
    unique = list(dict.fromkeys(keys))
    for at in range(0, len(unique), _MAX_MARKS):
        chunk: list[str | None] = list(unique[at : at + _MAX_MARKS])
        size = 1 << (len(chunk) - 1).bit_length()
        chunk += [None] * (size - len(chunk))
        yield ", ".join("?" * size), chunk
