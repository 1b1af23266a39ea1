"""A Redis server of a test's own (``redis-server`` on a free loopback port), for faults that
would disturb the shared one: a full memory (``CONFIG SET maxmemory``), a stop, a restart, a
failover to a replica that lagged (:func:`fail_over`)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def private_redis(folder: Path, *, save: str = "") -> AsyncIterator[str]:
    """Start ``redis-server`` (its files in ``folder``; ``save``: its RDB save points, none by
    default); yield its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: apt-get install redis-server (.ci/run does)")
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", save, "--appendonly", "no"]
    proc = subprocess.Popen(  # noqa: ASYNC220  (started once; it runs beside the test)
        [*args, "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = aioredis.Redis.from_url(url)
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            try:
                await client.ping()
                break
            except (OSError, aioredis.ConnectionError):
                assert proc.poll() is None, f"redis-server exited with {proc.returncode} (port {port} taken?)"
                assert asyncio.get_running_loop().time() < deadline, "redis-server did not answer in 10 s"
                await asyncio.sleep(0.05)
        yield url
    finally:
        await client.aclose()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def fail_over(primary_url: str, replica_url: str) -> None:
    """Make the Redis at ``replica_url`` a replica of the one at ``primary_url``, wait until it has
    everything the primary wrote, then promote it (``REPLICAOF NO ONE``): from then on it lags,
    as a replica that takes over on a failover lacks the writes it had not received yet."""
    primary, replica = aioredis.Redis.from_url(primary_url), aioredis.Redis.from_url(replica_url)
    source = urlsplit(primary_url)
    try:
        await replica.execute_command("REPLICAOF", source.hostname, source.port)
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            wanted = (await primary.info("replication"))["master_repl_offset"]
            have = await replica.info("replication")
            if have.get("master_link_status") == "up" and have.get("slave_repl_offset", -1) >= wanted:
                break
            assert asyncio.get_running_loop().time() < deadline, f"the replica never caught up: {have}"
            await asyncio.sleep(0.02)
        await replica.execute_command("REPLICAOF", "NO", "ONE")
    finally:
        await primary.aclose()
        await replica.aclose()
