"""RedisQueue: the :class:`~llamactl.server.mq.base.MessageQueue` on Redis Streams (see the package
docstring for the keys and the reasoning).

A client has an id (uuid4), registers it in the ``clients`` sorted set with a deadline of
``heartbeat_interval * liveness`` seconds from now (server clock), and renews it every
``heartbeat_interval`` with the ``beat`` script, which also does janitor duty for everyone: it
releases the leases of clients past their deadline and the leases that ran out. Every client does
it, so there is no janitor process to run or lose; the script is atomic, so two doing it at once
is harmless.

A client that Redis no longer knows, though it registered and was never declared dead (the janitor
leaves a mark for a day when it declares one), tells that Redis lost what it held with every
connection up (a ``FLUSHALL``, a restart between two heartbeats without its data): it counts in
:attr:`RedisQueue.losses` like an outage does. So does another server answering at the url (its
run id, which each heartbeat reads, changed: a failover to a replica that lagged, a restart from
a file that missed the last writes), though it knows every client and no call failed: redis-py
reconnects an idle connection that broke without a word.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from redis.typing import KeyT, StreamIdT

from llamactl.server.aio import cancel_and_wait
from llamactl.server.errors import MessageQueueClosed, MessageQueueError, PublishRejected
from llamactl.server.ids import new_hex_id
from llamactl.server.mq.base import Delivery, Message, MessageQueue, Prefetch, as_prefetch, check_lease
from llamactl.server.mq.topics import is_stream_topic, is_work_topic, validate_topic
from llamactl.server.outage import Outage

from .config import RedisQueueConfig
from .consumer import ConsumeState, RedisDelivery, consume_iter
from .link import UNREACHABLE, Link
from .scripts import Scripts
from .sidecar import RedisSideLine
from .streams import subscribe_iter

__all__ = ["RedisQueue"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(slots=True)
class Taken:
    """What one ``take`` gave: deliveries, or what to wait for."""

    deliveries: list[RedisDelivery] = field(default_factory=list)
    exclusive: bool = False
    idle: bool = False
    last_read: bytes = b"0-0"
    last_wake: bytes = b"0-0"
    due: int = -1


_FORGOTTEN = 2
"""What the ``alive`` Lua function says of a client Redis does not know."""
_NOT_THERE = (
    "start Redis there, or point the deployment's `message-queue` (its url, or $REDIS_URL) at a running one"
)


class RedisQueue(MessageQueue):
    """A client of the Redis message queue (any process, any host); see :func:`connect_queue`."""

    def __init__(self, config: RedisQueueConfig) -> None:
        self.config = config
        self.client_id = uuid.uuid4().hex
        self._window_ms = max(1, int(config.window * 1000))
        self._beat_args = [self.client_id, self._window_ms, max(1, int(config.heartbeat_interval * 1000))]
        self._link: Link | None = None
        self._scripts: Scripts | None = None
        self._beats: asyncio.Task[None] | None = None
        self._closing: asyncio.Future[None] | None = None
        self._closed = False
        self._registered = False
        self._alive_at = -math.inf
        self._epoch = 0
        self._takes = itertools.count(1)
        self._beat_refused = False
        self._forgotten = 0
        """How many times Redis no longer knew this registered client (it lost its data), or
        another Redis server answered at the url."""
        self._run_id = ""
        """The run id of the Redis server that answered the last heartbeat."""
        self._risks: list[str] = []

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RedisQueue:
        """Build from a ``{"type": "redis", ...}`` mapping (see :class:`RedisQueueConfig`)."""
        return cls(RedisQueueConfig.from_mapping(config))

    def __repr__(self) -> str:
        return f"<RedisQueue {self.config.where} prefix={self.config.prefix!r} client={self.client_id}>"

    @property
    def closed(self) -> bool:
        return self._closed

    async def start(self) -> None:
        """Connect and register; raises MessageQueueError if Redis does not answer in time."""
        if self._link is not None:
            return
        if self._closed:
            raise MessageQueueClosed("this message queue client was closed; create a new one")
        self._link = Link(self.config)
        self._scripts = Scripts(
            self._link.short, self.config.prefix, self.config.max_attempts, self.config.retention
        )
        self._closing = asyncio.get_running_loop().create_future()
        try:
            await self._beat(raise_errors=True)
            self._risks = await self._settings_at_risk()
        except BaseException:
            self._closed = True
            await self._scripts.aclose()
            await self._link.aclose()
            raise
        self._beats = asyncio.create_task(self._beat_loop(), name="llamactl-mq-redis-heartbeat")

    @property
    def risks(self) -> list[str]:
        return list(self._risks)

    async def _settings_at_risk(self) -> list[str]:
        """Redis settings that would lose the queue's data with every connection up: an eviction
        policy other than ``noeviction`` drops keys (streams, leases) when memory runs short."""
        assert self._link is not None
        try:
            async with asyncio.timeout(min(2.0, self.config.publish_timeout)):
                memory = await self._link.short.info("memory")
        except Exception:  # INFO refused (a managed Redis may rename it), or slow: nothing to say
            return []
        policy = memory.get("maxmemory_policy", "noeviction")
        if policy == "noeviction":
            return []
        return [
            f"message queue redis at {self.config.where} has maxmemory-policy {policy}: when its "
            "memory runs short it deletes keys, the queue's among them (tasks, their events or "
            "results are then lost without a word); set `maxmemory-policy noeviction` there "
            "(writes are then refused for a while, which llamactl waits out)"
        ]

    async def close(self) -> None:
        """Release this client's leases (not counted against their messages) and disconnect."""
        if self._closed:
            return
        self._closed = True
        if self._link is None:
            return
        assert self._closing is not None
        self._closing.set_result(None)
        if self._beats is not None:
            self._beats.cancel()
            await asyncio.wait({self._beats})  # a cancel of close() itself still propagates
        try:
            await self._call("bye", [self.client_id], "close", timeout=min(1.0, self.config.window))
        except MessageQueueError as exc:
            log.info("closing: %s; its leases are released when its heartbeat runs out", exc)
        assert self._scripts is not None
        await self._scripts.aclose()
        await self._link.aclose()

    # -- the MessageQueue API ---------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        msg_id: str | None = None,
        key: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> int:
        """Publish and wait for Redis to store it; raises ValueError for a malformed topic."""
        validate_topic(topic)
        self._check_open()
        args = [topic, msg_id or new_hex_id(), key, json.dumps(dict(headers or {})), bytes(payload)]
        reply = await self._call("publish", args, f"publish to {topic}", error=PublishRejected)
        return int(reply[0])

    def consume(
        self, topic: str, *, prefetch: int | Prefetch = 1, lease: float = 30.0
    ) -> AsyncIterator[Delivery]:
        if not is_work_topic(topic):
            raise ValueError(f"consume() takes a work topic (work.*), not {topic!r}")
        check_lease(lease)
        limit = as_prefetch(prefetch)
        self._check_open()
        return consume_iter(self, ConsumeState(topic, limit, lease))

    def subscribe(self, topic: str, *, from_seq: int = 0) -> AsyncIterator[Message]:
        if not is_stream_topic(topic):
            raise ValueError(f"subscribe() takes a stream topic (stream.*), not {topic!r}")
        self._check_open()
        return subscribe_iter(self, topic, max(0, from_seq))

    @property
    def outage(self) -> Outage | None:
        return None if self._link is None else self._link.reachability.outage

    @property
    def losses(self) -> int:
        return self._forgotten + (0 if self._link is None else self._link.reachability.outages)

    def sidecar(self) -> RedisSideLine:
        """A side line for the loop watchdog's thread: it keeps this client alive while user code
        blocks the event loop, so its deliveries are not handed to others (until their leases end)."""
        return RedisSideLine(self.config, self.client_id)

    async def discard(self, topic: str, msg_id: str, *, leased: bool = False) -> bool:
        if not is_work_topic(topic):
            raise ValueError(f"discard() takes a work topic (work.*), not {topic!r}")
        self._check_open()
        return bool(
            await self._call("discard", [topic, msg_id, int(leased)], f"discard of {msg_id} on {topic}")
        )

    # -- used by the iterators and deliveries ------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise MessageQueueClosed("the message queue client is closed")
        if self._link is None:
            raise MessageQueueError("the message queue client is not started: call start() first")

    async def _call(
        self,
        name: str,
        args: list[Any],
        what: str,
        *,
        timeout: float | None = None,
        error: type[MessageQueueError] = MessageQueueError,
        way_out: str = "",
    ) -> Any:
        assert self._link is not None and self._scripts is not None
        scripts = self._scripts
        return await self._link.call(
            lambda: scripts.call(name, args),
            what=what,
            timeout=self.config.publish_timeout if timeout is None else timeout,
            error=error,
            way_out=way_out,
        )

    async def _run(self, name: str, args: list[Any], what: str, *, quick: bool = False) -> Any:
        """A script for a delivery (ack, nack, ...): fails with MessageQueueClosed once closed."""
        self._check_open()
        timeout = min(1.0, self.config.publish_timeout) if quick else None
        return await self._call(name, args, what, timeout=timeout)

    async def _until(self, aw: Awaitable[T]) -> T:
        """Await ``aw`` unless the client closes first (then raise MessageQueueClosed)."""
        assert self._closing is not None
        task = asyncio.ensure_future(aw)
        closing: asyncio.Future[Any] = self._closing
        try:
            done, _ = await asyncio.wait({task, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                with contextlib.suppress(*UNREACHABLE):  # what ending ``task`` raised, not a cancel of us
                    await cancel_and_wait(task)
        if task in done:
            return task.result()
        raise MessageQueueClosed("the message queue client was closed")

    def _void(self, epoch: int) -> bool:
        """True if deliveries taken in ``epoch`` may have gone to others since (see consumer)."""
        loop = asyncio.get_running_loop()
        if epoch == self._epoch and loop.time() - self._alive_at > self.config.window:
            self._epoch += 1
        return epoch != self._epoch

    def _alive(self, sent: float, known: int) -> None:
        """A liveness refresh sent at ``sent`` succeeded; ``known`` is what Redis knew of this
        client: 0 registered, 1 declared dead (silent too long), 2 not at all."""
        if known and self._registered:
            self._epoch += 1  # its leases are gone either way
            if known == _FORGOTTEN:
                self._forgotten += 1
                log.warning(
                    "message queue redis at %s lost what it held for prefix %r (it no longer knew "
                    "client %s: a FLUSHALL, a restart without its data, a failover to a replica "
                    "that lagged): the server hands out its unfinished tasks again",
                    self.config.where,
                    self.config.prefix,
                    self.client_id,
                )
            else:
                log.warning(
                    "message queue client %s was declared dead (silent for over %gs): "
                    "its deliveries went back to the queue",
                    self.client_id,
                    self.config.window,
                )
        self._registered = True
        self._alive_at = max(self._alive_at, sent)

    async def _take(self, state: ConsumeState, credit: int) -> Taken:
        loop = asyncio.get_running_loop()
        base = f"{self.client_id}.{next(self._takes)}"
        args = [
            state.topic,
            self.client_id,
            credit,
            max(1, int(state.lease * 1000)),
            state.unsettled,
            base,
            self._window_ms,
        ]
        sent = loop.time()
        known, exclusive, rows, wait = await self._call("take", args, f"consume from {state.topic}")
        self._check_open()
        self._alive(sent, known)
        taken = Taken(exclusive=bool(exclusive))
        for seq, msg_id, key, headers, payload, attempt, lease_id in rows:
            msg = Message(state.topic, msg_id.decode(), payload, key.decode(), int(seq), json.loads(headers))
            taken.deliveries.append(
                RedisDelivery(self, state, msg, int(attempt), lease_id.decode(), self._epoch)
            )
        if not rows:
            if wait and wait[0] == b"idle":
                taken.idle = True
            elif wait:
                taken.last_read, taken.last_wake, taken.due = wait[0], wait[1], int(wait[2])
        return taken

    async def _wait_for_work(self, topic: str, last_read: bytes, last_wake: bytes, due: int) -> None:
        """Block until the topic may have something to take (or a delayed message is due)."""
        if due == 0:
            return
        block = self._window_ms if due < 0 else min(self._window_ms, due)
        prefix = self.config.prefix
        streams: dict[KeyT, StreamIdT] = {f"{prefix}t:{topic}": last_read, f"{prefix}n:{topic}": last_wake}
        await self._blocking_read(streams, block, count=1)

    async def _blocking_read(self, streams: dict[KeyT, StreamIdT], block_ms: int, count: int) -> Any:
        """``XREAD BLOCK`` on the blocking pool; None when Redis is unreachable (after a pause)."""
        assert self._link is not None
        blocking = self._link.blocking

        async def read() -> Any:
            async with asyncio.timeout(block_ms / 1000 + 5.0):
                return await blocking.xread(streams, count=count, block=max(1, block_ms))

        try:
            found = await self._until(read())
        except UNREACHABLE as exc:
            self._link.unreachable(exc)
            await self._until(asyncio.sleep(min(0.25, self.config.heartbeat_interval)))
            return None
        self._link.answered(wrote=False)
        return found

    # -- heartbeat and janitor ---------------------------------------------------------------------

    async def _beat_loop(self) -> None:
        # Ends on ``_closed`` too, not only when cancelled: close() awaits this task, so it must end
        # even if a cancel were lost on the way (as Python 3.11's wait_for once lost them here).
        while not self._closed:
            await asyncio.sleep(self.config.heartbeat_interval)
            if self._closed:
                return
            await self._beat(raise_errors=False)

    async def _beat(self, *, raise_errors: bool) -> None:
        sent = asyncio.get_running_loop().time()
        try:
            if raise_errors:  # the first beat: connecting
                known, run_id = await self._call("beat", self._beat_args, "connect", way_out=_NOT_THERE)
            else:
                known, run_id = await self._call("beat", self._beat_args, "heartbeat")
        except MessageQueueError as exc:
            if raise_errors:
                raise
            # An unreachable Redis is said by the link; a refused heartbeat is said here, once.
            if not self._beat_refused and self.outage is None:
                log.warning("message queue heartbeat failed: %s", exc)
            self._beat_refused = self.outage is None
            return
        self._beat_refused = False
        self._alive(sent, int(known))
        self._server_is(run_id.decode())

    def _server_is(self, run_id: str) -> None:
        """The heartbeat was answered by the Redis server ``run_id`` ('' where INFO is refused)."""
        if run_id and self._run_id and run_id != self._run_id:
            self._forgotten += 1
            log.warning(
                "message queue redis at %s is another Redis server now (a failover, or a restart): "
                "it may lack the last writes of the one before, so the server hands out its "
                "unfinished tasks again (copies Redis still holds are absorbed)",
                self.config.where,
            )
        self._run_id = run_id or self._run_id
