"""What the dispatcher keeps per session while it works on it: a lock, and a fresh session's record.

* :class:`SessionLocks`: one asyncio lock per session in use, forgotten when nobody holds or
  waits for it (so nothing stays per session once its tasks end).
* :class:`FreshTurns`: the record and version of a session made for one task (``tasks/run``
  without a session), as written, so that freeing it when the task ends needs no read. The
  write that frees it stays conditional on that version, so a record changed meanwhile (a task
  stored behind) only sends the caller the long way. Bounded: the oldest are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, KeysView
from dataclasses import dataclass

from llamactl.server.control_plane.stored import SessionRecord

__all__ = ["FRESH_TURNS", "FreshTurns", "SessionLocks"]

FRESH_TURNS = 4096
"""Fresh sessions remembered at most (each until its task ends)."""


@dataclass(slots=True)
class _Lock:
    lock: asyncio.Lock
    users: int = 0


class SessionLocks:
    """One lock per session in use."""

    def __init__(self) -> None:
        self._locks: dict[str, _Lock] = {}

    def keys(self) -> KeysView[str]:
        """The sessions locked or waited for now."""
        return self._locks.keys()

    @contextlib.asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        entry = self._locks.get(session_id)
        if entry is None:
            entry = self._locks[session_id] = _Lock(asyncio.Lock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[session_id]


class FreshTurns:
    """Sessions made for one task: the task, and the session record and version written."""

    def __init__(self, limit: int = FRESH_TURNS) -> None:
        self._limit = limit
        self._turns: OrderedDict[str, tuple[str, SessionRecord, int]] = OrderedDict()

    def keys(self) -> KeysView[str]:
        return self._turns.keys()

    def remember(self, session_id: str, task_id: str, record: SessionRecord, version: int) -> None:
        self._turns[session_id] = (task_id, record, version)
        if len(self._turns) > self._limit:
            self._turns.popitem(last=False)

    def take(self, session_id: str, task_id: str) -> tuple[SessionRecord, int] | None:
        """The record and version written for ``task_id`` 's session, forgotten; None if unknown."""
        found = self._turns.pop(session_id, None)
        return (found[1], found[2]) if found is not None and found[0] == task_id else None

    def forget(self, session_id: str) -> None:
        """The session was written again (or its task ended): what was remembered is stale."""
        self._turns.pop(session_id, None)
