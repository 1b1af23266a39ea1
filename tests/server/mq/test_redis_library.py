"""The operations run as functions of one library (loaded once, by the first call that finds it
missing, again after a restart or a flush); a client that may not use functions runs them as
scripts, with the same results. On a Redis of each test's own, where its counters are exact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from llamactl.server.mq.redis import RedisQueue
from llamactl.server.mq.redis.lua_lib import function_library

from .private_redis import private_redis
from .test_contract import WORK


@pytest.fixture
async def redis_url(tmp_path: Path) -> AsyncIterator[str]:
    async with private_redis(tmp_path / "redis") as url:
        yield url


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def _queue(url: str) -> RedisQueue:
    # No heartbeat during a test: its calls are the test's alone.
    q = RedisQueue.from_config({"type": "redis", "url": url, "heartbeat_interval": 60})
    await q.start()
    return q


async def _round_trip(q: RedisQueue, n: int, tag: str = "m") -> list[str]:
    """Publish ``n`` messages, consume and ack them all; their msg_ids as delivered."""
    await asyncio.gather(*(q.publish(WORK, b"job", msg_id=f"{tag}{i}") for i in range(n)))
    got: list[str] = []
    deliveries = q.consume(WORK, prefetch=8)
    while len(got) < n:
        delivery = await asyncio.wait_for(anext(deliveries), 5)
        got.append(delivery.message.msg_id)
        await delivery.ack()
    return got


async def _calls(admin: aioredis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = await admin.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(row["calls"])
        for name, row in stats.items()
        if name in ("cmdstat_fcall", "cmdstat_evalsha", "cmdstat_eval")
    }


async def _libraries(admin: aioredis.Redis) -> list[str]:
    return [
        str(dict(zip(lib[::2], lib[1::2], strict=True))["library_name"])
        for lib in await admin.function_list()
    ]


async def _user(admin: aioredis.Redis, redis_url: str, name: str, *rules: str) -> str:
    """A user that may do everything but what ``rules`` take away; its URL."""
    await admin.acl_setuser(
        name, enabled=True, passwords=["+pw"], keys=["*"], channels=["*"], commands=["+@all", *rules]
    )
    at = urlsplit(redis_url)
    return f"redis://{name}:pw@{at.hostname}:{at.port}/0"


async def test_operations_run_as_functions_of_one_library(redis_url: str, admin: aioredis.Redis) -> None:
    q = await _queue(redis_url)
    try:
        assert sorted(await _round_trip(q, 20)) == sorted(f"m{i}" for i in range(20))
    finally:
        await q.close()
    calls = await _calls(admin)
    assert calls.get("evalsha", 0) == 0 and calls.get("eval", 0) == 0, calls
    assert calls["fcall"] >= 40, calls  # a publish and an ack each, the takes, the heartbeat
    libraries = await _libraries(admin)
    assert len(libraries) == 1 and libraries[0].startswith("llamactl_"), libraries
    # A second client finds it loaded and loads nothing.
    q = await _queue(redis_url)
    try:
        assert await _round_trip(q, 1, "second") == ["second0"]
    finally:
        await q.close()
    assert await _libraries(admin) == libraries
    stats = await admin.info("commandstats")
    assert int(stats["cmdstat_function|load"]["calls"]) == 1, "the library was loaded once"


async def _burst_after(q: RedisQueue, admin: aioredis.Redis, flush: Any) -> int:
    """Publish once, ``flush`` (as a restart of a Redis that saves nothing does), then a burst of
    five publishes made in one loop turn; the Redis reads the burst cost (with the second INFO)."""
    await q.publish(WORK, b"first", msg_id="first")
    await flush()
    reads = int((await admin.info("stats"))["total_reads_processed"])
    seqs = await asyncio.gather(*(q.publish(WORK, b"job", msg_id=f"m{i}") for i in range(5)))
    after = int((await admin.info("stats"))["total_reads_processed"])
    assert sorted(seqs) == [1, 2, 3, 4, 5]
    return after - reads


async def test_a_flushed_library_is_loaded_again_once(redis_url: str, admin: aioredis.Redis) -> None:
    q = await _queue(redis_url)
    try:
        reads = await _burst_after(q, admin, admin.function_flush)
        # The pipeline told the function is unknown, the library loaded once, the pipeline again, INFO.
        assert reads <= 4, f"{reads} reads: the library was loaded for each call"
        assert q._scripts is not None and q._scripts.library.functions
    finally:
        await q.close()


@pytest.mark.parametrize("rules", [["-function", "-fcall"], ["-fcall"]], ids=["no-functions", "no-fcall"])
async def test_a_client_an_acl_denies_functions_runs_scripts(
    redis_url: str, admin: aioredis.Redis, rules: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    url = await _user(admin, redis_url, "limited", *rules)
    with caplog.at_level("INFO", logger="llamactl.server.mq.redis.library"):
        q = await _queue(url)
        try:
            assert sorted(await _round_trip(q, 20)) == sorted(f"m{i}" for i in range(20))
            assert q._scripts is not None and not q._scripts.library.functions
        finally:
            await q.close()
    calls = await _calls(admin)
    assert calls["evalsha"] >= 40 and calls.get("fcall", 0) <= 1, calls  # the first call told
    said = [r.getMessage() for r in caplog.records]
    assert any("running scripts, not functions" in line and "permissions" in line for line in said), said


async def test_flushed_scripts_are_loaded_again_once(redis_url: str, admin: aioredis.Redis) -> None:
    q = await _queue(await _user(admin, redis_url, "limited", "-function", "-fcall"))
    try:
        reads = await _burst_after(q, admin, admin.script_flush)
        assert reads <= 4, f"{reads} reads: the script was loaded for each call"
    finally:
        await q.close()


async def test_two_versions_of_the_library_live_side_by_side(redis_url: str, admin: aioredis.Redis) -> None:
    """A library is named by its code: a client of another version loads its own beside it and
    replaces nobody's (clients of both versions share one Redis during an upgrade)."""
    q = await _queue(redis_url)
    try:
        await q.publish(WORK, b"first", msg_id="first")
        assert q._scripts is not None
        other, names = function_library({"answer": "return 42"})
        assert names["answer"].startswith("llamactl_") and names["answer"] not in (await _libraries(admin))
        await admin.function_load(other)
        assert await admin.fcall(names["answer"], 0, "p:", 3, 1000) == 42
        assert len(await _libraries(admin)) == 2
        assert await q.publish(WORK, b"second", msg_id="second") == 1, "the first library still answers"
    finally:
        await q.close()
