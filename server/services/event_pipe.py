"""A task's events on their way to the queue, several at once.

Each event used to wait for the queue's confirm before the run could hand over the next, so a
task streamed at most one event per round trip to the broker (about 1,200 a second here, and
each one its own journal commit). The control plane does not need them one at a time: each
event carries its index, the final report says how many went before it, and
:mod:`llamactl.server.control_plane.report_order` stores them in that order whatever order they
come in. So a run's events go out as they come, in order, with at most :data:`WINDOW` of them
(or :data:`WINDOW_BYTES`) unconfirmed: a run that streams faster than the queue confirms waits
for the oldest, as before, and a failed publish fails the run's next event or its final report,
which gives the task back to run again, as before.

Only a queue whose publishes reach the broker in the order they were started
(``MessageQueue.ordered_publishes``: the embedded broker's one connection) gets a window; on
another (Redis' pool of connections) two events on their way at once could swap, and the later
one would wait at the control plane for the earlier, so there an event starts once the one
before it is confirmed (the run still goes on meanwhile).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Coroutine
from typing import Any

__all__ = ["WINDOW", "WINDOW_BYTES", "EventPipe"]

WINDOW = 64
"""Events of one run that may wait for their confirm at once."""
WINDOW_BYTES = 4 * 1024 * 1024
"""Bytes of a run's events that may wait for their confirm at once (at least one event)."""


class EventPipe:
    """Publishes one run's events in order, up to a window of them unconfirmed."""

    def __init__(self, *, ordered: bool) -> None:
        """``ordered``: the queue keeps publishes in the order they were started."""
        self._window = WINDOW if ordered else 1
        self._sending: collections.deque[tuple[asyncio.Future[Any], int]] = collections.deque()
        self._bytes = 0

    async def send(self, publish: Coroutine[Any, Any, Any], size: int) -> None:
        """Start ``publish`` (an event of ``size`` bytes) once the window has room for it.

        Raises what a publish before it raised (the queue refused or did not confirm it)."""
        try:
            self._settle_done()
            while self._sending and (len(self._sending) >= self._window or self._bytes + size > WINDOW_BYTES):
                await self._settle_oldest()
        except BaseException:
            publish.close()  # never started: no "never awaited" warning
            raise
        # A task starts in the order it was made: the events leave in the order they came.
        self._sending.append((asyncio.ensure_future(publish), size))
        self._bytes += size

    async def drain(self) -> None:
        """Wait until every event sent is confirmed (before the report that counts them)."""
        while self._sending:
            await self._settle_oldest()

    def cancel(self) -> None:
        """The run is over without its report: stop what is still on its way."""
        while self._sending:
            sending, _ = self._sending.popleft()
            if sending.done():
                if not sending.cancelled():
                    sending.exception()  # retrieved: a run given back says why on its own
            else:
                sending.cancel()
        self._bytes = 0

    def _settle_done(self) -> None:
        while self._sending and self._sending[0][0].done():
            sending, size = self._sending.popleft()
            self._bytes -= size
            sending.result()

    async def _settle_oldest(self) -> None:
        sending, size = self._sending[0]
        try:
            await asyncio.shield(sending)
        finally:
            if self._sending and self._sending[0][0] is sending and sending.done():
                self._sending.popleft()
                self._bytes -= size
