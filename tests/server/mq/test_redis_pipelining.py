"""Script calls made in the same loop turn go to Redis in one pipeline: a burst costs Redis one
read, a refused script fails only its caller, and a cancel of a caller is never lost (a flushed
library or script cache: test_redis_library). On a Redis of each test's own, where its counters are exact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from llamactl.server.errors import MessageQueueError
from llamactl.server.mq.redis import RedisQueue
from llamactl.server.mq.redis.pipelining import MAX_BATCH

from .conftest import lost_cancels
from .private_redis import private_redis
from .tcp_proxy import TcpProxy
from .test_contract import WORK


@pytest.fixture
async def redis_url(tmp_path: Path) -> AsyncIterator[str]:
    async with private_redis(tmp_path / "redis") as url:
        yield url


@pytest.fixture
async def queue(redis_url: str) -> AsyncIterator[RedisQueue]:
    # No heartbeat during a test: its reads are the test's alone.
    q = RedisQueue.from_config({"type": "redis", "url": redis_url, "heartbeat_interval": 60})
    await q.start()
    yield q
    await q.close()


async def _reads(admin: aioredis.Redis) -> int:
    """Read events Redis has processed (this INFO's own among them)."""
    return int((await admin.info("stats"))["total_reads_processed"])


async def test_a_burst_of_publishes_costs_redis_one_read(queue: RedisQueue, redis_url: str) -> None:
    await queue.publish(WORK, b"first", msg_id="first")  # Redis knows the script from now on
    admin = aioredis.Redis.from_url(redis_url)
    try:
        before = await _reads(admin)
        seqs = await asyncio.gather(*(queue.publish(WORK, b"job %d" % i, msg_id=f"m{i}") for i in range(50)))
        after = await _reads(admin)
    finally:
        await admin.aclose()
    assert sorted(seqs) == list(range(1, 51)), "each publish answered with its own sequence number"
    # One read for the pipeline and one for the second INFO (fifty before: one per publish).
    assert after - before <= 2, f"{after - before} reads for 50 publishes made in one loop turn"


async def test_a_burst_bigger_than_a_pipeline_goes_as_several(queue: RedisQueue) -> None:
    n = MAX_BATCH * 2 + 1
    seqs = await asyncio.gather(*(queue.publish(WORK, b"job", msg_id=f"m{i}") for i in range(n)))
    assert sorted(seqs) == list(range(n))
    assert queue._scripts is not None and queue._scripts.pipelines == 2, "the one left over goes alone"


async def test_a_refused_script_fails_its_caller_alone(queue: RedisQueue) -> None:
    good = [queue.publish(WORK, b"job", msg_id=f"m{i}") for i in range(3)]
    # No topic, no sequence number: the script fails in Redis.
    bad = queue._call("ack", [], "an ack without its arguments")
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert results[:3] == [0, 1, 2]
    assert isinstance(results[3], MessageQueueError) and "refused it" in str(results[3])
    assert queue._scripts is not None and queue._scripts.pipelines == 1


async def test_no_loop_turn_loses_a_cancel_of_a_script_call(queue: RedisQueue) -> None:
    """A call waits for its pipeline's answer: cancel one at every loop turn of its course in turn,
    each cancel must reach the caller (and the calls sent meanwhile are answered all the same)."""
    lost = await lost_cancels(lambda: queue.publish(WORK, b"job"))
    assert lost == [], f"cancels after {lost} loop turns were lost: the caller ran on"
    assert await queue.publish(WORK, b"job", msg_id="after") >= 0, "the client still answers"


async def test_a_burst_sent_while_redis_is_unreachable_goes_through_once_it_answers(redis_url: str) -> None:
    """A pipeline that fails on the line fails each of its calls, and each tries again on its
    own until its deadline: a burst made during an outage is stored once Redis answers again,
    each message once (a retried publish is absorbed by its msg_id)."""
    target = urlsplit(redis_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    await proxy.start()
    q = RedisQueue.from_config(
        {"type": "redis", "url": f"redis://127.0.0.1:{proxy.port}/0", "heartbeat_interval": 60}
    )
    await q.start()
    try:
        await q.publish(WORK, b"first", msg_id="first")
        await proxy.stop()
        burst = asyncio.gather(*(q.publish(WORK, b"job", msg_id=f"m{i}") for i in range(20)))
        await asyncio.sleep(0.3)  # the burst's pipeline failed; its calls keep trying
        assert not burst.done()
        await proxy.start()
        seqs = await asyncio.wait_for(burst, 10)
        assert sorted(seqs) == list(range(1, 21))
        assert q._scripts is not None and q._scripts.pipelines >= 1, "the burst went as a pipeline"
        again = await q.publish(WORK, b"job", msg_id="m3")  # absorbed: it is there already
        assert again == seqs[3]
        got = []
        deliveries = q.consume(WORK, prefetch=32)
        while len(got) < 21:
            delivery = await asyncio.wait_for(anext(deliveries), 5)
            got.append(delivery.message.msg_id)
            await delivery.ack()
        assert sorted(got) == sorted(["first", *(f"m{i}" for i in range(20))])
    finally:
        await q.close()
        await proxy.stop()
