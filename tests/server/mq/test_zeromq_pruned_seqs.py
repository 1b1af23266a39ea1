"""A work topic whose settled messages were pruned does not hand out their seqs again: a seq
names one message for good, so a slow worker's late result cannot settle a newer message."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llamactl.server.errors import LeaseLost
from llamactl.server.mq.zeromq import ZeroMQBroker, ZeroMQQueue

WORK = "work.t.svc.a"
RESULTS = "work.t.results"
MARKERS = "work.t.markers"


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[ZeroMQBroker]:
    broker = ZeroMQBroker(port=0, journal_path=tmp_path / "j.sqlite", retention=0.2, heartbeat_interval=0.3)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.close()


def journaled(path: Path, topic: str) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT msg_id FROM msg WHERE topic = ?", (topic,))]


async def prune_round(queue: ZeroMQQueue, path: Path, name: str) -> None:
    """Settle two messages of another topic and wait for the journal to prune the first (not
    the last of its topic): a prune that finds them due finds what was settled before as well."""
    await queue.publish(MARKERS, b"", msg_id=f"{name}:first")
    await queue.publish(MARKERS, b"", msg_id=f"{name}:last")
    markers = aiter(queue.consume(MARKERS, prefetch=2))
    for _ in range(2):
        await (await anext(markers)).ack()
    await markers.aclose()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while f"{name}:first" in journaled(path, MARKERS):
        assert loop.time() < deadline, journaled(path, MARKERS)
        await asyncio.sleep(0.05)


async def test_a_pruned_work_topic_goes_on_from_its_last_seq(broker: ZeroMQBroker, tmp_path: Path) -> None:
    queue = ZeroMQQueue.from_config(broker.client_config)
    await queue.start()
    try:
        assert await queue.publish(WORK, b"one", msg_id="one") == 0
        await (await anext(aiter(queue.consume(WORK)))).ack()
        await prune_round(queue, tmp_path / "j.sqlite", "round")
        assert await queue.publish(WORK, b"two", msg_id="two") == 1
    finally:
        await queue.close()


async def test_a_late_result_does_not_settle_a_newer_message_of_the_same_seq(
    broker: ZeroMQBroker, tmp_path: Path
) -> None:
    slow = ZeroMQQueue.from_config(broker.client_config)
    fast = ZeroMQQueue.from_config(broker.client_config)
    await slow.start()
    await fast.start()
    try:
        await slow.publish(WORK, b"job1", msg_id="job1")
        held = await anext(aiter(slow.consume(WORK, lease=0.3)))  # not extended: it runs out
        fast_deliveries = aiter(fast.consume(WORK, lease=30))
        again = await asyncio.wait_for(anext(fast_deliveries), 10)
        assert again.message.msg_id == "job1"
        await again.ack_and_publish(RESULTS, b"result of job1 by fast", msg_id="job1:result")
        await prune_round(fast, tmp_path / "j.sqlite", "round")
        await slow.publish(WORK, b"job2", msg_id="job2")
        # The slow worker's result of job1 comes at last: job1 was settled before.
        with pytest.raises(LeaseLost):
            await held.ack_and_publish(RESULTS, b"result of job1 by slow", msg_id="job1:result:late")
        job2 = await asyncio.wait_for(anext(fast_deliveries), 10)
        assert job2.message.msg_id == "job2"
        await job2.ack()  # job2 was not settled by job1's late result
    finally:
        await slow.close()
        await fast.close()
