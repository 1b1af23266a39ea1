"""Each service's bound on queued tasks (``max-queued``): a task past it is refused (429).

Counting a service's queued tasks is a store query; under load it would run for every new task.
So the count is reused for a second while well under the limit, and the tasks taken meanwhile
are added to it; near the limit (90 %) it is counted afresh each time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from llamactl.server.control_plane.records import ControlPlaneRecords
from llamactl.server.errors import Overloaded
from llamactl.server.types import TaskStatus

__all__ = ["QueueBound"]

_FRESH = 1.0
"""Seconds a service's queued count may be reused while well under its limit."""


class QueueBound:
    """Refuses a service's task once ``limit_of(service_id)`` of its tasks are queued."""

    def __init__(self, deployment: str, records: ControlPlaneRecords, limit_of: Callable[[str], int]) -> None:
        self._deployment = deployment
        self._records = records
        self._limit_of = limit_of
        self._queued: dict[str, tuple[float, int]] = {}

    async def check(self, service_id: str) -> None:
        """Raise Overloaded if the service's queue is full."""
        limit = self._limit_of(service_id)
        at, queued = self._queued.get(service_id, (0.0, 0))
        if time.monotonic() - at > _FRESH or queued >= limit * 0.9:
            counts: Mapping[str, Mapping[str, int]] = await self._records.count_tasks()
            queued = counts.get(service_id, {}).get(TaskStatus.QUEUED.value, 0)
            self._queued[service_id] = (time.monotonic(), queued)
        if queued >= limit:
            raise Overloaded(service_id, self._deployment, queued, limit)

    def taken(self, service_id: str) -> None:
        """A task of the service was queued."""
        at, queued = self._queued.get(service_id, (0.0, 0))
        self._queued[service_id] = (at, queued + 1)
