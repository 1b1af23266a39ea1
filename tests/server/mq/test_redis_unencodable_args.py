"""A call whose arguments Redis cannot be sent (a str with a lone surrogate, as ``json.loads``
makes of ``"\\ud800"``) fails its own caller alone: the calls made in the same loop turn share
its pipeline and must go through all the same."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from llamactl.server.mq.redis import RedisQueue

from .conftest import REDIS_URL, delete_keys, redis_reachable
from .test_contract import WORK, within


@pytest.fixture
async def queue() -> AsyncIterator[RedisQueue]:
    if not await redis_reachable(REDIS_URL):
        pytest.fail(f"no Redis server answers at {REDIS_URL}")
    prefix = f"llamactl-test-{uuid.uuid4().hex}:"
    q = RedisQueue.from_config({"type": "redis", "url": REDIS_URL, "prefix": prefix})
    await q.start()
    yield q
    await q.close()
    await delete_keys(REDIS_URL, prefix)


async def test_an_unencodable_key_fails_its_publish_alone(queue: RedisQueue) -> None:
    await queue.publish(WORK, b"held", msg_id="held")
    held = await within(queue.consume(WORK, lease=60))
    results = await asyncio.gather(
        queue.publish(WORK, b"good", msg_id="good"),
        queue.publish(WORK, b"bad", msg_id="bad", key="\ud800"),
        queue.publish(WORK, b"bad", msg_id="\udcff"),
        held.ack(),
        return_exceptions=True,
    )
    assert results[0] == 1, results
    assert isinstance(results[1], ValueError), results
    assert isinstance(results[2], ValueError), results
    assert results[3] is None, results
    good = await within(queue.consume(WORK))
    assert good.message.msg_id == "good"
    await good.ack()
