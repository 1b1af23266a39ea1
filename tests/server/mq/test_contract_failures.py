"""The MessageQueue contract when consumers die, stall or give work up; and ``discard``."""

from __future__ import annotations

import asyncio
import signal

import pytest

from llamactl.server.errors import LeaseLost
from llamactl.server.mq.base import Delivery
from llamactl.server.mq.topics import dead_letter_topic

from .conftest import QueueFactory
from .test_contract import WORK, got_line, nothing_before, spawn_consumer, within


async def test_discard_removes_a_waiting_message_for_good(queue_factory: QueueFactory) -> None:
    q = await queue_factory()
    await q.publish(WORK, b"x", msg_id="cancel-me")
    assert await q.discard(WORK, "cancel-me") is True
    assert await q.discard(WORK, "cancel-me") is False
    assert await q.discard(WORK, "never-published") is False
    await q.publish(WORK, b"x", msg_id="cancel-me")  # its id is still known: absorbed
    await q.publish(WORK, b"m", msg_id="marker")
    assert [d.message.msg_id for d in await nothing_before(q.consume(WORK), "marker")] == ["marker"]


async def test_discard_leaves_a_leased_message_unless_told(queue_factory: QueueFactory) -> None:
    q = await queue_factory()
    await q.publish(WORK, b"x", msg_id="running")
    held = await within(q.consume(WORK))
    assert await q.discard(WORK, "running") is False
    await held.extend()
    assert await q.discard(WORK, "running", leased=True) is True
    with pytest.raises(LeaseLost):
        await held.ack()


async def test_a_consumer_that_dies_holding_several_charges_none_and_each_runs_alone(
    queue_factory: QueueFactory,
) -> None:
    q = await queue_factory()
    for name in ("a", "b", "c"):
        await q.publish(WORK, name.encode(), msg_id=name)
    proc = await spawn_consumer(queue_factory, lease=60)
    try:
        assert sorted([await got_line(proc) for _ in range(3)]) == [["GOT", n, "1"] for n in "abc"]
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        it = q.consume(WORK, prefetch=10, lease=60)
        seen: list[str] = []
        following = asyncio.ensure_future(anext(it))
        for _ in range(3):
            d = await asyncio.wait_for(following, 10)
            assert d.attempt == 2
            seen.append(d.message.msg_id)
            following = asyncio.ensure_future(anext(it))
            # It runs alone: nothing else comes to this consumer until it is settled.
            done, _ = await asyncio.wait({following}, timeout=0.3)
            assert not done
            await d.ack()
        assert sorted(seen) == ["a", "b", "c"]
        following.cancel()
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_a_message_that_kills_its_consumer_alone_goes_to_dead_letters(
    queue_factory: QueueFactory,
) -> None:
    q = await queue_factory()
    await q.publish(WORK, b"poison", msg_id="poison")
    for attempt in range(1, queue_factory.max_attempts + 1):
        proc = await spawn_consumer(queue_factory, lease=60, prefetch=1)
        try:
            assert await got_line(proc) == ["GOT", "poison", str(attempt)]
        finally:
            proc.kill()
            await proc.wait()
    dead = await within(q.consume(dead_letter_topic(WORK)), timeout=10)
    assert dead.message.msg_id == "poison"
    assert dead.message.headers["x-failures"] == str(queue_factory.max_attempts)
    assert dead.message.headers["x-dead-reason"] == "consumer lost"
    await dead.ack()


async def test_a_consumer_whose_loop_was_blocked_runs_nothing_it_had_buffered(
    queue_factory: QueueFactory,
) -> None:
    """Blocked past the broker's patience, its buffered deliveries went to others: when it wakes
    up it hands none of them out (each would run a second time)."""
    q = await queue_factory()
    for name in ("a", "b", "c"):
        await q.publish(WORK, name.encode(), msg_id=name)
    block = queue_factory.liveness_seconds * 3
    proc = await spawn_consumer(queue_factory, lease=60, prefetch=3, block=block)
    try:
        first = await got_line(proc)
        assert first[0] == "GOT" and first[2] == "1"
        it = q.consume(WORK, prefetch=1, lease=60)
        taken: list[Delivery] = []
        for _ in range(3):
            taken.append(await within(it, timeout=block + 5))
            await taken[-1].ack()
        assert sorted(d.message.msg_id for d in taken) == ["a", "b", "c"]
        await it.aclose()  # type: ignore[attr-defined]
        assert await got_line(proc) == ["AWAKE"]
        await q.publish(WORK, b"m", msg_id="marker")
        assert await got_line(proc) == ["GOT", "marker", "1"]
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
