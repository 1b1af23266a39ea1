"""The iterator behind ``RedisQueue.consume`` and the :class:`Delivery` it yields.

The iterator takes deliveries with the ``take`` script, at most its free credit (``prefetch``
minus what it holds) at a time, and hands them out one by one. When there is nothing to take it
blocks on ``XREAD`` of two streams: the topic's own (a new message) and its wake stream (a message
made ready again: nacked, released, its key freed); the take told it the ids to wait after, so
nothing that happens in between is missed. When it may not take (no credit, or a suspect to
settle first) it waits for its own deliveries to be settled.

Before handing out a buffered delivery it checks that the client was not silent past its
liveness window (its event loop blocked): if it was, its leases may have gone to other consumers,
so it hands none of what it buffered out (each would run twice) and gives them back.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from llamactl.server.errors import LeaseLost, MessageQueueClosed, MessageQueueError
from llamactl.server.mq.base import Delivery, Message, Prefetch, check_lease
from llamactl.server.mq.topics import validate_topic

if TYPE_CHECKING:
    from .client import RedisQueue

__all__ = ["ConsumeState", "RedisDelivery", "consume_iter"]

log = logging.getLogger(__name__)


class ConsumeState:
    """One ``consume`` iterator: what it buffered, how many it holds unsettled, its wake-up."""

    def __init__(self, topic: str, prefetch: Prefetch, lease: float) -> None:
        self.topic = topic
        self.prefetch = prefetch
        self.lease = lease
        self.buffer: deque[RedisDelivery] = deque()
        self.unsettled = 0
        self.exclusive: str | None = None
        """Lease id of a suspect this iterator runs alone: it takes nothing else meanwhile."""
        self.changed = asyncio.Event()
        self.unwatch = prefetch.watch(lambda _value: self.changed.set())

    def settled(self, delivery: RedisDelivery) -> None:
        self.unsettled -= 1
        if self.exclusive == delivery.lease_id:
            self.exclusive = None
        self.changed.set()


class RedisDelivery(Delivery):
    """A leased delivery; settle it with :meth:`ack`, :meth:`ack_and_publish` or :meth:`nack`."""

    __slots__ = ("_client", "_settled", "_state", "attempt", "epoch", "lease_id", "message")

    def __init__(  # noqa: PLR0917  (made in one place, by RedisQueue._take)
        self,
        client: RedisQueue,
        state: ConsumeState,
        message: Message,
        attempt: int,
        lease_id: str,
        epoch: int,
    ) -> None:
        self._client = client
        self._state = state
        self.message = message
        self.attempt = attempt
        self.lease_id = lease_id
        self.epoch = epoch
        self._settled = False

    def __repr__(self) -> str:
        m = self.message
        return f"<Delivery {m.topic}#{m.seq} {m.msg_id} attempt={self.attempt} lease={self.lease_id}>"

    def _settle(self) -> None:
        self._client._check_open()
        if not self._settled:
            self._settled = True
            self._state.settled(self)

    def _lost(self, what: str) -> LeaseLost:
        m = self.message
        return LeaseLost(
            f"{what} of message {m.msg_id} on {m.topic} failed: its lease {self.lease_id} expired or was "
            "settled, and the message may have gone to another consumer"
        )

    def _args(self) -> list[Any]:
        return [self.message.topic, self.message.seq, self.lease_id]

    async def ack(self) -> None:
        self._settle()
        if not await self._client._run("ack", self._args(), f"ack of {self.message.msg_id}"):
            raise self._lost("ack")

    async def ack_and_publish(
        self,
        topic: str,
        payload: bytes,
        *,
        msg_id: str,
        key: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> int:
        validate_topic(topic)
        self._settle()
        what = f"ack of {self.message.msg_id} with a publish to {topic}"
        args = [
            *self._args(),
            topic,
            msg_id,
            key,
            json.dumps(dict(headers or {})),
            bytes(payload),
            self.message.msg_id,
        ]
        seq, settled = await self._client._run("ack_and_publish", args, what)
        if not settled:
            raise LeaseLost(
                f"message {self.message.msg_id} on {self.message.topic} had been settled before "
                f"(by another consumer's result): the publish to {topic} went through all the same"
            )
        return int(seq)

    async def nack(self, delay: float = 0.0) -> None:
        self._settle()
        ms = int(max(0.0, delay) * 1000)
        if not await self._client._run("nack", [*self._args(), ms], f"nack of {self.message.msg_id}"):
            raise self._lost("nack")

    async def extend(self, seconds: float | None = None) -> None:
        self._client._check_open()
        ms = max(1, int((self._state.lease if seconds is None else check_lease(seconds)) * 1000))
        if not await self._client._run("extend", [*self._args(), ms], f"extend of {self.message.msg_id}"):
            raise self._lost("extend")


async def consume_iter(client: RedisQueue, state: ConsumeState) -> AsyncIterator[Delivery]:
    topic = state.topic
    try:
        while True:
            if state.buffer:
                if client._void(state.buffer[0].epoch):
                    await _give_back(client, state)
                    continue
                yield state.buffer.popleft()
                continue
            client._check_open()
            state.changed.clear()
            credit = state.prefetch.value - state.unsettled
            if credit <= 0 or state.exclusive is not None:
                await client._until(state.changed.wait())
                continue
            try:
                taken = await client._take(state, credit)
            except MessageQueueClosed:
                raise
            except MessageQueueError as exc:
                if client.outage is None:  # an unreachable Redis is said by the link, once
                    log.warning("consuming %s: %s; trying again", topic, exc)
                await client._until(asyncio.sleep(client.config.heartbeat_interval))
                continue
            if taken.deliveries:
                state.buffer.extend(taken.deliveries)
                state.unsettled += len(taken.deliveries)
                if taken.exclusive:
                    state.exclusive = taken.deliveries[0].lease_id
            elif taken.idle:
                await client._until(state.changed.wait())
            else:
                await client._wait_for_work(topic, taken.last_read, taken.last_wake, taken.due)
    finally:
        state.unwatch()
        if state.buffer and not client.closed:
            await _give_back(client, state)


async def _give_back(client: RedisQueue, state: ConsumeState) -> None:
    """Return what ``state`` buffered but never handed out: not attempts, so not counted."""
    held = list(state.buffer)
    state.buffer.clear()
    state.unsettled -= len(held)
    args: list[Any] = [state.topic]
    for d in held:
        args += [d.message.seq, d.lease_id]
    try:
        await client._run("give_back", args, f"return of {len(held)} deliveries", quick=True)
    except MessageQueueError as exc:
        log.info("could not return deliveries of %s (their leases will run out): %s", state.topic, exc)
