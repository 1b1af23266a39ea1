"""``memory://``: the state store in process memory (tests, throwaway runs). Nothing survives close."""

from __future__ import annotations

import asyncio
import bisect
import builtins
from dataclasses import dataclass, field
from typing import Self

from llamactl.server.state._common import (
    StreamWaiters,
    check_value,
    closed_error,
    not_started_error,
    prefix_upper_bound,
    wait_event,
)
from llamactl.server.state.base import LogEntry, StateStore, Versioned

__all__ = ["MemoryStateStore"]


@dataclass(slots=True)
class _Namespace:
    values: dict[str, Versioned] = field(default_factory=dict)
    keys: builtins.list[str] = field(default_factory=list)  # sorted, for list()


@dataclass(slots=True)
class _Log:
    values: builtins.list[bytes] = field(default_factory=list)
    idem: dict[str, int] = field(default_factory=dict)


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

    async def put(self, ns: str, key: str, value: bytes) -> int:
        """Write unconditionally; return the new version."""
        self._check()
        value = check_value(value)
        space = self._ns.get(ns)
        current = None if space is None else space.values.get(key)
        return self._write(ns, key, value, 1 if current is None else current.version + 1)

    async def cas(self, ns: str, key: str, value: bytes, expected_version: int | None) -> int | None:
        """Write only if the version is ``expected_version`` (None: only if absent); else None."""
        self._check()
        value = check_value(value)
        space = self._ns.get(ns)
        current = None if space is None else space.values.get(key)
        if expected_version is None:
            return self._write(ns, key, value, 1) if current is None else None
        if current is None or current.version != expected_version:
            return None
        return self._write(ns, key, value, expected_version + 1)

    def _write(self, ns: str, key: str, value: bytes, version: int) -> int:
        space = self._ns.get(ns)
        if space is None:
            space = self._ns[ns] = _Namespace()
        if key not in space.values:
            bisect.insort(space.keys, key)
        space.values[key] = Versioned(value, version)
        return version

    async def delete(self, ns: str, key: str, expected_version: int | None = None) -> bool:
        """Delete (only at ``expected_version`` when given). True if something was deleted."""
        self._check()
        space = self._ns.get(ns)
        current = None if space is None else space.values.get(key)
        if space is None or current is None:
            return False
        if expected_version is not None and current.version != expected_version:
            return False
        del space.values[key]
        del space.keys[bisect.bisect_left(space.keys, key)]
        if not space.values:
            del self._ns[ns]
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

    # --- logs ----------------------------------------------------------------------------------

    async def append(self, stream: str, value: bytes, *, idem_key: str | None = None) -> int:
        """Append to a log; return the entry's offset (the original one for a known ``idem_key``)."""
        self._check()
        value = check_value(value)
        log = self._logs.get(stream)
        if log is None:
            log = self._logs[stream] = _Log()
        if idem_key is not None:
            seen = log.idem.get(idem_key)
            if seen is not None:
                return seen
            log.idem[idem_key] = len(log.values)
        log.values.append(value)
        self._waiters.notify(stream)
        return len(log.values) - 1

    def _read_now(self, stream: str, from_offset: int, limit: int) -> builtins.list[LogEntry]:
        log = self._logs.get(stream)
        if log is None or limit <= 0:
            return []
        start = max(from_offset, 0)
        return [LogEntry(start + i, v) for i, v in enumerate(log.values[start : start + limit])]

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
        return 0 if log is None else len(log.values)

    async def delete_log(self, stream: str) -> None:
        """Remove a log and its idempotency keys."""
        self._check()
        self._logs.pop(stream, None)
