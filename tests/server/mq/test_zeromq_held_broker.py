"""ZeroMQ-specific: the broker's own loop held (the server stopped by Ctrl-Z or SIGSTOP, a
debugger's breakpoint) for several leases.

Before: when it went on, its timer found every lease run out and took each delivery from its
holder, which nobody had heard only because the broker itself could not listen."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from .conftest import QueueFactory, ZeroMQBackend
from .test_contract import WORK, nothing_before, within

LEASE = 0.5


async def test_a_held_broker_does_not_take_deliveries_from_their_silent_holders(tmp_path: Path) -> None:
    factory = QueueFactory(ZeroMQBackend(tmp_path / "journal.sqlite"))
    await factory.backend.start()
    try:
        q = await factory()
        await q.publish(WORK, b"job", msg_id="job")
        held = await within(q.consume(WORK, lease=LEASE))
        time.sleep(5 * LEASE)  # noqa: ASYNC251  (the fault: this process, its broker with it, held)
        await asyncio.sleep(0.05)  # the broker's timer, overdue, goes first: nobody has spoken yet
        await held.extend()  # before: LeaseLost
        other = await factory()
        await q.publish(WORK, b"marker", msg_id="marker")
        delivered = await nothing_before(other.consume(WORK, lease=30), "marker")
        assert [d.message.msg_id for d in delivered] == ["marker"]
        await held.ack()
    finally:
        await factory.aclose()
