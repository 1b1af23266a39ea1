"""The broker's protocol over a Unix stream socket, driven by the event loops themselves.

A ZeroMQ socket hands every message to an I/O thread of its own, and each such wake-up costs a
cross-core interrupt (a VM exit on a virtual machine) on both sides of a hop: measured, the
largest single cost of a task's round trip (``python -m bench.transport``). A worker on the
broker's own machine therefore talks to it over a Unix socket that the worker's loop and the
broker's loop read and write directly; the messages are the very same packed frames
(:mod:`.packing`), each preceded by its length (``u32``, big-endian) on the stream.

:class:`Records` is that stream for one connection, at either end: it cuts what arrives into
messages and hands them over in one batch per read; what is sent within one loop iteration goes
in one write.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from typing import cast

from .packing import Frames, pack, unpack

__all__ = ["HELLO", "MAX_RECORD", "REFUSED", "Records"]

log = logging.getLogger(__name__)

HELLO = b"HELLO"
"""A client's first message on a Unix connection: ``HELLO ident secret``."""
REFUSED = b"REFUSED"
"""The broker's answer to a hello it does not accept, ``REFUSED reason``; then it hangs up."""
MAX_RECORD = 1 << 30
"""The largest message either end accepts (a longer length is a broken or hostile stream)."""

_LENGTH = struct.Struct(">I")


class Records(asyncio.Protocol):
    """One connection carrying packed messages; ``on_messages`` gets each read's messages.

    ``on_lost(records, exc)`` is called once when the connection ends, whoever ended it. A
    record that is too long (over ``limit``) or not a packed message ends the connection.
    """

    def __init__(
        self,
        on_messages: Callable[[list[Frames]], None],
        on_lost: Callable[[Records, Exception | None], None],
        *,
        limit: int = MAX_RECORD,
    ) -> None:
        self.on_messages = on_messages
        self.limit = limit
        self._on_lost = on_lost
        self._buf = bytearray()
        self._pending: list[bytes] = []
        self._scheduled = False
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pending.clear()
        self._on_lost(self, exc)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        if buf:
            buf += data
            view: bytes | bytearray = buf
        else:
            view = data
        try:
            messages, pos = _cut(view, self.limit)
        except ValueError as exc:
            log.warning("closed a connection that does not speak llamactl's protocol: %s", exc)
            self.close()
            return
        if view is buf:
            del buf[:pos]
        elif pos < len(data):
            buf += data[pos:]
        if messages and not self.closed:
            self.on_messages(messages)

    # -- sending ----------------------------------------------------------------------------------

    def send(self, frames: Frames) -> bool:
        """Queue one message; it goes with the others of this loop iteration. False once closed."""
        if self.closed:
            return False
        packed = pack(frames)
        self._pending.append(_LENGTH.pack(len(packed)))
        self._pending.append(packed)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)
        return True

    def send_batch(self, messages: list[Frames]) -> bool:
        """Queue several messages (they reach the peer in one read)."""
        if self.closed:
            return False
        for frames in messages:
            self.send(frames)
        return True

    def _flush(self) -> None:
        self._scheduled = False
        if self.closed or not self._pending or self.transport is None:
            return
        data, self._pending = b"".join(self._pending), []
        self.transport.write(data)

    def close(self) -> None:
        """Send what is queued, then hang up (``on_lost`` follows from the loop)."""
        if self.closed:
            return
        self._flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _cut(view: bytes | bytearray, limit: int) -> tuple[list[Frames], int]:
    """The whole messages at the start of ``view``, and where the rest begins. ValueError for a
    length over ``limit`` or a record that is not a packed message."""
    messages: list[Frames] = []
    pos, size = 0, len(view)
    while size - pos >= _LENGTH.size:
        (length,) = _LENGTH.unpack_from(view, pos)
        if length > limit:
            raise ValueError(f"a message of {length} bytes, over the limit of {limit}")
        end = pos + _LENGTH.size + length
        if end > size:
            break
        messages.append(unpack(bytes(view[pos + _LENGTH.size : end])))
        pos = end
    return messages, pos
