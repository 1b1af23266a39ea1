"""The iterators behind ``ZeroMQQueue.consume`` / ``subscribe`` and the :class:`Delivery` they yield.

Both are async generators so that leaving an ``async for`` (the generator is finalized) runs
their cleanup: a consume iterator sends ``CANCEL`` with the leases it buffered but never
yielded (and gives back the results it took by a call: :class:`LocalDelivery`), a subscribe
iterator sends ``UNFETCH`` for its parked fetch.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

from llamactl.server.errors import LeaseLost
from llamactl.server.mq.base import Delivery, Message, Prefetch, check_lease
from llamactl.server.mq.topics import validate_topic

from . import wire
from .local_results import GiveBack

if TYPE_CHECKING:
    from .client import ZeroMQQueue

__all__ = ["ConsumerState", "LocalDelivery", "ZeroMQDelivery", "consume_iter", "subscribe_iter"]


class ConsumerState:
    """One ``consume`` subscription: its buffer of received deliveries and its credit.

    ``granted`` is what the broker was last told this subscription may hold: its unsettled
    deliveries plus the credit it has left. A raised prefetch is granted at once (``CREDIT``); a
    lowered one is reached by keeping the credit of the next settles (their ``sub`` sent as 0).
    Results the broker in this process hands over by a call (:meth:`offer`) count apart, in
    ``local_held``, up to the prefetch as well.
    """

    def __init__(
        self, client: ZeroMQQueue, sub_id: int, topic: str, prefetch: Prefetch, lease: float
    ) -> None:
        self.client = client
        self.sub_id = sub_id
        self.topic = topic
        self.prefetch = prefetch
        self.lease = lease
        self.buffer: deque[ZeroMQDelivery | LocalDelivery] = deque()
        self.local_held: set[LocalDelivery] = set()
        self.unsettled = 0
        self.granted = 0
        self.subscribed = False
        self.closed = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.unwatch = prefetch.watch(self._prefetch_changed)

    def send_consume(self) -> None:
        credit = max(0, self.prefetch.value - self.unsettled)
        self.granted = self.unsettled + credit
        self.subscribed = True
        self.client._send(
            [wire.CONSUME, wire.u32(self.sub_id), self.topic.encode(), wire.f64(self.lease), wire.u32(credit)]
        )

    def _prefetch_changed(self, value: int) -> None:
        if self.subscribed and not self.closed and value > self.granted:
            more, self.granted = value - self.granted, value
            self.client._send([wire.CREDIT, wire.u32(self.sub_id), wire.u32(more)])

    def settled(self) -> bool:
        """A delivery was settled: True if its credit goes back (not when the prefetch was lowered)."""
        self.unsettled -= 1
        if self.granted > self.prefetch.value:
            self.granted -= 1
            return False
        return True

    def push(self, delivery: ZeroMQDelivery) -> None:
        self.buffer.append(delivery)
        self.unsettled += 1
        self._wake()

    def offer(self, message: Message, give_back: GiveBack) -> bool:
        """Take a result by a call (see :mod:`.local_results`): False when closed or full."""
        if self.closed or len(self.local_held) >= self.prefetch.value:
            return False
        delivery = LocalDelivery(self, message, give_back)
        self.local_held.add(delivery)
        self.buffer.append(delivery)
        self._wake()
        return True

    def drop_buffered(self) -> list[str]:
        """Forget the leased deliveries not handed out yet; return their lease ids. (Results taken
        by a call stay: they hold no lease that the broker could have released.)"""
        leases = [d.lease_id for d in self.buffer if isinstance(d, ZeroMQDelivery)]
        self.unsettled -= len(leases)
        self.buffer = deque(d for d in self.buffer if isinstance(d, LocalDelivery))
        return leases

    def give_back_local(self, *, buffered_only: bool) -> None:
        """Return the results taken by a call and not settled: those not handed out yet, or all."""
        buffered = [d for d in self.buffer if isinstance(d, LocalDelivery)]
        if buffered:
            self.buffer = deque(d for d in self.buffer if isinstance(d, ZeroMQDelivery))
        for delivery in buffered if buffered_only else list(self.local_held):
            delivery.give_back()

    def close(self, error: BaseException) -> None:
        self.closed = True
        self.error = error
        self.give_back_local(buffered_only=False)
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class ZeroMQDelivery(Delivery):
    """A leased delivery; settle it with :meth:`ack` or :meth:`nack`."""

    __slots__ = ("_settled", "_state", "attempt", "lease_id", "message")

    def __init__(self, state: ConsumerState, message: Message, attempt: int, lease_id: str) -> None:
        self._state = state
        self.message = message
        self.attempt = attempt
        self.lease_id = lease_id
        self._settled = False

    def __repr__(self) -> str:
        m = self.message
        return f"<Delivery {m.topic}#{m.seq} {m.msg_id} attempt={self.attempt} lease={self.lease_id}>"

    def _settle(self) -> bytes:
        """The first ack/nack frees this delivery's slot: its credit goes back with the request."""
        if self._settled:
            return wire.u32(0)
        self._settled = True
        state = self._state
        give_back = state.settled()
        return wire.u32(0 if state.closed or not give_back else state.sub_id)

    async def _call(self, cmd: bytes, args: list[bytes], what: str) -> None:
        # Sent again (no answer in time, broker restarted): no credit a second time.
        resend = [wire.u32(0) if i == 1 and cmd != wire.EXTEND else a for i, a in enumerate(args)]
        ok = await self._state.client._new_request(
            cmd, args, f"{what} of {self.message.msg_id}", resend_args=resend
        )
        if not ok:
            raise LeaseLost(
                f"{what} of message {self.message.msg_id} on {self.message.topic} failed: its lease "
                f"{self.lease_id} expired or was settled, and the message may have gone to another consumer"
            )

    async def ack(self) -> None:
        await self._call(wire.ACK, [self.lease_id.encode(), self._settle()], "ack")

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
        rest = [
            self.message.topic.encode(),
            wire.u64(self.message.seq),
            topic.encode(),
            msg_id.encode(),
            key.encode(),
            wire.encode_headers(headers),
            bytes(payload),
        ]
        lease = self.lease_id.encode()
        what = f"ack of {self.message.msg_id} with a publish to {topic}"
        seq = await self._state.client._new_request(
            wire.ACKPUB, [lease, self._settle(), *rest], what, resend_args=[lease, wire.u32(0), *rest]
        )
        if seq is False:
            raise LeaseLost(
                f"message {self.message.msg_id} on {self.message.topic} had been settled before "
                f"(by another consumer's result): the publish to {topic} went through all the same"
            )
        return int(seq)

    async def nack(self, delay: float = 0.0) -> None:
        await self._call(
            wire.NACK, [self.lease_id.encode(), self._settle(), wire.f64(max(0.0, delay))], "nack"
        )

    async def extend(self, seconds: float | None = None) -> None:
        lease = self._state.lease if seconds is None else check_lease(seconds)
        await self._call(wire.EXTEND, [self.lease_id.encode(), wire.f64(lease)], "extend")


class LocalDelivery(Delivery):
    """A result the broker in this process handed over by a call: no lease, nothing sent back.

    Its ack settles it here. A nack, or its consumer closing while it holds it, gives it back to
    the broker's dispatcher, which delivers it again the usual way; an ack after that raises
    LeaseLost, as for a lease that moved on.
    """

    __slots__ = ("_give_back", "_settled", "_state", "attempt", "lease_id", "message")

    def __init__(self, state: ConsumerState, message: Message, give_back: GiveBack) -> None:
        self._state = state
        self._give_back = give_back
        self.message = message
        self.attempt = 1
        self.lease_id = f"local-{message.seq}"
        self._settled = False

    def __repr__(self) -> str:
        m = self.message
        return f"<LocalDelivery {m.topic}#{m.seq} {m.msg_id}>"

    def _settle(self, what: str) -> None:
        if self._settled:
            raise LeaseLost(
                f"{what} of message {self.message.msg_id} on {self.message.topic} failed: it was "
                "settled or given back before, and may have gone to another consumer"
            )
        self._settled = True
        self._state.local_held.discard(self)

    def give_back(self, delay: float = 0.0, *, charge: bool = False) -> None:
        """Return it to the dispatcher unsettled (not if settled already)."""
        if not self._settled:
            self._settle("give back")
            self._give_back(delay, charge)

    async def ack(self) -> None:
        self._settle("ack")

    async def ack_and_publish(
        self,
        topic: str,
        payload: bytes,
        *,
        msg_id: str,
        key: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> int:
        # Nothing of a result handed over by a call is journaled, so there is no commit to
        # share: the publish is confirmed first, then the result is settled here.
        seq = await self._state.client.publish(topic, payload, msg_id=msg_id, key=key, headers=headers)
        self._settle(f"ack with a publish to {topic}")
        return seq

    async def nack(self, delay: float = 0.0) -> None:
        self._settle("nack")
        self._give_back(max(0.0, delay), True)

    async def extend(self, seconds: float | None = None) -> None:
        if self._settled:
            self._settle("extend")  # raises LeaseLost


async def consume_iter(state: ConsumerState) -> AsyncIterator[Delivery]:
    client = state.client
    client._check_open()
    client._register(state)
    loop = asyncio.get_running_loop()
    try:
        while True:
            if state.buffer:
                client._check_alive()
            if state.buffer:
                yield state.buffer.popleft()
                continue
            if state.error is not None:
                raise state.error
            state.waiter = loop.create_future()
            await state.waiter
    finally:
        state.closed = True
        state.unwatch()
        client._unregister(state)
        state.give_back_local(buffered_only=True)
        returned = [lease.encode() for lease in state.drop_buffered()]
        client._send([wire.CANCEL, wire.u32(state.sub_id), *returned])


async def subscribe_iter(client: ZeroMQQueue, topic: str, from_seq: int) -> AsyncIterator[Message]:
    next_seq = from_seq
    req, fut = client._new_fetch(topic, next_seq)
    try:
        while True:
            batch = await fut
            good: list[Message] = []
            for m in batch:
                if m.seq < next_seq:
                    continue
                if m.seq != next_seq:  # never expected: refetch from where we are
                    break
                good.append(m)
                next_seq += 1
            req, fut = client._new_fetch(topic, next_seq)
            for m in good:
                yield m
    finally:
        client._drop_fetch(req)
