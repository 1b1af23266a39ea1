"""The broker's journal on a disk that fills up (a real tmpfs): nothing accepted is lost, nothing
acked comes back, and everything works again once space is freed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from llamactl.server.errors import PublishRejected
from llamactl.server.mq.zeromq import ZeroMQBroker
from tests.faults import SmallDisk, small_disk

WORK = "work.t.svc.a"
RESULTS = "work.t.control"
# More than the WAL holds already: a commit that fits in a WAL checkpointed and started over
# reuses its space and succeeds on a full disk, so the messages that must fail are this big.
BIG = b"x" * (512 * 1024)


@pytest.fixture
async def disk(tmp_path: Path) -> AsyncIterator[SmallDisk]:
    with small_disk(tmp_path / "disk", "4m") as mounted:
        yield mounted


async def start_broker(disk: SmallDisk, **options: Any) -> ZeroMQBroker:
    broker = ZeroMQBroker(journal_path=disk.path / "journal.sqlite", heartbeat_interval=0.3, **options)
    await broker.start()
    return broker


async def test_a_result_that_cannot_be_journaled_keeps_its_delivery_until_it_can(disk: SmallDisk) -> None:
    broker = await start_broker(disk)
    queue = broker.connect_local(publish_timeout=5)
    await queue.start()
    try:
        await queue.publish(WORK, b"job", msg_id="job:start")
        deliveries = aiter(queue.consume(WORK, prefetch=1, lease=30))
        job = await anext(deliveries)
        filled = disk.fill()
        print(f"filled the journal's disk with {filled} bytes")
        with pytest.raises(PublishRejected, match="full"):
            await job.ack_and_publish(RESULTS, BIG, msg_id="job:final", key="job")
        disk.free()
        await job.ack_and_publish(RESULTS, BIG, msg_id="job:final", key="job")
        await queue.publish(WORK, b"marker", msg_id="marker")
        following = await asyncio.wait_for(anext(deliveries), 5)
        assert following.message.msg_id == "marker"  # the job was settled, not handed out again
        result = await asyncio.wait_for(anext(aiter(queue.consume(RESULTS))), 5)
        assert result.message.payload == BIG
    finally:
        await queue.close()
        await broker.close()


async def test_an_ack_made_while_the_disk_is_full_is_journaled_once_it_is_not(disk: SmallDisk) -> None:
    broker = await start_broker(disk)
    queue = broker.connect_local(publish_timeout=5)
    await queue.start()
    await queue.publish(WORK, b"job", msg_id="job:start")
    job = await anext(aiter(queue.consume(WORK, prefetch=1, lease=30)))
    disk.fill()
    await job.ack()  # the broker has applied it; its journal record waits for space
    with pytest.raises(PublishRejected):
        await queue.publish(WORK, BIG, msg_id="refused")
    failed = broker.journal_failures
    print(f"journal commits failed while the disk was full: {failed}")
    assert failed >= 1
    disk.free()
    deadline = time.monotonic() + 10
    while not broker.journal_healthy:
        assert time.monotonic() < deadline, "the journal did not recover"
        await asyncio.sleep(0.05)
    await queue.close()
    await broker.close()
    restarted = await start_broker(disk)
    again = restarted.connect_local()
    await again.start()
    try:
        await again.publish(WORK, b"marker", msg_id="marker")
        first = await asyncio.wait_for(anext(aiter(again.consume(WORK, prefetch=1))), 5)
        assert first.message.msg_id == "marker"  # the acked job did not come back
    finally:
        await again.close()
        await restarted.close()
