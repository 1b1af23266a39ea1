"""The floor's hop over a Unix socket driven by each process's own event loop, with no ZeroMQ.

A ZeroMQ socket hands every message to an I/O thread of its own: a send wakes the sender's I/O
thread, which writes to the socket; the receiver's I/O thread reads it and wakes the receiver's
loop. On this project's virtual machine each of those wake-ups is an IPI and a VM exit, paid
while the sender waits (a send that wakes its I/O thread took 10-60 µs here, against a few µs for
a socket write). Here the loop writes to the socket itself and the peer's loop reads it: one
wake-up per message. ``python -m bench.floor_server --transport unix`` serves the floor this way,
so the two transports can be measured side by side (``python -m bench.transport``).

Frames: a ``u32`` body length, a ``u64`` request id, one byte of kind, then the body.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
from collections.abc import Awaitable, Callable
from typing import cast

__all__ = ["UnixForwarder", "work"]

_HEAD = struct.Struct(">IQc")
Run = Callable[[bytes, bytes], Awaitable[bytes]]


class _Framer(asyncio.Protocol):
    """Cuts the byte stream into frames and hands each to ``on_frame(ident, kind, body)``."""

    def __init__(
        self, on_frame: Callable[[int, bytes, bytes], None], on_made: Callable[[], None] | None = None
    ) -> None:
        self._buf = bytearray()
        self._on_frame = on_frame
        self._on_made = on_made
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self._on_made is not None:
            self._on_made()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while len(buf) >= _HEAD.size:
            length, ident, kind = _HEAD.unpack_from(buf)
            end = _HEAD.size + length
            if len(buf) < end:
                break
            body = bytes(buf[_HEAD.size : end])
            del buf[:end]
            self._on_frame(ident, kind, body)

    def send(self, ident: int, kind: bytes, body: bytes) -> None:
        assert self.transport is not None
        self.transport.write(_HEAD.pack(len(body), ident, kind) + body)


class UnixForwarder:
    """Listens on ``path`` for ``workers`` worker connections and deals requests to them in turn."""

    def __init__(self, workers: int) -> None:
        self._expected = workers
        self._links: list[_Framer] = []
        self._turn = itertools.count()
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[bytes]] = {}
        self._server: asyncio.AbstractServer | None = None
        self.connected = asyncio.Event()
        """Set once every worker is connected."""

    async def start(self, path: str) -> None:
        self._server = await asyncio.get_running_loop().create_unix_server(self._link, path)

    def _link(self) -> _Framer:
        link = _Framer(self._answered, on_made=lambda: self._made(link))
        return link

    def _made(self, link: _Framer) -> None:
        self._links.append(link)
        if len(self._links) >= self._expected:
            self.connected.set()

    def _answered(self, ident: int, kind: bytes, body: bytes) -> None:
        waiter = self._waiting.pop(ident, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(body)

    async def call(self, kind: bytes, body: bytes) -> bytes:
        """Send ``body`` to the next worker and return its answer."""
        ident = next(self._ids)
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = answer
        self._links[next(self._turn) % len(self._links)].send(ident, kind, body)
        return await answer

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in self._links:
            if link.transport is not None:
                link.transport.close()


async def work(path: str, run: Run) -> None:
    """Be a floor worker on ``path``: answer each request with ``run(kind, body)``, concurrently,
    until the server goes away."""
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[None]] = set()
    link: _Framer | None = None

    async def answer(ident: int, kind: bytes, body: bytes) -> None:
        assert link is not None
        link.send(ident, kind, await run(kind, body))

    def on_frame(ident: int, kind: bytes, body: bytes) -> None:
        task = loop.create_task(answer(ident, kind, body))
        running.add(task)
        task.add_done_callback(running.discard)

    _, link = await loop.create_unix_connection(lambda: _Framer(on_frame), path)
    await link.lost
