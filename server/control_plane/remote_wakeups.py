"""Wake-ups for what other control planes do, when several share one state store.

A control plane wakes its own waiters (``tasks/run``, ``/results``, event streams) as it applies
reports. With a shared store (PostgreSQL) the report of a task may be applied by another server,
so each control plane also

* follows the change feed (the store wakes the reader when any process appends to it) and wakes
  the waiters of every task that ended (completed, failed, cancelled). A status that is not an
  end wakes no one: every waiter on a task waits for its end, or for its events or answers,
  which wake their readers as they are appended (a waiter woken for a task that is still
  running reads it for nothing: a round trip to the store, once for each task run), and
* listens to appends to task event logs (the store's append listener) and wakes those tasks'
  event readers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from llamactl.server.control_plane.changes import ChangeFeed
from llamactl.server.control_plane.signals import TaskSignals
from llamactl.server.state.base import StateStore
from llamactl.server.types import TaskStatus

__all__ = ["RemoteWakeups"]

log = logging.getLogger(__name__)

_WAIT = 30.0
_NOT_FINAL = frozenset(status.value for status in TaskStatus if not status.is_final)
_BATCH = 1000


class RemoteWakeups:
    def __init__(
        self, store: StateStore, changes: ChangeFeed, events_prefix: str, signals: TaskSignals
    ) -> None:
        self._store = store
        self._changes = changes
        self._events_prefix = events_prefix
        self._signals = signals
        self._remove: Callable[[], None] | None = None
        self._offset: int | None = None
        """The feed's offset read up to, kept when the loop fails (the store went away) and
        starts again, so the changes stored meanwhile still wake their waiters."""

    def start(self) -> None:
        """Listen to event-log appends (call once; :meth:`close` stops)."""
        self._remove = self._store.add_append_listener(self._appended)

    def close(self) -> None:
        if self._remove is not None:
            self._remove()
            self._remove = None

    def _appended(self, stream: str) -> None:
        if stream.startswith(self._events_prefix):
            self._signals.notify(stream[len(self._events_prefix) :])

    async def follow_changes(self) -> None:
        """Wake the waiters of every task whose status another process changed (a loop: runs
        until cancelled, from the feed's end when it first starts, from where it was after)."""
        if self._offset is None:
            self._offset = await self._store.log_length(self._changes.stream)
        while True:
            entries = await self._store.read(self._changes.stream, self._offset, limit=_BATCH, wait=_WAIT)
            for entry in entries:
                self._offset = entry.offset + 1
                try:
                    change = json.loads(entry.value)
                except ValueError:
                    continue
                if change.get("kind") == "task.status":
                    data = change.get("data") or {}
                    task_id = data.get("task_id")
                    if isinstance(task_id, str) and _may_be_final(data.get("status")):
                        self._signals.notify(task_id)


def _may_be_final(status: object) -> bool:
    """False only for a status known not to be an end (one this version does not know might be)."""
    return status not in _NOT_FINAL
