"""Fixtures for the MessageQueue contract suite: one ``queue_factory`` per backend.

A backend plugs in by adding its name to ``BACKENDS`` and a branch in ``_start_backend`` that
returns a :class:`Backend` (how to make the broker side, its client config, and how to stop or
restart it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from llamactl.server.mq.base import MessageQueue
from llamactl.server.mq.factory import connect_queue
from llamactl.server.mq.zeromq import ZeroMQBroker
from llamactl.server.mq.zeromq.security import CurveKeys

BACKENDS = ["zeromq", "zeromq-local"]
"""``zeromq-local``: clients in the broker's own process, linked without sockets (the control plane's case)."""

HEARTBEAT = 0.4
LIVENESS = 3
MAX_ATTEMPTS = 3


class Backend:
    """The broker side of one backend under test (ZeroMQ: the embedded broker)."""

    def __init__(self, journal: Path) -> None:
        self.journal = journal
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
        )
        await self.broker.start()
        self.config = self.broker.client_config
        self.port = int(self.config["router"].rsplit(":", 1)[1])
        self.keys = self.broker.keys

    async def stop(self) -> None:
        if self.broker is not None:
            await self.broker.close()
            self.broker = None


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
        """A socket client reconnects to a restarted broker; an in-process one dies with its broker."""
        return not self.local

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.backend.config)

    async def __call__(self, **overrides: Any) -> MessageQueue:
        if self.local:
            assert self.backend.broker is not None
            q: MessageQueue = self.backend.broker.connect_local(**overrides)
        else:
            q = connect_queue({**self.backend.config, **overrides})
        await q.start()
        self.clients.append(q)
        return q

    async def stop_broker(self) -> None:
        await self.backend.stop()

    async def start_broker(self) -> None:
        """Start a new broker on the same (persistent) journal and address."""
        await self.backend.start()

    async def aclose(self) -> None:
        for q in self.clients:
            await q.close()
        await self.backend.stop()


@pytest.fixture(params=BACKENDS)
async def queue_factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QueueFactory]:
    assert request.param in ("zeromq", "zeromq-local")
    backend = Backend(tmp_path / "journal.sqlite")
    await backend.start()
    factory = QueueFactory(backend, local=request.param == "zeromq-local")
    try:
        yield factory
    finally:
        await factory.aclose()
