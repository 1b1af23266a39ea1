"""Wake-ups for whoever waits on a task: for its next event, or for its end."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["TaskSignals"]


class TaskSignals:
    """Each listener gets its own event, so one leaving (or timing out) never strands another."""

    def __init__(self) -> None:
        self._listeners: dict[str, set[asyncio.Event]] = {}

    def notify(self, task_id: str) -> None:
        for event in self._listeners.get(task_id, ()):
            event.set()

    def notify_all(self) -> None:
        for events in self._listeners.values():
            for event in events:
                event.set()

    @contextmanager
    def listen(self, task_id: str) -> Iterator[asyncio.Event]:
        """An event set on every change of the task while the ``with`` block lasts.

        Clear it before looking at the task's state, then wait on it: a change in between
        leaves it set, so nothing is missed.
        """
        event = self.add(task_id)
        try:
            yield event
        finally:
            self.remove(task_id, event)

    def add(self, task_id: str) -> asyncio.Event:
        """:meth:`listen` without a ``with`` block: set on every change until :meth:`remove`."""
        event = asyncio.Event()
        self._listeners.setdefault(task_id, set()).add(event)
        return event

    def remove(self, task_id: str, event: asyncio.Event) -> None:
        listeners = self._listeners.get(task_id)
        if listeners is not None:
            listeners.discard(event)
            if not listeners:
                self._listeners.pop(task_id, None)
