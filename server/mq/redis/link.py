"""The connections of one client to Redis, and calls that keep trying until a deadline.

Two pools: a bounded one for short commands (scripts), so a burst of a thousand concurrent
publishes queues for a few dozen connections instead of opening a thousand, and an unbounded one
for the blocking reads (``XREAD BLOCK``) of consume and subscribe iterators, each of which holds
its connection while it waits and must never starve the short commands.

redis-py's own retries are off: :meth:`Link.call` retries connection failures itself until the
caller's deadline, so a publish fails in ``publish_timeout`` seconds, not after redis-py's backoff.
A retried script is safe: a publish is absorbed by its ``msg_id``; a settle that did happen is seen
as a lost lease (an at-least-once queue allows that).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from llamactl.server.errors import MessageQueueError, QueueConfigError
from llamactl.server.outage import STATE_REFUSING_WRITES, Reachability

from .config import RedisQueueConfig, scrub

__all__ = ["UNREACHABLE", "Link"]

log = logging.getLogger(__name__)

T = TypeVar("T")
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)
"""Errors that mean Redis did not answer (worth another try), as opposed to a refused command."""
_SHORT_CONNECTIONS = 32
_WHY_REFUSED: tuple[tuple[type[ResponseError] | str, str], ...] = (
    (OutOfMemoryError, "its maxmemory is reached: raise maxmemory or free memory"),
    ("MISCONF", "it cannot save to disk (is its disk full?)"),
    (ReadOnlyError, "it is a read-only replica (a failover under way?)"),
    (MasterDownError, "its link to the primary is down"),
    ("NOREPLICAS", "too few replicas answer it (min-replicas-to-write)"),
    ("BUSY", "a script runs too long in it"),
    (TryAgainError, "it asks to try again"),
)
"""Refusals that last only as long as a condition of the server (its memory, its disk, a
failover): worth another try, and an outage while they last, unlike a refused command."""


def refused_for_now(exc: ResponseError) -> str | None:
    """Why Redis refused for now (then the call is worth trying again), or None."""
    text = str(exc)
    for match, why in _WHY_REFUSED:
        if text.startswith(match + " ") if isinstance(match, str) else isinstance(exc, match):
            said = text.split(". script:", 1)[0].rstrip(".")  # not the script's hash and line
            return f"{why}: {said}"
    return None


class Link:
    """The two pools of one client; closed with :meth:`aclose`."""

    def __init__(self, config: RedisQueueConfig) -> None:
        self.config = config
        common: dict[str, Any] = {
            "socket_connect_timeout": min(2.0, config.publish_timeout),
            "retry": Retry(NoBackoff(), 0),
            "client_name": "llamactl-mq",
        }
        try:
            # No socket_timeout: call() bounds every command itself, and with one redis-py sends
            # under asyncio.wait_for, which on Python 3.11 loses a cancel landing as the send ends.
            short = BlockingConnectionPool.from_url(
                config.url, max_connections=_SHORT_CONNECTIONS, timeout=None, socket_timeout=None, **common
            )
            blocking = ConnectionPool.from_url(config.url, socket_timeout=None, **common)
        except (ValueError, TypeError, RedisError) as exc:
            problem = scrub(str(exc), config.url)
            raise QueueConfigError(f"redis message queue: bad url {config.where!r}: {problem}") from exc
        self.short = Redis(connection_pool=short)
        self.blocking = Redis(connection_pool=blocking)
        self.reachability = Reachability("message queue", config.where, log)

    def unreachable(self, exc: BaseException, *, quiet: bool = False, why: str = "") -> None:
        """A call found Redis unreachable, or refusing writes for ``why`` (see
        :meth:`Reachability.unreachable`)."""
        error = scrub(why or str(exc), self.config.url) or type(exc).__name__
        if why:
            self.reachability.unreachable(error, quiet=quiet, state=STATE_REFUSING_WRITES)
        else:
            self.reachability.unreachable(error, quiet=quiet)

    def answered(self, *, wrote: bool = True) -> None:
        """A call was answered: an outage, if one was on, is over (see :meth:`Reachability.answered`)."""
        self.reachability.answered(wrote=wrote)

    async def aclose(self) -> None:
        await self.short.aclose(close_connection_pool=True)
        await self.blocking.aclose(close_connection_pool=True)

    async def call(
        self,
        make: Callable[[], Awaitable[T]],
        *,
        what: str,
        timeout: float,
        error: type[MessageQueueError] = MessageQueueError,
        way_out: str = "",
    ) -> T:
        """Await ``make()``, trying again while Redis is unreachable, for ``timeout`` seconds at most.

        Redis refusing writes for now (out of memory, unable to save to disk, a read-only replica:
        :func:`refused_for_now`) is tried again too, as an outage. Raises ``error`` saying that
        Redis did not answer or refused writes all along (then ``way_out``, when given, says what
        to do, and the wait is announced as soon as the first try fails), or MessageQueueError when
        Redis refused the command (a script error, a wrong password).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pause = 0.02
        last: BaseException | None = None
        while True:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancel of the caller
                # that lands as the command completes, and a cancelled consumer would run on.
                async with asyncio.timeout(left):
                    answer = await make()
            except (ResponseError, AuthenticationError, AuthorizationError) as exc:
                why = refused_for_now(exc) if isinstance(exc, ResponseError) else None
                if why is None:
                    self.answered()
                    problem = scrub(str(exc), self.config.url)
                    raise error(f"{what}: redis at {self.config.where} refused it: {problem}") from exc
                self._failed(exc, why, bool(way_out), first=last is None, timeout=timeout)
                last = exc
            except UNREACHABLE as exc:
                self._failed(exc, "", bool(way_out), first=last is None, timeout=timeout)
                last = exc
            else:
                self.answered()
                return answer
            if loop.time() + pause >= deadline:
                break
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.25)
        if isinstance(last, ResponseError):  # why it refused says what to do
            why = scrub(refused_for_now(last) or str(last), self.config.url)
            raise error(f"{what}: redis at {self.config.where} refused writes for {timeout:g}s: {why}")
        tail = f": {way_out}" if way_out else ""
        reason = (
            f" ({type(last).__name__}: {scrub(str(last), self.config.url)})" if last and str(last) else ""
        )
        raise error(f"{what}: redis at {self.config.where} did not answer within {timeout:g}s{reason}{tail}")

    def _failed(self, exc: BaseException, why: str, announce: bool, *, first: bool, timeout: float) -> None:
        """A try failed for now (``why`` Redis refused it, or it did not answer): an outage, and
        when the caller announces a wait, the first failure is said at once."""
        self.unreachable(exc, quiet=announce, why=why)
        if first and announce:
            said = (
                f"refuses writes ({why})" if why else f"does not answer ({scrub(str(exc), self.config.url)})"
            )
            log.warning("redis at %s %s: trying for %gs", self.config.where, said, timeout)
