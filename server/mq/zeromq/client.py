"""ZeroMQQueue: the :class:`~llamactl.server.mq.base.MessageQueue` client of :class:`ZeroMQBroker`.

One DEALER socket per client (routing id random, so the broker knows it across reconnects),
driven by a :class:`~llamactl.server.mq.zeromq.pump.Pump`, or, when the config names the broker's
Unix socket (``unix``) and it can be reached (the client runs on the broker's machine), a
:class:`~llamactl.server.mq.zeromq.unix_link.UnixLink` that carries the same messages without
ZeroMQ's I/O threads (both opened by :mod:`~llamactl.server.mq.zeromq.client_links`); one
background task sends ``HB`` every ``heartbeat_interval`` and re-sends requests the broker has
not answered until ``publish_timeout`` (see :mod:`llamactl.server.mq.zeromq.pending`).

Consume iterators (see :mod:`llamactl.server.mq.zeromq.consumer`) grant credit = ``prefetch``; each
settled delivery gives one credit back. Leaving a consume iterator returns the deliveries it
buffered but never yielded at once; deliveries already yielded stay leased to this client until
they are acked or nacked, their lease runs out, or the client is closed (so a worker can stop
taking work and still finish what it holds). ``close()`` releases every lease of the client.

Subscribe iterators long-poll with ``FETCH`` from the next seq they need, so they see every
message once, in order, whatever the pace of the reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from llamactl.server.aio import cancel_and_wait
from llamactl.server.errors import MessageQueueClosed, MessageQueueError
from llamactl.server.ids import new_hex_id
from llamactl.server.mq.base import Delivery, Message, MessageQueue, Prefetch, as_prefetch, check_lease
from llamactl.server.mq.topics import is_stream_topic, is_work_topic, validate_topic

from . import wire
from .client_links import open_dealer, reach_unix
from .consumer import ConsumerState, ZeroMQDelivery, consume_iter, subscribe_iter
from .local import FrameHandler, Transport
from .local_results import LocalResults
from .pending import PendingRequests
from .sideline import SideLine
from .unix_link import UnixLink

__all__ = ["ZeroMQQueue"]

_CONFIG_KEYS = {"type", "router", "heartbeat_interval", "liveness", "publish_timeout", "curve", "unix"}


class ZeroMQQueue(MessageQueue):
    """Client of a :class:`~llamactl.server.mq.zeromq.broker.ZeroMQBroker` (any process, any host)."""

    def __init__(
        self,
        router: str,
        *,
        heartbeat_interval: float = 1.0,
        liveness: int = 3,
        publish_timeout: float = 10.0,
        curve: Mapping[str, str] | None = None,
        unix: str | None = None,
        attach: Callable[[bytes, FrameHandler], Transport] | None = None,
        local_results: LocalResults | None = None,
    ) -> None:
        self.router = router
        self._curve = curve
        self._unix = unix
        self._attach = attach
        self._hb = heartbeat_interval
        self._retry = max(0.05, heartbeat_interval * liveness)
        self._timeout = publish_timeout
        self._ident = b"c" + uuid.uuid4().bytes
        self._ids = itertools.count(1)
        self._pump: Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._pending = PendingRequests(
            self._send, self._ids, retry=self._retry, timeout=publish_timeout, where=router
        )
        self._subs: dict[int, ConsumerState] = {}
        self._local_results = local_results
        """The broker's registry of consumers in its process (for a client linked in-process)."""
        self._retired: list[ConsumerState] = []
        """Ended subscriptions still holding results taken by a call (given back at close)."""
        self._session: bytes | None = None
        self._last_sent = 0.0
        self._closed = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ZeroMQQueue:
        """Build from a broker's ``client_config`` (plus an optional ``publish_timeout``)."""
        unknown = set(config) - _CONFIG_KEYS
        if unknown or "router" not in config:
            raise MessageQueueError(
                f"zeromq message queue config needs 'router' and takes only {sorted(_CONFIG_KEYS)}; "
                f"got {sorted(config)}"
            )
        return cls(
            str(config["router"]),
            heartbeat_interval=float(config.get("heartbeat_interval", 1.0)),
            liveness=int(config.get("liveness", 3)),
            publish_timeout=float(config.get("publish_timeout", 10.0)),
            curve=config.get("curve"),
            unix=config.get("unix"),
        )

    async def start(self) -> None:
        if self._pump is not None:
            return
        if self._closed:
            raise MessageQueueClosed("this message queue client was closed; create a new one")
        self._loop = asyncio.get_running_loop()
        if self._attach is not None:
            self._pump = self._attach(self._ident, self._on_frames)
        elif self._unix and self._curve and (link := await self._reach_unix(self._unix, self._curve)):
            self._pump = link
        else:
            self._pump = open_dealer(self.router, self._ident, self._curve, self._on_frames)
        self._pump.send([wire.HB])
        self._ticker = asyncio.create_task(self._tick(), name=f"llamactl-mq-{self.transport}-client-ticker")

    async def _reach_unix(self, path: str, curve: Mapping[str, str]) -> UnixLink | None:
        return await reach_unix(
            path,
            self._ident,
            curve,
            on_frames=self._on_frames,
            on_reconnect=self._on_reconnect,
            on_refused=self._on_refused,
            fallback=self.router,
        )

    def _on_reconnect(self) -> None:
        self._send([wire.HB])  # its answer's new session makes us send again what is unanswered

    def _on_refused(self, reason: str) -> None:
        """The broker will not have us (wrong keys): fail what waits now, and all that follows."""
        self._pending.refuse(f"the broker at {self._unix} refused this client: {reason}")

    @property
    def transport(self) -> str:
        """How this client reaches its broker: ``"in-process"``, ``"unix"`` or ``"zeromq"``."""
        if self._attach is not None:
            return "in-process"
        return "unix" if isinstance(self._pump, UnixLink) else "zeromq"

    async def close(self) -> None:
        if self._closed:
            return
        if self._pump is None:
            self._closed = True
            return
        bye = self._new_request(wire.BYE, [], "close")
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
        with contextlib.suppress(TimeoutError, MessageQueueError):
            async with asyncio.timeout(min(1.0, self._retry)):
                await bye
        if self._ticker is not None:
            await cancel_and_wait(self._ticker)
        self._shutdown()

    def _shutdown(self) -> None:
        err = MessageQueueClosed("the message queue client was closed")
        self._pending.close(err)
        for sub in [*self._subs.values(), *self._retired]:
            sub.close(err)
        self._retired.clear()
        assert self._pump is not None
        self._pump.close()

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
        """Publish and wait for the broker's confirm; raises ValueError for a malformed topic."""
        validate_topic(topic)
        args = [
            topic.encode(),
            (msg_id or new_hex_id()).encode(),
            key.encode(),
            wire.encode_headers(headers),
            bytes(payload),
        ]
        return int(await self._new_request(wire.PUB, args, f"publish to {topic}"))

    async def publish_restorable(
        self, topic: str, payload: bytes, *, msg_id: str, key: str = "", attempts: int = 0
    ) -> int:
        """In the broker's own process the message is held in memory only (``PUBMEM``); a client
        over a socket publishes it journaled, like :meth:`publish` (it would not know that a
        restarted broker had lost it)."""
        if self._attach is None:
            return await self.publish(topic, payload, msg_id=msg_id, key=key)
        validate_topic(topic)
        if not is_work_topic(topic):
            raise ValueError(f"publish_restorable() takes a work topic (work.*), not {topic!r}")
        args = [topic.encode(), msg_id.encode(), key.encode(), bytes(payload), wire.u32(attempts)]
        return int(await self._new_request(wire.PUBMEM, args, f"publish to {topic}"))

    @property
    def restorable_in_memory(self) -> bool:
        return self._attach is not None

    @property
    def ordered_publishes(self) -> bool:
        return True  # one socket (or link), each request sent when it is made

    def consume(
        self, topic: str, *, prefetch: int | Prefetch = 1, lease: float = 30.0
    ) -> AsyncIterator[Delivery]:
        if not is_work_topic(topic):
            raise ValueError(f"consume() takes a work topic (work.*), not {topic!r}")
        check_lease(lease)
        limit = as_prefetch(prefetch)
        self._check_open()
        state = ConsumerState(self, next(self._ids), topic, limit, lease)
        return consume_iter(state)

    def subscribe(self, topic: str, *, from_seq: int = 0) -> AsyncIterator[Message]:
        if not is_stream_topic(topic):
            raise ValueError(f"subscribe() takes a stream topic (stream.*), not {topic!r}")
        self._check_open()
        return subscribe_iter(self, topic, max(0, from_seq))

    def sidecar(self) -> SideLine | None:
        """A side line for a thread of this process (None for an in-process client)."""
        return None if self._attach is not None else SideLine(self.router, self._ident, self._curve)

    async def discard(self, topic: str, msg_id: str, *, leased: bool = False) -> bool:
        if not is_work_topic(topic):
            raise ValueError(f"discard() takes a work topic (work.*), not {topic!r}")
        args = [topic.encode(), msg_id.encode(), wire.u32(int(leased))]
        return bool(await self._new_request(wire.DISCARD, args, f"discard of {msg_id} on {topic}"))

    # -- used by the consumer module --------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise MessageQueueClosed("the message queue client is closed")
        if self._pump is None:
            raise MessageQueueError("the message queue client is not started: call start() first")

    def _send(self, frames: list[bytes]) -> None:
        if self._pump is not None and not self._closed:
            self._pump.send(frames)
            assert self._loop is not None
            self._last_sent = self._loop.time()

    def _register(self, state: ConsumerState) -> None:
        self._subs[state.sub_id] = state
        state.send_consume()
        if self._local_results is not None:
            self._local_results.register(state.topic, state)

    def _unregister(self, state: ConsumerState) -> None:
        self._subs.pop(state.sub_id, None)
        if self._local_results is not None:
            self._local_results.unregister(state.topic, state)
            self._retired = [s for s in (*self._retired, state) if s.local_held]

    def _new_request(
        self, cmd: bytes, args: list[bytes], what: str, *, resend_args: list[bytes] | None = None
    ) -> asyncio.Future[Any]:
        """Send ``cmd req *args``; the future gets the reply (see :meth:`PendingRequests.request`)."""
        self._check_open()
        assert self._loop is not None
        return self._pending.request(self._loop, cmd, args, what, resend_args=resend_args)

    def _new_fetch(self, topic: str, from_seq: int) -> tuple[bytes, asyncio.Future[list[Message]]]:
        self._check_open()
        assert self._loop is not None
        return self._pending.fetch(self._loop, topic, from_seq)

    def _drop_fetch(self, req: bytes) -> None:
        self._pending.drop_fetch(req)

    # -- replies ----------------------------------------------------------------------------------

    def _on_frames(self, batch: list[list[bytes]]) -> None:
        assert self._loop is not None
        # Silent for longer than the broker's patience (our loop was blocked): the broker has
        # declared us dead and released what it had handed us, so deliveries waiting in this
        # batch are void. Give them back (harmless if they are gone), then register again.
        forgotten = self._silent_too_long(self._loop.time())
        for frames in batch:
            cmd = frames[0]
            if cmd == wire.DELIVER:
                if forgotten:
                    self._send([wire.RETURN, frames[2]])
                else:
                    self._on_deliver(frames)
            elif cmd in (wire.PUBACK, wire.OK, wire.STALE, wire.PUBNACK):
                self._pending.answer(frames)
            elif cmd == wire.BATCH:
                self._pending.answer_fetch(frames)
            elif cmd == wire.HB:
                session = frames[1]
                if self._session is not None and session != self._session:
                    restarted = session.split(b".")[0] != self._session.split(b".")[0]
                    # A restarted broker recovered our leases; one that declared us dead did not.
                    self._resync(keep_buffered=restarted)
                self._session = session
        if forgotten:
            self._resync(keep_buffered=False)

    def _silent_too_long(self, now: float) -> bool:
        return self._session is not None and now - self._last_sent > self._retry

    def _check_alive(self) -> None:
        """Before handing out a buffered delivery: if our loop was blocked past the broker's
        patience, what we buffered has gone to others; give it back and register again."""
        assert self._loop is not None
        if self._silent_too_long(self._loop.time()):
            self._resync(keep_buffered=False)

    def _on_deliver(self, frames: list[bytes]) -> None:
        _, sub_b, lease, attempt, topic, seq, msg_id, key, headers, payload = frames
        state = self._subs.get(wire.from_u32(sub_b))
        if state is None or state.closed:
            self._send([wire.RETURN, lease])
            return
        msg = Message(
            topic.decode(),
            msg_id.decode(),
            payload,
            key.decode(),
            wire.from_u64(seq),
            wire.decode_headers(headers),
        )
        state.push(ZeroMQDelivery(state, msg, wire.from_u32(attempt), lease.decode()))

    def _resync(self, *, keep_buffered: bool) -> None:
        """The broker restarted or forgot us: tell it again what this client waits for.

        Without ``keep_buffered`` the deliveries buffered but not yet handed out are void (their
        leases were released): they are given back and not handed out. Each subscription then
        registers under a new id, so deliveries still on their way for the old one are given back
        too when they arrive, instead of being handed out.
        """
        for state in list(self._subs.values()):
            if not keep_buffered:
                for lease in state.drop_buffered():
                    self._send([wire.RETURN, lease.encode()])
                del self._subs[state.sub_id]
                self._send([wire.CANCEL, wire.u32(state.sub_id)])  # if the broker still has it
                state.sub_id = next(self._ids)
                self._subs[state.sub_id] = state
            state.send_consume()
        self._pending.send_again()

    async def _tick(self) -> None:
        assert self._loop is not None
        loop = self._loop
        step = min(self._hb, 0.1)
        next_hb = loop.time() + self._hb
        while True:
            # Unanswered requests are looked at every ``step``; an idle client only wakes to
            # heartbeat (a request made meanwhile is not due for a resend before ``_retry``).
            idle = min(next_hb - loop.time(), self._timeout / 2)
            await asyncio.sleep(step if self._pending.waiting() else max(0.0, idle))
            now = loop.time()
            if self._silent_too_long(now):
                self._resync(keep_buffered=False)
            if now >= next_hb:
                next_hb = now + self._hb
                self._send([wire.HB])
            self._pending.expire(now)
