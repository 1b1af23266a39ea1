"""The two timers a running task keeps in its worker: its lease's extension and its task.started report."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from llamactl.server.errors import LeaseLost
from llamactl.server.mq.base import Delivery
from llamactl.server.protocol import WorkerMessage, WorkerMessageKind

from .errorinfo import error_line

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["STARTED_AFTER", "LeaseKeeper", "StartedReport"]

log = logging.getLogger(__name__)

STARTED_AFTER = 0.1
"""Seconds a task runs before it reports task.started (its first event reports it at once).

Most tasks finish sooner: they go from queued straight to their final status, whose report
carries the start time, and the control plane is spared one report per task. A tenth of a
second, not less: a worker's loop is shared by all its tasks, so under load even a short task
takes tens of milliseconds, and at 10 ms nearly every task paid for the report (a journaled
message, a stored status change, a change-feed entry): 6-7 % of the throughput of the
workflow echo at 32 clients and of 64 clients of a 50 ms step. Nobody watching sees the
difference.
"""


class LeaseKeeper:
    """Extends a delivery's lease every third of it while its task runs (a timer, not a task:
    most tasks end long before the first extension)."""

    def __init__(self, worker: Worker, delivery: Delivery) -> None:
        self._delivery = delivery
        self._every = worker.spec.lease / 3
        self._loop = asyncio.get_running_loop()
        self._extending: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(self._every, self._due)

    def _due(self) -> None:
        self._extending = asyncio.create_task(self._extend(), name="lease")

    async def _extend(self) -> None:
        try:
            await self._delivery.extend()
        except LeaseLost:
            log.warning("lost the lease of %s: it may run elsewhere too", self._delivery.message.msg_id)
            self._timer = None
            return
        except Exception as exc:
            log.warning("could not extend a lease: %s", error_line(exc))
        self._timer = self._loop.call_later(self._every, self._due)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._extending is not None and not self._extending.done():
            self._extending.cancel()
            await asyncio.wait({self._extending})


class StartedReport:
    """A task's task.started report: sent once the task has run :data:`STARTED_AFTER` seconds,
    or at once by :meth:`now`, and never for a task that ends before either."""

    def __init__(self, worker: Worker, ids: dict[str, Any], msg_id: str) -> None:
        self._worker = worker
        self._ids = ids
        self.msg_id = msg_id
        self._sending: asyncio.Task[None] | None = None
        self._taken = False
        self._timer = asyncio.get_running_loop().call_later(STARTED_AFTER, self.now)

    def take_over(self) -> WorkerMessage | None:
        """The report, for another thread to send while this loop is blocked (once; None if it is
        being sent already). Sent twice in a race, the broker keeps one (same msg_id)."""
        if self._sending is not None or self._taken:
            return None
        self._taken = True
        return self._worker.message(WorkerMessageKind.TASK_STARTED, **self._ids)

    def now(self) -> bool:
        """Start sending it unless that has begun already; True if this call started it."""
        if self._sending is not None or self._taken:
            return False
        self._timer.cancel()
        msg = self._worker.message(WorkerMessageKind.TASK_STARTED, **self._ids)
        self._sending = asyncio.create_task(self._worker.publish(msg, msg_id=self.msg_id))
        return True

    def in_flight(self) -> bool:
        """Being sent right now (its publish has not been confirmed yet)."""
        return self._sending is not None and not self._sending.done()

    async def settle(self) -> None:
        """The task has ended: drop the report if not sent yet, else wait until it is confirmed."""
        self._timer.cancel()
        if self._sending is not None:
            await self._sending

    def discard(self) -> None:
        self._timer.cancel()
        if self._sending is not None:
            if not self._sending.done():
                self._sending.cancel()
            elif not self._sending.cancelled():
                self._sending.exception()  # already handled by settle(); don't log it as unretrieved
