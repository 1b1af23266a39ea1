"""The Redis server itself. It may become another server between two heartbeats (a failover to
a replica that lagged, a restart from a file that missed the last writes): no call fails and the
new server still knows every client, yet it may lack what was written last. A client tells by
the server's run id, and counts it in ``losses`` (the control plane then hands unfinished tasks
out again; Redis absorbs the copies it holds). And its settings may drop the queue's keys (an
eviction policy): the client finds that at start, and the server says it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from llamactl.server.mq.redis import RedisQueue

from .private_redis import fail_over, private_redis
from .tcp_proxy import TcpProxy


async def test_a_redis_replaced_by_a_lagging_replica_counts_as_a_loss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with private_redis(tmp_path / "a") as first, private_redis(tmp_path / "b") as second:
        a, b = urlsplit(first), urlsplit(second)
        proxy = TcpProxy(a.hostname or "127.0.0.1", a.port or 6379)
        await proxy.start()
        url = f"redis://127.0.0.1:{proxy.port}/0"
        q = RedisQueue.from_config({"type": "redis", "url": url, "heartbeat_interval": 0.2})
        try:
            await q.start()
            await fail_over(first, second)
            losses, outages = q.losses, q._link.reachability.outages if q._link else 0
            with caplog.at_level("WARNING"):
                # Between two heartbeats: the pool reconnects an idle connection without a word.
                proxy.target = (b.hostname or "127.0.0.1", b.port or 6379)
                await proxy.stop()
                await proxy.start()
                deadline = asyncio.get_running_loop().time() + 5
                while q.losses == losses:
                    assert asyncio.get_running_loop().time() < deadline, "the new server went unnoticed"
                    await asyncio.sleep(0.02)
            said = [r.getMessage() for r in caplog.records]
            assert any("is another Redis server now" in line for line in said), said
            if q._link is not None and q._link.reachability.outages == outages:
                print("no call failed on the switch: the run id alone told")
        finally:
            await q.close()
            await proxy.stop()


async def test_an_eviction_policy_that_would_drop_the_queue_s_keys_is_said(tmp_path: Path) -> None:
    async with private_redis(tmp_path / "redis") as url:
        q = RedisQueue.from_config({"type": "redis", "url": url})
        await q.start()
        try:
            assert q.risks == []  # redis-server's default: noeviction
        finally:
            await q.close()
        admin = aioredis.Redis.from_url(url)
        try:
            await admin.config_set("maxmemory-policy", "allkeys-lru")
        finally:
            await admin.aclose()
        q = RedisQueue.from_config({"type": "redis", "url": url})
        await q.start()
        try:
            (risk,) = q.risks
            assert f"message queue redis at {url} has maxmemory-policy allkeys-lru" in risk
            assert "set `maxmemory-policy noeviction` there" in risk
        finally:
            await q.close()
