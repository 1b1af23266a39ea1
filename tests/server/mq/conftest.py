"""Fixtures for the MessageQueue contract suite: one ``queue_factory`` per backend.

A backend plugs in by adding its name to ``BACKENDS`` and a branch in the ``queue_factory``
fixture that makes its broker side: an object with ``config`` (the client config), ``start()``,
``stop()`` (the broker goes away: connections drop, new ones are refused) and ``aclose()``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import pytest

from llamactl.server.mq.base import MessageQueue
from llamactl.server.mq.factory import connect_queue
from llamactl.server.mq.zeromq import ZeroMQBroker, ZeroMQQueue
from llamactl.server.mq.zeromq.security import CurveKeys

from .tcp_proxy import TcpProxy

BACKENDS = ["zeromq", "zeromq-unix", "zeromq-local", "redis"]
"""``zeromq``: clients over ZeroMQ (TCP), as on another host. ``zeromq-unix``: clients over the
broker's Unix socket (workers on its machine). ``zeromq-local``: clients in the broker's own
process, linked without sockets (the control plane's case).
``redis``: the Redis server at ``LLAMACTL_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``),
each test under a fresh key prefix."""

REDIS_URL = os.environ.get("LLAMACTL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

HEARTBEAT = 0.4
LIVENESS = 3
MAX_ATTEMPTS = 3


class Backend(Protocol):
    """The broker side of one backend under test."""

    config: dict[str, Any]

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def aclose(self) -> None: ...


class ZeroMQBackend:
    """The embedded ZeroMQ broker; ``unix``: its clients use its Unix socket (always the same one)."""

    def __init__(self, journal: Path, *, unix: bool = False) -> None:
        self.journal = journal
        # pytest's tmp_path can be longer than a Unix socket's path may be
        self.folder = tempfile.mkdtemp(prefix="llamactl-test-") if unix else None
        self.broker: ZeroMQBroker | None = None
        self.config: dict[str, Any] = {}
        self.port = 0
        self.keys: CurveKeys | None = None

    async def start(self) -> None:
        """Start (again: on the same port and keys, so clients reconnect by themselves)."""
        self.broker = ZeroMQBroker(
            port=self.port,
            keys=self.keys,
            journal_path=self.journal,
            heartbeat_interval=HEARTBEAT,
            liveness=LIVENESS,
            max_attempts=MAX_ATTEMPTS,
            unix=self.folder is not None,
            unix_path=None if self.folder is None else Path(self.folder) / "broker.unix",
        )
        await self.broker.start()
        self.config = self.broker.client_config
        self.port = int(self.config["router"].rsplit(":", 1)[1])
        self.keys = self.broker.keys

    async def stop(self) -> None:
        if self.broker is not None:
            await self.broker.close()
            self.broker = None

    async def aclose(self) -> None:
        await self.stop()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


class RedisBackend:
    """The shared Redis server, reached through a :class:`TcpProxy`.

    The tests may not restart the shared server, so "stopping the broker" cuts the line instead:
    every connection drops and new ones are refused until :meth:`start`, which is what clients
    see of a stopped or restarted Redis. What a real restart would lose is up to Redis's own
    persistence (AOF), which these tests do not cover. Every key the test made (its prefix) is
    deleted at the end.
    """

    def __init__(self) -> None:
        url = urlsplit(REDIS_URL)
        self.redis_host, self.redis_port = url.hostname or "127.0.0.1", url.port or 6379
        self.db = url.path.strip("/") or "0"
        self.prefix = f"llamactl-test-{uuid.uuid4().hex}:"
        self.proxy = TcpProxy(self.redis_host, self.redis_port)
        self.config: dict[str, Any] = {}

    async def start(self) -> None:
        await self.proxy.start()
        self.config = {
            "type": "redis",
            "url": f"redis://127.0.0.1:{self.proxy.port}/{self.db}",
            "prefix": self.prefix,
            "heartbeat_interval": HEARTBEAT,
            "liveness": LIVENESS,
            "max_attempts": MAX_ATTEMPTS,
        }

    async def stop(self) -> None:
        await self.proxy.stop()

    async def aclose(self) -> None:
        await self.proxy.stop()
        await delete_keys(REDIS_URL, self.prefix)


async def redis_reachable(url: str) -> bool:
    import redis.asyncio as aioredis  # noqa: PLC0415  (only the redis backend needs it)

    r = aioredis.Redis.from_url(url, socket_connect_timeout=1.0)
    try:
        return bool(await r.ping())
    except (OSError, aioredis.RedisError):
        return False
    finally:
        await r.aclose()


async def lost_cancels(start: Callable[[], Coroutine[Any, Any, object]]) -> list[int]:
    """Cancel a call at every loop turn of its course in turn (``start()`` makes the call): the
    numbers of turns after which the cancel was lost (the caller ran on), none when all is well."""
    lost: list[int] = []
    for turns in range(40):
        caller = asyncio.create_task(start())
        for _ in range(turns):
            await asyncio.sleep(0)
        if caller.done():
            break
        caller.cancel()
        try:
            await caller
        except asyncio.CancelledError:
            continue
        lost.append(turns)
    return lost


async def delete_keys(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (SCAN + UNLINK)."""
    import redis.asyncio as aioredis  # noqa: PLC0415

    r = aioredis.Redis.from_url(url)
    try:
        batch: list[bytes] = []
        async for key in r.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                await r.unlink(*batch)
                batch.clear()
        if batch:
            await r.unlink(*batch)
    finally:
        await r.aclose()


class QueueFactory:
    """``await factory()`` gives a started client; everything is closed at the end of the test."""

    max_attempts = MAX_ATTEMPTS
    liveness_seconds = HEARTBEAT * LIVENESS

    def __init__(self, backend: Backend, *, local: bool = False) -> None:
        self.backend = backend
        self.local = local
        self.clients: list[MessageQueue] = []

    @property
    def survives_broker_restart(self) -> bool:
        """A socket client (zeromq, redis) reconnects to a restarted broker; an in-process one dies
        with its broker. For redis the broker's "restart" is a cut line (see RedisBackend)."""
        return not self.local

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.backend.config)

    async def __call__(self, **overrides: Any) -> MessageQueue:
        if self.local:
            assert isinstance(self.backend, ZeroMQBackend) and self.backend.broker is not None
            q: MessageQueue = self.backend.broker.connect_local(**overrides)
        else:
            q = connect_queue({**self.backend.config, **overrides})
        await q.start()
        self.clients.append(q)
        if isinstance(q, ZeroMQQueue):  # each backend runs over the transport it names
            assert q.transport == self.transport, (q.transport, self.transport)
        return q

    @property
    def transport(self) -> str:
        if self.local:
            return "in-process"
        assert isinstance(self.backend, ZeroMQBackend)
        return "zeromq" if self.backend.folder is None else "unix"

    async def stop_broker(self) -> None:
        """The broker goes away: its connections drop and new ones are refused until start_broker."""
        await self.backend.stop()

    async def start_broker(self) -> None:
        """Start the broker again on the same (persistent) state and address."""
        await self.backend.start()

    async def aclose(self) -> None:
        try:
            for q in self.clients:
                await q.close()
        finally:
            await self.backend.aclose()


@pytest.fixture(params=BACKENDS)
async def queue_factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QueueFactory]:
    assert request.param in BACKENDS
    backend: Backend
    if request.param == "redis":
        if not await redis_reachable(REDIS_URL):
            pytest.fail(
                f"no Redis server answers at {REDIS_URL}: start one (CI does) or set LLAMACTL_TEST_REDIS_URL"
            )
        backend = RedisBackend()
    else:
        backend = ZeroMQBackend(tmp_path / "journal.sqlite", unix=request.param == "zeromq-unix")
    await backend.start()
    factory = QueueFactory(backend, local=request.param == "zeromq-local")
    try:
        yield factory
    finally:
        await factory.aclose()
