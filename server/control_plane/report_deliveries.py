"""Applies each delivery of a control-plane topic with its handler, and acks it only once applied.

A delivery that cannot be applied because the state store or the queue fails right now is tried
again in place, with backoff, for as long as it takes (its lease extended meanwhile): it is never
nacked, so none is dead-lettered by an outage. One that fails with anything else (a bug) is
tried a few times, then dropped with its traceback logged; a malformed one is dropped at once.
Deliveries are applied concurrently: a handler that needs an order waits for it itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from pydantic import ValidationError

from llamactl.server.errors import (
    LeaseLost,
    MessageQueueError,
    StateStoreDamaged,
    StateStoreError,
    TaskNotFound,
)
from llamactl.server.mq.base import Delivery, MessageQueue

__all__ = ["DeliveryCounters", "Handler", "ReportDeliveries"]

log = logging.getLogger(__name__)

_PREFETCH = 256
_RETRY_MAX = 2.0
_RETRIES_FOR_BUGS = 10
"""Tries of a report that fails with something other than a store or queue error (a bug)."""

Handler = Callable[[Delivery], Awaitable[None]]


class DeliveryCounters:
    """Deliveries dropped as malformed, and tries that failed (for /metrics)."""

    def __init__(self) -> None:
        self.malformed = 0
        self.retried = 0
        """Reports that failed to apply at first and were applied later."""
        self.failed_tries = 0
        """Tries to apply a report that failed (the store or the queue was down, say)."""


class ReportDeliveries:
    """Consumes topics, applying each delivery with its topic's handler until it is stored."""

    def __init__(
        self, *, lease: float, on_damaged: Callable[[StateStoreDamaged], None] | None = None
    ) -> None:
        self._lease = lease
        self._on_damaged = on_damaged
        """Called when the state store turns out damaged (the delivery is still retried)."""
        self._running: set[asyncio.Task[None]] = set()
        self._closing = False
        self.counters = DeliveryCounters()

    async def consume(self, queue: MessageQueue, topic: str, handler: Handler) -> None:
        """Apply every delivery of ``topic`` with ``handler``, concurrently. Runs until cancelled."""
        async for delivery in queue.consume(topic, prefetch=_PREFETCH, lease=self._lease):
            job = asyncio.create_task(self._apply(delivery, handler))
            self._running.add(job)
            job.add_done_callback(self._running.discard)

    async def close(self) -> None:
        """Stop applying: what is not acked yet goes to whoever consumes next."""
        self._closing = True
        for job in list(self._running):
            job.cancel()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _apply(self, delivery: Delivery, handler: Handler) -> None:
        msg_id = delivery.message.msg_id
        delay, tries, extended = 0.0, 0, time.monotonic()
        while True:
            try:
                await handler(delivery)
                break
            except (ValidationError, ValueError) as exc:
                self.counters.malformed += 1
                log.error("dropping malformed message %s on %s: %s", msg_id, delivery.message.topic, exc)
                break
            except TaskNotFound as exc:
                log.warning("dropping a report for an unknown task: %s", exc)
                break
            except Exception as exc:
                tries += 1
                self.counters.failed_tries += 1
                transient = isinstance(exc, StateStoreError | MessageQueueError | OSError | TimeoutError)
                if not transient and tries >= _RETRIES_FOR_BUGS:
                    log.exception("could not apply %s after %d tries: dropping it", msg_id, tries)
                    break
                if isinstance(exc, StateStoreDamaged) and self._on_damaged is not None:
                    self._on_damaged(exc)
                elif tries == 1:
                    log.warning("could not apply %s yet (%s): retrying", msg_id, exc)
            if self._closing:
                return  # not acked: delivered again to whoever consumes next
            delay = min(_RETRY_MAX, max(0.05, delay * 2))
            await asyncio.sleep(delay)
            if time.monotonic() - extended > self._lease / 3:
                extended = time.monotonic()
                try:
                    await delivery.extend()
                except (LeaseLost, MessageQueueError):
                    return  # it went back to the queue: whoever gets it applies it
        if tries:
            self.counters.retried += 1
            log.info("applied %s after %d tries", msg_id, tries + 1)
        try:
            await delivery.ack()
        except LeaseLost:
            pass
        except MessageQueueError as exc:
            log.warning("could not ack %s (%s): it will be applied again, harmlessly", msg_id, exc)
