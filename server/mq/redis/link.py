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
from redis.exceptions import AuthenticationError, AuthorizationError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from llamactl.server.errors import MessageQueueError
from llamactl.server.outage import Reachability

from .config import RedisQueueConfig, scrub

__all__ = ["UNREACHABLE", "Link"]

log = logging.getLogger(__name__)

T = TypeVar("T")
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)
"""Errors that mean Redis did not answer (worth another try), as opposed to a refused command."""
_SHORT_CONNECTIONS = 32


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
            raise MessageQueueError(f"redis message queue: bad url {config.where!r}: {problem}") from exc
        self.short = Redis(connection_pool=short)
        self.blocking = Redis(connection_pool=blocking)
        self.reachability = Reachability("message queue", config.where, log)

    def unreachable(self, exc: BaseException, *, quiet: bool = False) -> None:
        """A call found Redis unreachable (see :meth:`Reachability.unreachable`)."""
        error = scrub(str(exc), self.config.url) or type(exc).__name__
        self.reachability.unreachable(error, quiet=quiet)

    def answered(self) -> None:
        """A call was answered: an outage, if one was on, is over."""
        self.reachability.answered()

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

        Raises ``error`` saying that Redis did not answer (then ``way_out``, when given, says what
        to do, and the wait is announced as soon as the first try fails), or MessageQueueError when
        Redis refused the command (a script error, a wrong password, a full memory).
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
                self.answered()
                problem = scrub(str(exc), self.config.url)
                raise error(f"{what}: redis at {self.config.where} refused it: {problem}") from exc
            except UNREACHABLE as exc:
                self.unreachable(exc, quiet=bool(way_out))
                if last is None and way_out:
                    log.warning(
                        "redis at %s does not answer (%s): trying for %gs",
                        self.config.where,
                        scrub(str(exc), self.config.url),
                        timeout,
                    )
                last = exc
            else:
                self.answered()
                return answer
            if loop.time() + pause >= deadline:
                break
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.25)
        reason = (
            f" ({type(last).__name__}: {scrub(str(last), self.config.url)})" if last and str(last) else ""
        )
        tail = f": {way_out}" if way_out else ""
        raise error(f"{what}: redis at {self.config.where} did not answer within {timeout:g}s{reason}{tail}")
