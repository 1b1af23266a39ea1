"""An in-memory MessageQueue with just enough of the contract to drive a Worker without a broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from llamactl.server.errors import LeaseLost, MessageQueueError
from llamactl.server.mq.base import Delivery, Message, MessageQueue, Prefetch, as_prefetch

DEADLINE = 10.0


class FakeDelivery(Delivery):
    def __init__(self, queue: FakeQueue, message: Message, attempt: int) -> None:
        self.queue = queue
        self.message = message
        self.attempt = attempt
        self.lease_id = uuid.uuid4().hex
        self.state = "leased"
        self.extends = 0

    async def ack(self) -> None:
        if self.state != "leased":
            raise LeaseLost(self.lease_id)
        self.state = "acked"
        self.queue.changed()

    async def ack_and_publish(
        self,
        topic: str,
        payload: bytes,
        *,
        msg_id: str,
        key: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> int:
        seq = await self.queue.publish(topic, payload, msg_id=msg_id, key=key, headers=headers)
        if (confirm := self.queue.held_confirms.get(msg_id)) is not None:
            await confirm.wait()  # the report left; the broker answers when the test says so
        await self.ack()
        return seq

    async def nack(self, delay: float = 0.0) -> None:
        self.state = "nacked"
        self.queue.changed()

    async def extend(self, seconds: float | None = None) -> None:
        self.extends += 1
        self.queue.changed()


class FakeQueue(MessageQueue):
    def __init__(self) -> None:
        self.topics: dict[str, list[Message]] = {}
        self.deliveries: list[FakeDelivery] = []
        self.consumers: list[dict[str, Any]] = []
        self.started = self.closed = False
        self.refuse: set[str] = set()
        """msg_ids whose next publish fails as if the broker were unreachable."""
        self.held_confirms: dict[str, asyncio.Event] = {}
        """msg_ids whose ``ack_and_publish`` is published at once but confirmed once the event is set."""
        self.redelivered: list[FakeDelivery] = []
        self._changed = asyncio.Event()

    def changed(self) -> None:
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool], deadline: float = DEADLINE) -> None:
        async with asyncio.timeout(deadline):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        msg_id: str | None = None,
        key: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> int:
        if msg_id in self.refuse:
            self.refuse.discard(msg_id)
            raise MessageQueueError(f"publish to {topic}: the broker did not answer within 10s")
        log = self.topics.setdefault(topic, [])
        for old in log:
            if old.msg_id == msg_id:
                return old.seq
        log.append(Message(topic, msg_id or uuid.uuid4().hex, payload, key, len(log), headers or {}))
        self.changed()
        return len(log) - 1

    def redeliver(self, delivery: FakeDelivery) -> None:
        """Take ``delivery``'s lease away (as from a consumer taken for dead) and hand its message
        out again, attempt + 1."""
        delivery.state = "lost"
        self.redelivered.append(FakeDelivery(self, delivery.message, delivery.attempt + 1))
        self.changed()

    async def consume(
        self, topic: str, *, prefetch: int | Prefetch = 1, lease: float = 30.0
    ) -> AsyncIterator[Delivery]:
        self.consumers.append({"topic": topic, "prefetch": as_prefetch(prefetch).value, "lease": lease})
        taken = 0
        while True:
            await self.wait_for(
                lambda: bool(self.redelivered) or len(self.topics.get(topic, [])) > taken, deadline=3600
            )
            if self.redelivered:
                delivery = self.redelivered.pop(0)
                self.deliveries.append(delivery)
                self.changed()
                yield delivery
                continue
            delivery = FakeDelivery(self, self.topics[topic][taken], 1)
            taken += 1
            self.deliveries.append(delivery)
            self.changed()
            yield delivery

    async def subscribe(self, topic: str, *, from_seq: int = 0) -> AsyncIterator[Message]:
        seq = from_seq
        while True:
            await self.wait_for(lambda: len(self.topics.get(topic, [])) > seq, deadline=3600)
            yield self.topics[topic][seq]
            seq += 1

    async def discard(self, topic: str, msg_id: str, *, leased: bool = False) -> bool:
        for delivery in self.deliveries:
            if delivery.message.msg_id == msg_id and delivery.state == "leased":
                if not leased:
                    return False
                delivery.state = "discarded"
                self.changed()
                return True
        return False
