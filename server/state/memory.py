"""``memory://``: the state store in process memory (tests, throwaway runs). Nothing survives close."""

from __future__ import annotations

import asyncio
import bisect
import builtins
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Self, TypeVar

from llamactl.server.errors import StateStoreError
from llamactl.server.state._common import (
    StreamWaiters,
    check_value,
    closed_error,
    not_started_error,
    prefix_upper_bound,
    wait_event,
)
from llamactl.server.state.base import (
    Append,
    Cas,
    CommitResult,
    Delete,
    DeleteLog,
    Index,
    LogEntry,
    Put,
    StateStore,
    Versioned,
    Write,
)

__all__ = ["MAX_INDEXED_FIELDS", "MemoryStateStore"]

MAX_INDEXED_FIELDS = 4
"""As the SQLite store: at most this many indexed fields per namespace."""


@dataclass(slots=True)
class _Namespace:
    values: dict[str, Versioned] = field(default_factory=dict)
    keys: builtins.list[str] = field(default_factory=list)  # sorted, for list()
    sorts: dict[str, str] = field(default_factory=dict)
    """key -> the sort of its index entries (one per record, as a row's sort column)"""
    indexed: dict[str, dict[str, str]] = field(default_factory=dict)
    """key -> field -> value"""
    by_value: dict[tuple[str, str], builtins.list[tuple[str, str]]] = field(default_factory=dict)
    """(field, value) -> sorted [(sort, key)]"""
    by_field: dict[str, builtins.list[tuple[str, str]]] = field(default_factory=dict)
    """field -> sorted [(sort, key)]"""
    known_fields: set[str] = field(default_factory=set)

    def unindex(self, key: str) -> None:
        sort = self.sorts.pop(key, "")
        for name, value in self.indexed.pop(key, {}).items():
            _remove(self.by_value, (name, value), (sort, key))
            _remove(self.by_field, name, (sort, key))

    def index(self, key: str, index: Index) -> None:
        """Index ``key`` (checked by :func:`_check_index` first: nothing here raises)."""
        old_sort = self.sorts.get(key)
        sort = old_sort if index.sort is None else index.sort
        assert sort is not None
        fields = self.indexed.setdefault(key, {})
        # A new sort moves every entry of the record, the fields not named too.
        for name, value in {**fields, **index.fields}.items():
            old = fields.get(name)
            if old == value and sort == old_sort:
                continue
            if old is not None and old_sort is not None:
                _remove(self.by_value, (name, old), (old_sort, key))
                _remove(self.by_field, name, (old_sort, key))
            fields[name] = value
            bisect.insort(self.by_value.setdefault((name, value), []), (sort, key))
            bisect.insort(self.by_field.setdefault(name, []), (sort, key))
        self.sorts[key] = sort


def _check_index(ns: str, key: str, index: Index, known: set[str], has_sort: bool) -> set[str]:
    """Raise what writing ``index`` to ``key`` would raise; else the namespace's fields after it."""
    after = known | set(index.fields)
    if len(after) > MAX_INDEXED_FIELDS:
        raise StateStoreError(
            f"namespace {ns!r} has {MAX_INDEXED_FIELDS} indexed fields already "
            f"({', '.join(sorted(known))}): an Index names at most {MAX_INDEXED_FIELDS} "
            "fields per namespace"
        )
    if index.sort is None and not has_sort:
        raise ValueError(f"{key!r} has no sort yet: its first indexed write must give one")
    return after


K = TypeVar("K")


def _remove(lists: dict[K, builtins.list[tuple[str, str]]], where: K, item: tuple[str, str]) -> None:
    entries = lists.get(where)
    if entries is None:
        return
    at = bisect.bisect_left(entries, item)
    if at < len(entries) and entries[at] == item:
        del entries[at]
    if not entries:
        del lists[where]


@dataclass(slots=True)
class _Log:
    values: builtins.list[bytes] = field(default_factory=list)
    """The entries kept, the first one at offset ``start``."""
    start: int = 0
    idem: dict[str, int] = field(default_factory=dict)

    @property
    def end(self) -> int:
        return self.start + len(self.values)


class MemoryStateStore(StateStore):
    """A ``StateStore`` held in dicts. Every operation is atomic (it never awaits mid-change).

    Use it from one event loop: readers waiting in ``read(wait=...)`` are woken through
    ``asyncio.Event`` objects bound to the loop that first waits on them.
    """

    def __init__(self) -> None:
        self._started = False
        self._closed = False
        self._ns: dict[str, _Namespace] = {}
        self._logs: dict[str, _Log] = {}
        self._waiters = StreamWaiters()

    def _check(self) -> None:
        if self._closed:
            raise closed_error("memory")
        if not self._started:
            raise not_started_error("memory")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def start(self) -> None:
        """Mark the store usable. Starting a closed store raises ``StateStoreClosed``."""
        if self._closed:
            raise closed_error("memory")
        self._started = True

    async def close(self) -> None:
        """Refuse further calls and wake waiting readers (they return what is there)."""
        self._closed = True
        self._waiters.notify_all()

    # --- key/value -----------------------------------------------------------------------------

    async def get(self, ns: str, key: str) -> Versioned | None:
        """The value and version of ``ns/key``, or None."""
        self._check()
        space = self._ns.get(ns)
        return None if space is None else space.values.get(key)

    async def get_many(self, ns: str, keys: Sequence[str]) -> dict[str, Versioned]:
        """The value and version of each of ``keys`` that ``ns`` holds."""
        self._check()
        space = self._ns.get(ns)
        values = {} if space is None else space.values
        return {key: values[key] for key in keys if key in values}

    def _version(self, ns: str, key: str) -> int | None:
        space = self._ns.get(ns)
        current = None if space is None else space.values.get(key)
        return None if current is None else current.version

    async def put(self, ns: str, key: str, value: bytes, *, index: Index | None = None) -> int:
        """Write unconditionally; return the new version."""
        self._check()
        return self._put(Put(ns, key, check_value(value), index))

    def _put(self, write: Put) -> int:
        current = self._version(write.ns, write.key)
        return self._write(write.ns, write.key, write.value, (current or 0) + 1, write.index)

    async def cas(
        self, ns: str, key: str, value: bytes, expected_version: int | None, *, index: Index | None = None
    ) -> int | None:
        """Write only if the version is ``expected_version`` (None: only if absent); else None."""
        self._check()
        return self._cas(Cas(ns, key, check_value(value), expected_version, index))

    def _cas(self, write: Cas) -> int | None:
        if self._version(write.ns, write.key) != write.expected_version:
            return None
        version = (write.expected_version or 0) + 1
        return self._write(write.ns, write.key, write.value, version, write.index)

    def _write(self, ns: str, key: str, value: bytes, version: int, index: Index | None) -> int:
        space = self._ns.get(ns)
        fields: set[str] | None = None
        if index:  # raises before anything changes
            known = set() if space is None else space.known_fields
            fields = _check_index(ns, key, index, known, space is not None and key in space.sorts)
        if space is None:
            space = self._ns[ns] = _Namespace()
        if key not in space.values:
            bisect.insort(space.keys, key)
        space.values[key] = Versioned(value, version)
        if index and fields is not None:
            space.known_fields = fields
            space.index(key, index)
        return version

    async def delete(self, ns: str, key: str, expected_version: int | None = None) -> bool:
        """Delete (only at ``expected_version`` when given). True if something was deleted."""
        self._check()
        return self._delete(Delete(ns, key, expected_version))

    def _delete(self, write: Delete) -> bool:
        space = self._ns.get(write.ns)
        current = None if space is None else space.values.get(write.key)
        if space is None or current is None:
            return False
        if write.expected_version is not None and current.version != write.expected_version:
            return False
        del space.values[write.key]
        del space.keys[bisect.bisect_left(space.keys, write.key)]
        space.unindex(write.key)
        if not space.values and not space.known_fields:  # as a table's columns, fields stay given
            del self._ns[write.ns]
        return True

    async def list(
        self, ns: str, prefix: str = "", after: str | None = None, limit: int = 100
    ) -> builtins.list[tuple[str, Versioned]]:
        """Keys of ``ns`` starting with ``prefix``, in key order, strictly after ``after``."""
        self._check()
        space = self._ns.get(ns)
        if space is None or limit <= 0:
            return []
        keys = space.keys
        start = bisect.bisect_left(keys, prefix)
        if after is not None:
            start = max(start, bisect.bisect_right(keys, after))
        bound = prefix_upper_bound(prefix)
        stop = len(keys) if bound is None else bisect.bisect_left(keys, bound)
        stop = min(stop, start + limit)
        return [(k, space.values[k]) for k in keys[start:stop]]

    async def query(
        self,
        ns: str,
        field: str,
        value: str | None = None,
        *,
        after: str | None = None,
        limit: int = 100,
        descending: bool = False,
    ) -> builtins.list[tuple[str, Versioned, str]]:
        """Keys whose index ``field`` is ``value`` (None: any), in sort order, after ``after``."""
        self._check()
        space = self._ns.get(ns)
        if space is None or limit <= 0:
            return []
        entries = space.by_field.get(field, []) if value is None else space.by_value.get((field, value), [])
        if descending:
            stop = len(entries) if after is None else bisect.bisect_left(entries, (after, ""))
            chosen = entries[max(0, stop - limit) : stop][::-1]
        else:
            start = 0 if after is None else bisect.bisect_right(entries, (after, "\U0010ffff"))
            chosen = entries[start : start + limit]
        return [(key, space.values[key], sort) for sort, key in chosen]

    async def count(self, ns: str, field: str) -> dict[str, int]:
        """How many keys hold each value of index ``field``."""
        self._check()
        space = self._ns.get(ns)
        if space is None:
            return {}
        return {value: len(keys) for (name, value), keys in space.by_value.items() if name == field}

    async def commit(self, writes: Sequence[Write]) -> CommitResult:
        """Apply ``writes`` in order: all of them, or none when a condition fails."""
        self._check()
        checked = [w if isinstance(w, Delete | DeleteLog) else _checked(w) for w in writes]
        self._check_indexes(checked)  # a write that would raise raises before anything is applied
        failed = self._first_failing(checked)
        if failed is not None:
            return CommitResult(ok=False, failed=failed)
        results: builtins.list[int] = []
        for write in checked:
            if isinstance(write, Append):
                results.append(self._append(write.stream, write.value, write.idem_key))
            elif isinstance(write, DeleteLog):
                results.append(self._delete_log(write.stream))
            elif isinstance(write, Put):
                results.append(self._put(write))
            elif isinstance(write, Cas):
                version = self._cas(write)
                assert version is not None  # checked above
                results.append(version)
            else:
                results.append(int(self._delete(write)))
        return CommitResult(ok=True, results=tuple(results))

    def _check_indexes(self, writes: Sequence[Write]) -> None:
        """Raise what the indexes of ``writes``, applied in turn, would raise (changing nothing)."""
        fields: dict[str, set[str]] = {}
        has_sort: dict[tuple[str, str], bool] = {}
        for write in writes:
            if isinstance(write, Delete):
                has_sort[(write.ns, write.key)] = False
            elif isinstance(write, Put | Cas) and write.index:
                space = self._ns.get(write.ns)
                known = fields.get(write.ns, set() if space is None else space.known_fields)
                where = (write.ns, write.key)
                sorted_now = has_sort.get(where, space is not None and write.key in space.sorts)
                fields[write.ns] = _check_index(write.ns, write.key, write.index, known, sorted_now)
                has_sort[where] = True

    def _first_failing(self, writes: Sequence[Write]) -> int | None:
        """The position of the first write whose condition would not hold, applying them in turn."""
        versions: dict[tuple[str, str], int | None] = {}
        for position, write in enumerate(writes):
            if isinstance(write, Append | DeleteLog):
                continue
            where = (write.ns, write.key)
            current = versions[where] if where in versions else self._version(*where)
            if isinstance(write, Put):
                versions[where] = (current or 0) + 1
            elif isinstance(write, Cas):
                if current != write.expected_version:
                    return position
                versions[where] = (current or 0) + 1
            else:
                if write.expected_version is not None and current != write.expected_version:
                    return position
                versions[where] = None
        return None

    # --- logs ----------------------------------------------------------------------------------

    async def append(self, stream: str, value: bytes, *, idem_key: str | None = None) -> int:
        """Append to a log; return the entry's offset (the original one for a known ``idem_key``)."""
        self._check()
        return self._append(stream, check_value(value), idem_key)

    def _append(self, stream: str, value: bytes, idem_key: str | None) -> int:
        log = self._logs.get(stream)
        if log is None:
            log = self._logs[stream] = _Log()
        if idem_key is not None:
            seen = log.idem.get(idem_key)
            if seen is not None:
                return seen
            log.idem[idem_key] = log.end
        log.values.append(value)
        self._waiters.notify(stream)
        return log.end - 1

    def _read_now(self, stream: str, from_offset: int, limit: int) -> builtins.list[LogEntry]:
        log = self._logs.get(stream)
        if log is None or limit <= 0:
            return []
        start = max(from_offset, log.start)
        first = start - log.start
        return [LogEntry(start + i, v) for i, v in enumerate(log.values[first : first + limit])]

    async def read(
        self, stream: str, from_offset: int = 0, limit: int = 100, wait: float = 0.0
    ) -> builtins.list[LogEntry]:
        """Entries with ``offset >= from_offset``; with ``wait > 0``, wait for the first new one."""
        self._check()
        entries = self._read_now(stream, from_offset, limit)
        if entries or wait <= 0 or limit <= 0:
            return entries
        deadline = asyncio.get_running_loop().time() + wait
        while not self._closed:
            event = self._waiters.acquire(stream)
            try:
                woke = await wait_event(event, deadline)
            finally:
                self._waiters.release(stream, event)
            entries = self._read_now(stream, from_offset, limit)
            if entries or not woke:
                return entries
        return self._read_now(stream, from_offset, limit)

    async def log_length(self, stream: str) -> int:
        """Number of entries in a log (0 for an unknown stream)."""
        self._check()
        log = self._logs.get(stream)
        return 0 if log is None else log.end

    async def find_idem(self, stream: str, idem_key: str) -> int | None:
        """The offset of the entry appended with ``idem_key``, or None."""
        self._check()
        log = self._logs.get(stream)
        return None if log is None else log.idem.get(idem_key)

    async def delete_log(self, stream: str) -> None:
        """Remove a log and its idempotency keys."""
        self._check()
        self._delete_log(stream)

    def _delete_log(self, stream: str) -> int:
        log = self._logs.pop(stream, None)
        return 0 if log is None else len(log.values)

    async def trim_log(self, stream: str, before: int) -> int:
        """Drop entries with offset < ``before`` (never the last one); return how many."""
        self._check()
        log = self._logs.get(stream)
        if log is None or not log.values:
            return 0
        drop = max(0, min(before, log.end - 1) - log.start)
        if drop:
            del log.values[:drop]
            log.start += drop
            log.idem = {k: off for k, off in log.idem.items() if off >= log.start}
        return drop


def _checked(write: Put | Cas | Append) -> Put | Cas | Append:
    value = check_value(write.value)
    return write if value is write.value else dataclasses.replace(write, value=value)
