"""The PostgreSQL store's wake-ups: one connection of its own that LISTENs on the schema's channel.

Every append sends ``NOTIFY`` on the channel at commit, so the notices reach the readers waiting
in every process that shares the schema, this one included. If the connection drops it is opened
again (backing off, the outage said once by the store's reachability), and every waiter looks
again: appends made while no one listened would not have woken them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from llamactl.server.aio import cancel_and_wait
from llamactl.server.outage import Reachability
from llamactl.server.state._common import StreamWaiters
from llamactl.server.state._pg_faults import UNREACHABLE, reason

__all__ = ["AppendNotices"]

logger = logging.getLogger("llamactl.server.state.postgresql")


class AppendNotices:
    """The LISTEN connection of one store, and who hears its notices.

    Args:
        dsn: what asyncpg connects to.
        settings: the connection's server settings (the pool's).
        channel: the schema's notification channel.
        timeout: seconds to wait for the connection.
        waiters: the store's readers waiting for appends, woken by stream.
        reach: the store's reachability, which says an outage once.
        where: how log lines name the server.
    """

    def __init__(
        self,
        dsn: str,
        *,
        settings: dict[str, str],
        channel: str,
        timeout: float,
        waiters: StreamWaiters,
        reach: Reachability,
        where: str,
    ) -> None:
        self._dsn = dsn
        self._settings = settings
        self._channel = channel
        self._timeout = timeout
        self._waiters = waiters
        self._reach = reach
        self._where = where
        self._connection: asyncpg.Connection | None = None
        self._relisten: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[str], None]] = []
        self._closed = False

    @property
    def listening(self) -> bool:
        """Whether the LISTEN connection is open now."""
        return self._connection is not None and not self._connection.is_closed()

    async def open(self) -> None:
        """Connect and LISTEN (raises what asyncpg raises when the server cannot be reached)."""
        async with asyncio.timeout(self._timeout):
            connection = await asyncpg.connect(self._dsn, server_settings=self._settings)
        await connection.add_listener(self._channel, self._notified)
        connection.add_termination_listener(self._lost)
        self._connection = connection

    async def close(self) -> None:
        """Stop listening and opening the connection again."""
        self._closed = True
        if self._relisten is not None:
            await cancel_and_wait(self._relisten)
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(*UNREACHABLE, asyncpg.PostgresError):
                await connection.close(timeout=2)

    def add(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener(stream)`` for every append notified; returns a function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    def _notified(self, _conn: object, _pid: int, _channel: str, stream: object) -> None:
        name = str(stream)
        self._waiters.notify(name)
        for listener in list(self._listeners):
            try:
                listener(name)
            except Exception:
                logger.exception("%s: an append listener failed", self._where)

    def _lost(self, _conn: object) -> None:
        if self._closed:
            return
        self._connection = None
        self._waiters.notify_all()  # they look again; appends meanwhile would not wake them
        self._relisten = asyncio.get_running_loop().create_task(self._listen_again())

    async def _listen_again(self) -> None:
        delay = 0.1
        while not self._closed:
            try:
                await self.open()
            except (*UNREACHABLE, asyncpg.PostgresError) as exc:
                # Said once for the whole outage (by the store's reachability), not every retry.
                self._reach.unreachable(f"lost the LISTEN connection: {reason(exc)}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                self._reach.answered()
                self._waiters.notify_all()
                return
