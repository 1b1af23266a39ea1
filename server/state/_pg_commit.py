"""The SQL of one PostgreSQL state-store commit: a transaction of records then logs
(:func:`apply`), or, for a task's commits (one record and change-feed entries), one statement
(:func:`apply_in_one`)."""

from __future__ import annotations

import builtins
from collections.abc import Sequence

from llamactl.server.state._pg_ops import (
    BIGINT,
    Columns,
    ConditionFailed,
    Connection,
    append,
    append_each,
    cas,
    cas_sql,
    delete,
    delete_keys,
    delete_logs,
    put,
    put_sql,
)
from llamactl.server.state.base import Append, Cas, CommitResult, Delete, DeleteLog, Put, Write

__all__ = ["apply", "apply_in_one", "one_statement"]


async def apply(c: Connection, cols: Columns, channel: str, writes: Sequence[Write]) -> CommitResult:
    """Apply a commit's writes inside the caller's transaction; raises ConditionFailed.

    Records first, in order; then the logs, in order, after locking their head rows in one
    sorted order. Log heads are the rows every commit shares (the change feed's above all): taken
    last and in a fixed order, a transaction holding one never waits for a record lock, so two
    commits can never wait for each other (PostgreSQL would break such a deadlock by aborting
    one, a second lost each time).
    """
    results: builtins.list[int] = [0] * len(writes)
    logs: builtins.list[tuple[int, Append | DeleteLog]] = []
    late: builtins.list[tuple[int, Append]] = []
    records: builtins.list[tuple[int, Put | Cas | Delete]] = []
    for position, write in enumerate(writes):
        if isinstance(write, Append) and write.at_commit:
            late.append((position, write))
        elif isinstance(write, Append | DeleteLog):
            logs.append((position, write))
        else:
            records.append((position, write))
    for run in _runs_of_deletes(records):
        at, record = run[0]
        if len(run) == 1:
            results[at] = await _apply_record(c, cols, at, record)
        else:  # pruning: a run of unconditional deletes in one namespace is one statement
            found = await delete_keys(c, record.ns, [w.key for _, w in run])
            for at, record in run:
                results[at] = found.pop(record.key, 0)
    streams = sorted({w.stream for _, w in logs if isinstance(w, Append)})
    for stream in streams:
        await c.execute(_LOCK_HEAD, stream)
    for group in _runs_of_appends(logs):
        first = group[0][1]
        if isinstance(first, DeleteLog):
            counts = await delete_logs(c, [w.stream for _, w in group])
            for at, log in group:
                results[at] = counts.pop(log.stream, 0)
        elif len(group) == 1:
            results[group[0][0]] = await append(c, channel, first.stream, first.value, first.idem_key)
        else:
            # A run of appends to one stream (a task's events stored together) is one call.
            appends = [w for _, w in group if isinstance(w, Append)]
            offsets = await append_each(c, channel, first.stream, appends)
            for (position, _), offset in zip(group, offsets, strict=True):
                results[position] = offset
    if late:
        sql, params = _pending([w for _, w in late], channel, 1)
        await c.execute(sql, *params)
        for position, _ in late:
            results[position] = -1
    return CommitResult(ok=True, results=tuple(results))


def _pending(late: Sequence[Append], channel: str, first: int, join: str = "") -> tuple[str, list[object]]:
    """The INSERT of appends numbered at commit into ``log_pending`` (its parameters numbered
    from ``first``), in stream order (stable), so that the deferred trigger takes the log heads in
    one order in every commit; ``join``: a FROM item the rows are joined with (the one-statement
    commit's write: no row, no entries)."""
    ordered = sorted(late, key=lambda w: w.stream)
    sql = (
        "INSERT INTO log_pending (stream, value, channel) "
        f"SELECT a.s, a.v, ${first + 2}::text FROM unnest(${first}::text[], ${first + 1}::bytea[]) "
        f"WITH ORDINALITY AS a(s, v, i){join} ORDER BY a.i"
    )
    return sql, [[w.stream for w in ordered], [w.value for w in ordered], channel]


def one_statement(cols: Columns, writes: Sequence[Write]) -> bool:
    """Whether ``writes`` can be committed by :func:`apply_in_one`: one Put or Cas whose index
    columns are known, and appends numbered at commit (a task's commits: its record and its
    change-feed entry)."""
    records = [w for w in writes if not (isinstance(w, Append) and w.at_commit)]
    return (
        len(records) == 1
        and isinstance(records[0], Put | Cas)
        and cols.cached(records[0].ns, records[0].index)
    )


async def apply_in_one(c: Connection, cols: Columns, channel: str, writes: Sequence[Write]) -> CommitResult:
    """Commit what :func:`one_statement` accepts in one statement, outside a transaction: four
    round trips (BEGIN, the write, the appends, COMMIT) become one. The appends are inserted only
    when the write returns its version, and numbered by the deferred trigger as the statement's
    own transaction commits. Raises ConditionFailed."""
    position, write = next((i, w) for i, w in enumerate(writes) if isinstance(w, Put | Cas))
    if isinstance(write, Cas) and write.expected_version is not None and write.expected_version not in BIGINT:
        raise ConditionFailed(position)
    names, values = await cols.assign(c, write.ns, write.index)
    params: builtins.list[object] = [write.ns, write.key, write.value]
    if isinstance(write, Put):
        sql = put_sql(names)
    else:
        sql = cas_sql(names, create=write.expected_version is None)
        if write.expected_version is not None:
            params.append(write.expected_version)
    params += values
    late = [w for w in writes if isinstance(w, Append)]
    pending, more = _pending(late, channel, len(params) + 1, join=" CROSS JOIN w")
    version = await c.fetchval(f"WITH w AS ({sql}), p AS ({pending}) SELECT version FROM w", *params, *more)
    if version is None:
        raise ConditionFailed(position)
    results = [-1] * len(writes)
    results[position] = int(version)
    return CommitResult(ok=True, results=tuple(results))


def _runs_of_appends(
    logs: Sequence[tuple[int, Append | DeleteLog]],
) -> builtins.list[builtins.list[tuple[int, Append | DeleteLog]]]:
    """``logs`` (position, write) in order, cut into runs of appends to one stream and runs of
    DeleteLogs."""
    runs: builtins.list[builtins.list[tuple[int, Append | DeleteLog]]] = []
    for position, write in logs:
        last = runs[-1][-1][1] if runs else None
        if (isinstance(write, Append) and isinstance(last, Append) and last.stream == write.stream) or (
            isinstance(write, DeleteLog) and isinstance(last, DeleteLog)
        ):
            runs[-1].append((position, write))
        else:
            runs.append([(position, write)])
    return runs


def _runs_of_deletes(
    records: Sequence[tuple[int, Put | Cas | Delete]],
) -> builtins.list[builtins.list[tuple[int, Put | Cas | Delete]]]:
    """``records`` (position, write) in order, cut into runs of unconditional deletes in one
    namespace; any other write is a run of its own."""
    runs: builtins.list[builtins.list[tuple[int, Put | Cas | Delete]]] = []
    for position, write in records:
        last = runs[-1][-1][1] if runs else None
        if (
            isinstance(write, Delete)
            and isinstance(last, Delete)
            and write.expected_version is None
            and last.expected_version is None
            and last.ns == write.ns
        ):
            runs[-1].append((position, write))
        else:
            runs.append([(position, write)])
    return runs


_LOCK_HEAD = (
    "INSERT INTO log_head AS h (stream, next) VALUES ($1, 0) ON CONFLICT (stream) DO UPDATE SET next = h.next"
)


async def _apply_record(c: Connection, cols: Columns, position: int, write: Write) -> int:
    if isinstance(write, Put):
        return await put(c, cols, write.ns, write.key, write.value, write.index)
    if isinstance(write, Cas):
        version = await cas(c, cols, write.ns, write.key, write.value, write.expected_version, write.index)
        if version is None:
            raise ConditionFailed(position)
        return version
    assert isinstance(write, Delete)
    deleted = await delete(c, write.ns, write.key, write.expected_version)
    if not deleted and write.expected_version is not None:
        raise ConditionFailed(position)
    return int(deleted)
