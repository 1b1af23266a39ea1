"""Run a uvicorn server inside the caller's event loop, on sockets we bind ourselves.

Binding first gives a clear error (port in use) instead of uvicorn's ``sys.exit``, and tells
us the real port when 0 asked for an ephemeral one. uvicorn never installs signal handlers
here: the caller owns SIGINT/SIGTERM and stops the server with :meth:`UvicornServer.stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http
import json
import socket
import time
from collections.abc import Callable, Generator

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llamactl.server.apiserver.http_protocol import CoalescingHttpToolsProtocol
from llamactl.server.errors import CannotListen
from llamactl.server.hosts import is_loopback

__all__ = ["AccessLog", "Draining", "UvicornServer", "bind_sockets", "is_loopback", "url_for"]

_STARTUP_TIMEOUT = 30.0


def url_for(host: str, port: int) -> str:
    """The URL a client on this machine uses to reach a server bound to ``host:port``."""
    bare = host.strip("[]")
    if bare in ("", "0.0.0.0"):
        bare = "127.0.0.1"
    elif bare == "::":
        bare = "::1"
    if ":" in bare:
        bare = f"[{bare}]"
    return f"http://{bare}:{port}"


def bind_sockets(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address of ``host``, all on one port (0: an ephemeral one).

    Raises:
        CannotListen: the host does not resolve, is not this machine's, or the port is taken (the
            message says which, and what to do).
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CannotListen(
            f"cannot listen on host '{host}': {exc.strerror}: pass an IP address or a known name to --host"
        ) from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address[0]) in seen:
                continue
            seen.add((family, address[0]))
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            chosen = port or (sockets[0].getsockname()[1] if sockets else 0)
            try:
                sock.bind((address[0], chosen, *address[2:]))
            except OSError as exc:
                sock.close()
                if sockets:
                    continue  # e.g. ::1 when IPv6 is off: the first address is enough
                raise CannotListen(
                    f"cannot listen on {host}:{port}: {exc.strerror}: {_way_out(exc.errno, port)}", exc.errno
                ) from None
            sock.listen(2048)
            sock.setblocking(False)
            sockets.append(sock)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _way_out(error_number: int | None, port: int) -> str:
    if error_number == errno.EADDRNOTAVAIL:
        return "--host must be an address of this machine (127.0.0.1; 0.0.0.0 for all of them)"
    if error_number == errno.EACCES and 0 < port < 1024:
        return "ports below 1024 need privileges: pick --port 1024 or above"
    return "pick another --port (0 picks a free one), or stop what is using it"


class _Server(uvicorn.Server):
    """uvicorn's server with two changes: the caller owns the signals, and the main loop sleeps.
    uvicorn's looks at ``should_exit`` ten times a second, waking an idle server for nothing;
    this one waits for :meth:`exit`, waking once a second to renew the Date header."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit = asyncio.Event()

    def exit(self) -> None:
        """Stop serving: stop accepting, let open requests finish, return from ``serve``."""
        self.should_exit = True
        self._exit.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the caller owns the signals

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000  # a turn is ten of uvicorn's ticks: the Date is renewed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._exit.wait()


class UvicornServer:
    """One uvicorn server for ``app`` on ``host:port``, started and stopped inside the current loop."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        self.host = host
        self._sockets = bind_sockets(host, port)
        self.port: int = self._sockets[0].getsockname()[1]
        config = uvicorn.Config(
            app,
            host=host,
            port=self.port,
            loop="uvloop",
            http=CoalescingHttpToolsProtocol,
            access_log=False,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return url_for(self.host, self.port)

    async def start(self) -> None:
        """Serve in a background task; return once the server accepts connections."""
        self._task = asyncio.create_task(self._run(), name=f"uvicorn:{self.host}:{self.port}")
        async with asyncio.timeout(_STARTUP_TIMEOUT):
            while not self._server.started:
                if self._task.done():
                    self._task.result()
                    raise RuntimeError(f"the HTTP server on {self.url} stopped while starting")
                await asyncio.sleep(0.005)

    async def _run(self) -> None:
        try:
            await self._server.serve(sockets=self._sockets)
        except SystemExit:
            raise RuntimeError(f"the HTTP server on {self.url} could not start (see the log above)") from None

    async def stop(self) -> None:
        """Stop accepting, let open requests finish (up to 10 s), then return."""
        if self._task is None:
            for sock in self._sockets:
                sock.close()
            return
        self._server.exit()
        with contextlib.suppress(Exception):
            await self._task
        self._task = None


class AccessLog:
    """One line per HTTP request, as uvicorn's access log writes it (client, request line,
    status), plus the time to the answer's first byte: ``127.0.0.1:50312 - "GET /status/ HTTP/1.1"
    200 OK 1.2 ms``. Headers (the token among them) are never written."""

    def __init__(self, app: ASGIApp, write: Callable[[str], None]) -> None:
        self.app = app
        self._write = write

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def logging_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._write(_access_line(scope, int(message["status"]), time.perf_counter() - started))
            await send(message)

        await self.app(scope, receive, logging_send)


def _access_line(scope: Scope, status: int, seconds: float) -> str:
    client = scope.get("client")
    who = f"{client[0]}:{client[1]}" if client else "-"
    path = scope.get("raw_path", scope.get("path", "").encode()).decode("latin-1")
    if scope.get("query_string"):
        path += "?" + scope["query_string"].decode("latin-1")
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    request_line = f"{scope.get('method', '-')} {path} HTTP/{scope.get('http_version', '1.1')}"
    return f'{who} - "{request_line}" {status} {phrase} {seconds * 1000:.1f} ms'.replace("  ", " ")


class Draining:
    """Once :meth:`start` is called, every new request gets 503 ``{"detail", "stopping": true}``:
    the server is stopping and lets its running tasks finish, so clients learn that instead of
    finding the port closed. Requests already in progress go on (a waiter still gets its result)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.draining = False
        self._body = json.dumps(
            {
                "detail": "the server is stopping: it lets its running tasks finish, then exits",
                "stopping": True,
            }
        ).encode()

    def start(self) -> None:
        self.draining = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.draining or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self._body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": self._body})
