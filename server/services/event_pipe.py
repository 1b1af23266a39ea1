"""A task's events on their way to the queue: several at once, and many in one report when the
run writes them faster than the queue confirms them.

Each event used to wait for the queue's confirm before the run could hand over the next, so a
task streamed at most one event per round trip to the broker. The control plane does not need
them one at a time: each report carries the index of its (first) event, the final report says
how many went before it, and :mod:`llamactl.server.control_plane.report_order` stores them in
that order whatever order they come in. So a run's events go out as they come, in order, with at
most :data:`WINDOW` reports (or :data:`WINDOW_BYTES`) unconfirmed.

An event leaves at the end of the loop turn it was written in, together with the others
written in that turn (a step that writes several one after the other, without awaiting), as one
``task.event`` report of several events. Past the window, events are held rather than making
the run wait, and the held ones leave together as soon as the window has room (a confirm came
back): a fast stream then costs the queue and the control plane one message, one journal row
and one commit per batch instead of per event, while a slow one (a token now and then) still
goes event by event, with no added delay. The run waits only when a whole batch is
held (:data:`BATCH_EVENTS`, or ``batch_bytes``). A failed publish fails the run's next event or
its final report, which gives the task back to run again, as before.

Only a queue whose publishes reach the broker in the order they were started
(``MessageQueue.ordered_publishes``: the embedded broker's one connection) gets a window; on
another (Redis' pool of connections) two reports on their way at once could swap, and the later
one would wait at the control plane for the earlier, so there a report starts once the one
before it is confirmed (the run still goes on meanwhile, its events held and then batched).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["BATCH_EVENTS", "WINDOW", "WINDOW_BYTES", "EventPipe", "SendMany", "SendOne"]

WINDOW = 64
"""Reports of one run that may wait for their confirm at once."""
WINDOW_BYTES = 4 * 1024 * 1024
"""Bytes of a run's reports that may wait for their confirm at once (at least one report)."""
BATCH_EVENTS = 1000
"""Events held for one report at most; the run waits for room past them."""
BATCH_BYTES = 1024 * 1024
"""Bytes of events held for one report at most (counted as each one's report alone)."""

SendOne = Callable[[int, bytes], Coroutine[Any, Any, Any]]
"""Publish one event's report, already encoded: ``(index, payload)``."""
SendMany = Callable[[int, list[dict[str, Any]]], Coroutine[Any, Any, Any]]
"""Publish one report of several events: ``(index of the first, their envelopes)``."""


class EventPipe:
    """Publishes one run's events in order, up to a window of reports unconfirmed, batching the
    events that come while the window is full."""

    def __init__(
        self, one: SendOne, many: SendMany, *, ordered: bool, batch_bytes: int = BATCH_BYTES
    ) -> None:
        """``ordered``: the queue keeps publishes in the order they were started.
        ``batch_bytes``: a batch's bound, counted as the sum of its events' reports alone (so a
        batch's report is never larger than that sum: keep it within the queue's message bound)."""
        self._one, self._many = one, many
        self._window = WINDOW if ordered else 1
        self._batch_bytes = batch_bytes
        self._sending: collections.deque[tuple[asyncio.Future[Any], int]] = collections.deque()
        self._bytes = 0
        self._held: list[tuple[int, dict[str, Any], bytes]] = []
        self._held_bytes = 0
        self._failed: BaseException | None = None
        self._flush: asyncio.Handle | None = None

    async def send(self, index: int, envelope: dict[str, Any], payload: bytes) -> None:
        """Send event ``index`` (``payload``: its report alone), or hold it for the next batch.

        Raises what a publish before it raised (the queue refused or did not confirm it)."""
        size = len(payload)
        self._pump(release=False)
        while self._held and (len(self._held) >= BATCH_EVENTS or self._held_bytes + size > self._batch_bytes):
            self._pump()  # sends what is held if the window has room
            if self._held:
                await self._wait_oldest()
        self._held.append((index, envelope, payload))
        self._held_bytes += size
        if self._flush is None:
            # At the end of this loop turn: the events a step writes one after the other, without
            # awaiting in between, leave together.
            self._flush = asyncio.get_running_loop().call_soon(self._flush_now)

    async def drain(self) -> None:
        """Wait until every event sent or held is confirmed (before the report that counts them)."""
        self._flush_now()
        while True:
            self._pump()
            if not self._sending:
                return
            await self._wait_oldest()

    def cancel(self) -> None:
        """The run is over without its report: stop what is still on its way, drop what is held."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._held.clear()
        self._held_bytes = 0
        while self._sending:
            sending, _ = self._sending.popleft()
            if sending.done():
                if not sending.cancelled():
                    sending.exception()  # retrieved: a run given back says why on its own
            else:
                sending.cancel()
        self._bytes = 0

    def _flush_now(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._pump(raising=False)

    def _room(self, size: int) -> bool:
        return not self._sending or (len(self._sending) < self._window and self._bytes + size <= WINDOW_BYTES)

    def _start(self, publish: Coroutine[Any, Any, Any], size: int) -> None:
        # A task starts in the order it was made: the reports leave in the order they came.
        sending = asyncio.ensure_future(publish)
        self._sending.append((sending, size))
        self._bytes += size
        sending.add_done_callback(lambda _: self._pump(raising=False))

    def _pump(self, *, raising: bool = True, release: bool = True) -> None:
        """Take the confirmed reports off the window, then (``release``) send what is held if
        it has room."""
        while self._sending and self._sending[0][0].done():
            sending, size = self._sending.popleft()
            self._bytes -= size
            error = None if sending.cancelled() else sending.exception()
            if error is not None and self._failed is None:
                self._failed = error
        if release and self._failed is None and self._held and self._room(self._held_bytes):
            held, size = self._held, self._held_bytes
            self._held, self._held_bytes = [], 0
            if len(held) == 1:
                self._start(self._one(held[0][0], held[0][2]), size)
            else:
                self._start(self._many(held[0][0], [envelope for _, envelope, _ in held]), size)
        if raising and self._failed is not None:
            raise self._failed

    async def _wait_oldest(self) -> None:
        await asyncio.wait([self._sending[0][0]])
