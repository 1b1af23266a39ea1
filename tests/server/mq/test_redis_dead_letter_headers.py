"""Dead-lettering a message keeps its headers, whatever ``str`` they hold: one with a lone
surrogate (``json.dumps`` writes it as ``\\ud800``, an escape Redis's Lua JSON decoder refuses)
must reach the dead-letter topic, not fail the script half-way and leave the message held by a
lease that no longer exists, never delivered again."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from llamactl.server.mq.redis import RedisQueue
from llamactl.server.mq.topics import dead_letter_topic

from .conftest import REDIS_URL, delete_keys, redis_reachable
from .test_contract import WORK, within


@pytest.fixture
async def queue() -> AsyncIterator[RedisQueue]:
    if not await redis_reachable(REDIS_URL):
        pytest.fail(f"no Redis server answers at {REDIS_URL}")
    prefix = f"llamactl-test-{uuid.uuid4().hex}:"
    q = RedisQueue.from_config({"type": "redis", "url": REDIS_URL, "prefix": prefix, "max_attempts": 1})
    await q.start()
    yield q
    await q.close()
    await delete_keys(REDIS_URL, prefix)


async def test_a_message_whose_header_holds_a_lone_surrogate_is_dead_lettered(queue: RedisQueue) -> None:
    headers = {"name": "\ud800", "x-dead-reason": "earlier"}
    await queue.publish(WORK, b"poison", msg_id="p", key="k", headers=headers)
    d = await within(queue.consume(WORK))
    assert d.message.headers == headers
    await d.nack()
    dead = await within(queue.consume(dead_letter_topic(WORK)))
    assert (dead.message.msg_id, dead.message.key, dead.message.payload) == ("p", "k", b"poison")
    assert dead.message.headers == {
        "name": "\ud800",
        "x-dead-reason": "nacked",
        "x-attempts": "1",
        "x-failures": "1",
    }
    await dead.ack()


async def test_a_message_without_headers_is_dead_lettered_with_the_reason(queue: RedisQueue) -> None:
    await queue.publish(WORK, b"poison", msg_id="p")
    await (await within(queue.consume(WORK))).nack()
    dead = await within(queue.consume(dead_letter_topic(WORK)))
    assert dead.message.headers == {"x-dead-reason": "nacked", "x-attempts": "1", "x-failures": "1"}
    await dead.ack()
