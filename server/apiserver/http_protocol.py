"""uvicorn's httptools protocol, with each answer's head and body sent in one write.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start``, then the body with a second write: two system calls, two TCP segments
and, when the client sleeps in between, two wake-ups of the client for one answer. Here the
transport the protocol writes through holds a write until the next one or until the loop's
current turn ends, whichever comes first: an answer whose body follows at once (every JSON
answer) goes out in one write; a stream's head goes out at the end of the turn, as soon as before
for anyone waiting on it. Measured with ``python -m bench.ab`` (ten one-second pairs per client
count): the workflow echo +4 % tasks per second sequentially (context switches per task 11.0 ->
9.1), the function echo +1.5 % and -1.5 % CPU per task at 1, 8 and 32 clients.

The protocol also bounds a request's head (request line and headers): uvicorn's httptools
protocol takes headers without limit, so one connection sending header lines without end grew the
server by what it sent (300 MB of headers: +280 MB RSS). A head over :data:`MAX_HEAD` is answered
``431`` and the connection closed, as nginx and Node do (their limits are 8-32 KiB); a head not
complete within :data:`HEAD_TIMEOUT` closes the connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HEAD_TIMEOUT", "MAX_HEAD", "CoalescingHttpToolsProtocol", "CoalescingTransport"]

MAX_HEAD = 64 * 1024
"""Bytes a request's line and headers may take together."""
_LINGER = 2.0
"""Seconds a refused connection is kept open, its input dropped, so that the answer arrives."""
HEAD_TIMEOUT = 30.0
"""Seconds a connection may take to send a request's head, from its opening or the end of its
last answer; then it is closed (uvicorn's keep-alive timer restarts on every byte, so a head sent
a byte at a time, or a connection that never sends, held its descriptor for ever)."""

_JOIN_AT_MOST = 64 * 1024
"""Writes up to this size are held or copied behind a held head; larger ones go at once (with
the held head, as a vector)."""


class CoalescingTransport(asyncio.Transport):
    """A transport that joins the writes made within one turn of the loop into one write to the
    transport it wraps. Everything else is the wrapped transport's."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            if len(data) > _JOIN_AT_MOST:
                self._transport.write(data)  # nothing to save by waiting: it goes alone anyway
                return
            if not data:
                return
            self._held = bytes(data)
            self._loop.call_soon(self._flush)
            return
        self._held = None
        if len(data) > _JOIN_AT_MOST:
            self._transport.writelines((held, data))  # a vectored write: no copy of a big body
        else:
            self._transport.write(held + data)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's ``httptools`` protocol writing through a :class:`CoalescingTransport`, with a
    request's head bounded by :data:`MAX_HEAD`: pass it as ``uvicorn.Config(http=...)``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._in_head = True
        """Waiting for, or reading, a request's line and headers (not its body)."""
        self._head_bytes = 0
        self._moved_on = False
        """A head or a message ended within the chunk being fed."""
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(CoalescingTransport(transport, self.loop))
        self._await_head()

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport.is_closing():
            return  # what comes after a refusal is read and dropped until the close
        self._moved_on = False
        super().data_received(data)
        # Only a chunk fed wholly inside one head is counted (a body never is); a head that
        # starts within a chunk goes uncounted for that chunk, so the bound is exact to one read.
        if self._in_head and not self._moved_on:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD and not self.transport.is_closing():
                self._refuse_head()

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes, self._moved_on = False, 0, True
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head, self._head_bytes, self._moved_on = True, 0, True
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._in_head:  # no request of this connection is waiting for its answer
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self._stop_head_timer()
        if not self.transport.is_closing():
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self.transport.close()

    def _refuse_head(self) -> None:
        """Answer 431, then close: at once for our side (FIN after the answer), after a moment
        for the client's, whose bytes still in flight are read and dropped meanwhile. Closing with
        them unread would reset the connection, and the client could lose the answer."""
        self._refused = True
        body = f"the request's line and headers take over {MAX_HEAD} bytes".encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER, self.transport.close)
