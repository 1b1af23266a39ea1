"""uvicorn's httptools protocol with each answer sent in one write and every request bounded.

Answers go through a :class:`~llamactl.server.apiserver.http_transport.CoalescingTransport`, so
a response's head and body leave in one write.

uvicorn bounds neither how much nor how long a client may take, and each thing a client holds
open is a descriptor and a task of the server's (measured: 300 MB of header lines grew the
server by 280 MB; a connection that sent its head a byte at a time, or a body never finished, or
read none of a stream, stayed open for ever). Here:

* a head (request line and headers) over :data:`MAX_HEAD` is answered ``431`` and the
  connection closed, as nginx and Node do (their limits are 8-32 KiB);
* a head not complete within :data:`HEAD_TIMEOUT` closes the connection;
* a body gets :data:`BODY_TIMEOUT` seconds plus one for every :data:`BODY_MIN_RATE` bytes that
  came (Apache's ``mod_reqtimeout`` rule), then it is answered ``408`` and the connection
  closed; time while the server itself holds the body back (a busy handler, a pipelined
  request, ``Expect: 100-continue``) is not counted;
* an answer the client reads none of for :data:`SEND_TIMEOUT` seconds (the write buffer stays
  full) drops the connection, as nginx's ``send_timeout`` does;
* connections past :func:`max_connections` (the open-file limit less a reserve) are answered
  ``503`` and closed at once: measured under ``prlimit --nofile=200``, 300 idle connections took
  every descriptor for their 30 s, and the worker the server had to start again meanwhile could
  not be started ("Too many open files"). The reserve keeps the engine's files, sockets and
  worker pipes free.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from llamactl.server.apiserver.http_transport import CoalescingTransport

log = logging.getLogger(__name__)

__all__ = [
    "BODY_MIN_RATE",
    "BODY_TIMEOUT",
    "DESCRIPTOR_RESERVE",
    "HEAD_TIMEOUT",
    "MAX_CONNECTIONS",
    "MAX_HEAD",
    "SEND_TIMEOUT",
    "CoalescingHttpToolsProtocol",
    "max_connections",
]

MAX_HEAD = 64 * 1024
"""Bytes a request's line and headers may take together."""
_LINGER = 2.0
"""Seconds a refused connection is kept open, its input dropped, so that the answer arrives."""
_REFUSED_LINGER = 0.2
"""The same for a connection past :func:`max_connections`."""
HEAD_TIMEOUT = 30.0
"""Seconds a connection may take to send a request's head, from its opening or the end of its
last answer; then it is closed (uvicorn's keep-alive timer restarts on every byte, so a head sent
a byte at a time, or a connection that never sends, held its descriptor for ever)."""
BODY_TIMEOUT = 30.0
"""Seconds a request's body may take from the end of its head, before the allowance its
bytes earn (:data:`BODY_MIN_RATE`); then it is answered 408 and the connection closed."""
BODY_MIN_RATE = 1000
"""Bytes of body that earn a body one more second: an upload at this rate or faster never times
out, one that trickles below it does."""
MAX_CONNECTIONS: int | None = None
"""Connections served at once; None: :func:`max_connections` derives it from the open-file limit."""
DESCRIPTOR_RESERVE = 128
"""Descriptors kept from connections for the engine, at the least (a quarter of the limit when
that is more): its state files, queue sockets and each worker's pipes."""
_WARN_EVERY = 60.0
SEND_TIMEOUT = 60.0
"""Seconds an answer may wait for a client that reads none of it (the write buffer stays above
its high-water mark); then the connection is dropped."""


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's ``httptools`` protocol writing through a :class:`CoalescingTransport`, with each
    request bounded in size and time (see the module): pass it as ``uvicorn.Config(http=...)``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._in_head = True
        """Waiting for, or reading, a request's line and headers (not its body)."""
        self._head_bytes = 0
        self._moved_on = False
        """A head or a message ended within the chunk being fed."""
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_body = False
        """A request's head has come and its body has not ended."""
        self._body_since = 0.0
        self._body_bytes = 0
        self._body_held = False
        """The server held the body back at the last check (its handler had not asked for it)."""
        self._body_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        super().connection_made(CoalescingTransport(transport, self.loop))
        self._await_head()
        limit = max_connections()
        if len(self.connections) > limit:
            self._stop_head_timer()
            _warn_refusing(len(self.connections) - 1, limit)
            self._refuse(
                503,
                "Service Unavailable",
                f"the server has {len(self.connections) - 1} connections open, as many as it takes "
                f"({limit}; the rest of its open-file limit is kept for its workers): close idle "
                "connections, or try again in a moment",
                # Its request comes right after the connect, if at all: a flood of refused
                # connections must not hold the descriptors the refusal is there to keep.
                linger=_REFUSED_LINGER,
            )

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
                self._refuse(
                    431,
                    "Request Header Fields Too Large",
                    f"the request's line and headers take over {MAX_HEAD} bytes",
                )
        elif self._in_body and self._body_timer is None and not self.transport.is_closing():
            # Armed here, not when the head ends: a body that comes with its head (nearly every
            # request) ends in the same chunk and costs no timer.
            self._body_timer = self.loop.call_later(BODY_TIMEOUT, self._check_body)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes, self._moved_on = False, 0, True
        self._in_body, self._body_bytes, self._body_since = True, 0, self.loop.time()
        self._body_held = False
        self._stop_head_timer()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_head, self._head_bytes, self._moved_on = True, 0, True
        self._in_body = False
        self._body_timer = _cancel(self._body_timer)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._in_head:  # no request of this connection is waiting for its answer
            self._await_head()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(SEND_TIMEOUT, self._send_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._send_timer = _cancel(self._send_timer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._body_timer = _cancel(self._body_timer)
        self._send_timer = _cancel(self._send_timer)
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self._stop_head_timer()
        if not self.transport.is_closing():
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        self._head_timer = _cancel(self._head_timer)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self.transport.close()

    def _check_body(self) -> None:
        self._body_timer = None
        if not self._in_body or self._refused or self.transport.is_closing():
            return
        now = self.loop.time()
        cycle = self.cycle
        held = self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue)
        if held or self._body_held:
            # The server holds the body back (or did until a moment ago), not the client: the
            # client's time starts afresh from here.
            self._body_since, self._body_bytes = now, 0
        self._body_held = held
        due = self._body_since + BODY_TIMEOUT + self._body_bytes / BODY_MIN_RATE
        if now < due:
            self._body_timer = self.loop.call_later(due - now, self._check_body)
            return
        if cycle is None or cycle.response_started:
            self.transport.close()  # an answer is (being) sent already: only the close is left
            return
        # The handler waiting for the body hears that the client is gone, and its answer, if it
        # still makes one, is dropped: this one is the client's.
        cycle.disconnected = True
        cycle.message_event.set()
        self._refuse(
            408,
            "Request Timeout",
            f"the request's body came too slowly: {self._body_bytes} bytes in {now - self._body_since:.0f} s",
        )

    def _send_timed_out(self) -> None:
        self._send_timer = None
        if not self.transport.is_closing():
            self.transport.abort()  # what is buffered would never be read

    def _refuse(self, status: int, reason: str, detail: str, *, linger: float = _LINGER) -> None:
        """Answer ``status``, then close: at once for our side (FIN after the answer), after a
        moment for the client's, whose bytes still in flight are read and dropped meanwhile.
        Closing with them unread would reset the connection, and the client could lose the
        answer."""
        self._refused = True
        body = json.dumps({"detail": detail}).encode()  # the API's errors are all of this shape
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (status, reason.encode(), len(body), body)
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(linger, self.transport.close)


def max_connections() -> int:
    """:data:`MAX_CONNECTIONS`, or the open-file limit less the reserve (64 at the least), read
    once (the entry points raise the limit before they serve: ``process_limits``)."""
    global _derived  # noqa: PLW0603  (a cache of one value per process)
    if MAX_CONNECTIONS is not None:
        return MAX_CONNECTIONS
    if _derived is None:
        try:
            import resource  # noqa: PLC0415  (no such module on Windows)
        except ImportError:  # pragma: no cover - not on Windows
            _derived = 1 << 20
        else:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            unlimited = soft == resource.RLIM_INFINITY
            _derived = 1 << 20 if unlimited else max(64, soft - max(DESCRIPTOR_RESERVE, soft // 4))
    return _derived


_derived: int | None = None


_warned_at = -_WARN_EVERY


def _warn_refusing(open_now: int, limit: int) -> None:
    """Say once a minute that connections are refused (a flood must not flood the log too)."""
    global _warned_at  # noqa: PLW0603  (one server per process; a counter is all it needs)
    now = time.monotonic()
    if now - _warned_at >= _WARN_EVERY:
        _warned_at = now
        log.warning(
            "refusing new connections with 503: %d open, the limit is %d (the open-file limit less "
            "a reserve for the workers): a client keeps too many open, or raise `ulimit -n`",
            open_now,
            limit,
        )


def _cancel(timer: asyncio.TimerHandle | None) -> asyncio.TimerHandle | None:
    """Cancel ``timer`` if there is one; return None, to put in its place."""
    if timer is not None:
        timer.cancel()
    return None
