"""What a queue client has asked its broker and not had answered yet.

Each request (``PUB``, ``PUBMEM``, ``ACK``, ``DISCARD``, ...) carries an id of its own and gets a
future for the answer; unanswered, it is sent again every ``retry`` seconds with the same id (Lazy
Pirate: the broker absorbs the duplicates) until ``timeout``, when its future fails
(PublishRejected for a publish, MessageQueueError for anything else). Fetches (the
long polls of subscribe iterators) wait as long as they must and are only sent again after a
broker restart. A broker that refuses the client fails what waits at once, and all that follows.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llamactl.server.errors import MessageQueueClosed, MessageQueueError, PublishRejected
from llamactl.server.mq.base import Message

from . import wire

__all__ = ["PendingRequests"]

Send = Callable[[list[bytes]], None]


@dataclass(slots=True, eq=False)
class _Request:
    frames: list[bytes]
    fut: asyncio.Future[Any]
    first: float
    last: float
    what: str = ""
    resend: list[bytes] | None = None
    """What to send when the request is sent again (a settle gives no second credit)."""


@dataclass(slots=True, eq=False)
class _Fetch:
    topic: str
    frames: list[bytes]
    fut: asyncio.Future[list[Message]] = field(repr=False)


class PendingRequests:
    """The requests and fetches of one client, by request id. ``send`` puts frames on the wire;
    ``ids`` is the client's counter (request ids and subscription ids share it); ``where`` names
    the broker in errors."""

    def __init__(
        self, send: Send, ids: itertools.count[int], *, retry: float, timeout: float, where: str
    ) -> None:
        self._send = send
        self._ids = ids
        self._retry = retry
        self._timeout = timeout
        self._where = where
        self._requests: dict[bytes, _Request] = {}
        self._fetches: dict[bytes, _Fetch] = {}
        self._refusal = ""

    def waiting(self) -> bool:
        """True while a request waits for its answer (fetches aside: they wait by design)."""
        return bool(self._requests)

    def request(
        self,
        loop: asyncio.AbstractEventLoop,
        cmd: bytes,
        args: list[bytes],
        what: str,
        *,
        resend_args: list[bytes] | None = None,
    ) -> asyncio.Future[Any]:
        """Send ``cmd req *args``; the future gets the reply (seq for PUBACK, True/False for
        OK/STALE). ``resend_args`` replace ``args`` when the request is sent again."""
        req = wire.u64(next(self._ids))
        frames = [cmd, req, *args]
        fut: asyncio.Future[Any] = loop.create_future()
        now = loop.time()
        resend = None if resend_args is None else [cmd, req, *resend_args]
        request = _Request(frames, fut, now, now, what, resend)
        if self._refusal:
            _fail(request, self._refusal)
            return fut
        self._requests[req] = request
        self._send(frames)
        return fut

    def fetch(
        self, loop: asyncio.AbstractEventLoop, topic: str, from_seq: int
    ) -> tuple[bytes, asyncio.Future[list[Message]]]:
        """Ask for the messages of ``topic`` from ``from_seq`` on (the broker answers once it has
        some); returns the request id, for :meth:`drop_fetch`."""
        req = wire.u64(next(self._ids))
        frames = [wire.FETCH, req, topic.encode(), wire.u64(from_seq), wire.u32(1000)]
        fut: asyncio.Future[list[Message]] = loop.create_future()
        self._fetches[req] = _Fetch(topic, frames, fut)
        self._send(frames)
        return req, fut

    def drop_fetch(self, req: bytes) -> None:
        if self._fetches.pop(req, None) is not None:
            self._send([wire.UNFETCH, req])

    def answer(self, frames: list[bytes]) -> None:
        """A ``PUBACK``, ``PUBNACK``, ``OK`` or ``STALE`` came: settle its request's future."""
        cmd = frames[0]
        r = self._requests.pop(frames[1], None)
        if r is None or r.fut.done():
            return
        if cmd == wire.PUBACK:
            r.fut.set_result(wire.from_u64(frames[2]))
        elif cmd == wire.PUBNACK:
            r.fut.set_exception(PublishRejected(f"{r.what} rejected: {frames[2].decode()}"))
        else:
            r.fut.set_result(cmd == wire.OK)

    def answer_fetch(self, frames: list[bytes]) -> None:
        """A ``BATCH`` came: hand its messages to the fetch that asked."""
        f = self._fetches.pop(frames[1], None)
        if f is not None and not f.fut.done():
            f.fut.set_result(_batch(f.topic, frames))

    def send_again(self) -> None:
        """The broker restarted or forgot us: send every fetch and request again."""
        for f in self._fetches.values():
            self._send(f.frames)
        for r in self._requests.values():
            self._send(r.resend or r.frames)

    def expire(self, now: float) -> None:
        """Send again what has waited ``retry`` seconds since its last send; fail what has
        waited ``timeout`` seconds in all."""
        expired: list[bytes] = []
        for req, r in self._requests.items():
            if now - r.first < self._retry:
                break  # insertion order: the rest are younger
            if now - r.first >= self._timeout:
                expired.append(req)
            elif now - r.last >= self._retry:
                r.last = now
                self._send(r.resend or r.frames)
        for req in expired:
            r = self._requests.pop(req)
            _fail(r, f"the broker at {self._where} did not answer within {self._timeout:g}s")

    def refuse(self, reason: str) -> None:
        """The broker will not have this client: fail what waits now, and every later request."""
        self._refusal = reason
        for r in self._requests.values():
            _fail(r, reason)
        self._requests.clear()

    def close(self, err: MessageQueueClosed) -> None:
        """The client closed: fail every request and fetch with ``err``."""
        for r in self._requests.values():
            if not r.fut.done():
                r.fut.set_exception(err)
                r.fut.exception()  # nobody may be waiting any more: don't warn about it
        for f in self._fetches.values():
            if not f.fut.done():
                f.fut.set_exception(err)
                f.fut.exception()
        self._requests.clear()
        self._fetches.clear()


def _fail(r: _Request, why: str) -> None:
    if not r.fut.done():
        cls = PublishRejected if r.frames[0] == wire.PUB else MessageQueueError
        r.fut.set_exception(cls(f"{r.what}: {why}"))


def _batch(topic: str, frames: list[bytes]) -> list[Message]:
    out = []
    for i in range(2, len(frames), 5):
        seq, msg_id, key, headers, payload = frames[i : i + 5]
        out.append(
            Message(
                topic,
                msg_id.decode(),
                payload,
                key.decode(),
                wire.from_u64(seq),
                wire.decode_headers(headers),
            )
        )
    return out
