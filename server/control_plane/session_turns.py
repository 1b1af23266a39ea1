"""What the dispatcher keeps per session while it works on it: a lock, and a fresh session's record.

* :class:`SessionLocks`: one asyncio lock per session in use, forgotten when nobody holds or
  waits for it (so nothing stays per session once its tasks end).
* :func:`next_turn`: a session's turn brought up to date from its record and its tasks' state.
* :class:`FreshTurns`: the record and version of a session made for one task (``tasks/run``
  without a session), as written, so that freeing it when the task ends needs no read. The
  write that frees it stays conditional on that version, so a record changed meanwhile (a task
  stored behind) only sends the caller the long way. Bounded: the oldest are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, KeysView
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llamactl.server.control_plane.stored import SessionRecord, StoredTask

if TYPE_CHECKING:
    from llamactl.server.control_plane.records import ControlPlaneRecords

__all__ = ["FRESH_TURNS", "FreshTurns", "SessionLocks", "next_turn"]

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


Found = tuple[StoredTask, int]


async def next_turn(
    records: ControlPlaneRecords, record: SessionRecord, *, ended: str | None, adopt: Iterable[str]
) -> tuple[SessionRecord, Found | None, Found | None]:
    """``record``'s turn brought up to date (a copy; ``record`` is left as it is): ``ended`` and
    tasks found finished dropped, the ``adopt`` ed tasks it lacks added behind, and the next
    waiting task claimed if none is out. Returns the new turn, the task still out (if any) and
    the task just claimed (if any), each with its version."""
    turn = record.model_copy(deep=True)
    if ended is not None:
        turn.waiting = [t for t in turn.waiting if t != ended]
        if turn.active == ended:
            turn.active = None
    for task_id in adopt:
        if task_id != turn.active and task_id not in turn.waiting:
            turn.waiting.append(task_id)
    active = None
    if turn.active is not None:
        active = await records.find_task_versioned(turn.active)
        if active is None or active[0].status.is_final:
            turn.active, active = None, None
    claimed: Found | None = None
    while turn.active is None and turn.waiting:
        head = await records.find_task_versioned(turn.waiting[0])
        if head is None or head[0].status.is_final:
            turn.waiting.pop(0)
            continue
        claimed, turn.active = head, turn.waiting.pop(0)
    return turn, active, claimed
