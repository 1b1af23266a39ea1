"""The socket driver both ends of the ZeroMQ queue use: a zmq socket driven from an asyncio loop,
with no future or timer per message."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import zmq

from .packing import Frames, pack, unpack_parts

__all__ = ["Pump"]

log = logging.getLogger(__name__)

# pyzmq's Python-level send/recv_multipart wrap every frame in enum flag arithmetic, which
# costs more than the send itself; call the backend socket's methods with plain int flags.
_BaseSocket: Any = zmq.Socket.__mro__[1]
_send: Any = getattr(_BaseSocket, "send", zmq.Socket.send)
_recv: Any = getattr(_BaseSocket, "recv", zmq.Socket.recv)
_get: Any = getattr(_BaseSocket, "get", zmq.Socket.get)
_NOBLOCK = int(zmq.NOBLOCK)
_NOBLOCK_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


class Pump:
    """Drive one zmq socket from an asyncio loop.

    Receiving: ZeroMQ's FD is edge-triggered: it signals "look at ZMQ_EVENTS", and any zmq call
    on the socket (a send included) may consume that signal. So after every send we look at
    ZMQ_EVENTS ourselves and schedule a drain if input is waiting, instead of trusting the FD;
    a drain takes everything readable in one go.

    Each message goes packed into one ZeroMQ frame (:mod:`.packing`); on a ROUTER socket its
    first frame, the peer's routing id, stays a ZeroMQ frame of its own, as ZeroMQ routes by it.
    """

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        handler: Callable[[list[Frames]], None],
        *,
        batch: int = 4096,
    ) -> None:
        self.sock = sock
        self._handler = handler
        self._batch = batch
        self._routed = int(sock.getsockopt(zmq.TYPE)) == zmq.ROUTER
        self._loop = asyncio.get_running_loop()
        self._fd = int(sock.getsockopt(zmq.FD))
        self._scheduled = False
        self._closed = False
        self._warned = False
        self._loop.add_reader(self._fd, self._drain)
        self.kick()

    def kick(self) -> None:
        """Schedule a drain if messages wait (call after any send)."""
        if self._scheduled or self._closed:
            return
        if _get(self.sock, _EVENTS) & _POLLIN:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        if self._closed:
            return
        sock = self.sock
        batch: list[Frames] = []
        received = 0
        # Asking ZMQ_EVENTS before each message is cheaper than ending on zmq.Again (an
        # exception per drain), and it leaves the FD armed for the next message.
        while _get(sock, _EVENTS) & _POLLIN and received < self._batch:
            received += 1
            frame = _recv(sock, _NOBLOCK, copy=False)
            parts = [frame.bytes]
            while frame.more:
                frame = _recv(sock, _NOBLOCK, copy=False)
                parts.append(frame.bytes)
            try:
                batch.extend(unpack_parts(parts, routed=self._routed))
            except ValueError as exc:
                self._refused(exc)
        if batch:
            self._handler(batch)
        if received >= self._batch:
            self.kick()  # stopped at the batch limit with messages still waiting

    def _refused(self, exc: ValueError) -> None:
        if self._warned:  # once per socket: a peer of another version sends many
            return
        self._warned = True
        log.warning(
            "dropped a message that is not in llamactl's wire format (%s): is a client or broker "
            "of another llamactl version connected? Run one version everywhere.",
            exc,
        )

    def send(self, frames: Frames) -> bool:
        """Send without blocking; False if the peer is unknown/unreachable or its pipe is full.
        On a ROUTER socket ``frames[0]`` is the peer's routing id."""
        if self._routed:
            return self.send_batch(frames[0], [frames[1:]])
        if self._closed:
            return False
        try:
            _send(self.sock, pack(frames), _NOBLOCK)
        except zmq.ZMQError:  # Again (pipe full) or EHOSTUNREACH (ROUTER_MANDATORY, peer gone)
            return False
        self.kick()
        return True

    def send_batch(self, ident: bytes, messages: list[Frames]) -> bool:
        """Send one or more messages to one peer of a ROUTER socket as one ZeroMQ message (a
        packed frame each): one pipe write, so the I/O threads and the peer's loop wake once for
        all. False as :meth:`send`; then none of them went."""
        if self._closed:
            return False
        sock = self.sock
        last = len(messages) - 1
        try:
            # all frames of the message are queued atomically once the first one is in
            _send(sock, ident, _NOBLOCK_MORE)
            for i, frames in enumerate(messages):
                _send(sock, pack(frames), _NOBLOCK if i == last else _NOBLOCK_MORE)
        except zmq.ZMQError:  # Again (pipe full) or EHOSTUNREACH (ROUTER_MANDATORY, peer gone)
            return False
        self.kick()
        return True

    def close(self) -> None:
        """Stop watching and close the socket at once (LINGER 0)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(RuntimeError, ValueError):  # the loop may be closed already
            self._loop.remove_reader(self._fd)
        self.sock.close(linger=0)
