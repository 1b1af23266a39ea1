"""A result that comes back after Redis lost its data (a FLUSHALL, a restart without its data, a
failover to a replica that lagged) must settle only the message it is the result of: the seqs of a
topic whose stream was lost start again from 0, so the seq it names may be another message's now."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from llamactl.server.errors import LeaseLost
from llamactl.server.mq.redis import RedisQueue

from .conftest import REDIS_URL, delete_keys, redis_reachable
from .test_contract import STREAM, WORK, within


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    if not await redis_reachable(REDIS_URL):
        pytest.fail(f"no Redis server answers at {REDIS_URL}")
    name = f"llamactl-test-{uuid.uuid4().hex}:"
    yield name
    await delete_keys(REDIS_URL, name)


@pytest.fixture
async def clients(prefix: str) -> AsyncIterator[tuple[RedisQueue, RedisQueue]]:
    config = {"type": "redis", "url": REDIS_URL, "prefix": prefix, "heartbeat_interval": 0.2, "liveness": 2}
    worker, other = RedisQueue.from_config(config), RedisQueue.from_config(config)
    await worker.start()
    await other.start()
    yield worker, other
    await worker.close()
    await other.close()


async def test_a_result_after_redis_lost_its_data_does_not_settle_another_message(
    clients: tuple[RedisQueue, RedisQueue], prefix: str
) -> None:
    worker, other = clients
    assert await other.publish(WORK, b"old", msg_id="old") == 0
    slow = await within(worker.consume(WORK, lease=60))
    assert slow.message.msg_id == "old"
    await delete_keys(REDIS_URL, prefix)  # Redis lost what it held while the work ran
    assert await other.publish(WORK, b"new", msg_id="new") == 0  # the seq "old" had
    it = other.consume(WORK)
    new = await within(it)
    assert new.message.msg_id == "new"
    await new.nack()  # back in the queue, to run again
    with pytest.raises(LeaseLost):
        await slow.ack_and_publish(STREAM, b"result", msg_id="old:result")
    again = await within(it)
    assert (again.message.msg_id, again.attempt) == ("new", 2)
    await again.ack()
