"""A message dead-lettered while the journal's disk is full (a real tmpfs) reaches its
dead-letter topic once there is room again, instead of vanishing from the journal."""

from __future__ import annotations

import asyncio
import time

from llamactl.server.mq.topics import dead_letter_topic
from llamactl.server.mq.zeromq import ZeroMQBroker
from tests.faults import SmallDisk

from .test_zeromq_disk_full import BIG, disk, start_broker

WORK = "work.t.svc.a"

__all__ = ["disk"]  # the fixture, shared with test_zeromq_disk_full


async def wait_healthy(broker: ZeroMQBroker) -> None:
    deadline = time.monotonic() + 10
    while not broker.journal_healthy:
        assert time.monotonic() < deadline, "the journal did not recover"
        await asyncio.sleep(0.05)


async def test_a_message_dead_lettered_on_a_full_disk_reaches_its_dead_letter_topic(disk: SmallDisk) -> None:
    broker = await start_broker(disk, max_attempts=1)
    queue = broker.connect_local(publish_timeout=5)
    await queue.start()
    try:
        await queue.publish(WORK, BIG, msg_id="job:start", key="job")
        job = await anext(aiter(queue.consume(WORK, prefetch=1, lease=30)))
        disk.fill()
        await job.nack()  # its last attempt: the broker dead-letters it
        deadline = time.monotonic() + 10
        while broker.journal_failures == 0:
            assert time.monotonic() < deadline, "the dead letter's commit did not fail"
            await asyncio.sleep(0.01)
        disk.free()
        await wait_healthy(broker)
        dead = aiter(queue.consume(dead_letter_topic(WORK), prefetch=1))
        got = await asyncio.wait_for(anext(dead), 5)
        assert got.message.msg_id == "job:start"
        assert got.message.payload == BIG
    finally:
        await queue.close()
        await broker.close()


async def test_a_message_dead_lettered_on_a_full_disk_survives_a_restart(disk: SmallDisk) -> None:
    broker = await start_broker(disk, max_attempts=1)
    queue = broker.connect_local(publish_timeout=5)
    await queue.start()
    await queue.publish(WORK, BIG, msg_id="job:start", key="job")
    job = await anext(aiter(queue.consume(WORK, prefetch=1, lease=30)))
    disk.fill()
    await job.nack()
    deadline = time.monotonic() + 10
    while broker.journal_failures == 0:
        assert time.monotonic() < deadline, "the dead letter's commit did not fail"
        await asyncio.sleep(0.01)
    disk.free()
    await wait_healthy(broker)
    await queue.close()
    await broker.close()
    restarted = await start_broker(disk, max_attempts=1)
    again = restarted.connect_local()
    await again.start()
    try:
        await again.publish(dead_letter_topic(WORK), b"marker", msg_id="marker")
        dead = aiter(again.consume(dead_letter_topic(WORK), prefetch=2))
        first = await asyncio.wait_for(anext(dead), 5)
        assert first.message.msg_id == "job:start"  # it was journaled before the marker
    finally:
        await again.close()
        await restarted.close()
