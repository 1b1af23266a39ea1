"""ZeroMQ-specific: numbers a buggy or forged client gets wrong cannot wedge the broker for others.

Only the broker's own workers may talk to it, but a buggy one must only hurt itself: a field of
the wrong width, a lease that is not a number, or a seq beyond any SQLite integer is skipped (or
refused), and everyone else is served as before.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import zmq

from llamactl.server.errors import PublishRejected
from llamactl.server.mq.base import Message
from llamactl.server.mq.zeromq import ZeroMQBroker, ZeroMQQueue, wire
from llamactl.server.mq.zeromq.packing import pack, unpack
from llamactl.server.mq.zeromq.security import secure_client

from .test_zeromq_direct import next_delivery

WORK = "work.forged.svc.a"
OTHER = "work.forged.svc.b"
STREAM = "stream.forged.task.1.in"


async def _started(broker: ZeroMQBroker) -> ZeroMQQueue:
    queue = broker.connect_local()
    await queue.start()
    return queue


class Raw:
    """A peer holding the broker's keys that sends whatever frames it is given."""

    def __init__(self, broker: ZeroMQBroker) -> None:
        self._ctx = zmq.Context()
        self.sock = self._ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        secure_client(self.sock, broker.client_config.get("curve"))
        self.sock.connect(broker.client_config["router"])

    async def send_and_hear(self, *messages: list[bytes]) -> list[list[bytes]]:
        """Send ``messages`` in one ZeroMQ message (as a client's batch travels), ended by a
        heartbeat; return what came back up to and including the heartbeat's answer."""
        self.sock.send_multipart([pack(m) for m in (*messages, [wire.HB])])
        heard: list[list[bytes]] = []
        while not heard or heard[-1][0] != wire.HB:
            assert await asyncio.to_thread(self.sock.poll, 5000), f"no answer to the heartbeat: {heard}"
            heard.append(unpack(self.sock.recv()))
        return heard

    def close(self) -> None:
        self.sock.close(linger=0)
        self._ctx.term()


@pytest.mark.parametrize(
    "forged",
    [
        [wire.ACK, wire.u64(1), b"no-such-lease", b"\x01"],  # sub: one byte, not a u32
        [wire.CREDIT, b"\x00\x01", wire.u32(1)],
        [wire.FETCH, wire.u64(2), STREAM.encode(), b"\x00", wire.u32(10)],
        [wire.NACK, wire.u64(3), b"no-such-lease", wire.u32(0), b"\x00\x00"],
        [wire.CONSUME, wire.u32(9), WORK.encode(), b"\x00", wire.u32(1)],
    ],
)
async def test_a_field_of_the_wrong_width_is_skipped_and_what_follows_it_is_served(
    tmp_path: Path, forged: list[bytes]
) -> None:
    broker = ZeroMQBroker(journal_path=tmp_path / "mq.sqlite")
    await broker.start()
    raw = Raw(broker)
    try:
        heard = await raw.send_and_hear(forged)
        assert heard[-1][0] == wire.HB
    finally:
        raw.close()
        await broker.close()


async def test_a_lease_that_is_not_a_number_does_not_stop_other_leases_expiring(tmp_path: Path) -> None:
    broker = ZeroMQBroker(journal_path=tmp_path / "mq.sqlite")
    await broker.start()
    queue = await _started(broker)
    raw = Raw(broker)
    try:
        await queue.publish(WORK, b"x", msg_id="held-by-the-buggy-one")
        consume = [wire.CONSUME, wire.u32(1), WORK.encode(), wire.f64(math.nan), wire.u32(1)]
        await raw.send_and_hear(consume)

        await queue.publish(OTHER, b"y", msg_id="m")
        first = await next_delivery(aiter(queue.consume(OTHER, lease=0.3)))
        assert first.attempt == 1
        again = await next_delivery(aiter(queue.consume(OTHER, lease=30)), timeout=3)
        assert (again.message.msg_id, again.attempt) == ("m", 2)
        await again.ack()
    finally:
        raw.close()
        await queue.close()
        await broker.close()


async def test_an_extension_that_is_not_a_number_does_not_stop_other_leases_expiring(tmp_path: Path) -> None:
    broker = ZeroMQBroker(journal_path=tmp_path / "mq.sqlite")
    await broker.start()
    queue = await _started(broker)
    try:
        await queue.publish(WORK, b"x", msg_id="held-by-the-buggy-one")
        held = await next_delivery(aiter(queue.consume(WORK, lease=0.2)))
        extend = [held.lease_id.encode(), wire.f64(math.nan)]
        queue._send([wire.EXTEND, wire.u64(10**6), *extend])  # forged past the client's checks

        await queue.publish(OTHER, b"y", msg_id="m")
        first = await next_delivery(aiter(queue.consume(OTHER, lease=0.5)))
        assert first.attempt == 1
        again = await next_delivery(aiter(queue.consume(OTHER, lease=30)), timeout=3)
        assert (again.message.msg_id, again.attempt) == ("m", 2)
        await again.ack()
    finally:
        await queue.close()
        await broker.close()


async def test_a_consumer_cannot_ask_for_a_lease_that_is_not_a_number(tmp_path: Path) -> None:
    broker = ZeroMQBroker(journal_path=tmp_path / "mq.sqlite")
    await broker.start()
    queue = await _started(broker)
    try:
        with pytest.raises(ValueError, match="lease"):
            queue.consume(WORK, lease=math.nan)
    finally:
        await queue.close()
        await broker.close()


async def test_a_fetch_beyond_any_seq_waits_and_the_journal_serves_everyone_else(tmp_path: Path) -> None:
    broker = ZeroMQBroker(journal_path=tmp_path / "mq.sqlite")
    await broker.start()
    queue = await _started(broker)
    other_stream = "stream.forged.task.2.in"
    try:
        await queue.publish(STREAM, b"first", msg_id="e0")
        reader: AsyncIterator[Message] = aiter(queue.subscribe(STREAM, from_seq=0))
        beyond: AsyncIterator[Message] = aiter(queue.subscribe(other_stream, from_seq=1 << 63))
        # Both fetches reach the broker in one batch, so their reads share one journal commit.
        read = asyncio.ensure_future(anext(reader))
        waiting = asyncio.ensure_future(anext(beyond))
        message = await asyncio.wait_for(read, 5)
        assert (message.msg_id, message.payload) == ("e0", b"first")

        assert await asyncio.wait_for(queue.publish(other_stream, b"x", msg_id="x0"), 5) == 0
        assert await asyncio.wait_for(queue.publish(WORK, b"w", msg_id="w0"), 5) == 0
        assert not waiting.done()  # nothing is that far on: it waits, as beyond any end
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert broker.journal_healthy
    finally:
        await queue.close()
        await broker.close()


@pytest.mark.parametrize("headers", [b"{", b"[1, 2]", b"\xff"])
async def test_a_publish_with_headers_that_are_not_a_json_object_breaks_no_consumer(
    tmp_path: Path, headers: bytes
) -> None:
    """Stored as they came, such headers broke every consumer they were delivered to: its client
    could not read that delivery, and lost the ones that came with it."""
    broker = ZeroMQBroker(journal_path=tmp_path / "mq.sqlite")
    await broker.start()
    queue = await _started(broker)
    try:
        forged = [WORK.encode(), b"forged", b"", headers, b"x"]
        publish = queue._new_request(wire.PUB, forged, "a forged publish")
        await queue.publish(WORK, b"y", msg_id="fine", headers={"a": "b"})
        delivery = await next_delivery(aiter(queue.consume(WORK, prefetch=10)))
        assert (delivery.message.msg_id, dict(delivery.message.headers)) == ("fine", {"a": "b"})
        await delivery.ack()
        with pytest.raises(PublishRejected, match="headers"):
            await asyncio.wait_for(publish, 5)
    finally:
        await queue.close()
        await broker.close()
